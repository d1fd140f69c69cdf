"""Static policy on a parsed section and the rewrite that puts guards into it.

Run on the Jinja2 AST after parsing and before code generation, so refusals are reported when
a layer is saved, with a line number, rather than when a user's prompt is rendered. The
runtime sandbox (:mod:`prompts.sandbox`) still enforces the same rules for what cannot be seen
statically (``''[name]`` with ``name`` a variable).

Refused constructs and why:

* ``include``/``import``/``from``/``extends``/``block``: templates are self-contained text
  stored in a database; there is nothing to load and no loader;
* ``macro``/``call``: the only recursion Jinja2 offers, and a macro's output is a plain string
  that would be fenced again as data; recursive ``for`` loops for the same reason;
* ``{% filter %}`` and ``{% set x %}...{% endset %}``: both capture rendered output, data
  blocks included, as a value a template could then rewrite;
* ``{% autoescape %}``, namespace assignment (``ns.x = ...``);
* attributes starting with ``_`` and the ``format``/``format_map``/``mro`` attributes;
* any filter outside :func:`prompts.filters.allowed_filters`.

The rewrite wraps every ``for`` iterable in a step-counting iterator, replaces ``~`` (which
the sandbox cannot intercept) by a size-checked join, and passes every list, tuple and dict
literal and every slice through a size check (``[s, s, s, ...]`` of a large ``s`` is refused
when built, before any filter or comparison walks it).
"""

from __future__ import annotations

from jinja2 import Environment, nodes
from jinja2.visitor import NodeTransformer

from prompts.errors import Refusal
from prompts.filters import CONCAT_FILTER, ITER_FILTER, REFUSED_FILTERS, VALUE_FILTER

_REFUSED_NODES: dict[type[nodes.Node], tuple[str, str]] = {
    nodes.Include: ("'include' is not allowed: templates cannot load other files", "include"),
    nodes.Import: ("'import' is not allowed: templates cannot load other files", "import"),
    nodes.FromImport: ("'from ... import' is not allowed", "from"),
    nodes.Extends: ("'extends' is not allowed: use sections instead", "extends"),
    nodes.Block: ("'block' is not allowed: use sections instead", "block"),
    nodes.Macro: ("'macro' is not allowed", "macro"),
    nodes.CallBlock: ("'call' blocks are not allowed", "call"),
    nodes.FilterBlock: ("'filter' blocks are not allowed", "filter"),
    nodes.AssignBlock: ("block assignment ('set' ... 'endset') is not allowed", "set"),
    nodes.ScopedEvalContextModifier: ("'autoescape' is not allowed", "autoescape"),
    nodes.EvalContextModifier: ("'autoescape' is not allowed", "autoescape"),
    nodes.NSRef: ("namespace assignment is not allowed", "set"),
}
_REFUSED_ATTRIBUTES = frozenset({"format", "format_map", "mro"})


def check(tree: nodes.Template, known_filters: frozenset[str], max_nodes: int) -> int:
    """Refuse what the policy forbids, and more than ``max_nodes`` nodes; the node count."""
    count = 0
    for count, node in enumerate(tree.find_all(nodes.Node), start=1):
        if count > max_nodes:
            raise Refusal("the layer has too many template expressions", node.lineno, "")
        _check_node(node, known_filters)
    return count


def _check_node(node: nodes.Node, known_filters: frozenset[str]) -> None:
    refused = _REFUSED_NODES.get(type(node))
    if refused is not None:
        raise Refusal(refused[0], node.lineno, refused[1])
    if isinstance(node, nodes.For) and node.recursive:
        raise Refusal("recursive loops are not allowed", node.lineno, "recursive")
    if isinstance(node, nodes.Getattr):
        _check_attribute(node.attr, node.lineno)
    elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
        if isinstance(node.arg.value, str):
            _check_attribute(node.arg.value, node.lineno)
    elif isinstance(node, nodes.Filter):
        _check_filter(node.name, node.lineno, known_filters)


def _check_attribute(name: str, lineno: int) -> None:
    if name.startswith("_") or name in _REFUSED_ATTRIBUTES:
        raise Refusal(f"access to attribute {name!r} is not allowed", lineno, name)


def _check_filter(name: str, lineno: int, known_filters: frozenset[str]) -> None:
    if name in REFUSED_FILTERS:
        raise Refusal(f"filter {name!r} is not allowed", lineno, name)
    if name not in known_filters:
        raise Refusal(f"no filter named {name!r}", lineno, name)


class _Guards(NodeTransformer):
    def __init__(self, environment: Environment) -> None:
        self.environment = environment

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        iterable: nodes.Expr = node.iter  # type: ignore[assignment]
        node.iter = self._filter(iterable, ITER_FILTER, node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        parts = nodes.Tuple(node.nodes, "load", lineno=node.lineno, environment=self.environment)
        return self._filter(parts, CONCAT_FILTER, node.lineno)

    def visit_Getitem(self, node: nodes.Getitem) -> nodes.Node:
        # Jinja2 compiles slices to plain Python slicing, past the sandbox's getitem.
        if not isinstance(node.arg, nodes.Slice):
            return self.generic_visit(node)
        return self._built(node)

    def visit_List(self, node: nodes.List) -> nodes.Node:
        return self._built(node)

    def visit_Dict(self, node: nodes.Dict) -> nodes.Node:
        return self._built(node)

    def visit_Tuple(self, node: nodes.Tuple) -> nodes.Node:
        if node.ctx != "load":  # a loop or assignment target, not a value
            return node
        return self._built(node)

    def _built(self, node: nodes.Expr) -> nodes.Node:
        self.generic_visit(node)
        return self._filter(node, VALUE_FILTER, node.lineno)

    def _filter(self, target: nodes.Expr, name: str, lineno: int) -> nodes.Filter:
        return nodes.Filter(
            target, name, [], [], None, None, lineno=lineno, environment=self.environment
        )


def add_guards(tree: nodes.Template, environment: Environment) -> nodes.Template:
    guarded: nodes.Template = _Guards(environment).visit(tree)
    return guarded
