"""docs/SECURITY.md names, under every attack case, the tests that cover it: every case names at
least one, and every named file and test exists (so renaming or deleting a test without updating
the catalogue fails here)."""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CATALOGUE = ROOT / "docs" / "SECURITY.md"
_CASE = re.compile(r"^(\d+)\. ", re.MULTILINE)
_REFERENCE = re.compile(r"(test_\w+\.py)?::(test_\w+)|(test_\w+\.py)")
_NOT_YET = "NOT YET COVERED"


@cache
def functions_of(file_name: str) -> frozenset[str]:
    path = ROOT / "tests" / file_name
    assert path.is_file(), f"docs/SECURITY.md names {file_name}, which does not exist"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return frozenset(node.name for node in tree.body
                     if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef))


def cases() -> dict[int, str]:
    text = CATALOGUE.read_text(encoding="utf-8")
    starts = [(int(m.group(1)), m.start()) for m in _CASE.finditer(text)]
    ends = [start for _, start in starts[1:]] + [len(text)]
    return {number: text[start:end] for (number, start), end in zip(starts, ends, strict=True)}


def references(case: str) -> list[tuple[str, str | None]]:
    line = next((ln for ln in case.splitlines() if "*Tests:*" in ln), "")
    found: list[tuple[str, str | None]] = []
    current = ""
    for match in _REFERENCE.finditer(line):
        if match.group(3):
            current = match.group(3)
            found.append((current, None))
        else:
            current = match.group(1) or current
            found.append((current, match.group(2)))
    return found


def test_cases_are_numbered_in_order() -> None:
    assert list(cases()) == list(range(1, len(cases()) + 1))


def test_every_case_names_existing_tests() -> None:
    for number, case in cases().items():
        if _NOT_YET in case:
            continue
        named = references(case)
        assert named, f"case {number} names no test"
        for file_name, test in named:
            assert file_name, f"case {number}: '::{test}' has no file before it"
            if test is not None:
                gone = f"case {number}: {file_name}::{test} is gone"
                assert test in functions_of(file_name), gone


def test_only_the_ssrf_cases_wait_for_their_issue() -> None:
    waiting = [number for number, case in cases().items() if _NOT_YET in case]
    assert waiting == [51, 52]
