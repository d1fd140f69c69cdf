"""A saved layer can never break everyone's sessions (issue 12 item 2).

The probe: the README's organisation layer ``helping {{ user.name }}`` was saved (200), then every
session of the organisation failed with 409, because development tokens carry no ``name``.
Saving now checks the text against what every caller has (org.id, user.id, user.roles, today):
an optional variable used unguarded is 422 with line, column and the fix; a rollback to such a
version is refused the same way; a composition that still fails names the layer and version.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import date
from typing import Any

import asyncpg
import pytest

from prompts import (
    Layer,
    LayerKind,
    PromptComposer,
    PromptVariables,
    RenderFailed,
    RenderLimitExceeded,
)
from prompts.errors import NotGuaranteed
from tests.support.databases import Database
from tests.support.oidc_provider import OidcProvider
from tests.support.processes import Server
from tests.test_prompts_api import call, save, token

ORG = LayerKind.ORGANIZATION
README_PROBE = (
    "@section persona replace\n"
    "You are the assistant of {{ org.id }}, helping {{ user.name }}.\n"
)
# Everything a development token gives a template.
NO_NAME = PromptVariables(org={"id": "acme"}, user={"id": "alice", "roles": ["member"]})
WITH_NAME = PromptVariables(
    org={"id": "acme"}, user={"id": "alice", "roles": ["member"], "name": "Alice"}
)

GUARDED = {
    "default filter": "helping {{ user.name | default('there') }}",
    "d filter": "helping {{ user.name|d('there') }}",
    "if defined": "helping{% if user.name is defined %} {{ user.name }}{% endif %}",
    "else of not defined": "helping {% if user.name is not defined %}there{% else %}"
    "{{ user.name|upper }}{% endif %}",
    "elif": "{% if user.email is defined %}{{ user.email }}{% elif user.name is defined %}"
    "helping {{ user.name }}{% endif %}",
    "conditional expression": "helping {{ user.name if user.name is defined else 'there' }}",
    "and": "{% if user.name is defined and user.name.startswith('A') %}A{% endif %}",
    "membership": "{% if 'name' in user %}helping {{ user.name }}{% endif %}",
    "get": "helping {{ user.get('name', 'there') }}",
    "guaranteed only": "{{ org.id }} {{ user.id }} {{ user.roles|join(',') }} {{ today.year }}",
}
UNGUARDED = {
    # name: (source, variable, line, column)
    "the README's example": (README_PROBE, "user.name", 2, 51),
    "item access": ("x\n  {{ user['email'] }}", "user.email", 2, 6),
    "only one branch": ("{% if user.roles %}\n{{ org.name }}\n{% endif %}", "org.name", 2, 4),
    "filtered before default": ("{{ user.name|upper|default('x') }}", "user.name", 1, 4),
    "deeper than default": ("{{ user.name.first|default('x') }}", "user.name", 1, 4),
    "guard on another name": (
        "{% if user.email is defined %}{{ user.name }}{% endif %}", "user.name", 1, 34),
    "guarded once, used again": (
        "{{ user.name|d('a') }} and {{ user.name }}", "user.name", 1, 31),
    "truthiness is no guard": ("{% if user.name %}hi{% endif %}", "user.name", 1, 7),
    "session variable in a saved layer": ("{{ session.topic }}", "session.topic", 1, 4),
    "in a later section": ("@section a\nok\n@section b\n\n{{ user.locale }}", "user.locale",
                           5, 4),
}


def composer() -> PromptComposer:
    return PromptComposer(clock=lambda: date(2026, 1, 2))


@pytest.mark.parametrize("source", GUARDED.values(), ids=GUARDED.keys())
def test_guarded_optional_variables_save_and_compose_with_and_without_them(source: str) -> None:
    composer().validate(source, kind=ORG)
    saved = Layer(ORG, "org", "1", source)
    composer().compose([saved], NO_NAME)
    composer().compose([saved], WITH_NAME)


@pytest.mark.parametrize(("source", "variable", "line", "column"), UNGUARDED.values(),
                         ids=UNGUARDED.keys())
def test_an_unguarded_optional_variable_is_refused_where_it_is_used(
    source: str, variable: str, line: int, column: int
) -> None:
    with pytest.raises(NotGuaranteed) as refused:
        composer().validate(source, kind=ORG)
    assert (refused.value.variable, refused.value.line, refused.value.column) == (
        variable, line, column)
    assert f"{{{{ {variable} | default(" in refused.value.message
    assert f"{{% if {variable} is defined %}}" in refused.value.message


def test_the_readme_probe_says_why_and_how_to_fix_it() -> None:
    with pytest.raises(NotGuaranteed) as refused:
        composer().validate(README_PROBE, kind=ORG)
    message = refused.value.message
    assert message.startswith("user.name is not guaranteed: ")
    assert "dev tokens and some issuers don't send" in message
    assert "{{ user.name | default('there') }}" in message


def test_what_the_static_check_cannot_see_is_found_by_rendering_for_a_minimal_caller() -> None:
    with pytest.raises(RenderFailed) as failed:
        composer().validate("fine\n  {{ nobody }}", kind=ORG)
    assert (failed.value.line, failed.value.column) == (2, 6)
    with pytest.raises(RenderFailed):
        composer().validate("{{ user.roles[1] }}", kind=ORG)  # a caller may have one role


def test_text_that_exhausts_the_budget_for_everyone_is_refused_when_saved() -> None:
    with pytest.raises(RenderLimitExceeded):
        composer().validate("{% for i in range(9999) %}{% for j in range(9999) %}"
                            "{% endfor %}{% endfor %}", kind=ORG)


def test_the_trial_render_includes_the_layers_above_and_below_but_blames_only_itself() -> None:
    above = Layer(LayerKind.GLOBAL, "g", "1", "{{ user.name }}")  # saved before the check
    below = Layer(LayerKind.USER, "u", "1", "{{ org.plan }}")
    composer().validate("fine", kind=ORG, above=[above], below=[below])
    with pytest.raises(RenderFailed):
        composer().validate("{{ nobody }}", kind=ORG, above=[above], below=[below])


def test_a_session_prompt_may_use_the_variables_of_its_session() -> None:
    source = "Answer in {{ session.lang }} for {{ user.name | default('you') }}."
    composer().validate(source, kind=LayerKind.SESSION)  # variables unknown: not checked
    composer().validate(source, kind=LayerKind.SESSION, session_variables={"lang": "fr"})
    with pytest.raises(NotGuaranteed, match=r"session\.lang"):
        composer().validate(source, kind=LayerKind.SESSION, session_variables={})
    with pytest.raises(NotGuaranteed, match=r"user\.name"):
        composer().validate("{{ user.name }}", kind=LayerKind.SESSION)


def test_a_composition_that_fails_names_the_layer_and_its_version() -> None:
    broken = Layer(ORG, "org", "3", "@section a\nhello\n    {{ user.name }}")
    with pytest.raises(RenderFailed) as failed:
        composer().compose([Layer(LayerKind.GLOBAL, "g", "7", "fine"), broken], NO_NAME)
    assert str(failed.value).startswith("organization layer version 3: line 3, column 8: ")
    invalid = Layer(LayerKind.USER, "user", "12", "ok\n{{ 1 + }}")
    with pytest.raises(Exception, match=r"^user layer version 12: line 2, column \d+: "):
        composer().compose([invalid], NO_NAME)


# Through the running gateway ---------------------------------------------------------------


@pytest.fixture
def org(idp: OidcProvider) -> dict[str, str]:
    """A fresh organisation: its admin and a member, neither token carrying a name."""
    org_id = f"guarantees-{uuid.uuid4().hex[:8]}"
    return {"id": org_id, "admin": token(idp, org_id, "ada", ["admin"]),
            "member": token(idp, org_id, "max", ["member"])}


def system_prompt(gateway: Server, bearer: str) -> Any:
    session = call(gateway, bearer, "POST", "/v1/sessions", json={})
    assert session.status_code == 201, session.text
    return call(gateway, bearer, "GET", f"/v1/sessions/{session.json()['id']}/system-prompt")


def test_saving_the_readme_probe_is_422_with_line_column_and_fix(
    gateway: Server, org: dict[str, str]
) -> None:
    resp = save(gateway, org["admin"], "organization", README_PROBE)
    assert resp.status_code == 422, resp.text
    [error] = resp.json()["errors"]
    assert error["loc"] == ["body", "source"]
    assert (error["type"], error["line"], error["column"]) == ("NotGuaranteed", 2, 51)
    assert "user.name is not guaranteed" in error["msg"]
    assert "{{ user.name | default('there') }}" in error["msg"]
    assert call(gateway, org["admin"], "GET", "/v1/prompts/organization").status_code == 404
    # Nothing was saved, so the organisation's sessions still compose.
    assert system_prompt(gateway, org["member"]).status_code == 200


def test_a_guarded_layer_saves_and_composes_for_tokens_with_and_without_a_name(
    gateway: Server, idp: OidcProvider, org: dict[str, str]
) -> None:
    fixed = README_PROBE.replace("{{ user.name }}", "{{ user.name | default('there') }}")
    assert save(gateway, org["admin"], "organization", fixed).status_code == 200
    nameless = system_prompt(gateway, org["member"])
    assert nameless.status_code == 200, nameless.text
    assert "there</user_data" in nameless.json()["text"]  # printed values are fenced data
    named = token(idp, org["id"], "nia", ["member"], name="Nia Named")
    text = system_prompt(gateway, named).json()["text"]
    assert "Nia Named" in text and "there" not in text


async def _insert_version(database: Database, org_id: str, source: str) -> int:
    """A version saved before saving checked guarantees (written as the table's owner)."""
    conn = await asyncpg.connect(database.admin_url)
    try:
        version: int = await conn.fetchval(
            "INSERT INTO prompt_layers (org_id, kind, owner_id, version, source, author) "
            "SELECT $1, 'organization', '', coalesce(max(version), 0) + 1, $2, 'legacy' "
            "FROM prompt_layers WHERE org_id = $1 AND kind = 'organization' RETURNING version",
            org_id, source)
    finally:
        await conn.close()
    return version


def test_rollback_to_an_unguarded_version_is_refused_the_same_way(
    gateway: Server, database: Database, org: dict[str, str]
) -> None:
    assert save(gateway, org["admin"], "organization", "{{ org.id }}").status_code == 200
    legacy = asyncio.run(_insert_version(database, org["id"], README_PROBE))
    assert save(gateway, org["admin"], "organization", "current").status_code == 200
    resp = call(gateway, org["admin"], "POST", "/v1/prompts/organization/rollback",
                json={"version": legacy})
    assert resp.status_code == 422, resp.text
    [error] = resp.json()["errors"]
    assert (error["type"], error["line"], error["column"]) == ("NotGuaranteed", 2, 51)
    newest = call(gateway, org["admin"], "GET", "/v1/prompts/organization").json()
    assert (newest["version"], newest["source"]) == (legacy + 1, "current")


def test_a_composition_that_still_fails_names_the_layer_and_version(
    gateway: Server, database: Database, org: dict[str, str]
) -> None:
    legacy = asyncio.run(_insert_version(database, org["id"], README_PROBE))
    resp = system_prompt(gateway, org["member"])
    assert resp.status_code == 409, resp.text
    assert resp.json()["code"] == "prompt_not_composable"
    assert f"organization layer version {legacy}: line 2, column 51: " in resp.json()["detail"]


def test_a_session_prompt_is_held_to_the_same_guarantees(
    gateway: Server, org: dict[str, str]
) -> None:
    refused = call(gateway, org["member"], "POST", "/v1/sessions",
                   json={"prompt": "Hi\n{{ user.email }}"})
    assert refused.status_code == 422, refused.text
    [error] = refused.json()["errors"]
    assert (error["loc"], error["type"], error["line"], error["column"]) == (
        ["body", "prompt"], "NotGuaranteed", 2, 4)
    fine = call(gateway, org["member"], "POST", "/v1/sessions",
                json={"prompt": "Hi {{ user.email | default('you') }} in {{ session.lang }}",
                      "variables": {"lang": "fr"}})
    assert fine.status_code == 201, fine.text


def test_a_session_prompt_must_fit_the_session_variables_it_is_kept_with(
    gateway: Server, org: dict[str, str]
) -> None:
    member = org["member"]
    missing = call(gateway, member, "POST", "/v1/sessions",
                   json={"prompt": "Topic: {{ session.topic }}"})
    assert missing.status_code == 422, missing.text
    kept = call(gateway, member, "POST", "/v1/sessions",
                json={"prompt": "Topic: {{ session.topic }}", "variables": {"topic": "tax"}})
    assert kept.status_code == 201, kept.text
    path = f"/v1/sessions/{kept.json()['id']}"
    # Dropping the variable the kept prompt uses would break every composition: refused.
    dropped = call(gateway, member, "PATCH", path, json={"variables": {}})
    assert dropped.status_code == 422, dropped.text
    assert call(gateway, member, "GET", path).json()["variables"] == {"topic": "tax"}
    # A new prompt is checked against the kept variables.
    assert call(gateway, member, "PATCH", path,
                json={"prompt": "{{ session.other }}"}).status_code == 422
    assert call(gateway, member, "PATCH", path,
                json={"prompt": "Still {{ session.topic }}"}).status_code == 200
