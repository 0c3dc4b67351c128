"""The library's error base: every error croft_core raises on purpose derives from :class:`CroftError`.

The ``croft`` command prints such errors as one ``croft: error: ...`` line (``croft --debug`` adds
the traceback); any other exception is a bug and propagates with its traceback. Subclasses also
derive from the matching built-in type (``FileNotFoundError``, ``ValueError``, ...) so callers that
catch those keep working.
"""

from __future__ import annotations


class CroftError(Exception):
    """Base of the library's own errors; the message says what went wrong and what to do."""


class HubError(CroftError, RuntimeError):
    """The Hugging Face Hub cannot be used for this: offline, unreachable, or it refused the request."""


class UsageError(CroftError, ValueError):
    """A command-line value that cannot be used (a malformed ``KEY=VALUE``, an unknown grid key...)."""


__all__ = ["CroftError", "HubError", "UsageError"]
