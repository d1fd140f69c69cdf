"""``/v1/prompts/{layer}``: the global, organisation and user layers of the system prompt,
each a history of versions; and the composed prompt of a session.

Writes are checked by layer: the global layer needs a platform administrator, the organisation
layer ``prompts:write``, and a user's own layer ``prompts:own``. Saving validates the text
(syntax, sandbox, size, locked sections of the layers above, and that it composes for a caller
with only the guaranteed variables: see :mod:`prompts.guarantees`) and answers 422 with the line
and column of the problem and the fix; a rollback to a version that fails so is refused the same
way. Every change, rollbacks included, is a new version with its author.
"""

from __future__ import annotations

from asyncpg import Record
from starlette.responses import Response

from gateway.api.models import (
    ComposedSystemPrompt,
    LayerUsed,
    PromptHistory,
    PromptPreview,
    PromptRollback,
    PromptSave,
    PromptVersion,
    PromptVersionSummary,
)
from gateway.api.typed_endpoints import Call, Endpoint
from gateway.audit import AuditEntry, SystemTenant
from gateway.errors import Forbidden, NotFound
from gateway.idempotency import claim_key
from gateway.permissions import require
from gateway.sessions import parse_id, visible
from gateway.system_prompt import (
    GLOBAL_ORG,
    KINDS,
    compose_for,
    invalid_prompt,
    layer_owner,
    layers_used,
    saved_layers,
)
from prompts import SAMPLE_VARIABLES, ComposedPrompt, LayerKind, PromptError, PromptVariables
from sql import QUERIES, Tenant, rls_transaction

_PREVIEW_KINDS = {**KINDS, "session": LayerKind.SESSION}


def _layer_name(call: Call) -> str:
    name = call.path("layer")
    if name not in KINDS:
        raise NotFound("no such prompt layer; use global, organization or user")
    return name


def _authorize_write(call: Call, layer: str) -> None:
    if layer == "global":
        if not call.principal.platform_admin:
            raise Forbidden("the global layer can only be changed by a platform administrator")
    else:
        require(call.principal, "prompts:write" if layer == "organization" else "prompts:own")


def _may_write(call: Call) -> None:
    """Checked before the body is read (see ``Endpoint.guard``)."""
    _authorize_write(call, _layer_name(call))


def _tenant_for(call: Call, layer: str) -> Tenant:
    """Writes to the global layer happen in the platform's pseudo-organisation."""
    if layer != "global":
        return call.principal
    return SystemTenant(GLOBAL_ORG, call.principal.user_id)




def _version(layer: str, row: Record) -> Response:
    model = PromptVersion(layer=layer, version=row["version"], source=row["source"],
                          note=row["note"], author=row["author"], created_at=row["created_at"])
    return Response(model.model_dump_json(), media_type="application/json")


async def _save(call: Call, layer: str, source: str, note: str) -> Response:
    _authorize_write(call, layer)
    org_id, owner_id = layer_owner(layer, call.principal)
    tenant = _tenant_for(call, layer)
    async with rls_transaction(call.services.pool, tenant) as conn:
        claim = await claim_key(conn, call, tenant)
        if claim.replay is not None:
            return claim.replay
        saved, kind = await saved_layers(conn, call.principal), KINDS[layer]
        try:
            call.services.composer.validate(
                source, kind=kind, above=[other for other in saved if other.kind < kind],
                below=[other for other in saved if other.kind > kind],
            )
        except PromptError as exc:
            raise invalid_prompt(exc, "source") from exc
        await conn.execute(QUERIES["lock_prompt_layer"], org_id, layer, owner_id)
        row = await conn.fetchrow(QUERIES["insert_prompt_version"], org_id, layer, owner_id,
                                  source, note, call.principal.user_id)
        assert row is not None
        await call.services.audit.record(conn, AuditEntry(
            org_id, call.principal.user_id, "prompt.save", "success",
            target=f"prompt:{layer}", details={"version": row["version"]},
            request_id=call.request_id,
        ))
        return await claim.remember(conn, _version(layer, row))


async def save_prompt(call: Call) -> Response:
    body: PromptSave = call.body
    return await _save(call, _layer_name(call), body.source, body.note)


async def rollback_prompt(call: Call) -> Response:
    body: PromptRollback = call.body
    layer = _layer_name(call)
    old = await _fetch_version(call, layer, body.version)
    return await _save(call, layer, old["source"], f"rollback to version {body.version}")


