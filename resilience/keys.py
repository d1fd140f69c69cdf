"""Keys built from identifiers that callers choose (organisation, user, provider, tool).

Joining raw identifiers with a separator is ambiguous: ``corp:eng`` + ``carol`` and ``corp`` +
``eng:carol`` would both give ``corp:eng:carol``. Every part is percent-encoded first, so no
encoded part contains the separator and distinct tuples always give distinct keys.
"""

from __future__ import annotations

from urllib.parse import quote

SEPARATOR = ":"


def encode_part(part: str) -> str:
    # surrogatepass: a lone surrogate still encodes (injectively) instead of raising.
    return quote(part, safe="", errors="surrogatepass")


def key_of(namespace: str, *identifiers: str) -> str:
    """One unambiguous key for ``identifiers`` under a fixed ``namespace`` (ours, not a caller's,
    so it is kept as written)."""
    return SEPARATOR.join([namespace, *(encode_part(part) for part in identifiers)])
