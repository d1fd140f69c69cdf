"""Every example in the README runs, so the docs cannot drift from the code (issue 12 item 2).

Each fenced block of README.md is one of:

* executed against a real ``gatehouse up`` (embedded PostgreSQL and Redis, development issuer):
  ``bash``/``sh`` blocks in a shell whose variables carry over to later blocks, ``python`` blocks
  with those variables as globals (top-level ``await`` allowed), ``http`` blocks sent to the
  gateway (``$TOKEN`` expanded); ``http://127.0.0.1:8000`` is wherever the stack listens;
* a prompt layer, marked ``<!-- prompt-layer: organization -->`` (or ``global``/``user``) on
  the line before it: saved through the API and composed for a user whose token has no name
  (the probe of issue 12: the README's own layer broke every session), and without its
  ``default`` guards it must be refused;
* mapped: ``<!-- tested-by: tests/test_x.py::test_name[, ...] -->`` (each named test must
  exist) or ``<!-- not-executed: reason -->`` (diagrams, benchmarks).

A block that is none of these (another language, or no language and no marker) fails
:func:`test_every_readme_block_is_executed_or_mapped`.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import io
import re
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.processes import free_port
from tests.test_cli import GATEHOUSE, clean_env, gatehouse_up

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
README_URL = "http://127.0.0.1:8000"
FENCE = re.compile(r"^```([\w+-]*)\s*$")
MARKER = re.compile(r"^<!--\s*(tested-by|not-executed|prompt-layer):\s*(.*?)\s*-->$")
EXECUTED = {"bash": "shell", "sh": "shell", "python": "python", "http": "http"}
LAYERS = ("global", "organization", "user")
DEFAULT_FILTER = re.compile(r"\s*\|\s*(?:default|d)\((?:'[^']*'|\"[^\"]*\")\)")


@dataclass(frozen=True)
class Block:
    line: int  # of the opening fence, 1-based
    language: str
    text: str
    marker: str | None
    value: str

    @property
    def kind(self) -> str | None:
        """How the block is checked: shell, python, http, prompt-layer, tested-by,
        not-executed; ``None`` when it is not."""
        if self.marker is not None:
            return self.marker
        return EXECUTED.get(self.language)

    def __str__(self) -> str:
        return f"README.md:{self.line} ({self.language or 'no language'})"


def readme_blocks(text: str) -> list[Block]:
    lines = text.split("\n")
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        fence = FENCE.match(lines[index])
        if fence is None:
            index += 1
            continue
        end = index + 1
        while end < len(lines) and lines[end].rstrip() != "```":
            end += 1
        assert end < len(lines), f"README.md:{index + 1}: unclosed code block"
        marker = MARKER.match(lines[index - 1].strip()) if index else None
        blocks.append(Block(index + 1, fence[1], "\n".join(lines[index + 1:end]),
                            marker[1] if marker else None, marker[2] if marker else ""))
        index = end + 1
    return blocks


BLOCKS = readme_blocks(README.read_text())


def test_the_parser_sees_every_fence() -> None:
    fences = [line for line in README.read_text().split("\n") if line.startswith("```")]
    assert len(fences) == 2 * len(BLOCKS)
    assert any(block.kind == "prompt-layer" for block in BLOCKS)


def test_a_block_without_a_marker_or_a_runnable_language_is_found() -> None:
    sample = ("text\n\n```yaml\nkey: value\n```\n\n<!-- not-executed: a diagram -->\n```\n"
              "a -> b\n```\n```bash\necho hi\n```\n")
    kinds = [(block.line, block.kind) for block in readme_blocks(sample)]
    assert kinds == [(3, None), (8, "not-executed"), (11, "shell")]


def test_every_readme_block_is_executed_or_mapped() -> None:
    unmapped = [str(block) for block in BLOCKS if block.kind is None]
    assert not unmapped, (
        f"README blocks neither executed nor mapped: {unmapped}; mark each with "
        "<!-- tested-by: tests/test_x.py::test_name --> or <!-- not-executed: why --> on the "
        "line before it, or give it a language this test runs (bash, python, http)")
    for block in BLOCKS:
        if block.kind == "prompt-layer":
            assert block.value in LAYERS, f"{block}: no such prompt layer {block.value!r}"
        if block.kind == "not-executed":
            assert block.value, f"{block}: say why it is not executed"


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.kind == "tested-by"], ids=str)
def test_tests_named_by_the_readme_exist(block: Block) -> None:
    names = [name.strip() for name in block.value.split(",")]
    assert names and all(names), f"{block}: tested-by names no test"
    for name in names:
        path, _, function = name.partition("::")
        source = REPO / path
        assert source.is_file(), f"{block}: no file {path}"
        defined = re.search(rf"^(?:async )?def {re.escape(function)}\(", source.read_text(),
                            re.MULTILINE)
        assert function and defined, f"{block}: {path} has no test {function!r}"


# Running the examples ------------------------------------------------------------------------


@dataclass
class Stack:
    cwd: Path
    url: str
    variables: dict[str, str]

    def gatehouse_token(self, *args: str) -> str:
        done = subprocess.run([*GATEHOUSE, "token", *args], cwd=self.cwd, env=clean_env(),
                              capture_output=True, text=True, timeout=60, check=True)
        return done.stdout.strip()

    def localised(self, text: str) -> str:
        return text.replace(README_URL, self.url)


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    """``gatehouse up`` in a fresh directory that has the project's ``.venv``, as after the
    quick start's first command."""
    cwd = Path(tempfile.mkdtemp(prefix="gatehouse-readme-"))
    (cwd / ".venv").symlink_to(REPO / ".venv")
    gateway_port = free_port()
    with gatehouse_up(cwd, gateway_port, free_port()):
        yield Stack(cwd, f"http://127.0.0.1:{gateway_port}", {})
    subprocess.run(["rm", "-rf", str(cwd)], check=False)


