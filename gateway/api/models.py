"""Request and response models of the ``/v1`` API; the OpenAPI document is generated from them."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    StringConstraints,
    field_validator,
)

MAX_JSON_BYTES = 32 * 1024

ToolName = Annotated[str, StringConstraints(min_length=1, max_length=128,
                                            pattern=r"^[A-Za-z0-9_.\-/]+$")]
Role = Literal["owner", "admin", "member", "viewer"]
SessionStatus = Literal["active", "closed", "expired"]


def _bounded(value: dict[str, JsonValue]) -> dict[str, JsonValue]:
    if len(json.dumps(value)) > MAX_JSON_BYTES:
        raise ValueError(f"must serialise to at most {MAX_JSON_BYTES} bytes")
    return value


JsonObject = Annotated[dict[str, JsonValue], AfterValidator(_bounded)]


class _Strict(BaseModel):
    # NaN and infinities are not JSON, and PostgreSQL's jsonb refuses them (22P02).
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class SessionCreate(_Strict):
    name: str = Field(default="", max_length=200)
    allowed_tools: list[ToolName] | None = Field(
        default=None, max_length=200, description="tools the session may use; null for all"
    )
    variables: JsonObject = Field(default_factory=dict)
    metadata: JsonObject = Field(default_factory=dict)
    prompt: str | None = Field(
        default=None, max_length=32768, description="the session's own system-prompt layer"
    )
    ttl_seconds: int | None = Field(
        default=None, ge=60, description="lifetime in seconds; default and maximum are configured"
    )


class SessionUpdate(_Strict):
    name: str | None = Field(default=None, max_length=200)
    allowed_tools: list[ToolName] | None = Field(default=None, max_length=200)
    variables: JsonObject | None = None
    metadata: JsonObject | None = None
    prompt: str | None = Field(default=None, max_length=32768)
    ttl_seconds: int | None = Field(default=None, ge=60, description="new lifetime from now")
    status: Literal["closed"] | None = Field(default=None, description="close the session")


class Session(BaseModel):
    id: str
    user_id: str
    name: str
    allowed_tools: list[str] | None
    variables: dict[str, Any]
    metadata: dict[str, Any]
    prompt: str | None
    status: SessionStatus
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime
    closed_at: datetime | None


class SessionPage(BaseModel):
    items: list[Session]
    next_cursor: str | None


class SessionQuery(_Strict):
    status: SessionStatus | None = None
    limit: int = Field(default=50, ge=1, le=100)
    cursor: str | None = Field(default=None, max_length=200)
    all_users: bool = Field(default=False, description="admins: every member's sessions")


class RolesUpdate(_Strict):
    roles: list[Role] = Field(min_length=1, max_length=4)

    @field_validator("roles")
    @classmethod
    def _unique(cls, roles: list[str]) -> list[str]:
        return sorted(set(roles))


class Member(BaseModel):
    user_id: str
    roles: list[str]


class MemberList(BaseModel):
    items: list[Member]


class AuditEvent(BaseModel):
    seq: int
    occurred_at: datetime
    actor: str
    event: str
    target: str
    outcome: str
    details: dict[str, Any]
    request_id: str


class AuditPage(BaseModel):
    items: list[AuditEvent]
    next_cursor: str | None


class AuditQuery(_Strict):
    event: str | None = Field(default=None, max_length=64)
    actor: str | None = Field(default=None, max_length=255)
    limit: int = Field(default=50, ge=1, le=200)
    cursor: str | None = Field(default=None, pattern=r"^[0-9]{1,18}$")


class FieldError(BaseModel):
    """One invalid part of a request (422), located the way FastAPI and pydantic do."""

    loc: list[str | int] = Field(description=(
        "where: the request part (body, query, path or header) then the path inside it, e.g. "
        '["body", "allowed_tools", 2], ["query", "limit"], ["header", "idempotency-key"]; '
        '["body"] alone is the body as a whole'))
    msg: str
    type: str = Field(description="a stable kind, e.g. missing, string_too_long, unknown_tool")
    line: int | None = Field(default=None, description="inside a template text: its line")
    column: int | None = Field(default=None, description="inside a template text: its column")


class Problem(BaseModel):
    """RFC 9457 problem details; ``code`` is stable and meant for programs."""

    type: str
    title: str
    status: int
    code: str
    detail: str
    request_id: str | None = None
    errors: list[FieldError] | None = None


class PromptSave(_Strict):
    source: str = Field(max_length=32768)
    note: str = Field(default="", max_length=500)


class PromptRollback(_Strict):
    version: int = Field(ge=1)


class PromptVersion(BaseModel):
    layer: str
    version: int
    source: str
    note: str
    author: str
    created_at: datetime


class PromptVersionSummary(BaseModel):
    version: int
    note: str
    author: str
    created_at: datetime
    size: int


class PromptHistory(BaseModel):
    layer: str
    items: list[PromptVersionSummary]


class PreviewVariables(_Strict):
    org: JsonObject = Field(default_factory=dict)
    user: JsonObject = Field(default_factory=dict)
    session: JsonObject = Field(default_factory=dict)


class PromptPreview(_Strict):
    layer: Literal["global", "organization", "user", "session"]
    source: str = Field(max_length=32768)
    variables: PreviewVariables | None = Field(
        default=None, description="sample values; omitted: built-in samples"
    )


class LayerUsed(BaseModel):
    layer: str
    version: str


class ComposedSystemPrompt(BaseModel):
    text: str
    layers: list[LayerUsed]
    skipped_overrides: list[str] = Field(
        default_factory=list, description="sections a layer tried to change but were locked"
    )
