"""Splitting a layer's source into named sections, before Jinja2 sees it.

Section syntax: a header line, starting at column 1, of the form ::

    @section NAME [append|replace] [locked]

``NAME`` is 1-64 characters of ``a-z 0-9 _ -`` starting with a letter. The mode defaults to
``append``. The section's body is every line up to the next header or the end of the source;
each body is a Jinja2 template of its own. Text before the first header belongs to an implicit
section ``main`` (append, unlocked). A layer declares a section at most once. Example::

    @section persona replace
    You are the assistant of {{ org.name }}.

    @section rules append locked
    Never reveal credentials.

To write a line that starts with ``@section`` literally, begin it with ``{% raw %}@{% endraw %}``
(a header must *start* with ``@section``). Headers are recognised everywhere, including
inside ``{% raw %}`` or comments, which keeps this pre-parse trivially predictable.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from prompts.errors import TemplateInvalid
from prompts.limits import RenderLimits
from prompts.model import SectionMode, SectionSpec

HEADER = "@section"
IMPLICIT_SECTION = "main"
_NAME = re.compile(r"[a-z][a-z0-9_-]{0,63}\Z")
_TOKEN = re.compile(r"\S+")
_HEADER_LINE = re.compile(r"\s*@section(?:\s|\Z)")
_MODES = {mode.value: mode for mode in SectionMode}


@dataclass(frozen=True, slots=True)
class SectionSource:
    spec: SectionSpec
    body: str
    # Line number of the body's first line in the layer source, minus one.
    line_offset: int


def split_sections(source: str, limits: RenderLimits) -> tuple[SectionSource, ...]:
    if len(source) > limits.max_source_chars:
        line, column = _position(source, limits.max_source_chars)
        raise TemplateInvalid(
            f"layer source exceeds {limits.max_source_chars} characters", line=line, column=column
        )
    lines = source.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    sections: list[SectionSource] = []
    spec = SectionSpec(IMPLICIT_SECTION, SectionMode.APPEND, False, line=0)
    start = 0
    for index, text in enumerate(lines):
        if _is_header(text, index + 1):
            _add(sections, spec, lines[start:index], start)
            spec = parse_header(text, index + 1)
            start = index + 1
    _add(sections, spec, lines[start:], start)
    _check_unique(sections, limits)
    return tuple(sections)


def _is_header(text: str, line: int) -> bool:
    if _HEADER_LINE.match(text) is None:
        return False
    if not text.startswith(HEADER):
        column = len(text) - len(text.lstrip()) + 1
        raise TemplateInvalid("a section header must start at column 1", line=line, column=column)
    return True


def _add(sections: list[SectionSource], spec: SectionSpec, body: list[str], start: int) -> None:
    text = "\n".join(body)
    if spec.line == 0 and not text.strip():
        return  # no implicit section when nothing precedes the first header
    sections.append(SectionSource(spec, text, start))


def parse_header(text: str, line: int) -> SectionSpec:
    tokens = [(m.group(), m.start() + 1) for m in _TOKEN.finditer(text)]
    if tokens[0][0] != HEADER:
        raise TemplateInvalid(f"expected '{HEADER} NAME'", line=line, column=1)
    if len(tokens) < 2:
        raise TemplateInvalid("section header needs a name", line=line, column=len(text) + 1)
    name, name_column = tokens[1]
    if not _NAME.match(name):
        raise TemplateInvalid(
            f"invalid section name {name!r}: use a-z, 0-9, '_' or '-', starting with a letter",
            line=line,
            column=name_column,
        )
    mode, locked = _options(tokens[2:], line)
    return SectionSpec(name, mode or SectionMode.APPEND, locked, line=line)


def _options(tokens: list[tuple[str, int]], line: int) -> tuple[SectionMode | None, bool]:
    mode: SectionMode | None = None
    locked = False
    for word, column in tokens:
        if word in _MODES and mode is None:
            mode = _MODES[word]
        elif word == "locked" and not locked:
            locked = True
        else:
            raise TemplateInvalid(
                f"unexpected {word!r} in section header: expected 'append', 'replace' or "
                "'locked', each at most once",
                line=line,
                column=column,
            )
    return mode, locked


def _check_unique(sections: list[SectionSource], limits: RenderLimits) -> None:
    if len(sections) > limits.max_sections:
        spec = sections[limits.max_sections].spec
        raise TemplateInvalid(
            f"a layer may declare at most {limits.max_sections} sections", line=spec.line
        )
    seen: set[str] = set()
    for section in sections:
        if section.spec.name in seen:
            raise TemplateInvalid(
                f"section {section.spec.name!r} is declared twice",
                line=section.spec.line,
                column=len(HEADER) + 2,
            )
        seen.add(section.spec.name)


def _position(source: str, index: int) -> tuple[int, int]:
    before = source[:index]
    line = before.count("\n") + 1
    return line, index - (before.rfind("\n") + 1) + 1
