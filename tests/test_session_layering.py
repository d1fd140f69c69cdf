"""Sessions are a domain type (gateway/sessions.py): the modules that use sessions outside the
HTTP API do not reach into the API's handler modules, and no session travels as a database row
(read by string keys) through any gateway signature."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

GATEWAY = Path(__file__).resolve().parent.parent / "gateway"
SESSION_USERS = ("sessions.py", "forwarding.py", "system_prompt.py", "mcp_system_prompt.py",
                 "activity.py")
SESSION_TYPES = {"Session", "Session | None"}


def imported_modules(tree: ast.Module) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)


@pytest.mark.parametrize("module", SESSION_USERS)
def test_session_users_do_not_import_the_http_api(module: str) -> None:
    tree = ast.parse((GATEWAY / module).read_text(encoding="utf-8"))
    reaching = [name for name in imported_modules(tree) if name.startswith("gateway.api")]
    assert reaching == [], f"gateway/{module} imports {reaching}"


def session_parameters(tree: ast.Module) -> Iterator[tuple[str, str]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            arguments = node.args.posonlyargs + node.args.args + node.args.kwonlyargs
            for argument in arguments:
                if argument.arg == "session":
                    annotation = ast.unparse(argument.annotation) if argument.annotation else ""
                    yield node.name, annotation


def test_a_session_parameter_is_always_a_session() -> None:
    # gateway/connect's sessions are browser sign-in cookies (BrowserSession), another thing.
    found = {
        f"{path.relative_to(GATEWAY)}:{function}": annotation
        for path in GATEWAY.rglob("*.py") if "connect" not in path.relative_to(GATEWAY).parts
        for function, annotation in session_parameters(ast.parse(path.read_text("utf-8")))
    }
    assert found, "no function takes a session: the check has nothing to look at"
    wrong = {where: annotation for where, annotation in found.items()
             if annotation not in SESSION_TYPES}
    assert wrong == {}
