"""Every error this package raises, under one root: :class:`PromptError`.

Callers (the gateway) translate these to problem documents at one boundary; nothing here knows
about HTTP. Foreign errors (Jinja2, ``json``, Python arithmetic) are translated into this
hierarchy where they are caught, so no Jinja2 exception ever escapes the package.

    PromptError
    ├── TemplateInvalid          source problem, with line and column (1-based)
    │   ├── UnsafeTemplate       sandbox escape attempt or refused construct
    │   ├── NotGuaranteed        an optional variable used without ``default`` or ``is defined``
    │   └── SectionLocked        a layer touches a section an earlier layer locked
    ├── RenderLimitExceeded      output cap, render budget, operator or range limit
    ├── RenderFailed             runtime error in a valid template (e.g. undefined variable)
    ├── InvalidVariables         variables that are not plain JSON data, or too large
    ├── InvalidLayers            duplicate layer kinds in one composition
    └── Refusal                  a construct the static checks refuse, not yet located in the
                                 layer; :mod:`prompts.compiler` raises it as UnsafeTemplate
"""

from __future__ import annotations


class PromptError(Exception):
    """Root of every error raised by :mod:`prompts`.

    ``line`` and ``column`` are 1-based positions in the layer source when known. ``layer_id``
    names the layer the problem came from when known; ``layer`` (``"organization"``) and
    ``version`` name it the way people do, and ``str()`` starts with them, so an error met while
    composing says which saved version to fix: ``organization layer version 3: line 2,
    column 5: ...``.
    """

    def __init__(
        self,
        message: str,
        *,
        line: int | None = None,
        column: int | None = None,
        layer_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column
        self.layer_id = layer_id
        self.layer: str | None = None
        self.version: str | None = None

    def in_layer(self, layer_id: str, layer: str, version: str | None) -> None:
        """Record which layer (and version, when it has one people know) the error is in."""
        self.layer_id, self.layer, self.version = layer_id, layer, version

    def __str__(self) -> str:
        parts = []
        if self.layer is not None:
            named = f"{self.layer} layer"
            parts.append(f"{named} version {self.version}" if self.version else named)
        if self.line is not None:
            parts.append(f"line {self.line}, column {self.column or 1}")
        return ": ".join([*parts, self.message])


class TemplateInvalid(PromptError):
    """The layer source cannot be saved: syntax, size or structure."""


class UnsafeTemplate(TemplateInvalid):
    """The template tried something the sandbox refuses (attribute escape, include, ...)."""


class NotGuaranteed(TemplateInvalid):
    """The layer uses a variable not every caller has (``user.name``) without a guard, so it
    would fail for those callers; ``variable`` is its dotted name."""

    def __init__(self, message: str, *, variable: str, line: int, column: int) -> None:
        super().__init__(message, line=line, column=column)
        self.variable = variable


class SectionLocked(TemplateInvalid):
    """A layer appends to or replaces a section that an earlier layer locked."""

    def __init__(
        self,
        message: str,
        *,
        section: str,
        locked_by: str,
        line: int | None = None,
        column: int | None = None,
        layer_id: str | None = None,
    ) -> None:
        super().__init__(message, line=line, column=column, layer_id=layer_id)
        self.section = section
        self.locked_by = locked_by


class RenderLimitExceeded(PromptError):
    """Rendering stopped at a resource limit; ``limit`` names which one."""

    def __init__(self, message: str, *, limit: str, line: int | None = None) -> None:
        super().__init__(message, line=line)
        self.limit = limit


class RenderFailed(PromptError):
    """A syntactically valid template failed while rendering (undefined variable, bad type)."""


class InvalidVariables(PromptError):
    """Template variables must be plain JSON data (str, int, float, bool, None, list, dict)."""


class InvalidLayers(PromptError):
    """The layers passed to one composition are inconsistent (e.g. two of the same kind)."""


class Refusal(PromptError):
    """A refused construct; ``needle`` is text to look for on the line to find the column.

    Raised by :mod:`prompts.checks` and caught by :mod:`prompts.compiler`, which knows where
    the section sits in the layer and raises an :class:`UnsafeTemplate` there. ``lineno`` is
    the section's line, so it is not PromptError's ``line``, and ``str()`` is the message."""

    def __init__(self, message: str, lineno: int, needle: str) -> None:
        super().__init__(message)
        self.message = message
        self.lineno = lineno
        self.needle = needle
