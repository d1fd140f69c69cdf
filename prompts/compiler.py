"""Turning one layer's source into compiled section templates, or a located error.

Each section body is parsed, checked (:mod:`prompts.checks`), rewritten with guards and
compiled on its own. Line numbers in errors are counted from the start of the layer source.
Jinja2 reports only a line, so the column is where the offending token (the quoted name in
Jinja2's message, or the refused tag/attribute) first appears on that line, or the first
non-blank column when it cannot be found.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from jinja2 import Template, TemplateSyntaxError

from prompts.checks import add_guards, check
from prompts.errors import Refusal, TemplateInvalid, UnsafeTemplate
from prompts.model import Layer, LayerRef, SectionSpec, mark_layer
from prompts.sandbox import PromptEnvironment
from prompts.sanitize import first_invisible
from prompts.sections import SectionSource, split_sections

_QUOTED = re.compile(r"'([^']+)'")


@dataclass(frozen=True, slots=True)
class CompiledSection:
    spec: SectionSpec
    template: Template
    line_offset: int
    filename: str
    layer: LayerRef
    body: str  # to locate render errors by column


@dataclass(frozen=True, slots=True)
class CompiledLayer:
    ref: LayerRef
    sections: tuple[CompiledSection, ...]

    @property
    def specs(self) -> tuple[SectionSpec, ...]:
        return tuple(section.spec for section in self.sections)


def compile_layer(environment: PromptEnvironment, layer: Layer) -> CompiledLayer:
    try:
        _check_invisible(layer.source)
        sections = split_sections(layer.source, environment.limits)
        nodes_left = environment.limits.max_template_nodes
        compiled = []
        for section in sections:
            result, nodes_used = _compile_section(environment, layer, section, nodes_left)
            compiled.append(result)
            nodes_left -= nodes_used
    except TemplateInvalid as exc:
        mark_layer(exc, layer.ref)
        raise
    return CompiledLayer(layer.ref, tuple(compiled))


def _check_invisible(source: str) -> None:
    index = first_invisible(source)
    if index is None:
        return
    line = source.count("\n", 0, index) + 1
    column = index - (source.rfind("\n", 0, index) + 1) + 1
    raise TemplateInvalid(
        f"invisible or control character U+{ord(source[index]):04X} is not allowed",
        line=line,
        column=column,
    )


def _compile_section(
    environment: PromptEnvironment, layer: Layer, section: SectionSource, nodes_left: int
) -> tuple[CompiledSection, int]:
    filename = f"<{layer.layer_id}@{layer.version}#{section.spec.name}>"
    try:
        tree = environment.parse(section.body, filename=filename)
        nodes_used = check(tree, frozenset(environment.filters), nodes_left)
        code = environment.compile(add_guards(tree, environment), filename=filename)
    except Refusal as exc:
        raise _located(UnsafeTemplate, exc.message, exc.lineno, exc.needle, section) from None
    except TemplateSyntaxError as exc:
        needle = (_QUOTED.findall(exc.message or "") or [""])[-1]
        message = exc.message or "syntax error"
        raise _located(TemplateInvalid, message, exc.lineno, needle, section) from None
    except (RecursionError, SyntaxError, MemoryError):
        # Python's own parser and compiler limits on the generated code (nesting depth).
        message = "the template is nested too deeply"
        raise _located(TemplateInvalid, message, 1, "", section) from None
    template = environment.template_class.from_code(
        environment, code, environment.make_globals(None)
    )
    compiled = CompiledSection(
        section.spec, template, section.line_offset, filename, layer.ref, section.body
    )
    return compiled, nodes_used


def _located(
    kind: type[TemplateInvalid], message: str, lineno: int, needle: str, section: SectionSource
) -> TemplateInvalid:
    column = column_of(section.body, lineno, needle)
    return kind(message, line=section.line_offset + lineno, column=column)


def column_of(body: str, lineno: int, needle: str, occurrence: int = 0) -> int:
    """1-based column of the ``occurrence``-th ``needle`` on line ``lineno`` of ``body``, or
    of the line's first non-blank character when it is not there."""
    text = line_of(body, lineno)
    found = -1
    for _ in range(occurrence + 1):
        found = text.find(needle, found + 1) if needle else -1
        if found < 0:
            break
    return found + 1 if found >= 0 else len(text) - len(text.lstrip()) + 1


def line_of(body: str, lineno: int) -> str:
    """Line ``lineno`` (1-based) of ``body``; empty when there is no such line."""
    lines = body.split("\n")
    return lines[lineno - 1] if 0 < lineno <= len(lines) else ""
