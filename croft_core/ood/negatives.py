"""Negative-label rejection: "unknown" for any vocabulary, with no calibration images.

After NegLabel (Jiang, Liu, Wang, Yang, Han. "Negative Label Guided OOD Detection with Pretrained
Vision-Language Models", ICLR 2024; official code ``XueJiang16/NegLabel``). From a lexicon of
words, the negative labels are the words farthest from the vocabulary: a candidate's closeness is a
high percentile (the 95th) of its cosines to the vocabulary's label texts, and the M least close
words are kept (the paper's 10,000, or every word of a smaller lexicon). An image then scores

    S(x) = sum_ID exp(cos(x, t_k) / T) / sum_{ID u negatives} exp(cos(x, t_j) / T),   T = 0.01,

averaged over seeded random groups of the negatives (the paper's grouping strategy: 100 groups of
100 for 10,000 negatives; fewer groups of at least 100 for fewer negatives, one below 200). The
score is in (0, 1), higher = more in-distribution; an image is accepted when ``S(x)`` is at or
above one fixed threshold for every vocabulary (the lexicon's own, else ``DEFAULT_NEG_THRESHOLD``;
``bench/neglabel.py``, README), and the nearest negative word explains a rejection.

Lexicons are a property of the backbone (:func:`lexicon_path`): a ``lexicon.txt`` next to a
``local-dir:`` model (the embedded model lists the words its text tower was trained on), otherwise
the WordNet noun lemmas of ImageNet-21k that ship inside ``timm`` (an open_clip dependency). The
lexicon's text embeddings are computed once per backbone and lexicon and cached on disk
(:func:`croft_core.clip.backbones.build_text_classifier`); mining for a new vocabulary is then one
matrix product. Deviations from the official code are listed in ``docs/NEGLABEL.md``.

Typical use (``croft_app/service/classifier.py``, the evaluation)::

    negs = NegativeLabels.fit(backbone, ["cat", "dog"], text_map=None)   # or a CRoFT head's adapt_text
    scores, nearest = negs.score(image_features)       # [N] in (0, 1), [N] index into negs.words
    accepted = negs.accept(scores)                     # scores >= negs.threshold
    negs.settings()                                    # M, groups, ... beside OFFICIAL, the paper's

A head's score (its embedded image, its own class cosines, the negatives through its text map) is
:func:`croft_core.runs.evaluate.negative_label_scores`, the one path of ``evaluate`` and the app.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from croft_core.data.benchmarks.classnames import class_key
from croft_core.clip.backbones import DEFAULT_CACHE_DIR, Backbone, build_text_classifier, parse_spec
from croft_core.errors import CroftError
from croft_core.clip.features import l2n
from croft_core.clip.prompts import SINGLE_TEMPLATE
from croft_core.ood.scores import neglabel

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_NEG_THRESHOLD", "OFFICIAL", "Lexicon", "LexiconError", "NegativeLabels", "generic_words",
           "lexicon_path", "load_lexicon_embeddings", "mine_negatives", "parse_lexicon", "planned_numbers",
           "read_lexicon", "save_lexicon_embeddings", "timm_lexicon_path"]

DEFAULT_NEG_THRESHOLD = 0.01
"""Accept when ``S(x) >= DEFAULT_NEG_THRESHOLD``: reject only when the negatives hold >= 99% of the mass.