def run_shell(stack: Stack, block: Block) -> None:
    exported = stack.cwd / "readme-env"
    script = f"set -a\n{stack.localised(block.text)}\nenv -0 > {exported}\n"
    done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], cwd=stack.cwd,
                          env={**clean_env(), **stack.variables}, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, f"{block} failed:\n{done.stdout}\n{done.stderr}"
    base = clean_env()
    for entry in exported.read_text().split("\0"):
        name, _, value = entry.partition("=")
        if name and base.get(name) != value and not name.startswith(("BASH", "SHLVL", "_")):
            stack.variables[name] = value


def run_python(stack: Stack, block: Block) -> str:
    code = compile(stack.localised(block.text), str(block), "exec",
                   flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    namespace: dict[str, Any] = {"__name__": "__readme__", **stack.variables}
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        result = eval(code, namespace)  # the README's own example, by design
        if asyncio.iscoroutine(result):
            asyncio.run(result)
    return output.getvalue()


def run_http(stack: Stack, block: Block) -> None:
    text = stack.localised(block.text)
    for name, value in stack.variables.items():
        text = text.replace(f"${name}", value).replace(f"${{{name}}}", value)
    head, _, body = text.partition("\n\n")
    request_line, *header_lines = head.split("\n")
    method, target = request_line.split()[:2]
    headers = dict(line.split(": ", 1) for line in header_lines if line.strip())
    headers.pop("Host", None)
    url = target if target.startswith("http") else stack.url + target
    resp = httpx.request(method, url, headers=headers, content=body.encode() or None, timeout=30)
    assert resp.status_code < 400, f"{block}: {resp.status_code} {resp.text}"


def test_the_readme_examples_run_in_order(stack: Stack) -> None:
    ran = 0
    for block in BLOCKS:
        if block.kind == "shell":
            run_shell(stack, block)
        elif block.kind == "python":
            assert run_python(stack, block).strip(), f"{block} printed nothing"
        elif block.kind == "http":
            run_http(stack, block)
        else:
            continue
        ran += 1
    assert ran >= 2  # the token and the FastMCP client, at least
    assert "TOKEN" in stack.variables


def call(stack: Stack, bearer: str, method: str, path: str, **kw: Any) -> httpx.Response:
    return httpx.request(method, stack.url + path, headers={"Authorization": f"Bearer {bearer}"},
                         timeout=30, **kw)


def system_prompt(stack: Stack, bearer: str) -> httpx.Response:
    session = call(stack, bearer, "POST", "/v1/sessions", json={})
    assert session.status_code == 201, session.text
    return call(stack, bearer, "GET", f"/v1/sessions/{session.json()['id']}/system-prompt")


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.kind == "prompt-layer"], ids=str)
def test_readme_prompt_layers_save_and_compose_for_a_token_without_a_name(
    stack: Stack, block: Block
) -> None:
    org = f"readme-{block.line}"
    writer = stack.gatehouse_token("--org", org, "--user", "ada", "--role", "admin")
    if block.value == "global":
        writer = stack.gatehouse_token("--org", org, "--user", "ada", "--role", "admin",
                                       "--claim", "gatehouse_platform_admin=true")
    reader = stack.gatehouse_token("--org", org, "--user", "max")  # no name, no email
    unguarded = DEFAULT_FILTER.sub("", block.text)
    if unguarded != block.text:
        # The probe: without its guards the example would break every session it applies to.
        refused = call(stack, writer, "PUT", f"/v1/prompts/{block.value}",
                       json={"source": unguarded})
        assert refused.status_code == 422, refused.text
        assert refused.json()["errors"][0]["type"] == "NotGuaranteed"
    saved = call(stack, writer, "PUT", f"/v1/prompts/{block.value}", json={"source": block.text})
    assert saved.status_code == 200, f"{block}: {saved.text}"
    composed = system_prompt(stack, reader)
    assert composed.status_code == 200, f"{block}: {composed.text}"
    first_words = next(line for line in block.text.split("\n")
                       if line.strip() and not line.startswith("@section")).split("{{")[0]
    assert first_words.strip() in composed.json()["text"]
    named = stack.gatehouse_token("--org", org, "--user", "nia", "--name", "Nia Named")
    with_name = system_prompt(stack, named)
    assert with_name.status_code == 200, with_name.text
    assert ("Nia Named" in with_name.json()["text"]) == ("user.name" in block.text)
