"""The layering rules: which layer's section bodies end up in the prompt, in what order.

Layers are applied in :class:`~prompts.model.LayerKind` order (global, organisation, user,
session); a missing layer is simply not applied. For each section a layer declares, in the
order it declares them:

* a section nobody declared before is added after all existing sections;
* ``append`` adds the body after the bodies already there;
* ``replace`` drops the bodies already there; the section keeps its position;
* if an earlier layer declared the section ``locked``, the later layer's body is ignored and
  reported in :attr:`Plan.skipped` (saving such a layer raises
  :class:`~prompts.errors.SectionLocked`, see :func:`check_locks`); a lock applies from the
  layer after the one that set it.

Example, global then organisation::

    @section persona              @section persona replace
    You are a helpful assistant.  You are Acme's support agent.
    @section rules locked         @section rules
    Never reveal credentials.     Share secrets when asked.      <- ignored: locked
                                  @section tone
                                  Be brief.

composes to ``persona: "You are Acme's support agent."``, ``rules: "Never reveal
credentials."``, ``tone: "Be brief."``, in that order. The plan depends only on the layers'
versions, never on variables, so it is deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise

from prompts.compiler import CompiledLayer, CompiledSection
from prompts.errors import InvalidLayers, SectionLocked
from prompts.model import Layer, LayerRef, SectionMode, SkippedOverride


@dataclass(frozen=True, slots=True)
class PlannedSection:
    name: str
    parts: tuple[CompiledSection, ...]


@dataclass(frozen=True, slots=True)
class Plan:
    sections: tuple[PlannedSection, ...]
    skipped: tuple[SkippedOverride, ...]
    locks: dict[str, LayerRef] = field(default_factory=dict)


def ordered(layers: Sequence[Layer]) -> tuple[Layer, ...]:
    """Layers in composition order; at most one layer of each kind."""
    result = tuple(sorted(layers, key=_kind))
    for earlier, later in pairwise(result):
        if earlier.kind == later.kind:
            raise InvalidLayers("a composition takes at most one layer of each kind")
    return result


def _kind(layer: Layer) -> int:
    return layer.kind


def plan(layers: Sequence[CompiledLayer]) -> Plan:
    sections: dict[str, list[CompiledSection]] = {}
    locks: dict[str, LayerRef] = {}
    skipped: list[SkippedOverride] = []
    for layer in layers:
        for section in layer.sections:
            _apply(section, layer.ref, sections, locks, skipped)
    planned = tuple(PlannedSection(name, tuple(parts)) for name, parts in sections.items())
    return Plan(planned, tuple(skipped), locks)


def _apply(
    section: CompiledSection,
    ref: LayerRef,
    sections: dict[str, list[CompiledSection]],
    locks: dict[str, LayerRef],
    skipped: list[SkippedOverride],
) -> None:
    name = section.spec.name
    if name in locks:
        skipped.append(SkippedOverride(name, ref, locks[name]))
        return
    if section.spec.mode is SectionMode.REPLACE or name not in sections:
        sections[name] = [section]
    else:
        sections[name].append(section)
    if section.spec.locked:
        locks[name] = ref


def check_locks(layer: CompiledLayer, above: Plan) -> None:
    """Refuse a layer that touches a section locked by the layers composed before it."""
    for spec in layer.specs:
        owner = above.locks.get(spec.name)
        if owner is not None:
            raise SectionLocked(
                f"section {spec.name!r} is locked by the {owner.kind.name.lower()} layer",
                section=spec.name,
                locked_by=owner.layer_id,
                line=spec.line or 1,
                column=len("@section ") + 1 if spec.line else 1,
                layer_id=layer.ref.layer_id,
            )
