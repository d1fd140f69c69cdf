"""The Jinja2 environment every layer is compiled and rendered in.

:class:`PromptEnvironment` is an ``ImmutableSandboxedEnvironment`` with ``StrictUndefined``,
no loader (so no filesystem and no ``include``/``import``/``extends`` target), and these
tightenings, each because the stock sandbox stops attribute escapes but not the rest:

* every arithmetic operator is intercepted (``intercepted_binops``/``intercepted_unops``) so
  ``'A'*10**8``, ``2**10**9`` and list repetition are refused before Python builds them, and
  printf-style ``%`` on strings is refused outright (its width specifiers are a size bomb);
* callables reachable through attributes are an allow-list per type (``str.lower`` yes,
  ``str.center``/``str.format``/``str.zfill`` no), which also closes ``format``/``format_map``
  that the stock sandbox re-wraps instead of refusing;
* every attribute access, item access, call and operator spends a step of the render budget,
  and every filter and test is metered (:mod:`prompts.metered`): a step per call and per item
  a lazy filter yields, its results measured and spent from the work budget;
* the results of operators, calls and slices are measured the same way (``[s] * 10000`` is
  refused before it is built when 10,000 copies of ``s`` exceed the size cap);
* the only global is a ``range`` capped at ``max_items`` (no ``namespace``, ``cycler``,
  ``joiner``, ``lipsum``, ``dict``);
* Jinja2's compile-time optimiser is off: it is quadratic in the depth of a filter chain times
  the size of its input expression (an 11 KB source took seconds to compile) and it would run
  filters at compile time, outside any budget;
* ``finalize`` turns every printed value into text: numbers and dates as they are, any other
  value as cleaned, fenced data (see :mod:`prompts.sanitize`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import date
from typing import Any, cast

from jinja2 import StrictUndefined, pass_context
from jinja2.runtime import Context, LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from prompts.errors import UnsafeTemplate
from prompts.filters import ITER_FILTER, allowed_filters
from prompts.limits import (
    RenderLimits,
    bounded_str,
    built,
    check_int_bits,
    check_items,
    check_text_size,
    current_budget,
    size_of,
    tick,
    too_big,
)
from prompts.metered import metered_all
from prompts.sanitize import clean, fence

_SAFE_METHODS: tuple[tuple[type, frozenset[str]], ...] = (
    (
        str,
        frozenset(
            [
                "lower",
                "upper",
                "strip",
                "lstrip",
                "rstrip",
                "title",
                "capitalize",
                "startswith",
                "endswith",
                "split",
                "splitlines",
                "count",
                "find",
                "isdigit",
                "isalpha",
                "isalnum",
                "isspace",
                "islower",
                "isupper",
            ]
        ),
    ),
    (Mapping, frozenset({"items", "keys", "values", "get"})),
    (list, frozenset({"index", "count"})),
    (date, frozenset({"isoformat", "strftime", "weekday", "isoweekday"})),
    (LoopContext, frozenset({"cycle", "changed"})),
)
_SEQUENCES = (str, list, tuple)


def _safe_method(obj: Any, attr: str) -> bool:
    return any(isinstance(obj, kind) and attr in names for kind, names in _SAFE_METHODS)


class PromptEnvironment(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"+", "-", "*", "/", "//", "**", "%"})
    intercepted_unops = frozenset({"+", "-"})

    def __init__(self, limits: RenderLimits) -> None:
        super().__init__(
            undefined=StrictUndefined,
            autoescape=False,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=False,
            finalize=_finalize,
            loader=None,
            auto_reload=False,
            cache_size=0,
            optimized=False,
        )
        self.limits = limits
        self.globals.clear()
        self.globals["range"] = self.capped_range
        # The loop guard already spends a step per item; metering it would spend two.
        filters = metered_all(allowed_filters(), limits, except_for=frozenset([ITER_FILTER]))
        # Jinja2 annotates its tests as the internal ``function`` type, not as callables.
        stock_tests = cast("Mapping[str, Callable[..., Any]]", self.tests)
        tests = metered_all(stock_tests, limits, except_for=frozenset())
        self.filters.clear()
        self.filters.update(filters)
        self.tests.clear()
        self.tests.update(tests)

    def capped_range(self, *args: int) -> range:
        tick()
        try:
            values = range(*args)
            check_items(len(values), self.limits)
        except OverflowError:
            raise too_big("range", "max_items") from None
        return values

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if not super().is_safe_attribute(obj, attr, value):
            return False
        return not callable(value) or _safe_method(obj, attr)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        # Returning None sends format/format_map through is_safe_attribute, which refuses them.
        return None

    def getattr(self, obj: Any, attribute: str) -> Any:
        tick()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        tick()
        return super().getitem(obj, argument)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        tick()
        return built(super().call(__context, __obj, *args, **kwargs), __self.limits)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        tick()
        _check_binop(operator, left, right, self.limits)
        return built(self.binop_table[operator](left, right), self.limits)

    def call_unop(self, context: Context, operator: str, arg: Any) -> Any:
        tick()
        return self.unop_table[operator](arg)


def _check_binop(op: str, left: Any, right: Any, limits: RenderLimits) -> None:
    if op == "*":
        _check_repeat(left, right, limits)
        _check_repeat(right, left, limits)
        if _both_ints(left, right):
            check_int_bits(abs(left).bit_length() + abs(right).bit_length(), limits)
    elif op == "+" and isinstance(left, _SEQUENCES) and isinstance(right, _SEQUENCES):
        _check_sized(left, len(left) + len(right), limits)
        cap = limits.max_output_chars
        _check_size(size_of(left, cap) + size_of(right, cap), limits)
    elif op == "**" and _both_ints(left, right) and right > 0 and abs(left) > 1:
        check_int_bits(math.ceil(right * math.log2(abs(left))), limits)
    elif op == "%" and isinstance(left, str):
        raise UnsafeTemplate("printf-style '%' formatting is not available; use '~' or filters")


def _both_ints(left: Any, right: Any) -> bool:
    return isinstance(left, int) and isinstance(right, int)


def _check_repeat(seq: Any, times: Any, limits: RenderLimits) -> None:
    if isinstance(seq, _SEQUENCES) and isinstance(times, int):
        _check_sized(seq, len(seq) * max(times, 0), limits)
        # The items' sizes count too: [s] * 10000 is 10,000 copies of s once anything walks it.
        _check_size(size_of(seq, limits.max_output_chars) * max(times, 0), limits)


def _check_size(size: int, limits: RenderLimits) -> None:
    if size > limits.max_output_chars:
        raise too_big("value", "max_output_chars")


def _check_sized(seq: Any, size: int, limits: RenderLimits) -> None:
    if isinstance(seq, str):
        check_text_size(size, limits)
    else:
        check_items(size, limits)


@pass_context
def _finalize(context: Context, value: Any) -> str:
    """Every ``{{ ... }}`` ends here; only numbers and dates are printed unfenced."""
    tick()
    if isinstance(value, (int, float, date)) and not isinstance(value, str):
        return value.isoformat() if isinstance(value, date) else str(value)
    if value is None:
        return ""
    environment = context.environment
    text = bounded_str(value, environment.limits)  # type: ignore[attr-defined]
    if not text:
        return ""
    cleaned = clean(text)
    budget = current_budget()
    if budget is None:
        raise RuntimeError("templates render only inside a render budget")
    budget.stripped += cleaned.removed
    return fence(cleaned.text, budget.block_id)
