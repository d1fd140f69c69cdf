"""The published ``/openapi.json`` is a contract: schemathesis generates requests from it, sends
them to a live gateway (real PostgreSQL, Redis and identity provider), and every answer must be
a documented status code with a documented content type and a body that matches its schema; no
input, valid or invalid, may produce a 5xx.

Each operation is exercised, in schemathesis's positive and negative generation modes, by its
coverage phase (deterministic boundary and type-confusion cases) and its fuzzing phase
(Hypothesis). Strings are drawn now and then from a dictionary of inputs that break careless
handling (NUL, non-ASCII digits, out-of-range integers, ...).

The run is bounded and repeatable: Hypothesis is derandomized and keeps no example database, so
the same cases are sent every run; at most ``MAX_EXAMPLES`` fuzzed and ``MAX_COVERAGE_CASES``
coverage cases per operation and mode; every request has a timeout and every example a deadline.

The caller owns an organisation of its own, so every operation is reachable (admin-only ones
included) and nothing created here is visible to the other tests; each test is a different user
of it, so per-user session quotas do not carry over from one test to the next. Operations whose
path names a session or a member are also sent ids that exist, so they reach the code behind a
found row, not only the 404 for an unknown id.

The operations are parametrized from the gateway's own endpoint table (``gateway.app.API``);
``test_the_document_publishes_every_endpoint`` checks that the live document lists exactly
those. (``schemathesis.pytest.from_fixture`` would iterate them itself, but as of schemathesis
4.32.5 it assigns ``Function._nodeid``, which pytest 9.2 no longer has.)
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.core.result import Ok

from gateway.app import API
from tests.support.oidc_provider import OidcProvider
from tests.support.processes import Server

Operation = schemathesis.APIOperation[Any, Any, Any, Any]
Case = schemathesis.Case[Any]

ORG = "contract-org"
MAX_EXAMPLES = 40
MAX_COVERAGE_CASES = 60
REQUEST_TIMEOUT = 10.0
SEEDED_SESSIONS = 3
MAX_REPORTED = 5  # distinct failures shown per operation and mode

# What the document promises, and only that, in every phase and mode.
CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_schema_conformance,
]

# Valid JSON strings that a careless path from HTTP to PostgreSQL mishandles.
HOSTILE_STRINGS = [
    "\x00",
    "nul\x00inside",
    "\u00b2",  # str.isdigit() is true, int() refuses it
    "\u0663",  # ARABIC-INDIC DIGIT THREE
    "9223372036854775808",  # one past the largest bigint
    "-9223372036854775809",
    "99999999999999999999999999999999",
    "\U0001f4a5",
]

CONFIG = {
    "dictionaries": {"hostile": {"values": HOSTILE_STRINGS}},
    "generation": {
        "deterministic": True,
        "database": "none",
        "max-examples": MAX_EXAMPLES,
        "dictionaries": {"string": {"dictionary": "hostile", "probability": 0.3}},
    },
    # The type binding reaches parameters; body fields need their own (free-form objects'
    # members cannot be named).
    "parameters": {
        name: {"dictionary": "hostile", "probability": 0.5}
        for name in ("body.name", "query.cursor", "query.event", "query.actor", "path.user_id")
    },
    "request-timeout": REQUEST_TIMEOUT,
}

BOUNDED = settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=timedelta(seconds=3),
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
    ],
    print_blob=False,
)

OPERATIONS = sorted((endpoint.method.upper(), endpoint.path) for endpoint in API)
MODES = list(schemathesis.GenerationMode)


@pytest.fixture(scope="module")
def api(gateway: Server) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(
        gateway.url + "/openapi.json",
        config=schemathesis.Config.from_dict(CONFIG),
        timeout=REQUEST_TIMEOUT,
    )


_users = itertools.count()


@pytest.fixture
def owner(idp: OidcProvider) -> tuple[str, dict[str, str]]:
    """A fresh owner of the contract organisation: its user id and request headers."""
    user = f"carol-{next(_users)}"
    return user, {"Authorization": "Bearer " + idp.access_token(ORG, user, ["owner"])}


@pytest.fixture
def existing(gateway: Server, owner: tuple[str, dict[str, str]]) -> dict[str, list[str]]:
    """Path parameter values that name rows of the caller's organisation."""
    user, headers = owner
    ids = []
    with httpx.Client(base_url=gateway.url, headers=headers, timeout=REQUEST_TIMEOUT) as client:
        for n in range(SEEDED_SESSIONS):
            response = client.post("/v1/sessions", json={"name": f"contract {n}"})
            assert response.status_code == 201, response.text
            ids.append(response.json()["id"])
    return {"session_id": ids, "user_id": [user]}


def test_the_document_publishes_every_endpoint(api: schemathesis.BaseSchema) -> None:
    results = list(api.get_all_operations())
    assert all(isinstance(result, Ok) for result in results), results
    published = sorted(
        (result.ok().method.upper(), result.ok().path)
        for result in results
        if isinstance(result, Ok)
    )
    assert published == OPERATIONS


def _fuzzed(
    operation: Operation,
    mode: schemathesis.GenerationMode,
    existing: dict[str, list[str]],
) -> st.SearchStrategy[Case]:
    """Generated cases, and as many again whose path parameters name existing rows."""
    generated = operation.as_strategy(generation_mode=mode)
    names = [parameter.name for parameter in operation.path_parameters]
    if not names or any(name not in existing for name in names):
        return generated
    known = st.fixed_dictionaries({name: st.sampled_from(existing[name]) for name in names})
    return st.one_of(
        generated,
        known.flatmap(
            lambda path: operation.as_strategy(generation_mode=mode, path_parameters=path)
        ),
    )


def _coverage(
    api: schemathesis.BaseSchema,
    operation: Operation,
    mode: schemathesis.GenerationMode,
) -> Iterator[Case]:
    generation = api.config.generation_for(operation=operation, phase="coverage")
    cases = api.iter_coverage_cases(
        operation, generation_modes=[mode], generation_config=generation
    )
    return itertools.islice(cases, MAX_COVERAGE_CASES)


def _report(failures: list[str], phase: str, exc: BaseException) -> None:
    if len(failures) < MAX_REPORTED:
        failures.append(f"--- {phase} ---\n{exc}")


@pytest.mark.parametrize("mode", MODES, ids=str)
@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_the_gateway_honours_its_published_contract(
    api: schemathesis.BaseSchema,
    owner: tuple[str, dict[str, str]],
    existing: dict[str, list[str]],
    method: str,
    path: str,
    mode: schemathesis.GenerationMode,
) -> None:
    operation = api[path][method]
    headers = owner[1]
    failures: list[str] = []
    seen: set[str] = set()

    for case in _coverage(api, operation, mode):
        try:
            case.call_and_validate(headers=headers, checks=CHECKS, timeout=REQUEST_TIMEOUT)
        except (AssertionError, BaseExceptionGroup) as exc:
            kind = str(exc).partition("\n")[0]
            if kind not in seen:
                seen.add(kind)
                _report(failures, "coverage phase", exc)

    @BOUNDED
    @given(case=_fuzzed(operation, mode, existing))
    def fuzz(case: Case) -> None:
        case.call_and_validate(headers=headers, checks=CHECKS, timeout=REQUEST_TIMEOUT)

    try:
        fuzz()
    except (AssertionError, BaseExceptionGroup) as exc:
        _report(failures, "fuzzing phase", exc)

    assert not failures, f"{method} {path} ({mode}) broke its contract:\n\n" + "\n\n".join(
        failures
    )
