"""Rendering one compiled section under the active budget, with the output cap enforced.

The cap counts characters as Jinja2 yields them and stops the render as soon as the total of
the whole composition passes it: the result is an error, never a truncated prompt, because a
truncation could cut a data block after its opening delimiter. Every foreign exception is
translated here into :mod:`prompts.errors`, with the template line when the traceback has one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import date
from types import TracebackType
from typing import Any

from jinja2 import TemplateError, UndefinedError
from jinja2.exceptions import SecurityError

from prompts.compiler import CompiledLayer, CompiledSection, column_of, line_of
from prompts.errors import PromptError, RenderFailed, RenderLimitExceeded, UnsafeTemplate
from prompts.layering import Plan
from prompts.limits import RenderBudget, active_budget, too_big
from prompts.model import ComposedPrompt, PromptVariables, mark_layer

SECTION_SEPARATOR = "\n\n"
_QUOTED = re.compile(r"'([^']+)'")
PART_SEPARATOR = "\n"


def render_plan(
    planned: Plan,
    layers: Sequence[CompiledLayer],
    variables: PromptVariables,
    today: date,
    budget: RenderBudget,
) -> ComposedPrompt:
    """Render every surviving section body; empty sections are left out."""
    values = variables.decoded()
    values["today"] = today
    names: list[str] = []
    texts: list[str] = []
    used = 0
    with active_budget(budget):
        for section in planned.sections:
            parts = []
            for part in section.parts:
                text = _trim(render_section(part, values, budget, used))
                used += len(text) + len(SECTION_SEPARATOR)
                if text:
                    parts.append(text)
            if parts:
                names.append(section.name)
                texts.append(PART_SEPARATOR.join(parts))
    return ComposedPrompt(
        text=SECTION_SEPARATOR.join(texts),
        layers=tuple(layer.ref for layer in layers),
        sections=tuple(names),
        skipped=planned.skipped,
        stripped_chars=budget.stripped,
        today=today,
        data_block_id=budget.block_id,
    )


def _trim(text: str) -> str:
    # Leading spaces of the first line may be meaningful (indented text); blank lines are not.
    return text.rstrip().lstrip("\n")


def render_section(
    section: CompiledSection, variables: dict[str, Any], budget: RenderBudget, used: int
) -> str:
    """Render ``section``; ``used`` is how many output characters earlier sections produced."""
    cap = budget.limits.max_output_chars
    chunks: list[str] = []
    try:
        for chunk in section.template.generate(variables):
            used += len(chunk)
            if used > cap:
                raise too_big("composed prompt", "max_output_chars")
            chunks.append(chunk)
    except Exception as exc:
        error = _translate(exc, section)
        mark_layer(error, section.layer)
        raise error from None
    return "".join(chunks)


def _translate(exc: Exception, section: CompiledSection) -> PromptError:
    error = _translated(exc, section)
    if error.line is not None and error.column is None:
        error.column = _column(section, error.line - section.line_offset, error.message)
    return error


def _column(section: CompiledSection, lineno: int, message: str) -> int:
    """Where the quoted name of ``message`` is on the line; for a missing attribute, where the
    expression reaching it starts (``user.name``, ``user['name']``)."""
    needle = (_QUOTED.findall(message) or [""])[-1]
    if needle and "has no attribute" in message:
        text = line_of(section.body, lineno)
        key = re.escape(needle)
        found = re.search(rf"[\w.]+\s*(?:\.\s*{key}\b|\[\s*['\"]{key}['\"])", text)
        if found is not None:
            return found.start() + 1
    return column_of(section.body, lineno, needle)


def _translated(exc: Exception, section: CompiledSection) -> PromptError:
    line = _template_line(exc.__traceback__, section)
    if isinstance(exc, PromptError):
        if exc.line is None and line is not None:
            exc.line = line
        return exc
    if isinstance(exc, SecurityError):
        return UnsafeTemplate(str(exc), line=line)
    if isinstance(exc, (OverflowError, RecursionError, MemoryError)):
        return RenderLimitExceeded(
            f"render stopped: {type(exc).__name__}", limit="operator", line=line
        )
    if isinstance(exc, UndefinedError):
        return RenderFailed(f"undefined value: {exc.message}", line=line)
    if isinstance(exc, TemplateError):
        return RenderFailed(exc.message or type(exc).__name__, line=line)
    return RenderFailed(f"{type(exc).__name__}: {exc}", line=line)


def _template_line(tb: TracebackType | None, section: CompiledSection) -> int | None:
    # Jinja2 rewrites tracebacks so that template frames carry the template's line numbers.
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == section.filename:
            line = tb.tb_lineno + section.line_offset
        tb = tb.tb_next
    return line