The default for a lexicon that does not set its own ``threshold`` in ``neglabel.json`` (timm's, for
real CLIPs: no real CLIP weights are reachable offline, so this value was never measured on one).
The embedded model's lexicon sets its own, selected with ``bench/neglabel.py --select`` on validation
images of the shapes world (docs/NEGLABEL.md, "Measured").
"""

NEG_TEMPERATURE = 0.01  # the paper's T on cosines (the official t=1 on 100 * cos)
NEG_COUNT = 10_000  # the paper's M: neg_topk = 0.15 of its ~70k WordNet nouns (all words of a smaller lexicon)
NEG_GROUPS = 100  # the paper's number of random groups (ngroup)
NEG_MIN_GROUP = 100  # the paper's group size (10,000 / 100): fewer groups rather than smaller ones
NEG_PERCENTILE = 0.95  # closeness of a candidate = this quantile of its cosines to the labels
OFFICIAL = {"num_negatives": NEG_COUNT, "groups": NEG_GROUPS, "group_size": NEG_COUNT // NEG_GROUPS,
            "percentile": NEG_PERCENTILE, "temperature": NEG_TEMPERATURE, "threshold": DEFAULT_NEG_THRESHOLD,
            "generic_words": 0, "lexicon": "WordNet nouns (~70k), 15% farthest kept"}
"""The official code's numbers for ImageNet (``custom_config/clip.py``), printed beside the project's
(:meth:`NegativeLabels.settings`) by ``bench/neglabel.py`` and docs/NEGLABEL.md."""
SETTINGS = ("lexicon", "paper")  # NegativeLabels.fit(settings=): the lexicon's neglabel.json, or the paper's
NEG_TEMPLATES = SINGLE_TEMPLATE  # one prompt for labels and negatives, as the official code
LEXICON_FILE = "lexicon.txt"  # next to a local-dir model: the backbone's own lexicon
LEXICON_SETTINGS = "neglabel.json"  # optional, next to a lexicon file: see Lexicon
TIMM_LEXICON = ("data", "_info", "imagenet_synset_to_lemma.txt")  # inside the timm package
_ENCODE_CHUNK = 2048  # lexicon words per cached text-encoding call (and per progress report)
_MEMO_SIZE = 4  # lexicon embeddings kept in memory (per backbone and lexicon), most recent last
_memo: OrderedDict[tuple, torch.Tensor] = OrderedDict()
_memo_lock = threading.Lock()  # the app scores requests from several threads


class LexiconError(CroftError, ValueError):
    """A lexicon that cannot give negative labels (missing, empty, or too small for M)."""


@dataclass(frozen=True)
class Lexicon:
    """Candidate negative labels: one entry per concept, synonyms first-is-shown.

    A lexicon may carry its own settings in a ``neglabel.json`` next to the file, e.g.
    ``{"fraction": 1.0, "generic_share": 0.3, "threshold": 0.1, "note": "why"}``; a setting it does
    not give takes the paper's default.

    Attributes:
        entries: ``(("dog", "domestic dog"), ("pentagon",), ...)``; ``entry[0]`` is the word
            encoded and shown, every synonym counts when a class name collides with the entry.
        source: where it was read from.
        fraction: the share of this lexicon kept as negatives; None = the paper's count,
            ``min(NEG_COUNT, usable words)``.
        generic_share: the share of the lexicon's most generic words (:func:`generic_words`)
            never used as negatives; 0 = none (the official code).
        threshold: the acceptance threshold of the score; None = :data:`DEFAULT_NEG_THRESHOLD`.
    """

    entries: tuple[tuple[str, ...], ...]
    source: str
    fraction: float | None = None
    generic_share: float = 0.0
    threshold: float | None = None

    @property
    def words(self) -> tuple[str, ...]:
        return tuple(e[0] for e in self.entries)

    def __len__(self) -> int:
        return len(self.entries)


def read_lexicon(path: str | Path) -> Lexicon:
    """:func:`parse_lexicon`, remembered per file version (timm's 21k lines take ~0.2 s to parse)."""
    path = Path(path)
    if not path.is_file():
        raise LexiconError(f"lexicon file {path} does not exist; write one word per line there, or "
                           f"remove it to use timm's ImageNet-21k lemmas")
    stat = path.stat()
    settings = path.parent / LEXICON_SETTINGS
    version = (settings.stat().st_mtime_ns, settings.stat().st_size) if settings.is_file() else None
    return _parse_cached(str(path), stat.st_mtime_ns, stat.st_size, version)


@functools.lru_cache(maxsize=8)
def _parse_cached(path: str, mtime_ns: int, size: int, settings_version: tuple | None) -> Lexicon:
    return parse_lexicon(path)


def parse_lexicon(path: str | Path) -> Lexicon:
    """Read a lexicon file: one concept per line, synonyms separated by commas.

    A leading tab-separated id (timm's ``n00004475\\torganism, being``) is dropped; blank lines
    and ``#`` comments are skipped; a concept whose first word repeats an earlier one is dropped.

    Raises:
        LexiconError: the file is missing or holds no word.
    """
    path = Path(path)
    if not path.is_file():
        raise LexiconError(f"lexicon file {path} does not exist; write one word per line there, or "
                           f"remove it to use timm's ImageNet-21k lemmas")
    entries, seen = [], set()
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("\t", 1)[-1].strip()
        if not line or line.startswith("#"):
            continue
        synonyms = tuple(w for w in (s.strip() for s in line.split(",")) if w)
        if synonyms and class_key(synonyms[0]) not in seen:
            seen.add(class_key(synonyms[0]))
            entries.append(synonyms)
    if not entries:
        raise LexiconError(f"lexicon file {path} holds no word; write one word per line (synonyms "
                           f"separated by commas)")
    return Lexicon(tuple(entries), str(path), **_read_settings(path.parent / LEXICON_SETTINGS))


_SETTINGS = {  # neglabel.json key: (allowed range as (low, high, low inclusive), meaning)
    "fraction": ((0.0, 1.0, False), "share of the lexicon kept as negatives"),
    "generic_share": ((0.0, 1.0, True), "share of the most generic words never used as negatives"),
    "threshold": ((0.0, 1.0, False), "acceptance threshold of the score"),
}


def _read_settings(path: Path) -> dict[str, float]:
    """The settings a lexicon's ``neglabel.json`` gives (see :class:`Lexicon`), ``{}`` without one."""
    if not path.is_file():
        return {}
    example = '{"fraction": 0.6, "generic_share": 0.3, "threshold": 0.1, "note": "why"}'
    try:
        settings = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise LexiconError(f"{path} is not valid JSON ({err}); write e.g. {example}") from err
    if not isinstance(settings, dict) or set(settings) - {*_SETTINGS, "note"}:
        raise LexiconError(f"{path} may hold only {', '.join(_SETTINGS)} and note, e.g. {example}; got {settings}")
    out = {}
    for key, ((low, high, closed), meaning) in _SETTINGS.items():
        if key not in settings:
            continue
        value = settings[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                low <= value <= high if closed else low < value <= high):
            interval = f"{'[' if closed else '('}{low:g}, {high:g}]"
            raise LexiconError(f"{path}: \"{key}\" ({meaning}) must be a number in {interval}, got {value!r}")
        out[key] = float(value)
    return out


def lexicon_label(source: str | Path) -> str:
    """A lexicon's name for results and messages, never a server path: ``timm ImageNet-21k lemmas``
    or ``<model folder>/lexicon.txt``."""
    path = Path(source)
    if path.parts[-len(TIMM_LEXICON):] == tuple(TIMM_LEXICON):
        return "timm ImageNet-21k lemmas"
    return f"{path.parent.name}/{path.name}"


def lexicon_path(backbone: Backbone) -> Path:
    """The lexicon a backbone uses: ``lexicon.txt`` in a ``local-dir:`` model folder, else timm's.

    Raises:
        LexiconError: no own lexicon and timm is not installed.
    """
    name, _ = parse_spec(backbone.spec)
    if name.startswith("local-dir:"):
        own = Path(name.removeprefix("local-dir:")).expanduser() / LEXICON_FILE
        if own.is_file():
            return own
    return timm_lexicon_path()


def timm_lexicon_path() -> Path:
    """timm's ImageNet-21k WordNet lemmas, the lexicon of every backbone without its own.

    Raises:
        LexiconError: timm is not installed.
    """
    spec = importlib.util.find_spec("timm")
    if spec is None or not spec.submodule_search_locations:
        raise LexiconError("no lexicon for negative labels: the backbone folder has no lexicon.txt and "
                           "timm is not installed (pip install timm, an open_clip dependency)")
    return Path(list(spec.submodule_search_locations)[0]).joinpath(*TIMM_LEXICON)


def encode_lexicon(backbone: Backbone, lexicon: Lexicon, *, cache_dir: str | Path | None = DEFAULT_CACHE_DIR,
                   progress: Callable[[int, int], Any] | None = None) -> torch.Tensor:
    """Unit text embeddings ``[L, d]`` of the lexicon's words, cached on disk in chunks.

    Args:
        backbone: the frozen backbone.
        lexicon: the words (``entry[0]`` of each concept is encoded with :data:`NEG_TEMPLATES`).
        cache_dir: text cache root (``None`` disables it); each chunk of 2048 words is one file,
            so an interrupted encoding resumes. The last few lexicons are also kept in memory.
        progress: called as ``progress(words_done, words_total)`` after each chunk.
    """
    words, chunks = lexicon.words, []
    key = _lexicon_key(backbone, lexicon)
    with _memo_lock:
        if backbone.cache_id is not None and key in _memo:  # the app re-mines per request: skip the disk
            _memo.move_to_end(key)
            return _memo[key]
    for start in range(0, len(words), _ENCODE_CHUNK):
        chunks.append(build_text_classifier(backbone, words[start:start + _ENCODE_CHUNK], NEG_TEMPLATES,
                                            cache_dir=cache_dir))
        if progress is not None:
            progress(min(start + _ENCODE_CHUNK, len(words)), len(words))
    embeddings = torch.cat(chunks)  # [L, d]
    _remember(backbone, lexicon, embeddings)
    return embeddings


def _lexicon_key(backbone: Backbone, lexicon: Lexicon) -> tuple:
    return (backbone.cache_id, str(backbone.device), lexicon.source, hash(lexicon.words))


def _remember(backbone: Backbone, lexicon: Lexicon, embeddings: torch.Tensor) -> None:
    """Keep a lexicon's embeddings in memory, where :func:`encode_lexicon` finds them."""
    if backbone.cache_id is None:
        return
    with _memo_lock:
        _memo[_lexicon_key(backbone, lexicon)] = embeddings
        while len(_memo) > _MEMO_SIZE:
            _memo.popitem(last=False)


SHIPPED_PROBE_WORDS = 4  # words re-encoded when shipped embeddings are loaded (the weights check)
SHIPPED_MIN_COSINE = 0.995  # each probe's shipped and fresh embeddings must agree this well


def _spec_key(spec: str) -> str:
    """A spec without its machine: ``local-dir:/a/b/model`` -> ``local-dir:model`` (the weights are probed)."""
    if spec.startswith("local-dir:"):
        return "local-dir:" + Path(spec.removeprefix("local-dir:").rstrip("/")).name
    return spec


def _words_digest(lexicon: Lexicon) -> str:
    import hashlib

    return hashlib.sha256("\n".join(lexicon.words).encode()).hexdigest()


def save_lexicon_embeddings(backbone: Backbone, lexicon: Lexicon, path: str | Path, *,
                            embeddings: torch.Tensor | None = None) -> Path:
    """Write the lexicon's text embeddings to one safetensors file that can ship with an app.

    The file names the backbone spec and the lexicon's words (a digest); :func:`load_lexicon_embeddings`
    checks both, and re-encodes a few words to check the weights, before using it.

    Args:
        backbone: the frozen backbone.
        lexicon: its lexicon (:func:`read_lexicon` of :func:`lexicon_path`).
        path: the file to write.
        embeddings: already computed ``[L, d]`` (default: :func:`encode_lexicon`, disk cache off).
    """
    from safetensors.torch import save_file

    emb = encode_lexicon(backbone, lexicon, cache_dir=None) if embeddings is None else embeddings
    if emb.shape[0] != len(lexicon):
        raise LexiconError(f"{emb.shape[0]} embeddings for a lexicon of {len(lexicon)} words")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"embeddings": emb.detach().float().cpu().contiguous()}, str(path),
              metadata={"spec": _spec_key(backbone.spec), "words": _words_digest(lexicon), "count": str(len(lexicon)),
                        "templates": json.dumps(list(NEG_TEMPLATES))})
    return path


