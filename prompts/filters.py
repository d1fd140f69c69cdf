"""The filters templates may use, and the guarded helpers the AST rewrite inserts.

An allow-list rather than Jinja2's full set: filters that mark text safe or HTML-escape it
(``safe``, ``e``, ``tojson``, ``urlize``, ``xmlattr``) would let a value skip the data block;
``attr`` and ``format`` reach attributes and format specs; ``center``, ``indent``,
``wordwrap``, ``sum``, ``batch`` and friends can build outputs far larger than their inputs
from one short expression. ``join`` and ``replace`` are replaced by versions that check the
size of their result before building it. The sandbox wraps every one of them (and every test)
with :func:`prompts.metered.metered`, so each also spends the render budget.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from jinja2 import Environment, pass_environment
from jinja2.filters import FILTERS as JINJA_FILTERS

from prompts.limits import RenderLimits, bounded_str, check_text_size, tick

# Names the rewrite uses; a template cannot spell them (they are not identifiers).
CONCAT_FILTER = "gatehouse.concat"
ITER_FILTER = "gatehouse.iter"
VALUE_FILTER = "gatehouse.value"

_KEPT_FROM_JINJA = [
    "abs",
    "capitalize",
    "count",
    "d",
    "default",
    "dictsort",
    "first",
    "float",
    "int",
    "items",
    "last",
    "length",
    "list",
    "lower",
    "map",
    "max",
    "min",
    "reject",
    "rejectattr",
    "reverse",
    "round",
    "select",
    "selectattr",
    "sort",
    "title",
    "trim",
    "truncate",
    "unique",
    "upper",
    "wordcount",
]


def _limits(environment: Environment) -> RenderLimits:
    limits: RenderLimits = getattr(environment, "limits", RenderLimits())
    return limits


@pass_environment
def guarded_join(
    environment: Environment, value: Iterable[Any], d: str = "", attribute: str | None = None
) -> str:
    limits = _limits(environment)
    separator = bounded_str(d, limits)
    parts: list[str] = []
    size = 0
    for item in value:
        tick()
        if attribute is not None:
            item = environment.getattr(item, attribute)
        text = bounded_str(item, limits)
        size += len(text) + (len(separator) if parts else 0)
        check_text_size(size, limits)
        parts.append(text)
    return separator.join(parts)


@pass_environment
def guarded_replace(
    environment: Environment, value: Any, old: str, new: str, count: int | None = None
) -> str:
    limits = _limits(environment)
    text, old, new = (bounded_str(v, limits) for v in (value, old, new))
    hits = text.count(old) if old else len(text) + 1
    if count is not None and count >= 0:
        hits = min(hits, count)
    check_text_size(len(text) + hits * max(0, len(new) - len(old)), limits)
    return text.replace(old, new, -1 if count is None else count)


@pass_environment
def guarded_string(environment: Environment, value: Any) -> str:
    return bounded_str(value, _limits(environment))


@pass_environment
def guarded_concat(environment: Environment, parts: tuple[Any, ...]) -> str:
    """Stands in for Jinja2's ``~`` operator, which the sandbox cannot intercept."""
    limits = _limits(environment)
    texts = [bounded_str(part, limits) for part in parts]
    check_text_size(sum(len(text) for text in texts), limits)
    return "".join(texts)


def guarded_iter(value: Iterable[Any]) -> Iterator[Any]:
    """Wraps every ``for`` loop's iterable so each iteration spends one budget step."""
    for item in value:
        tick()
        yield item


def built_value(value: Any) -> Any:
    """Wraps every list, tuple and dict literal: the metered wrapper measures what it returns."""
    return value


def allowed_filters() -> dict[str, Callable[..., Any]]:
    filters: dict[str, Callable[..., Any]] = {
        name: JINJA_FILTERS[name] for name in _KEPT_FROM_JINJA
    }
    guarded: dict[str, Callable[..., Any]] = {
        "join": guarded_join,
        "replace": guarded_replace,
        "string": guarded_string,
        CONCAT_FILTER: guarded_concat,
        ITER_FILTER: guarded_iter,
        VALUE_FILTER: built_value,
    }
    filters.update(guarded)
    return filters


REFUSED_FILTERS = frozenset(JINJA_FILTERS) - frozenset(allowed_filters())
