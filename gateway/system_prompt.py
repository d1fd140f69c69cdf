"""A session's system prompt: the saved layers that apply to its user, composed with the
session's own prompt and variables.

The newest layer versions are read from the database every time a prompt is composed, so a
change saved through any replica is seen by every replica at once; compilation and composition
are cached by version inside :class:`prompts.PromptComposer`, so an unchanged prompt costs one
small query and a cache hit.

Those caches are shared by every tenant of the process, so a layer id names its owner
unambiguously: each identifier is percent-encoded (:func:`resilience.keys.key_of`), and org
``corp:eng``/user ``carol`` never shares an id (hence a cache entry) with org ``corp``/user
``eng:carol``.
"""

from __future__ import annotations

import hashlib

from asyncpg import Record
from asyncpg.pool import PoolConnectionProxy
from opentelemetry import trace

from gateway.errors import InvalidInput
from gateway.principal import Principal
from gateway.sessions import Session
from prompts import (
    ComposedPrompt,
    Layer,
    LayerKind,
    PromptComposer,
    PromptError,
    PromptVariables,
)
from resilience.keys import key_of
from sql import QUERIES
from telemetry.spans import child_span

GLOBAL_ORG = "_platform"
_tracer = trace.get_tracer(__name__)

KINDS = {"global": LayerKind.GLOBAL, "organization": LayerKind.ORGANIZATION,
         "user": LayerKind.USER}


def layer_owner(kind: str, principal: Principal) -> tuple[str, str]:
    """(org_id, owner_id) of the layer of ``kind`` that applies to ``principal``."""
    if kind == "global":
        return GLOBAL_ORG, ""
    if kind == "organization":
        return principal.org_id, ""
    return principal.org_id, principal.user_id


def layer_id(kind: str, org_id: str, owner_id: str) -> str:
    """The id of a saved layer: one per (kind, organisation, owner), never shared."""
    return key_of("prompt-layer", kind, org_id, owner_id)


def session_layer_id(session_id: object) -> str:
    return key_of("prompt-session", str(session_id))


def _layer(row: Record) -> Layer:
    return Layer(KINDS[row["kind"]], layer_id(row["kind"], row["org_id"], row["owner_id"]),
                 str(row["version"]), row["source"])


def session_layer(session: Session) -> Layer | None:
    prompt = session.prompt
    if not prompt:
        return None
    # The session's prompt is not versioned in a table; its digest identifies the text.
    digest = hashlib.sha256(prompt.encode()).hexdigest()[:16]
    return Layer(LayerKind.SESSION, session_layer_id(session.id), digest, prompt)


def variables(principal: Principal, session: Session | None) -> PromptVariables:
    return PromptVariables(
        org={"id": principal.org_id},
        user={"id": principal.user_id, "roles": list(principal.roles), **principal.profile},
        session=session.variables if session else {},
    )


async def saved_layers(conn: PoolConnectionProxy, principal: Principal) -> list[Layer]:
    rows = await conn.fetch(
        QUERIES["current_prompt_layers"], principal.org_id, principal.user_id
    )
    return sorted((_layer(row) for row in rows), key=lambda layer: layer.kind)


async def compose_for(
    conn: PoolConnectionProxy,
    composer: PromptComposer,
    principal: Principal,
    session: Session | None,
) -> ComposedPrompt:
    with child_span(_tracer, "compose prompt"):
        layers = await saved_layers(conn, principal)
        own = session_layer(session) if session is not None else None
        if own is not None:
            layers.append(own)
        return composer.compose(layers, variables(principal, session))


def invalid_prompt(exc: PromptError, field: str) -> InvalidInput:
    """A layer text that cannot be saved, located by line and column."""
    return InvalidInput.at(field, exc.message, type(exc).__name__, line=exc.line,
                           column=exc.column)


def layers_used(prompt: ComposedPrompt) -> list[dict[str, str]]:
    names = {kind: name for name, kind in KINDS.items()} | {LayerKind.SESSION: "session"}
    return [{"layer": names[ref.kind], "version": ref.version} for ref in prompt.layers]
