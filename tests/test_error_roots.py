"""One exception root per package, kept (DESIGN.md "Errors", issue 11 item 5).

Every public exception class (a name not starting with ``_``) of gateway, mcp_server, oauth,
prompts, sql and resilience is defined in its package's ``errors.py`` and derives from the
package's root, so callers above can catch a package's errors in one ``except`` and only the two
application roots translate them. A module's private signal that it raises and catches itself
(``gateway.audit._Unwritten``) may stay beside its code.

Classes are found on the source (``ast``), then imported to ask whether they are exceptions: a
subclass of a foreign library's error is one too, whatever its name says.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import cast

import pytest

from gateway.errors import (
    AnsweredByCaller,
    CatalogueUnreadable,
    ClientDocumentError,
    ConnectTimeout,
    CsrfRejected,
    GatewayError,
    InternalError,
    JsonBodyError,
    RpcError,
    SigninError,
    UpstreamFailed,
)
from gateway.problem import translate

ROOT = Path(__file__).resolve().parent.parent
ROOTS = {
    "gateway": "GatewayError",
    "mcp_server": "McpServerError",
    "oauth": "OAuthError",
    "prompts": "PromptError",
    "sql": "DatabaseError",
    "resilience": "ResilienceError",
}


def module_name(path: Path, base: Path) -> str:
    parts = list(path.relative_to(base).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _classes(body: list[ast.stmt], prefix: str) -> Iterator[tuple[str, ast.ClassDef, bool]]:
    """``(qualified name, node, inside a function)`` of every class in ``body``, nested ones
    included."""
    for node in body:
        if isinstance(node, ast.ClassDef):
            yield prefix + node.name, node, "<locals>" in prefix
            yield from _classes(node.body, f"{prefix}{node.name}.")
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield from _classes(node.body, f"{prefix}{node.name}.<locals>.")
        else:  # classes under if/try/with at any level
            for field in ("body", "orelse", "finalbody", "handlers"):
                yield from _classes(getattr(node, field, []), prefix)


def _is_exception(value: object) -> bool:
    return isinstance(value, type) and issubclass(value, BaseException)


def _resolve(expression: ast.expr, module: ModuleType) -> object:
    """What a base class expression (``Exception``, ``errors.Base``) names in ``module``;
    ``None`` for anything else (a class local to the same function is checked on its own)."""
    if isinstance(expression, ast.Name):
        return vars(module).get(expression.id, getattr(builtins, expression.id, None))
    if isinstance(expression, ast.Attribute):
        return getattr(_resolve(expression.value, module), expression.attr, None)
    return None


def exception_classes(path: Path, base: Path) -> Iterator[tuple[str, type | None]]:
    """``(qualified name, class)`` of each exception class ``path`` defines; the class is
    ``None`` for one inside a function (it cannot be imported; its bases tell)."""
    module = None
    for name, node, local in _classes(ast.parse(path.read_text(encoding="utf-8")).body, ""):
        module = module or importlib.import_module(module_name(path, base))
        if local:
            if any(_is_exception(_resolve(base, module)) for base in node.bases):
                yield name, None
            continue
        found: object = module
        for part in name.split("."):
            found = getattr(found, part)
        if _is_exception(found):
            yield name, cast(type, found)


def misplaced(package: str, root_name: str, base: Path = ROOT) -> list[str]:
    """Every public exception class of ``package`` outside its errors.py or its root."""
    root = getattr(importlib.import_module(f"{package}.errors"), root_name)
    wrong = []
    for path in sorted((base / package).rglob("*.py")):
        for name, cls in exception_classes(path, base):
            where = f"{path.relative_to(base)}: {name}"
            if name.split(".")[-1].startswith("_"):
                continue
            if cls is None:
                wrong.append(f"{where} is defined inside a function")
            elif path.relative_to(base / package) != Path("errors.py"):
                wrong.append(f"{where} is defined outside {package}/errors.py")
            elif not issubclass(cls, root):
                wrong.append(f"{where} does not derive from {root_name}")
    return wrong


@pytest.mark.parametrize("package", sorted(ROOTS))
def test_every_public_exception_is_in_errors_py_under_the_root(package: str) -> None:
    assert misplaced(package, ROOTS[package]) == []


@pytest.fixture
def sample(tmp_path: Path) -> Iterator[Path]:
    """A package ``error_roots_sample`` on ``sys.path``, removed from both afterwards."""
    (tmp_path / "error_roots_sample").mkdir()
    sys.path.insert(0, str(tmp_path))
    try:
        yield tmp_path / "error_roots_sample"
    finally:
        sys.path.remove(str(tmp_path))
        for name in [n for n in sys.modules if n.partition(".")[0] == "error_roots_sample"]:
            del sys.modules[name]


def test_the_check_sees_every_kind_of_misplaced_exception(sample: Path) -> None:
    """Beside the code, nested in a class, inside a function, and in errors.py but off the
    root are all reported; private ones and non-exceptions are not."""
    (sample / "__init__.py").write_text("")
    (sample / "errors.py").write_text(
        "class SampleError(Exception):\n    pass\n\n\n"
        "class Kept(SampleError):\n    pass\n\n\n"
        "class Stray(ValueError):\n    pass\n"
    )
    (sample / "pool.py").write_text(
        "from error_roots_sample.errors import SampleError\n\n\n"
        "class PoolExhausted(Exception):\n    pass\n\n\n"
        "class _Retry(Exception):\n    pass\n\n\n"
        "class Pool:\n    class Closed(SampleError):\n        pass\n\n\n"
        "def acquire():\n    class Busy(TimeoutError):\n        pass\n\n"
        "    class Options:\n        pass\n    raise Busy\n"
    )
    assert misplaced("error_roots_sample", "SampleError", sample.parent) == [
        "error_roots_sample/errors.py: Stray does not derive from SampleError",
        "error_roots_sample/pool.py: PoolExhausted is defined outside error_roots_sample/errors.py",
        "error_roots_sample/pool.py: Pool.Closed is defined outside error_roots_sample/errors.py",
        "error_roots_sample/pool.py: acquire.<locals>.Busy is defined inside a function",
    ]


@pytest.mark.parametrize("error", [
    RpcError(-32600, "Invalid Request: no method"), JsonBodyError("the body is empty"),
    UpstreamFailed("upstream closed the connection"), ConnectTimeout("not accepted in time"),
    CatalogueUnreadable("HTTP 500"), CsrfRejected("missing or wrong CSRF token"),
    InternalError(503, "unavailable", "down"), SigninError("refused", reason="signature"),
    ClientDocumentError("not JSON"),
], ids=lambda error: type(error).__name__)
def test_an_error_its_caller_answers_is_unexpected_at_the_edge(error: GatewayError) -> None:
    """Moved under GatewayError, these still reach the edge only by mistake: logged and answered
    as an unexpected error, their message never shown as a problem's detail."""
    assert isinstance(error, AnsweredByCaller)
    assert translate(error) is None
    assert str(error) == error.detail


def test_the_moved_errors_keep_their_builtin_bases() -> None:
    """Callers catch them as these (``except (TimeoutError, OSError)`` in forwarding)."""
    assert issubclass(UpstreamFailed, ConnectionError)
    assert issubclass(ConnectTimeout, TimeoutError)
    assert issubclass(JsonBodyError, ValueError)
