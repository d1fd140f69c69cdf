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

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime

from prompts.cache import LockedLRU
from prompts.compiler import CompiledLayer, compile_layer
from prompts.errors import InvalidLayers, InvalidVariables, PromptError, TemplateInvalid
from prompts.guarantees import Guaranteed, check_guarantees
from prompts.layering import check_locks, ordered, plan
from prompts.limits import RenderBudget, RenderLimits
from prompts.model import (
    UNSAVED_VERSION,
    ComposedPrompt,
    Layer,
    LayerKind,
    PromptVariables,
    SectionSpec,
    mark_layer,
)
from prompts.render import render_plan
from prompts.sandbox import PromptEnvironment
from prompts.sanitize import new_block_id
from prompts.sections import split_sections

SAMPLE_VARIABLES = PromptVariables(
    org={"id": "org_example", "name": "Example Org", "plan": "business"},
    user={"id": "user_example", "name": "Sample User", "email": "sample@example.com"},
    session={"topic": "sample topic"},
)
# What every caller has (see prompts.guarantees): the variables a layer is test-rendered with.
GUARANTEED_ORG = {"id": "org_example"}
GUARANTEED_USER = {"id": "user_example", "roles": ["member"]}


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
        below: Sequence[Layer] = (),
        session_variables: Mapping[str, object] | None = None,
    ) -> tuple[SectionSpec, ...]:
        """Check unsaved source: syntax, sandbox policy, size, locks set by ``above``, and that
        it composes for every caller.

        "Every caller" means one with only the guaranteed variables (``org.id``, ``user.id``,
        ``user.roles``, ``today``; no session variables, or for a session's own prompt those in
        ``session_variables``, all of them when that is ``None``): an optional variable used
        unguarded is refused (:class:`~prompts.errors.NotGuaranteed`), then the text is
        rendered between ``above`` and ``below`` with those variables, under the render budget.
        Raises a :class:`~prompts.errors.PromptError` with line and column.
        """
        unsaved = Layer(kind, layer_id, UNSAVED_VERSION, source)
        candidate = compile_layer(self._environment, unsaved)
        earlier, later = ordered(above), ordered(below)
        if any(layer.kind >= kind for layer in earlier):
            raise InvalidLayers("'above' may only hold layers composed before this one")
        if any(layer.kind <= kind for layer in later):
            raise InvalidLayers("'below' may only hold layers composed after this one")
        check_locks(candidate, plan([self._compile(layer) for layer in earlier]))
        session = {} if kind is not LayerKind.SESSION else session_variables
        self._check_guarantees(unsaved, Guaranteed.with_session(session))
        if session is not None:
            self._trial(candidate, earlier, later, session)
        return candidate.specs

    def _check_guarantees(self, layer: Layer, guaranteed: Guaranteed) -> None:
        try:
            for section in split_sections(layer.source, self.limits):
                tree = self._environment.parse(section.body)
                check_guarantees(tree, guaranteed, section.body, section.line_offset)
        except PromptError as exc:
            mark_layer(exc, layer.ref)
            raise

    def _trial(
        self,
        candidate: CompiledLayer,
        above: Sequence[Layer],
        below: Sequence[Layer],
        session: Mapping[str, object],
    ) -> None:
        """Render ``candidate`` as composition would, for a caller with only the guaranteed
        variables; a failure in another layer is that layer's, so it is tried alone then."""
        variables = PromptVariables(org=GUARANTEED_ORG, user=GUARANTEED_USER, session=session)
        self._check_variables(variables)
        chain = [self._compile(layer) for layer in above]
        chain += [compiled for layer in below if (compiled := self._compiled_or_none(layer))]
        chain.insert(len(above), candidate)
        try:
            self._render(chain, variables, self._clock())
        except PromptError as exc:
            if exc.layer == candidate.ref.kind.label:
                raise
            self._render([candidate], variables, self._clock())

    def _compiled_or_none(self, layer: Layer) -> CompiledLayer | None:
        try:
            return self._compile(layer)
        except TemplateInvalid:
            return None

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
