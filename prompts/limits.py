"""Resource limits and the per-render budget.

Python cannot pre-empt a running render, so the budget is checked cooperatively: every
intercepted operator, attribute access, call, loop iteration and printed value costs one step
(:meth:`RenderBudget.tick`), and the wall clock is read every few steps. What a single step can
cost is bounded separately, *before* the work is done: string and list repetition, ``+`` and
``~`` check the size of their result first, ``**`` and ``*`` on integers check the result's bit
length, ``range`` its length, and :func:`bounded_str` the size of a value before turning it
into text (a list that shares itself can have a huge ``repr`` from a small template).

The budget lives in a :class:`contextvars.ContextVar`, so concurrent renders in threads or
tasks never share one, and it is set only for the duration of one composition.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from typing import Any

from prompts.errors import RenderLimitExceeded


@dataclass(frozen=True, slots=True)
class RenderLimits:
    max_source_chars: int = 32_768
    max_sections: int = 64
    max_variables_chars: int = 65_536
    max_output_chars: int = 131_072
    max_items: int = 10_000
    max_int_bits: int = 4_096
    max_steps: int = 200_000
    max_seconds: float = 0.25


_CLOCK_EVERY = 64  # steps between clock reads: a read costs more than a step


class RenderBudget:
    """Mutable state of one composition: steps taken, deadline, data-block id."""

    __slots__ = ("block_id", "deadline", "limits", "steps", "stripped")

    def __init__(self, limits: RenderLimits, block_id: str) -> None:
        self.limits = limits
        self.block_id = block_id
        self.steps = 0
        self.stripped = 0
        self.deadline = time.perf_counter() + limits.max_seconds

    def tick(self) -> None:
        self.steps += 1
        if self.steps % _CLOCK_EVERY:
            return
        if self.steps > self.limits.max_steps:
            raise RenderLimitExceeded("render step budget exhausted", limit="max_steps")
        if time.perf_counter() > self.deadline:
            raise RenderLimitExceeded("render time budget exhausted", limit="max_seconds")


_ACTIVE: contextvars.ContextVar[RenderBudget | None] = contextvars.ContextVar(
    "prompts_render_budget", default=None
)


@contextmanager
def active_budget(budget: RenderBudget) -> Iterator[RenderBudget]:
    token = _ACTIVE.set(budget)
    try:
        yield budget
    finally:
        _ACTIVE.reset(token)


def current_budget() -> RenderBudget | None:
    return _ACTIVE.get()


def tick() -> None:
    budget = _ACTIVE.get()
    if budget is not None:
        budget.tick()


def too_big(what: str, limit: str) -> RenderLimitExceeded:
    return RenderLimitExceeded(f"{what} would exceed the {limit} limit", limit=limit)


def check_text_size(size: int, limits: RenderLimits) -> None:
    if size > limits.max_output_chars:
        raise too_big("text", "max_output_chars")


def check_items(count: int, limits: RenderLimits) -> None:
    if count > limits.max_items:
        raise too_big("sequence", "max_items")


def check_int_bits(bits: int, limits: RenderLimits) -> None:
    if bits > limits.max_int_bits:
        raise too_big("integer", "max_int_bits")


def bounded_str(value: Any, limits: RenderLimits) -> str:
    """``str(value)``, refused before it is built if it would exceed the output cap."""
    cap = limits.max_output_chars
    if isinstance(value, str):
        text = value
    elif isinstance(value, (list, tuple, dict)):
        _measure(value, cap)
        text = str(value)
    elif isinstance(value, date):
        text = value.isoformat()
    else:
        text = str(value)
    if len(text) > cap:
        raise too_big("text", "max_output_chars")
    return text


def _measure(value: Any, budget: int) -> int:
    """Upper bound on ``len(str(value))``, giving up as soon as it passes ``budget``."""
    if isinstance(value, str):
        size = len(value) + 2  # escapes in repr are caught by the final length check
    elif isinstance(value, dict):
        size = 2
        for key, item in value.items():
            size += _measure(key, budget - size) + _measure(item, budget - size) + 4
            if size > budget:
                break
    elif isinstance(value, (list, tuple)):
        size = 2
        for item in value:
            size += _measure(item, budget - size) + 2
            if size > budget:
                break
    else:
        size = len(str(value))
    if size > budget:
        raise too_big("text", "max_output_chars")
    return size
