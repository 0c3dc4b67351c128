"""The README's layout and docs/ARCHITECTURE.md name exactly the modules croft_core and croft_app have."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "croft_core"
PACKAGES = (ROOT / "croft_app", PACKAGE)


def _modules() -> set[str]:
    """``name.py`` for every module of the package, ``sub/`` for every subpackage."""
    files = [p for package in PACKAGES for p in package.rglob("*.py")]
    return {p.name for p in files if p.name != "__init__.py"} | {f"{p.parent.name}/" for p in files
                                                               if p.name == "__init__.py"}


def _readme_layout() -> str:
    """The ``croft_app/`` and ``croft_core/`` part of the README's layout block."""
    text = (ROOT / "README.md").read_text()
    block = text[text.index("## Layout"):]
    block = block[block.index("```") + 3:]
    block = block[:block.index("```")]
    return block[block.index("croft_app/"):block.index("\nbench/")]


def _named(text: str) -> set[str]:
    return set(re.findall(r"\b[a-z_0-9]+\.py\b", text)) | set(re.findall(r"\b[a-z_0-9]+/", text))


def _unknown(text: str) -> list[str]:
    """Module names in ``text`` that are no file of the package (``__init__.py``, ``app.py`` and
    the tests are files too)."""
    known = _modules() | {"__init__.py"} | {p.name for p in ROOT.glob("*.py")}
    known |= {p.name for p in (ROOT / "tests").rglob("*.py")}
    return sorted(n for n in _named(text) if n.endswith(".py") and n not in known)


@pytest.mark.parametrize("doc, text", [
    ("README.md's layout", _readme_layout),
    ("docs/ARCHITECTURE.md", lambda: (ROOT / "docs" / "ARCHITECTURE.md").read_text()),
])
def test_docs_name_every_module_and_no_other(doc, text):
    text = text()
    missing = sorted(m for m in _modules() if m not in _named(text))
    assert not missing, f"{doc} omits {missing}"
    unknown = _unknown(text)
    assert not unknown, f"{doc} names modules that do not exist: {unknown}"


def test_architecture_places_build_head_where_it_is():
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    defined_in = sorted(p.name for p in PACKAGE.rglob("*.py") if "\ndef build_head(" in p.read_text())
    assert defined_in == ["checkpoint.py"]
    assert "checkpoint.build_head" in text and not re.search(r"\b(?!checkpoint\.)\w+\.build_head", text)


def _python_imports(text: str) -> list[str]:
    """The ``import`` statements of a document's python code blocks (joined across lines)."""
    out = []
    for block in re.findall(r"```python\n(.*?)```", text, flags=re.S):
        statement = ""
        for line in block.splitlines():
            if statement or re.match(r"\s*(from \S+ import|import) ", line):
                statement += " " + line.strip()
                if statement.count("(") == statement.count(")"):
                    out.append(statement.strip())
                    statement = ""
    return out


@pytest.mark.parametrize("doc", ["README.md", *sorted(p.name for p in (ROOT / "docs").glob("*.md"))])
def test_the_imports_the_docs_teach_resolve(doc):
    path = ROOT / doc if doc == "README.md" else ROOT / "docs" / doc
    statements = [s for s in _python_imports(path.read_text()) if "croft_" in s]
    for statement in statements:
        exec(statement, {})  # noqa: S102 - our own docs' import lines