async def _fetch_version(call: Call, layer: str, version: int | None) -> Record:
    org_id, owner_id = layer_owner(layer, call.principal)
    async with rls_transaction(call.services.pool, call.principal) as conn:
        row = await conn.fetchrow(QUERIES["get_prompt_version"], org_id, layer, owner_id,
                                  version)
    if row is None:
        raise NotFound("no such prompt version")
    return row


async def get_prompt(call: Call) -> Response:
    layer = _layer_name(call)
    return _version(layer, await _fetch_version(call, layer, None))


async def get_prompt_version(call: Call) -> Response:
    layer = _layer_name(call)
    raw = call.path("version")
    if not raw.isdigit() or not 0 < int(raw) < 2**31:
        raise NotFound("no such prompt version")
    return _version(layer, await _fetch_version(call, layer, int(raw)))


async def list_prompt_versions(call: Call) -> Response:
    layer = _layer_name(call)
    org_id, owner_id = layer_owner(layer, call.principal)
    async with rls_transaction(call.services.pool, call.principal) as conn:
        rows = await conn.fetch(QUERIES["list_prompt_versions"], org_id, layer, owner_id, 100)
    history = PromptHistory(layer=layer, items=[
        PromptVersionSummary(version=r["version"], note=r["note"], author=r["author"],
                             created_at=r["created_at"], size=r["size"]) for r in rows
    ])
    return Response(history.model_dump_json(), media_type="application/json")


async def preview_prompt(call: Call) -> Response:
    body: PromptPreview = call.body
    kind = _PREVIEW_KINDS[body.layer]
    async with rls_transaction(call.services.pool, call.principal) as conn:
        others = [layer for layer in await saved_layers(conn, call.principal)
                  if layer.kind != kind]
    sample = (PromptVariables(org=body.variables.org, user=body.variables.user,
                              session=body.variables.session)
              if body.variables is not None else SAMPLE_VARIABLES)
    try:
        composed = call.services.composer.preview(
            body.source, kind=kind, layers=others, variables=sample
        )
    except PromptError as exc:
        raise invalid_prompt(exc, "source") from exc
    return _composed(composed)


def _composed(composed: ComposedPrompt) -> Response:
    model = ComposedSystemPrompt(
        text=composed.text,
        layers=[LayerUsed(**used) for used in layers_used(composed)],
        skipped_overrides=[skipped.section for skipped in composed.skipped],
    )
    return Response(model.model_dump_json(), media_type="application/json")


async def session_system_prompt(call: Call) -> Response:
    session_id = parse_id(call.path("session_id"))
    async with rls_transaction(call.services.pool, call.principal) as conn:
        session = await visible(conn, call.principal, session_id)
        composed = await compose_for(conn, call.services.composer, call.principal, session)
    return _composed(composed)


ENDPOINTS = [
    Endpoint("GET", "/v1/prompts/{layer}", get_prompt, "prompts:read",
             "The newest version of a prompt layer", response=PromptVersion),
    Endpoint("PUT", "/v1/prompts/{layer}", save_prompt, "prompts:read",
             "Save a new version of a prompt layer", body=PromptSave, response=PromptVersion,
             guard=_may_write),
    Endpoint("GET", "/v1/prompts/{layer}/versions", list_prompt_versions, "prompts:read",
             "A layer's version history, newest first", response=PromptHistory),
    Endpoint("GET", "/v1/prompts/{layer}/versions/{version}", get_prompt_version,
             "prompts:read", "One version of a prompt layer", response=PromptVersion),
    Endpoint("POST", "/v1/prompts/{layer}/rollback", rollback_prompt, "prompts:read",
             "Make an earlier version current again (as a new version)",
             body=PromptRollback, response=PromptVersion, guard=_may_write),
    Endpoint("POST", "/v1/prompt-preview", preview_prompt, "prompts:read",
             "Render unsaved text with the other saved layers and sample variables",
             body=PromptPreview, response=ComposedSystemPrompt),
    Endpoint("GET", "/v1/sessions/{session_id}/system-prompt", session_system_prompt,
             "sessions:read", "The session's composed system prompt and the layer versions used",
             response=ComposedSystemPrompt, errors=(409,)),
]
