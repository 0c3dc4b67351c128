"""Which Hugging Face token a Hub call carries: the one place that decides (no confused deputy).

A Space may hold its operator's token (the ``HF_TOKEN`` secret) to read a gated backbone or serve
private checkpoints. ``huggingface_hub`` and ``datasets`` send that token with *every* call unless
told otherwise, so a Hub id a visitor types would be fetched with the operator's rights: a visitor
could train on, or load, any private or gated repository the operator can read (a confused deputy).
Every Hub call of the app therefore says whom it is made for, and :func:`hub_access` gives the token:

- :data:`VISITOR` (a Hub dataset in Train or ``/finetune``, a Hub model id in Classify, Compare and
  the Lab): ``token=False`` (no token at all), or the visitor's own token where they gave one. The
  server's Hugging Face cache is the operator's too: a visitor's id is first answered by the Hub
  with the visitor's credentials, and while the Hub cannot answer (offline) it is refused
  (:meth:`HubAccess.require_hub`), never read from the cache;
- :data:`OPERATOR` (the checkpoints in ``CROFT_CHECKPOINTS``, the Space's backbone, the lexicon
  cache): ``token=None``, ``huggingface_hub``'s default (``HF_TOKEN``, else the logged-in token).

A visitor's id must also be a Hub id (:func:`~croft_app.service.security.is_hub_id`) and is passed
to ``datasets`` as ``hf://datasets/ORG/NAME`` (:func:`hub_dataset_path`): ``datasets.load_dataset``
reads a plain ``ORG/NAME`` from a local folder of that name when one exists, an ``hf://`` path
only from the Hub.
"""

from __future__ import annotations

from dataclasses import dataclass

from croft_core import offline
from croft_core.errors import HubError
from croft_app.service.security import AccessRefused, is_hub_id

__all__ = ["OPERATOR", "VISITOR", "HubAccess", "hub_access", "hub_dataset_path"]

VISITOR = "visitor"
OPERATOR = "operator"
HUB_DATASETS = "hf://datasets/"


@dataclass(frozen=True, repr=False)
class HubAccess:
    """Whom a Hub call is made for and the ``token`` argument it passes to the Hub client.

    Attributes:
        caller: :data:`VISITOR` or :data:`OPERATOR`.
        token: ``False`` (no token), a visitor's own token, or ``None`` (the operator's default);
            never shown in a ``repr``, so never logged.
    """

    caller: str
    token: str | bool | None = None

    def __repr__(self) -> str:
        token = "<visitor's token>" if isinstance(self.token, str) else repr(self.token)
        return f"HubAccess(caller={self.caller!r}, token={token})"

    @property
    def trusts_cache(self) -> bool:
        """Whether the server's Hub cache may answer for this caller when the Hub cannot."""
        return self.caller == OPERATOR

    def require_hub(self, what: str, reason: str | None = None, hint: str = "") -> None:
        """Refuse a visitor's request while the Hub cannot answer it (offline, or its host name
        does not resolve: :func:`~croft_core.offline.hub_unreachable_reason`, or ``reason``).

        Args:
            what: the request, as the message names it (``"model 'org/name'"``).
            reason: why the Hub is unreachable, if the caller knows; None: ask.
            hint: what the visitor can do instead, appended to the message.

        Raises:
            HubError: a visitor's call and the Hub is unreachable.
        """
        if self.trusts_cache:
            return
        reason = reason or offline.hub_unreachable_reason()
        if reason is not None:
            raise HubError(f"{what} cannot be checked on the Hub: it is unreachable from this server "
                           f"({reason.split(' (')[0][:80]}), and a Hub id a visitor names is read only "
                           f"from the Hub, never from this server's cache{hint}")


def hub_access(caller: str, visitor_token: str | None = None) -> HubAccess:
    """The access a Hub call gets: the rule of this module, in one place.

    Args:
        caller: :data:`VISITOR` (an id a visitor chose) or :data:`OPERATOR` (the server's own
            configuration).
        visitor_token: a token the visitor gave (a visitor's call only); blank means none.

    Raises:
        ValueError: an unknown caller, or a visitor's token on an operator call.
    """
    token = (visitor_token or "").strip() if isinstance(visitor_token, str) else visitor_token
    if caller == OPERATOR:
        if token:
            raise ValueError("an operator call uses the operator's token, not a visitor's")
        return HubAccess(OPERATOR, None)  # huggingface_hub's default: HF_TOKEN or the login
    if caller == VISITOR:
        return HubAccess(VISITOR, token if isinstance(token, str) and token else False)
    raise ValueError(f"caller must be {VISITOR!r} or {OPERATOR!r}, got {caller!r}")


def hub_dataset_path(repo_id: str) -> str:
    """``hf://datasets/ORG/NAME`` of a checked Hub id: ``datasets`` resolves it on the Hub only.

    Raises:
        AccessRefused: ``repo_id`` is not a Hub id ``ORG/NAME``.
    """
    if not is_hub_id(repo_id):
        raise AccessRefused(f"{repo_id[:100]!r} is not a Hub id; give one as ORG/NAME")
    return HUB_DATASETS + repo_id
