"""Typed endpoints: one declaration yields the Starlette route, the permission check, request
validation, and the endpoint's OpenAPI entry, so the published contract cannot drift from the
code.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.auth import principal_of
from gateway.errors import BadRequest, InvalidInput
from gateway.permissions import require
from gateway.principal import Principal
from gateway.services import Services, services_of

_MAX_BODY = 256 * 1024


@dataclass(frozen=True)
class Call:
    """What a handler receives: who is calling, with what, through which services."""

    request: Request
    principal: Principal
    services: Services
    body: Any = None
    query: Any = None

    @property
    def request_id(self) -> str:
        return str(self.request.scope["state"]["request_id"])

    def path(self, name: str) -> str:
        return str(self.request.path_params[name])


Handler = Callable[[Call], Awaitable[Response]]


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    handler: Handler
    permission: str
    summary: str
    status: int = 200
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    errors: tuple[int, ...] = field(default=(400, 401, 403, 429, 503))

    def route(self) -> Route:
        async def endpoint(request: Request) -> Response:
            principal = principal_of(request.scope)
            require(principal, self.permission)
            call = Call(
                request,
                principal,
                services_of(request.scope),
                body=await _parse_body(request, self.body),
                query=_parse_query(request, self.query),
            )
            return await self.handler(call)

        return Route(self.path, endpoint, methods=[self.method])



def _errors(exc: ValidationError) -> list[dict[str, Any]]:
    # The rejected input is never echoed back: it may be large, or secret.
    return [
        {"loc": [str(part) for part in err["loc"]], "msg": err["msg"], "type": err["type"]}
        for err in exc.errors(include_url=False, include_input=False, include_context=False)
    ]


async def _parse_body(request: Request, model: type[BaseModel] | None) -> Any:
    if model is None:
        return None
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise BadRequest("send a JSON body", status=415, code="unsupported_media_type")
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > _MAX_BODY:
            raise BadRequest("request body too large", status=413, code="payload_too_large")
    try:
        return model.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        raise InvalidInput(_errors(exc)) from exc


def _parse_query(request: Request, model: type[BaseModel] | None) -> Any:
    if model is None:
        return None
    try:
        return model.model_validate(dict(request.query_params))
    except ValidationError as exc:
        raise InvalidInput(_errors(exc)) from exc
