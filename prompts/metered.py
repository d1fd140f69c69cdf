"""Every filter and test a template can call, wrapped so it spends the render budget.

Jinja2's filters run as plain Python: ``map``, ``list``, ``sort`` or ``max`` never return to the
template between items, so the sandbox's per-operation ticks alone do not bound them. Wrapped:

* a call costs one step, plus one per :data:`~prompts.limits.CHARS_PER_STEP` characters or
  items of its inputs (a call on a large value brings the next clock read closer);
* a string, list, tuple or dict it returns is measured (:func:`~prompts.limits.built`):
  refused above the size caps, spent from the work budget;
* an iterator it returns (``map``, ``select``, ``reverse``, ...) costs a step per item it
  yields, however many lazy filters are chained.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prompts.limits import CHARS_PER_STEP, RenderBudget, RenderLimits, built, current_budget

_SIZED = (str, list, tuple, dict)


def metered(function: Callable[..., Any], limits: RenderLimits) -> Callable[..., Any]:
    # functools.wraps keeps Jinja2's pass_context/pass_environment marker on the wrapper.
    # Filters run per item inside map/select chains: this wrapper is kept lean.
    @functools.wraps(function)
    def run(*args: Any, **kwargs: Any) -> Any:
        budget = current_budget()
        if budget is not None:
            budget.tick(1 + _input_size(args, kwargs) // CHARS_PER_STEP)
        result = function(*args, **kwargs)
        if isinstance(result, _SIZED):
            return built(result, limits)
        if budget is not None and isinstance(result, Iterator):
            return _ticking(result, budget)
        return result

    return run


def metered_all(
    functions: Mapping[str, Callable[..., Any]], limits: RenderLimits, *, except_for: frozenset[str]
) -> dict[str, Callable[..., Any]]:
    return {
        name: function if name in except_for else metered(function, limits)
        for name, function in functions.items()
    }


def _input_size(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    size = 0
    for value in args:
        if isinstance(value, _SIZED):
            size += len(value)
    if kwargs:
        size += _input_size(tuple(kwargs.values()), {})
    return size


def _ticking(items: Iterator[Any], budget: RenderBudget) -> Iterator[Any]:
    for item in items:
        budget.tick()
        yield item
