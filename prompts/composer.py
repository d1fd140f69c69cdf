"""The entry point: :class:`PromptComposer` composes, validates and previews layers.

Two caches, both bounded LRUs:

* compiled layers, keyed by :func:`compiled_key`: ``(kind, layer_id, version)`` and the digest
  of the source; a layer that fails to compile is cached as its error, since the same version
  always fails the same way;
* composed prompts, keyed by :func:`composed_key`: the compiled keys of all layers used, the
  date and the digest of the variables. The date is part of the key because templates can
  print it: a prompt composed yesterday is never served today.

The caches are shared by every tenant of a process, so keys are nested tuples (never joined
strings, which could collide) and carry the source digest: a layer whose id collides with
another's still cannot be served the other's compiled text or composed output.

No clock, randomness or environment is read except through the ``clock`` and ``block_ids``
arguments, so tests (and the gateway) control both.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime

from prompts.cache import LockedLRU
from prompts.compiler import CompiledLayer, compile_layer
from prompts.compose import check_locks, ordered, plan
from prompts.errors import InvalidLayers, InvalidVariables, TemplateInvalid
from prompts.limits import RenderBudget, RenderLimits
from prompts.model import ComposedPrompt, Layer, LayerKind, PromptVariables, SectionSpec
from prompts.render import render_plan
from prompts.sandbox import PromptEnvironment
from prompts.sanitize import new_block_id

UNSAVED_VERSION = "unsaved"
SAMPLE_VARIABLES = PromptVariables(
    org={"id": "org_example", "name": "Example Org", "plan": "business"},
    user={"id": "user_example", "name": "Sample User", "email": "sample@example.com"},
    session={"topic": "sample topic"},
)


def utc_today() -> date:
    return datetime.now(UTC).date()


def compiled_key(layer: Layer) -> Hashable:
    return (layer.ref, layer.digest)


def composed_key(chain: Sequence[Layer], day: date, variables: PromptVariables) -> Hashable:
    return (tuple([compiled_key(layer) for layer in chain]), day.toordinal(), variables.digest)


@dataclass(frozen=True, slots=True)
class ComposerStats:
    compilations: int
    renders: int
    compiled_hits: int
    composed_hits: int
    composed_misses: int


class PromptComposer:
    def __init__(
        self,
        *,
        limits: RenderLimits | None = None,
        compiled_cache_size: int = 1024,
        composed_cache_size: int = 4096,
        clock: Callable[[], date] = utc_today,
        block_ids: Callable[[], str] = new_block_id,
    ) -> None:
        self.limits = limits or RenderLimits()
        self._environment = PromptEnvironment(self.limits)
        self._compiled: LockedLRU[CompiledLayer | TemplateInvalid] = LockedLRU(compiled_cache_size)
        self._composed: LockedLRU[ComposedPrompt] = LockedLRU(composed_cache_size)
        self._clock = clock
        self._block_ids = block_ids
        self._compilations = 0
        self._renders = 0

    def compose(
        self, layers: Sequence[Layer], variables: PromptVariables, *, today: date | None = None
    ) -> ComposedPrompt:
        """Compose the given layers (any subset of kinds, any order) with ``variables``."""
        day = today or self._clock()
        self._check_variables(variables)
        chain = ordered(layers)
        key = composed_key(chain, day, variables)
        cached = self._composed.get(key)
        if cached is not None:
            return cached
        result = self._render([self._compile(layer) for layer in chain], variables, day)
        self._composed.put(key, result)
        return result

    def validate(
        self,
        source: str,
        *,
        kind: LayerKind,
        layer_id: str = "unsaved",
        above: Sequence[Layer] = (),
    ) -> tuple[SectionSpec, ...]:
        """Check unsaved source: syntax, sandbox policy, size, and locks set by ``above``.

        Raises :class:`~prompts.errors.TemplateInvalid` (or a subclass) with line and column.
        """
        candidate = compile_layer(self._environment, Layer(kind, layer_id, UNSAVED_VERSION, source))
        earlier = ordered(above)
        if any(layer.kind >= kind for layer in earlier):
            raise InvalidLayers("'above' may only hold layers composed before this one")
        check_locks(candidate, plan([self._compile(layer) for layer in earlier]))
        return candidate.specs

    def preview(
        self,
        source: str,
        *,
        kind: LayerKind,
        layers: Sequence[Layer] = (),
        variables: PromptVariables = SAMPLE_VARIABLES,
        today: date | None = None,
    ) -> ComposedPrompt:
        """Compose with unsaved ``source`` in place of the layer of ``kind``; nothing is cached."""
        self._check_variables(variables)
        unsaved = Layer(kind, "preview", UNSAVED_VERSION, source)
        chain = ordered([layer for layer in layers if layer.kind != kind] + [unsaved])
        compiled = [
            compile_layer(self._environment, layer) if layer is unsaved else self._compile(layer)
            for layer in chain
        ]
        return self._render(compiled, variables, today or self._clock())

    @property
    def stats(self) -> ComposerStats:
        return ComposerStats(
            compilations=self._compilations,
            renders=self._renders,
            compiled_hits=self._compiled.stats.hits,
            composed_hits=self._composed.stats.hits,
            composed_misses=self._composed.stats.misses,
        )

    def clear_caches(self) -> None:
        self._compiled.clear()
        self._composed.clear()

    def _compile(self, layer: Layer) -> CompiledLayer:
        key = compiled_key(layer)
        compiled = self._compiled.get(key)
        if compiled is None:
            self._compilations += 1
            try:
                compiled = compile_layer(self._environment, layer)
            except TemplateInvalid as exc:
                compiled = exc
            self._compiled.put(key, compiled)
        if isinstance(compiled, TemplateInvalid):
            raise compiled.with_traceback(None)  # don't grow one traceback per raise
        return compiled

    def _render(
        self, layers: Sequence[CompiledLayer], variables: PromptVariables, day: date
    ) -> ComposedPrompt:
        self._renders += 1
        budget = RenderBudget(self.limits, self._block_ids())
        return render_plan(plan(layers), layers, variables, day, budget)

    def _check_variables(self, variables: PromptVariables) -> None:
        if len(variables.canonical) > self.limits.max_variables_chars:
            raise InvalidVariables(
                f"variables exceed {self.limits.max_variables_chars} characters of JSON"
            )
