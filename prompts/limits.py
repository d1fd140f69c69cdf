"""Resource limits and the per-render budget.

Python cannot pre-empt a running render, so the budget is checked cooperatively, and it bounds
three things whatever a template chains together:

* steps (:meth:`RenderBudget.tick`): every intercepted operator, attribute access, call, loop
  iteration, filter or test call, item a lazy filter yields and printed value costs one or more
  steps (a call on a large input costs more), and the wall clock is read every few steps;
* the size of every value a template builds: string and list repetition, ``+`` and ``~``
  check the size of their result *before* building it (a list's size counts its items and the
  length of every string in it, so ``[s] * 10000`` is measured as 10,000 copies of ``s``),
  ``**`` and ``*`` on integers the result's bit length, ``range`` its length, and literals,
  slices, method and filter results are measured as soon as they exist (:func:`built`);
* the total work (:meth:`RenderBudget.spend`): the size of every value built is spent from
  ``max_work_chars``, so a render cannot allocate more than that in all, however many
  short-lived values it builds and drops.

:func:`bounded_str` checks the size of a value before turning it into text (a list that shares
itself can have a huge ``repr`` from a small template).

The budget lives in a :class:`contextvars.ContextVar`, so concurrent renders in threads or
tasks never share one, and it is set only for the duration of one composition (all the layers
of a composition share one budget).
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
    # Syntax nodes per layer: compiling (outside the render budget) costs time in proportion.
    max_template_nodes: int = 4_096
    max_variables_chars: int = 65_536
    max_output_chars: int = 131_072
    max_items: int = 10_000
    max_int_bits: int = 4_096
    max_steps: int = 200_000
    max_seconds: float = 0.25
    # Characters (and list items) a render may build in all, intermediate values included.
    max_work_chars: int = 4_194_304


_CLOCK_EVERY = 64  # steps between clock reads: a read costs more than a step
# Work on this many characters or items costs one more step, so a few large operations reach
# the next clock read as soon as many small ones would.
CHARS_PER_STEP = 4096


class RenderBudget:
    """Mutable state of one composition: steps taken, deadline, data-block id."""

    __slots__ = ("block_id", "deadline", "limits", "next_check", "steps", "stripped", "work")

    def __init__(self, limits: RenderLimits, block_id: str) -> None:
        self.limits = limits
        self.block_id = block_id
        self.steps = 0
        self.work = 0
        self.stripped = 0
        self.next_check = _CLOCK_EVERY
        self.deadline = time.perf_counter() + limits.max_seconds

    def tick(self, cost: int = 1) -> None:
        self.steps += cost
        if self.steps < self.next_check:
            return
        self.next_check = self.steps + _CLOCK_EVERY
        if self.steps > self.limits.max_steps:
            raise RenderLimitExceeded("render step budget exhausted", limit="max_steps")
        if time.perf_counter() > self.deadline:
            raise RenderLimitExceeded("render time budget exhausted", limit="max_seconds")

    def spend(self, size: int) -> None:
        """Account for a value of ``size`` characters or items that was just built."""
        self.work += size
        if self.work > self.limits.max_work_chars:
            raise RenderLimitExceeded("render work budget exhausted", limit="max_work_chars")
        self.tick(1 + size // CHARS_PER_STEP)


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


def tick(cost: int = 1) -> None:
    budget = _ACTIVE.get()
    if budget is not None:
        budget.tick(cost)


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


def size_of(value: Any, cap: int) -> int:
    """A value's size: the length of a string; for a list, tuple or dict, its items plus the
    sizes of its items (shared items counted each time). Refused as soon as it passes ``cap``,
    so measuring never walks much more than ``cap`` items."""
    if isinstance(value, str):
        size = len(value)
    elif isinstance(value, (list, tuple, dict)):
        size = len(value)
        parts = value.items() if isinstance(value, dict) else ((item,) for item in value)
        for part in parts:
            if size > cap:
                break
            for item in part:
                size += size_of(item, cap - size)
    else:
        size = 1
    if size > cap:
        raise too_big("value", "max_output_chars")
    return size


def built(value: Any, limits: RenderLimits) -> Any:
    """``value``, which the template has just built, refused if too big, else spent from the
    work budget. Values that are not strings or containers pass unchanged."""
    if isinstance(value, str):
        size = len(value)
        check_text_size(size, limits)
    elif isinstance(value, (list, tuple, dict)):
        check_items(len(value), limits)
        size = size_of(value, limits.max_output_chars)
    else:
        return value
    budget = _ACTIVE.get()
    if budget is not None:
        budget.spend(size)
    return value


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
