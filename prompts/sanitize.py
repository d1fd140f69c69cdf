"""Cleaning untrusted text and fencing it into data blocks that cannot be closed from inside.

Every string a template prints with ``{{ ... }}`` is treated as data, because variables come
from users and a string computed from them (``user.name|upper``) is no more trusted than the
value itself. Such text is:

1. cleaned (:func:`clean`): the Unicode tag block U+E0000-U+E007F, zero-width characters,
   bidi controls (U+202A-U+202E, U+2066-U+2069, LRM/RLM/ALM), variation selectors used for
   "emoji smuggling" (U+E0100-U+E01EF), invisible fillers, and every other Cc/Cf/Cs/Cn
   character except ``\\n`` and ``\\t`` are removed; U+2028/U+2029 become ``\\n``;
2. escaped (:func:`fence`): every ``<`` that starts something reading as our tag
   (``<user_data``, ``</user_data``, any case, spaces allowed, also the full-width and small
   less-than signs) becomes ``&lt;``. Cleaning runs first, so a zero-width character cannot
   hide a tag from the escape and then vanish;
3. wrapped as ``<user_data id="N">...</user_data id="N">`` where ``N`` is 96 random bits drawn
   per composition and never visible to templates.

Step 2 alone guarantees the content of a block never contains a closing tag, whatever the
attacker knows; the random ``N`` also lets a reader tell our delimiters from look-alikes typed
literally into a template by a layer author who cannot know ``N`` when saving.
"""

from __future__ import annotations

import re
import secrets
import unicodedata
from dataclasses import dataclass

DATA_TAG = "user_data"

# Characters that are printable to str.isprintable() yet invisible or used to hide text.
_INVISIBLE_PRINTABLE = (
    "\u034f"  # combining grapheme joiner
    "\u115f\u1160\u3164\uffa0"  # Hangul fillers
    "\u17b4\u17b5"  # Khmer inherent vowels
    "\U000e0100-\U000e01ef"  # variation selectors 17-256
)
# Explicit list of the well-known offenders (fast path); the category test below catches the rest.
_KNOWN_BAD = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e"
    "\u2060-\u206f\ufeff\ufff9-\ufffb\U000e0000-\U000e007f" + _INVISIBLE_PRINTABLE + "]"
)
_LINE_SEPARATORS = re.compile("[\u2028\u2029]")
_REMOVED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Cn"})
_TAG_OPENER = re.compile(r"[<\uff1c\ufe64](?=\s*/?\s*" + DATA_TAG + ")", re.IGNORECASE)
_NONCE_BYTES = 12


@dataclass(frozen=True, slots=True)
class Cleaned:
    text: str
    removed: int


def clean(text: str) -> Cleaned:
    """Remove invisible and control characters (keeping ``\\n`` and ``\\t``)."""
    if text.isprintable() and not _KNOWN_BAD.search(text):
        return Cleaned(text, 0)
    text = _LINE_SEPARATORS.sub("\n", text)
    kept = _KNOWN_BAD.sub("", text)
    if not kept.replace("\n", "").replace("\t", "").isprintable():
        kept = "".join(ch for ch in kept if _keep(ch))
    return Cleaned(kept, len(text) - len(kept))


def _keep(ch: str) -> bool:
    return ch in "\n\t" or unicodedata.category(ch) not in _REMOVED_CATEGORIES


def first_invisible(text: str) -> int | None:
    """Index of the first character :func:`clean` would remove, or None."""
    if text.isprintable() and not _KNOWN_BAD.search(text):
        return None
    for index, ch in enumerate(text):
        if ch not in "\n\t\r" and (_KNOWN_BAD.match(ch) or not _keep(ch)):
            return index
    return None


def new_block_id() -> str:
    """A fresh, unguessable data-block id (hex, so JSON and cleaning leave it intact)."""
    return secrets.token_hex(_NONCE_BYTES)


def fence(text: str, block_id: str) -> str:
    """Wrap already-cleaned text in a data block its content cannot close."""
    escaped = _TAG_OPENER.sub("&lt;", text)
    return f'<{DATA_TAG} id="{block_id}">{escaped}</{DATA_TAG} id="{block_id}">'
