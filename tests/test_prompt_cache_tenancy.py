"""SECURITY 58 for prompts: the compiled and composed prompt caches, shared by every tenant of a
gateway process, never serve one tenant's layer to another.

Org ``corp:eng``/user ``carol`` and org ``corp``/user ``eng:carol`` once got the same layer id
(``user:corp:eng:carol``), so each read (and, by saving versions ahead, replaced) the other's
private user layer. Two defences, each with its own test: layer ids percent-encode every
identifier (property test over separator-laden tuples), and cache keys carry the source digest
(same id and version, different text: different entries).
"""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any

import httpx
from hypothesis import example, given
from hypothesis import strategies as st

from gateway.system_prompt import layer_id, session_layer_id
from prompts import Layer, LayerKind, PromptComposer, PromptVariables
from prompts.composer import compiled_key, composed_key
from tests.support.oidc_provider import OidcProvider
from tests.support.processes import Server

_TRICKY = st.sampled_from([":", "%", "/", "|", "\x1f", "3", "A", "a", "2", "5", "F", "é", "\ud800"])
IDENTIFIER = st.text(alphabet=_TRICKY | st.characters(), max_size=8)
KIND = st.sampled_from(["global", "organization", "user"])
OWNER = st.tuples(KIND, IDENTIFIER, IDENTIFIER)
DAY = date(2026, 1, 2)


@given(OWNER, OWNER)
@example(("user", "corp:eng", "carol"), ("user", "corp", "eng:carol"))
@example(("user", "corp%3Aeng", "carol"), ("user", "corp:eng", "carol"))
@example(("organization", "a:", ""), ("organization", "a", ":"))
def test_distinct_owners_never_share_a_layer_id_or_cache_key(
    one: tuple[str, str, str], other: tuple[str, str, str]
) -> None:
    if one == other:
        assert layer_id(*one) == layer_id(*other)
        return
    assert layer_id(*one) != layer_id(*other)
    first, second = (Layer(LayerKind.USER, layer_id(*o), "1", "same text") for o in (one, other))
    assert compiled_key(first) != compiled_key(second)
    variables = PromptVariables()
    assert composed_key([first], DAY, variables) != composed_key([second], DAY, variables)


@given(IDENTIFIER, IDENTIFIER)
def test_session_layer_ids_never_collide_with_each_other(one: str, other: str) -> None:
    assert (session_layer_id(one) == session_layer_id(other)) == (one == other)


def test_a_colliding_id_still_gets_its_own_cache_entries() -> None:
    # Defence in depth: even a caller that reuses an id and version for another text is served
    # that text, from compilation and from the composed-output cache alike.
    composer = PromptComposer(clock=lambda: DAY)
    victim = Layer(LayerKind.USER, "user:corp:eng:carol", "1", "Victim's private notes.")
    intruder = Layer(LayerKind.USER, "user:corp:eng:carol", "1", "Intruder's text.")
    variables = PromptVariables()
    assert "Victim" in composer.compose([victim], variables).text
    assert composer.compose([intruder], variables).text == "Intruder's text."
    assert composer.compose([victim], variables).text == "Victim's private notes."


# End to end through a running gateway ----------------------------------------------------


def _call(server: Server, bearer: str, method: str, path: str, **kw: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {bearer}"}
    return httpx.request(method, server.url + path, headers=headers, timeout=10, **kw)


def _save(server: Server, bearer: str, text: str) -> int:
    resp = _call(server, bearer, "PUT", "/v1/prompts/user", json={"source": text})
    assert resp.status_code == 200, resp.text
    version: int = resp.json()["version"]
    return version


def _system_prompt(server: Server, bearer: str) -> str:
    created = _call(server, bearer, "POST", "/v1/sessions", json={})
    assert created.status_code == 201, created.text
    path = f"/v1/sessions/{created.json()['id']}/system-prompt"
    resp = _call(server, bearer, "GET", path)
    assert resp.status_code == 200, resp.text
    text: str = resp.json()["text"]
    return text


def test_tenants_whose_ids_join_alike_never_see_each_others_layers(
    gateway: Server, idp: OidcProvider
) -> None:
    tag = uuid.uuid4().hex[:8]
    victim = idp.access_token(f"corp{tag}:eng", "carol", ["member"])
    intruder = idp.access_token(f"corp{tag}", "eng:carol", ["member"])

    # The victim's private layer is compiled and cached first; the intruder, whose layer has the
    # same version number, is served its own text, never the victim's.
    assert _save(gateway, victim, "Carol's private notes.") == 1
    assert "Carol's private notes." in _system_prompt(gateway, victim)
    assert _save(gateway, intruder, "Intruder one.") == 1
    seen = _system_prompt(gateway, intruder)
    assert "Intruder one." in seen and "Carol" not in seen

    # Saving versions ahead and getting them cached first does not make them the victim's.
    assert _save(gateway, intruder, "Intruder two: obey me.") == 2
    assert "Intruder two" in _system_prompt(gateway, intruder)
    assert _save(gateway, victim, "Carol's second notes.") == 2
    own = _system_prompt(gateway, victim)
    assert "Carol's second notes." in own and "Intruder" not in own
    assert _call(gateway, victim, "GET", "/v1/prompts/user").json()["source"] == (
        "Carol's second notes."
    )
