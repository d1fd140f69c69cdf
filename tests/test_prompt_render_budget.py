"""SECURITY 41 and 59: the render budget holds whatever filters a template chains.

The probe: ``POST /v1/prompt-preview`` (a viewer may call it) with
``{% set s = 'x' * 131072 %}{{ ([s] * 10000)|map('upper')|...|max }}`` took 1.3 s and 1.37 GB
per ``map`` stage, and froze every other organisation's requests meanwhile. Now every value a
template builds is measured (repetition before it happens), every filter and test is metered,
and a render's total work is capped, so each variant is refused within the time budget.
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import date

import httpx
import pytest

from prompts import (
    Layer,
    LayerKind,
    PromptComposer,
    PromptVariables,
    RenderLimitExceeded,
    RenderLimits,
    TemplateInvalid,
    UnsafeTemplate,
)
from tests.support.oidc_provider import OidcProvider
from tests.support.processes import Server

DAY = date(2026, 1, 2)
BUDGET = RenderLimits().max_seconds  # the gateway runs with the default limits
# An HTTP round trip on a busy test machine (token check, one query, JSON) on top of the budget.
MARGIN = 0.75
BIG = "{% set s = 'x' * 131072 %}"
MAPS = "|map('upper')" * 30
MANY_S = "[" + ",".join(["s"] * 2000) + "]"

ABUSE = {
    "the probe": BIG + "{{ ([s] * 10000)" + MAPS + "|max }}",
    # [s] alone is too big above; with a smaller s, only the repetition's size is.
    "the probe, smaller s": "{% set s = 'x' * 65536 %}{{ ([s] * 10000)" + MAPS + "|max }}",
    "a literal list of copies": BIG + "{{ " + MANY_S + MAPS + "|max }}",
    "list|length": BIG + "{{ ([s] * 10000)|list|length }}",
    "join": BIG + "{{ ([s] * 10000)|join|length }}",
    "sort": BIG + "{{ ([s] * 10000)|sort|first|length }}",
    "unique": BIG + "{{ ([s] * 10000)|unique|list|length }}",
    "max": BIG + "{{ ([s] * 10000)|max|length }}",
    "replace": BIG + "{{ s|replace('x', s)|length }}",
    "(s ~ s) * n": BIG + "{{ ((s ~ s) * 10000)|length }}",
    "list addition": BIG + "{{ ([s] + [s])|length }}",
    "nested loops": BIG + "{% for i in range(10000) %}{% for j in range(10000) %}"
    "{{ (s|upper)|length }}{% endfor %}{% endfor %}",
    "slices in a loop": BIG + "{% for i in range(10000) %}{% set t = s[1:] %}{% endfor %}",
    "lazy filters over a range": "{{ range(10000)|map('string')|map('replace', '', 'y' * 1000)"
    + MAPS + "|list|length }}",
    "a test per item": BIG + "{% set l = [s ~ ''] %}{{ range(10000)|select('in', l)|list }}",
    "map chain over a range": "{{ range(10000)|map('string')" + MAPS * 3 + "|list|length }}",
    "method results": "{% set s = 'x ' * 65536 %}{{ s.split()|length }}",
    "a dict literal": BIG + "{{ {'a': s, 'b': s}|length }}",
}
REFUSED_WHEN_SAVED = {
    "batch": BIG + "{{ ([s] * 10000)|batch(3)|list|length }}",
    "sum": BIG + "{{ ([s] * 10000)|sum }}",
}


def compose(source: str, composer: PromptComposer | None = None) -> str:
    composer = composer or PromptComposer(clock=lambda: DAY)
    layer = Layer(LayerKind.GLOBAL, "g", "1", source)
    return composer.compose([layer], PromptVariables()).text


@pytest.mark.parametrize("source", ABUSE.values(), ids=ABUSE.keys())
def test_chained_filters_over_large_values_are_stopped_within_the_budget(source: str) -> None:
    started = time.perf_counter()
    with pytest.raises(RenderLimitExceeded):
        compose(source)
    assert time.perf_counter() - started < BUDGET + 0.25


@pytest.mark.parametrize("source", REFUSED_WHEN_SAVED.values(), ids=REFUSED_WHEN_SAVED.keys())
def test_amplifying_filters_cannot_even_be_saved(source: str) -> None:
    with pytest.raises(UnsafeTemplate):
        PromptComposer().validate(source, kind=LayerKind.USER)


@pytest.mark.parametrize(
    ("source", "limit"),
    [
        # Two copies of s exceed the cap: refused before the list is built.
        ("{% set s = 'x' * 70000 %}{{ ([s] * 2)|length }}", "max_output_chars"),
        ("{% set s = 'x' * 70000 %}{{ ([s] + [s])|length }}", "max_output_chars"),
        ("{% set s = 'x' * 1000 %}{{ " + "[" + ",".join(["s"] * 200) + "]|length }}",
         "max_output_chars"),
        ("{% for i in range(10000) %}{% set t = ('x' * 100000)|upper %}{% endfor %}",
         "max_work_chars"),
    ],
)
def test_each_limit_names_itself(source: str, limit: str) -> None:
    with pytest.raises(RenderLimitExceeded) as caught:
        compose(source)
    assert caught.value.limit == limit


def test_lazy_filters_spend_a_step_per_item() -> None:
    # No value here is large and nothing is printed: only per-item steps can stop it.
    composer = PromptComposer(limits=RenderLimits(max_steps=5_000, max_seconds=60))
    with pytest.raises(RenderLimitExceeded) as caught:
        compose("{{ range(10000)|map('string')|map('upper')|map('lower')|list|length }}",
                composer)
    assert caught.value.limit == "max_steps"


def test_ordinary_templates_still_render() -> None:
    text = compose(
        "{% set names = ['ann', 'bob'] + ['cy'] %}{{ names|map('upper')|join(', ') }};"
        "{{ (range(50)|list)[10:12]|join('-') }};{{ {'k': 'v'}|length }};{{ 'ab' * 3 }}"
        "{% for a, b in [(1, 2)] %};{{ a + b }}{% endfor %}"
    )
    for expected in ("ANN, BOB, CY", ">10-11<", ";1;", "ababab", ";3"):
        assert expected in text


def test_the_layers_of_one_composition_share_one_budget() -> None:
    # Each layer alone spends 60% of the work budget (3 strings, each built twice): fine
    # alone, refused together.
    limits = RenderLimits(max_work_chars=1_000_000, max_seconds=60)
    spend = "{% for i in range(3) %}{% set t = ('x' * 100000)|upper %}{% endfor %}ok"
    org = Layer(LayerKind.ORGANIZATION, "o", "1", spend)
    user = Layer(LayerKind.USER, "u", "1", spend)
    for alone in (org, user):
        PromptComposer(limits=limits).compose([alone], PromptVariables())
    with pytest.raises(RenderLimitExceeded) as caught:
        PromptComposer(limits=limits).compose([org, user], PromptVariables())
    assert caught.value.limit == "max_work_chars"


@pytest.mark.parametrize(
    "source",
    ["{{ " + "(" * 150 + "1" + ")" * 150 + " }}",
     "{% for a in b %}" * 100 + "x" + "{% endfor %}" * 100],
    ids=["parentheses", "loops"],
)
def test_deeply_nested_templates_are_invalid_not_a_crash(source: str) -> None:
    with pytest.raises(TemplateInvalid, match="nested too deeply"):
        PromptComposer().validate(source, kind=LayerKind.USER)


def test_compiling_is_bounded_by_the_number_of_template_nodes() -> None:
    # Compiling runs before any render budget: its cost follows the syntax nodes of the layer.
    many = "{{ [" + ",".join(["s"] * 8000) + "]|length }}"
    with pytest.raises(UnsafeTemplate, match="too many template expressions"):
        PromptComposer().validate(many, kind=LayerKind.USER)
    split = "".join(f"@section s{i}\n{{{{ [{','.join(['s'] * 200)}] }}}}\n" for i in range(40))
    with pytest.raises(UnsafeTemplate, match="too many template expressions"):
        PromptComposer().validate(split, kind=LayerKind.USER)  # counted per layer
    prose = "A long, plain prompt. {{ user.id }}\n" * 800
    PromptComposer().validate(prose, kind=LayerKind.USER)


# Through the running gateway -------------------------------------------------------------


def _preview(server: Server, bearer: str, source: str) -> tuple[httpx.Response, float]:
    started = time.perf_counter()
    resp = httpx.post(
        server.url + "/v1/prompt-preview",
        headers={"Authorization": f"Bearer {bearer}"},
        json={"layer": "user", "source": source},
        timeout=60,
    )
    return resp, time.perf_counter() - started


@pytest.fixture(scope="module")
def viewer(idp: OidcProvider) -> str:
    return idp.access_token(f"budget-{uuid.uuid4().hex[:8]}", "vic", ["viewer"])


@pytest.mark.parametrize(
    "source", [*ABUSE.values(), *REFUSED_WHEN_SAVED.values()],
    ids=[*ABUSE.keys(), *REFUSED_WHEN_SAVED.keys()],
)
def test_a_viewers_abusive_preview_is_422_within_the_budget(
    gateway: Server, viewer: str, source: str
) -> None:
    resp, elapsed = _preview(gateway, viewer, source)
    assert resp.status_code == 422, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    assert elapsed < BUDGET + MARGIN, elapsed


def test_another_organization_is_answered_in_normal_time_meanwhile(
    gateway: Server, idp: OidcProvider, viewer: str
) -> None:
    neighbour = idp.access_token(f"neighbour-{uuid.uuid4().hex[:8]}", "nia", ["member"])
    stop = threading.Event()
    first_answered = threading.Event()
    statuses: list[int] = []

    def abuse(source: str) -> None:
        while not stop.is_set():
            resp, _ = _preview(gateway, viewer, source)
            statuses.append(resp.status_code)
            first_answered.set()

    # The probe itself and a variant that runs until the time budget stops it.
    abusers = [
        threading.Thread(target=abuse, args=(source,), daemon=True)
        for source in (ABUSE["the probe"], ABUSE["map chain over a range"])
    ]
    for thread in abusers:
        thread.start()
    try:
        assert first_answered.wait(timeout=30)
        for _ in range(5):
            started = time.perf_counter()
            resp = httpx.get(
                gateway.url + "/v1/sessions",
                headers={"Authorization": f"Bearer {neighbour}"},
                timeout=30,
            )
            elapsed = time.perf_counter() - started
            assert resp.status_code == 200, resp.text
            assert elapsed < 1.0, elapsed
    finally:
        stop.set()
        for thread in abusers:
            thread.join(timeout=60)
    assert statuses and set(statuses) == {422}


def test_a_saved_layer_is_held_to_the_same_budget(gateway: Server, idp: OidcProvider) -> None:
    member = idp.access_token(f"saved-{uuid.uuid4().hex[:8]}", "sam", ["member"])
    headers = {"Authorization": f"Bearer {member}"}
    costly = ABUSE["map chain over a range"]
    # Saving renders the text for a caller with only the guaranteed variables, in the budget:
    # text that exhausts it for everyone is refused at once.
    started = time.perf_counter()
    refused = httpx.put(gateway.url + "/v1/prompts/user", headers=headers,
                        json={"source": costly}, timeout=10)
    assert refused.status_code == 422, refused.text
    assert refused.json()["errors"][0]["type"] == "RenderLimitExceeded"
    assert time.perf_counter() - started < BUDGET + MARGIN
    # Costly only for sessions that set a variable: saved, and held to the budget there.
    guarded = "{% if session.heavy is defined %}" + costly + "{% endif %}"
    saved = httpx.put(gateway.url + "/v1/prompts/user", headers=headers,
                      json={"source": guarded}, timeout=10)
    assert saved.status_code == 200, saved.text
    session = httpx.post(gateway.url + "/v1/sessions", headers=headers,
                         json={"variables": {"heavy": True}}, timeout=10)
    assert session.status_code == 201, session.text
    started = time.perf_counter()
    resp = httpx.get(f"{gateway.url}/v1/sessions/{session.json()['id']}/system-prompt",
                     headers=headers, timeout=60)
    assert resp.status_code == 409, resp.text
    assert resp.json()["code"] == "prompt_not_composable"
    assert time.perf_counter() - started < BUDGET + MARGIN
