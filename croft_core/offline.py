"""Fail fast without a network: is the Hugging Face Hub usable from here?

Without these checks, huggingface_hub retries for about 20 s before giving up on a machine with no
network; with them, loading code fails at once with a message that says what to do.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

_PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


def hub_offline() -> bool:
    """True when offline mode is set (``HF_HUB_OFFLINE=1``, read by huggingface_hub at import)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def hub_unreachable_reason() -> str | None:
    """Why the Hub cannot be reached (``None`` when it may be): offline mode, or its host name does
    not resolve. Behind a proxy the proxy resolves names, so only offline mode counts."""
    if hub_offline():
        return "HF_HUB_OFFLINE=1 is set"
    if any(os.environ.get(v) for v in _PROXY_VARS):
        return None
    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname
    if not host:
        return None
    try:
        socket.getaddrinfo(host, 443)
    except OSError as err:
        return f"{host} does not resolve ({err})"
    return None
