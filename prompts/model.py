"""Plain values passed into and returned from the composer.

A :class:`Layer` is what the storage layer keeps: a kind, an id, an immutable version and the
source text. ``(kind, layer_id, version)`` must identify one source for ever (bump the version
on every edit), and a layer id must name one owner unambiguously (the gateway percent-encodes
each tenant identifier in it). The caches do not rely on that alone: their keys also carry a
digest of the source, so two layers with different text never share a cache entry even if a
caller gave them the same id and version.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any, NamedTuple

from prompts.errors import InvalidVariables, PromptError

# The version of text being validated or previewed, which is not saved yet.
UNSAVED_VERSION = "unsaved"


class LayerKind(enum.IntEnum):
    """Composition order: a higher value is composed later and may refine earlier ones."""

    GLOBAL = 0
    ORGANIZATION = 1
    USER = 2
    SESSION = 3

    @property
    def label(self) -> str:
        """How people (and the gateway's API) name layers of this kind in messages."""
        return "organization" if self is LayerKind.ORGANIZATION else self.name.lower()


def mark_layer(exc: PromptError, ref: LayerRef) -> None:
    """Name ``ref`` in ``exc``: its version only when people know it (a saved layer's number;
    not a session prompt's digest, not unsaved text)."""
    unversioned = ref.kind is LayerKind.SESSION or ref.version == UNSAVED_VERSION
    exc.in_layer(ref.layer_id, ref.kind.label, None if unversioned else ref.version)


class SectionMode(enum.Enum):
    APPEND = "append"
    REPLACE = "replace"


class LayerRef(NamedTuple):
    """Which version of which layer a composition used (a tuple: cheap to hash as a key)."""

    kind: LayerKind
    layer_id: str
    version: str


@dataclass(frozen=True, slots=True)
class Layer:
    kind: LayerKind
    layer_id: str
    version: str
    source: str = field(repr=False)
    # Computed once: the composer builds cache keys from them on every call.
    ref: LayerRef = field(init=False, repr=False, compare=False)
    digest: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ref", LayerRef(self.kind, self.layer_id, self.version))
        source = self.source.encode("utf-8", "surrogatepass")
        object.__setattr__(self, "digest", hashlib.blake2b(source, digest_size=16).digest())


@dataclass(frozen=True, slots=True)
class SectionSpec:
    """A section header as declared in a layer; ``line`` is where the header is (0: implicit)."""

    name: str
    mode: SectionMode
    locked: bool
    line: int
    column: int = 1


@dataclass(frozen=True, slots=True)
class SkippedOverride:
    """A section a later layer tried to change although an earlier layer had locked it."""

    section: str
    layer: LayerRef
    locked_by: LayerRef


@dataclass(frozen=True, slots=True)
class ComposedPrompt:
    text: str
    layers: tuple[LayerRef, ...]
    sections: tuple[str, ...]
    skipped: tuple[SkippedOverride, ...]
    # Invisible/control characters removed from variable values while rendering.
    stripped_chars: int
    today: date
    data_block_id: str


def _canonical_json(value: object) -> str:
    try:
        return json.dumps(
            value, sort_keys=True, ensure_ascii=False, allow_nan=False, separators=(",", ":")
        )
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidVariables(f"variables must be plain JSON data: {exc}") from exc


@dataclass(frozen=True, slots=True)
class PromptVariables:
    """Organisation and user attributes and session variables: data, never template source.

    The canonical JSON form is computed once; it is both the cache identity (through
    :attr:`digest`) and, decoded again, what templates see, so no object other than plain
    JSON data (no callables, no shared references) can reach a template.
    """

    org: Mapping[str, Any] = field(default_factory=dict)
    user: Mapping[str, Any] = field(default_factory=dict)
    session: Mapping[str, Any] = field(default_factory=dict)
    canonical: str = field(init=False, repr=False, compare=False)
    digest: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        text = _canonical_json({"org": self.org, "user": self.user, "session": self.session})
        object.__setattr__(self, "canonical", text)
        digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=32)
        object.__setattr__(self, "digest", digest.digest())

    def decoded(self) -> dict[str, Any]:
        """A fresh, plain-data copy of the variables for one render."""
        data: dict[str, Any] = json.loads(self.canonical)
        return data