def load_lexicon_embeddings(backbone: Backbone, lexicon: Lexicon, path: str | Path) -> torch.Tensor | None:
    """Shipped lexicon embeddings (:func:`save_lexicon_embeddings`) if they fit this backbone, else None.

    They fit when the file names this backbone's spec, this lexicon's words and templates, and
    :data:`SHIPPED_PROBE_WORDS` words encoded now agree with the file (cosine >=
    :data:`SHIPPED_MIN_COSINE`): other weights under the same name are caught. A missing or
    mismatching file is logged and ignored (the lexicon is then encoded as usual).
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        return None
    with safe_open(str(path), framework="pt") as f:
        meta, emb = f.metadata() or {}, f.get_tensor("embeddings")
    expected = {"spec": _spec_key(backbone.spec), "words": _words_digest(lexicon), "templates": json.dumps(list(NEG_TEMPLATES))}
    wrong = [k for k, v in expected.items() if meta.get(k) != v]
    if wrong or emb.shape[0] != len(lexicon):
        logger.warning("shipped lexicon embeddings %s do not fit (%s differ); encoding the lexicon instead",
                       path.name, ", ".join(wrong) or "count")
        return None
    probe = min(SHIPPED_PROBE_WORDS, len(lexicon))
    fresh = build_text_classifier(backbone, lexicon.words[:probe], NEG_TEMPLATES, cache_dir=None).float().cpu()
    cosine = torch.nn.functional.cosine_similarity(fresh, emb[:probe], dim=-1)
    if bool((cosine < SHIPPED_MIN_COSINE).any()):
        logger.warning("shipped lexicon embeddings %s were computed with other weights (cosine %.3f); "
                       "encoding the lexicon instead", path.name, float(cosine.min()))
        return None
    emb = emb.to(backbone.device)
    _remember(backbone, lexicon, emb)  # every later encode_lexicon of it (a Lab job's mining) is free
    return emb


def mine_negatives(label_text: torch.Tensor, candidates: torch.Tensor, num: int,
                   percentile: float = NEG_PERCENTILE) -> torch.Tensor:
    """Indices of the ``num`` candidates farthest from the labels (NegLabel's NegMining).

    A candidate's closeness is the ``percentile`` quantile of its cosines to the K labels; the
    ``num`` least close candidates are kept, farthest first.

    Args:
        label_text: ``[K, d]`` label text embeddings.
        candidates: ``[L, d]`` candidate text embeddings.
        num: M, 1 <= M <= L.
        percentile: in [0, 1]; the official code uses 0.95.

    Returns:
        ``[M]`` long indices into ``candidates``.
    """
    if not 1 <= num <= len(candidates):
        raise LexiconError(f"cannot keep {num} negative labels out of {len(candidates)} candidates; "
                           f"use a num_negatives between 1 and {len(candidates)} or a larger lexicon")
    labels = l2n(label_text.float())
    closeness = torch.cat([  # [L]
        torch.quantile(l2n(c.float().to(labels.device)) @ labels.T, percentile, dim=-1)  # [chunk]
        for c in candidates.split(4096)])
    return torch.argsort(closeness, stable=True)[:num]


def generic_words(embeddings: torch.Tensor, share: float) -> torch.Tensor:
    """Indices of the ``round(share * L)`` most generic words of a lexicon, most generic first.

    A word's genericity is its mean cosine to the rest of the lexicon: hypernyms and descriptors
    ("geometric shape", "polygon", "symbol") sit close to every concept, so an image of any class
    matches them. They can never be a right "not in your list" answer, yet with a small closed
    lexicon kept whole (``fraction`` 1.0) nothing else removes them; NegLabel's own mining removes
    them only because it keeps the farthest 15% of a large lexicon. Vocabulary-independent: the
    same words are set aside for every vocabulary.

    Args:
        embeddings: ``[L, d]`` unit text embeddings of the lexicon.
        share: in [0, 1]; 0 returns no index.
    """
    count = int(round(share * len(embeddings)))
    if count == 0 or len(embeddings) < 2:
        return torch.empty(0, dtype=torch.long)
    e = l2n(embeddings.float())
    mean_cos = (e @ e.sum(0) - (e * e).sum(-1)) / (len(e) - 1)  # [L], O(L d), no [L, L] matrix
    return torch.argsort(mean_cos, descending=True, stable=True)[:count].cpu()


def _count(usable: int, fraction: float | None) -> int:
    """M: ``fraction`` of the usable words when set, else the paper's count (every word of a smaller
    lexicon, as the paper would keep all of its 10,000 if it had no more)."""
    return max(1, int(fraction * usable)) if fraction else min(NEG_COUNT, usable)


def _groups(num: int, n_groups: int, min_group: int, seed: int) -> torch.Tensor:
    """``[G, g]`` random groups of ``range(num)``, each of at least ``min_group`` negatives.

    G = min(n_groups, num // min_group), at least 1; the remainder ``num % G`` is dropped from the
    score (as the official code does). With the paper's 10,000 negatives this is its 100 groups of
    100. A negative that matches an image only lowers its own group's score, and fewer negatives per
    group raise every score, so groups never shrink below ``min_group`` (the paper's size): fewer
    negatives give fewer groups, and a lexicon under ``2 * min_group`` words one group (the plain score).
    """
    g_count, size = _group_shape(num, n_groups, min_group)
    order = torch.randperm(num, generator=torch.Generator().manual_seed(seed))
    return order[:g_count * size].view(g_count, size)  # [G, g]


def _group_shape(num: int, n_groups: int = NEG_GROUPS, min_group: int = NEG_MIN_GROUP) -> tuple[int, int]:
    """``(G, g)`` of :func:`_groups` for ``num`` negatives."""
    g_count = max(1, min(n_groups, num // max(1, min_group)))
    return g_count, num // g_count


def planned_numbers(lexicon: Lexicon, classnames: Sequence[str], settings: str = "lexicon") -> dict[str, Any]:
    """M, G and g that :meth:`NegativeLabels.fit` would use, without encoding the lexicon (e.g.
    timm's 20k words for a real CLIP, for ``bench/neglabel.py``'s table of the paper's numbers).

    Raises:
        LexiconError: the lexicon sets generic words aside (which ones depends on its embeddings:
            use :meth:`NegativeLabels.fit` and :meth:`NegativeLabels.settings` there).
    """
    own = lexicon if settings == "lexicon" else replace(lexicon, fraction=None, generic_share=0.0, threshold=None)
    if own.generic_share:
        raise LexiconError("this lexicon sets generic words aside; fit it to see its numbers")
    usable = len(_collisions(lexicon, classnames)[0])
    num = _count(usable, own.fraction)
    groups, size = _group_shape(num)
    return {"num_negatives": num, "groups": groups, "group_size": size, "usable": usable,
            "threshold": own.threshold or DEFAULT_NEG_THRESHOLD}


def _collisions(lexicon: Lexicon, classnames: Sequence[str]) -> tuple[list[int], tuple[str, ...]]:
    """Lexicon entries that are not a class name, and the class names that were lexicon words."""
    names = {class_key(c): c for c in classnames}
    keep, hit = [], {}
    for i, entry in enumerate(lexicon.entries):
        clash = [names[class_key(w)] for w in entry if class_key(w) in names]
        if clash:
            hit.update(dict.fromkeys(clash))
        else:
            keep.append(i)
    return keep, tuple(c for c in classnames if c in hit)


@dataclass(frozen=True, eq=False)  # tensors inside: compare words or embeddings explicitly
class NegativeLabels:
    """Negative labels mined for one vocabulary, ready to score image features.

    Attributes:
        words: the M negative words (``nearest`` indices of :meth:`score` point here).
        embeddings: ``[M, d]`` their unit text embeddings after the text map.
        id_embeddings: ``[K, d]`` the vocabulary's label embeddings after the text map.
        groups: ``[G, g]`` the grouping strategy's random groups (indices into ``words``).
        removed: class names that are also lexicon words, removed from the negatives.
        lexicon: the lexicon's source file.
        raw, raw_id: the embeddings before any text map (:meth:`with_text_map` starts from them).
        temperature: T of the score on cosines.
        threshold: accept when ``score >= threshold``.
        generic: the lexicon's most generic words, set aside for every vocabulary (:func:`generic_words`).
        usable: the lexicon's words left after removing class names and generic words (M's ceiling;
            None for hand-built negatives: M).
        percentile: the closeness quantile the words were mined with.
        settings_name: ``"lexicon"`` (its ``neglabel.json``) or ``"paper"`` (:data:`OFFICIAL`).
    """

    words: tuple[str, ...]
    embeddings: torch.Tensor
    id_embeddings: torch.Tensor
    groups: torch.Tensor
    removed: tuple[str, ...]
    lexicon: str
    raw: torch.Tensor
    raw_id: torch.Tensor
    temperature: float = NEG_TEMPERATURE
    threshold: float = DEFAULT_NEG_THRESHOLD
    generic: tuple[str, ...] = ()
    usable: int | None = None
    percentile: float = NEG_PERCENTILE
    settings_name: str = "lexicon"

    @classmethod
    @torch.no_grad()
    def fit(cls, backbone: Backbone, classnames: Sequence[str],
            text_map: Callable[[torch.Tensor], torch.Tensor] | None = None, *,
            lexicon: Lexicon | str | Path | None = None, settings: str = "lexicon", num_negatives: int | None = None,
            fraction: float | None = None, generic_share: float | None = None, threshold: float | None = None,
            percentile: float = NEG_PERCENTILE, n_groups: int = NEG_GROUPS, min_group: int = NEG_MIN_GROUP,
            temperature: float = NEG_TEMPERATURE, seed: int = 0, cache_dir: str | Path | None = DEFAULT_CACHE_DIR,
            progress: Callable[[int, int], Any] | None = None,
            lexicon_embeddings: torch.Tensor | None = None) -> NegativeLabels:
        """Mine the negative labels of a vocabulary.

        Args:
            backbone: the frozen backbone (its lexicon is :func:`lexicon_path` unless given).
            classnames: the vocabulary (K >= 1 names).
            text_map: a class-agnostic head's text map (e.g. a CRoFT head's ``adapt_text``),
                applied to labels and negatives alike; None = normalised CLIP text.
            lexicon: a :class:`Lexicon` or a lexicon file; default the backbone's.
            settings: ``"lexicon"``: the lexicon's own ``neglabel.json`` fills what is not given;
                ``"paper"``: it is ignored, and the paper's settings apply (:data:`OFFICIAL`: M =
                ``min(NEG_COUNT, usable words)``, no generic words set aside, threshold 0.01).
            num_negatives: M; default ``fraction`` of the usable words, else the paper's
                ``min(NEG_COUNT, usable words)`` (every word of a smaller lexicon).
            fraction: share of the usable words kept when ``num_negatives`` is None; default the
                lexicon's own (``neglabel.json``, ``settings="lexicon"``), else the paper's count.
            generic_share: share of the lexicon's most generic words never used as negatives
                (:func:`generic_words`); default the lexicon's own, else 0.
            threshold: accept when ``score >= threshold``; default the lexicon's own, else
                :data:`DEFAULT_NEG_THRESHOLD`.
            percentile: closeness quantile of :func:`mine_negatives`.
            n_groups: the grouping strategy's G, at most ``M // min_group`` (at least 1).
            min_group: the fewest negatives in a group (the paper's 100).
            temperature: T of the score on cosines.
            seed: seeds the random groups.
            cache_dir: text cache root for the lexicon and the labels (None disables it).
            progress: ``progress(done, total)`` while the lexicon is encoded.
            lexicon_embeddings: the lexicon's embeddings ``[L, d]`` when already at hand (shipped
                with an app: :func:`load_lexicon_embeddings`); default: :func:`encode_lexicon`.

        Raises:
            LexiconError: empty lexicon, an unknown ``settings``, or fewer words than M once the
                class names (and the generic words) are removed.
        """
        classnames = [str(c) for c in classnames]
        if not classnames:
            raise LexiconError("the vocabulary is empty; give at least one class name")
        if settings not in SETTINGS:
            raise LexiconError(f"settings must be one of {SETTINGS}, got {settings!r}")
        if not isinstance(lexicon, Lexicon):
            lexicon = read_lexicon(lexicon if lexicon is not None else lexicon_path(backbone))
        own = lexicon if settings == "lexicon" else replace(lexicon, fraction=None, generic_share=0.0, threshold=None)
        all_words = lexicon.words
        keep, removed = _collisions(lexicon, classnames)
        if removed:
            logger.info("class names also in the lexicon, removed from the negatives: %s", ", ".join(removed))
        lex = lexicon_embeddings if lexicon_embeddings is not None else \
            encode_lexicon(backbone, lexicon, cache_dir=cache_dir, progress=progress)
        generic_share = own.generic_share if generic_share is None else generic_share
        generic = generic_words(lex, generic_share).tolist()  # the same for every vocabulary
        keep = sorted(set(keep) - set(generic))
        if num_negatives is None:
            num_negatives = _count(len(keep), fraction or own.fraction)
        if not keep or num_negatives > len(keep):
            raise LexiconError(f"lexicon {lexicon.source} has {len(keep)} usable words (after removing "
                               f"{len(removed)} class names and {len(generic)} generic words), fewer than "
                               f"the {num_negatives} negative labels asked for; use a larger lexicon or a "
                               f"smaller num_negatives")
        keep_t = torch.as_tensor(keep, dtype=torch.long, device=lex.device)
        raw_id = build_text_classifier(backbone, classnames, NEG_TEMPLATES, cache_dir=cache_dir)
        chosen = keep_t[mine_negatives(raw_id, lex[keep_t], num_negatives, percentile)]
        words = tuple(all_words[i] for i in chosen.tolist())
        threshold = threshold if threshold is not None else own.threshold or DEFAULT_NEG_THRESHOLD
        negs = cls(words=words, embeddings=lex[chosen], id_embeddings=raw_id, removed=removed,
                   groups=_groups(len(words), n_groups, min_group, seed), lexicon=lexicon.source,
                   raw=lex[chosen], raw_id=raw_id, temperature=temperature, threshold=threshold,
                   generic=tuple(all_words[i] for i in generic), usable=len(keep), percentile=percentile,
                   settings_name=settings)
        if len(keep) < NEG_COUNT and len(words) == len(keep):
            logger.info("%s", negs.settings()["note"])
        return negs.with_text_map(text_map)

    def settings(self) -> dict[str, Any]:
        """The project's numbers for these negatives, keyed as :data:`OFFICIAL`, with a ``note``
        saying where they differ from the paper's and why (printed beside :data:`OFFICIAL`)."""
        count, size = self.groups.shape
        usable = len(self.words) if self.usable is None else self.usable
        mine = {"num_negatives": len(self.words), "groups": int(count), "group_size": int(size),
                "percentile": self.percentile, "temperature": self.temperature, "threshold": self.threshold,
                "generic_words": len(self.generic), "lexicon": f"{lexicon_label(self.lexicon)}, "
                                                              f"{usable} usable words"}
        notes = []
        if len(self.words) < NEG_COUNT:
            notes.append(f"the lexicon has {usable} usable words, fewer than the paper's {NEG_COUNT:,}: "
                         + ("all are used" if len(self.words) == usable else f"{len(self.words)} are used"))
        if count < NEG_GROUPS:
            notes.append(f"{count} group(s) of {size} instead of {NEG_GROUPS} groups of {OFFICIAL['group_size']} "
                         f"(smaller groups would each raise the score: docs/NEGLABEL.md, deviation 6)")
        if self.generic:
            notes.append(f"{len(self.generic)} generic words set aside (the lexicon's neglabel.json)")
        return {**mine, "settings": self.settings_name, "note": "; ".join(notes) or "the paper's numbers"}

    def with_text_map(self, text_map: Callable[[torch.Tensor], torch.Tensor] | None) -> NegativeLabels:
        """The same negatives seen through a head's text map (None: normalised CLIP text)."""
        fn = text_map or l2n
        with torch.no_grad():
            return replace(self, embeddings=l2n(fn(self.raw)), id_embeddings=l2n(fn(self.raw_id)))

    @torch.no_grad()
    def score(self, image_features: torch.Tensor,
              cosines: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """NegLabel scores and the nearest negative word of each image.

        Args:
            image_features: ``[N, d]`` image features as the head embeds them (``model.embed_image``;
                raw CLIP features for zero-shot; normalised here).
            cosines: ``[N, K]`` the head's own cosines to its class texts, if they differ from the
                cosines to :attr:`id_embeddings` (e.g. a template ensemble); default computed.

        Returns:
            ``(scores [N] in (0, 1), nearest [N] long indices into words)``.
        """
        z = l2n(image_features.float())
        neg = z @ self.embeddings.to(z.device).T  # [N, M]
        if cosines is None:
            cosines = z @ self.id_embeddings.to(z.device).T  # [N, K]
        return neglabel(cosines, neg, self.temperature, self.groups), neg.argmax(dim=-1)

    def accept(self, scores: Any) -> np.ndarray:
        """True where ``score >= threshold`` (in-distribution)."""
        arr = scores.detach().cpu().numpy() if hasattr(scores, "detach") else np.asarray(scores)
        return arr >= self.threshold
