"""Which variables a saved layer may use unguarded, and the check that it uses no other.

Every caller has ``org.id``, ``user.id``, ``user.roles`` and ``today``. Everything else is
optional: profile claims (``user.name``, ``user.email``, ...) come only from issuers that send
them (development tokens carry none), and session variables only from sessions that set them.
Rendering is strict (an undefined value is an error), so a layer that prints ``{{ user.name }}``
composes for Alice and fails for every caller whose token has no name: saved as the
organisation layer, it breaks the whole organisation.

:func:`check_guarantees` walks a section's syntax tree (every branch, unlike a trial render,
which follows one) and refuses the first optional variable that is used unguarded. Guarded is:

* ``user.name | default('there')`` (or ``d``); ``user.name is defined`` / ``is undefined``;
* anything under ``{% if user.name is defined %}`` (``and``-ed with other tests too), in the
  ``else`` of ``{% if user.name is undefined %}``/``is not defined``, the same in ``a if test
  else b``, and right of ``user.name is defined and ...``; ``'name' in user`` counts as a test;
* ``user.get('name')`` (``None`` when absent).

Only the first level under ``org``, ``user`` and ``session`` is checked: ``session.repo.url``
needs ``session.repo`` guarded; what a present value holds is the template's business.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from jinja2 import nodes

from prompts.compiler import column_of, line_of
from prompts.errors import NotGuaranteed

Path = tuple[str, str]
Guards = frozenset[Path]
NAMESPACES = ("org", "user", "session")
_NO_GUARDS: Guards = frozenset()
_DEFAULT_FILTERS = frozenset({"default", "d"})
_DEFINED_TESTS = {"defined": True, "undefined": False}
# Methods of the mapping itself (the sandbox allows these): ``user.get('name')`` is not a claim.
_MAPPING_METHODS = frozenset({"get", "items", "keys", "values"})
_GUARD_AFTER = re.compile(r"\s*(?:\|\s*(?:default|d)\b|is\s+(?:not\s+)?(?:un)?defined\b)")
_PROFILE_CLAIMS = frozenset({"name", "email", "preferred_username", "locale", "zoneinfo"})


@dataclass(frozen=True, slots=True)
class Guaranteed:
    """The first-level keys every caller has; ``session=None`` means "not checked" (a session's
    own prompt, validated without knowing the variables it will be composed with)."""

    org: frozenset[str] = frozenset({"id"})
    user: frozenset[str] = frozenset({"id", "roles"})
    session: frozenset[str] | None = frozenset()

    def covers(self, path: Path) -> bool:
        namespace, key = path
        keys = {"org": self.org, "user": self.user, "session": self.session}[namespace]
        return keys is None or key in keys or key in _MAPPING_METHODS

    @classmethod
    def with_session(cls, session: Mapping[str, object] | None) -> Guaranteed:
        return cls(session=None if session is None else frozenset(session))


def check_guarantees(tree: nodes.Template, guaranteed: Guaranteed, body: str, offset: int) -> None:
    """Raise :class:`NotGuaranteed` for the first unguarded optional variable in ``tree``, the
    parsed ``body`` of a section whose first line is line ``offset + 1`` of the layer."""
    for path, lineno in _Walk(guaranteed).uses(tree, _NO_GUARDS):
        raise NotGuaranteed(
            _message(path),
            variable=".".join(path),
            line=offset + lineno,
            column=_column(body, lineno, path),
        )


class _Walk:
    def __init__(self, guaranteed: Guaranteed) -> None:
        self.guaranteed = guaranteed

    def uses(self, node: nodes.Node, guards: Guards) -> Iterator[tuple[Path, int]]:
        """Every unguarded use of an optional variable under ``node``, in source order."""
        if isinstance(node, nodes.If):
            yield from self._if(node, guards)
        elif isinstance(node, nodes.CondExpr):
            yield from self._branches(node.test, [node.expr1], [node.expr2], guards)
        elif isinstance(node, (nodes.And, nodes.Or)):
            yield from self._short_circuit(node, guards)
        elif isinstance(node, (nodes.Filter, nodes.Test)) and _is_guard(node):
            yield from self._arguments(node, guards)
        elif isinstance(node, (nodes.Getattr, nodes.Getitem)) and _path(node) is not None:
            yield from self._access(node, guards)
        else:
            yield from self._children(node.iter_child_nodes(), guards)

    def _children(self, children: Iterator[nodes.Node] | list[nodes.Node],
                  guards: Guards) -> Iterator[tuple[Path, int]]:
        for child in children:
            if child is not None:
                yield from self.uses(child, guards)

    def _if(self, node: nodes.If, guards: Guards) -> Iterator[tuple[Path, int]]:
        # elif branches run only when every earlier test was false.
        for branch in [node, *node.elif_]:
            yield from self.uses(branch.test, guards)
            when_true, when_false = _guards(branch.test)
            yield from self._children(branch.body, guards | when_true)
            guards = guards | when_false
        yield from self._children(node.else_, guards)

    def _branches(self, test: nodes.Node, then: list[nodes.Node | None],
                  otherwise: list[nodes.Node | None], guards: Guards) -> Iterator[tuple[Path, int]]:
        yield from self.uses(test, guards)
        when_true, when_false = _guards(test)
        yield from self._children([n for n in then if n is not None], guards | when_true)
        yield from self._children([n for n in otherwise if n is not None], guards | when_false)

    def _short_circuit(self, node: nodes.And | nodes.Or,
                       guards: Guards) -> Iterator[tuple[Path, int]]:
        yield from self.uses(node.left, guards)
        when_true, when_false = _guards(node.left)
        # The right operand runs only when the left one was true (and) or false (or).
        yield from self.uses(node.right, guards | (when_true if isinstance(node, nodes.And)
                                                   else when_false))

    def _arguments(self, node: nodes.Filter | nodes.Test,
                   guards: Guards) -> Iterator[tuple[Path, int]]:
        # The guarded value itself is fine; its chain's own item arguments and the
        # filter's arguments are ordinary uses.
        assert node.node is not None
        yield from self._item_arguments(node.node, guards)
        yield from self._children([*node.args, *(kw.value for kw in node.kwargs)], guards)
        for extra in (node.dyn_args, node.dyn_kwargs):
            if extra is not None:
                yield from self.uses(extra, guards)

    def _access(self, node: nodes.Getattr | nodes.Getitem,
                guards: Guards) -> Iterator[tuple[Path, int]]:
        path = _path(node)
        assert path is not None
        if path not in guards and not self.guaranteed.covers(path):
            yield path, node.lineno
        yield from self._item_arguments(node, guards)

    def _item_arguments(self, node: nodes.Node, guards: Guards) -> Iterator[tuple[Path, int]]:
        """Uses inside the ``[...]`` of an access chain (``session[user.name]``)."""
        while isinstance(node, (nodes.Getattr, nodes.Getitem)):
            if isinstance(node, nodes.Getitem) and not isinstance(node.arg, nodes.Const):
                yield from self.uses(node.arg, guards)
            node = node.node
        if not isinstance(node, (nodes.Name, nodes.Getattr, nodes.Getitem)):
            yield from self.uses(node, guards)


def _key(node: nodes.Node) -> tuple[nodes.Node, str] | None:
    """(what is accessed, the constant key) of ``x.key`` or ``x['key']``."""
    if isinstance(node, nodes.Getattr):
        return node.node, node.attr
    if (isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const)
            and isinstance(node.arg.value, str)):
        return node.node, node.arg.value
    return None


def _path(node: nodes.Node) -> Path | None:
    """``("user", "name")`` for ``user.name``, ``user['name']`` and anything reached through
    them (``user.name.first``); ``None`` for any other expression."""
    while (access := _key(node)) is not None:
        node, key = access
        if isinstance(node, nodes.Name):
            return (node.name, key) if node.name in NAMESPACES else None
    return None


def _direct_path(node: nodes.Node | None) -> Path | None:
    """The path of exactly ``user.name``: a deeper ``user.name.first`` fails before any
    ``default`` or ``is defined`` sees it when ``user.name`` is missing."""
    access = _key(node) if node is not None else None
    if access is None:
        return None
    base, key = access
    if not isinstance(base, nodes.Name) or base.name not in NAMESPACES:
        return None
    return base.name, key


def _is_guard(node: nodes.Filter | nodes.Test) -> bool:
    names = _DEFAULT_FILTERS if isinstance(node, nodes.Filter) else _DEFINED_TESTS
    return node.name in names and _direct_path(node.node) is not None


def _guards(test: nodes.Node) -> tuple[Guards, Guards]:
    """Paths known to be defined when ``test`` is true, and when it is false."""
    if isinstance(test, nodes.Test) and test.name in _DEFINED_TESTS:
        path = _direct_path(test.node)
        if path is None:
            return _NO_GUARDS, _NO_GUARDS
        known = frozenset({path})
        return (known, _NO_GUARDS) if _DEFINED_TESTS[test.name] else (_NO_GUARDS, known)
    if isinstance(test, nodes.Not):
        when_true, when_false = _guards(test.node)
        return when_false, when_true
    if isinstance(test, nodes.And):
        return _guards(test.left)[0] | _guards(test.right)[0], _NO_GUARDS
    if isinstance(test, nodes.Or):
        return _NO_GUARDS, _guards(test.left)[1] | _guards(test.right)[1]
    if isinstance(test, nodes.Compare):
        return _membership(test)
    return _NO_GUARDS, _NO_GUARDS


def _membership(test: nodes.Compare) -> tuple[Guards, Guards]:
    """``'name' in user`` (true: defined) and ``'name' not in user`` (false: defined)."""
    if len(test.ops) != 1 or not isinstance(test.expr, nodes.Const):
        return _NO_GUARDS, _NO_GUARDS
    operand = test.ops[0]
    mapping, key = operand.expr, test.expr.value
    if not (isinstance(mapping, nodes.Name) and mapping.name in NAMESPACES
            and isinstance(key, str)):
        return _NO_GUARDS, _NO_GUARDS
    known = frozenset({(mapping.name, key)})
    if operand.op == "in":
        return known, _NO_GUARDS
    if operand.op == "notin":
        return _NO_GUARDS, known
    return _NO_GUARDS, _NO_GUARDS


def _why(path: Path) -> str:
    namespace, key = path
    if namespace == "user" and key in _PROFILE_CLAIMS:
        return (f"it comes from the token's optional {key!r} claim, which dev tokens and some "
                "issuers don't send")
    if namespace == "user":
        return "every caller has only user.id and user.roles"
    if namespace == "org":
        return "every caller has only org.id"
    return "session variables exist only in sessions that set them"


def _message(path: Path) -> str:
    dotted = ".".join(path)
    fallback = "there" if path == ("user", "name") else ""
    return (f"{dotted} is not guaranteed: {_why(path)}; write "
            f"{{{{ {dotted} | default('{fallback}') }}}} or guard it with "
            f"{{% if {dotted} is defined %}}")


def _column(body: str, lineno: int, path: Path) -> int:
    namespace, key = path
    text = line_of(body, lineno)
    pattern = rf"\b{namespace}\s*(?:\.\s*{re.escape(key)}\b|\[\s*['\"]{re.escape(key)}['\"]\s*\])"
    # The first use on the line that no guard follows; else the first use.
    found = None
    for match in re.finditer(pattern, text):
        found = found or match
        if not _GUARD_AFTER.match(text, match.end()):
            found = match
            break
    return found.start() + 1 if found is not None else column_of(body, lineno, "")
