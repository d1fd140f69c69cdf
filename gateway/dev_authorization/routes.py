"""HTTP endpoints of the development authorization server: metadata, authorize, token, register.

Each endpoint reads its request (capped), builds the authlib-shaped request, runs authlib in a
worker thread (see :mod:`gateway.dev_authorization.server`) and sends what authlib answered.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.cors import open_to_every_origin
from gateway.dev_authorization.pages import SigninForm, signin_page
from gateway.dev_authorization.server import (
    Answer,
    DevAuthorizationServer,
    DevConfig,
    OAuthJsonRequest,
    OAuthRequest,
)
from gateway.dev_authorization.store import DevStore
from gateway.errors import JsonBodyError
from gateway.jsonbody import loads
from gateway.services import services_of

MAX_BODY_BYTES = 64 * 1024
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class _BadBody(Exception):
    pass


def _error(status: int, error: str, description: str) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description},
                        status_code=status, headers=_NO_STORE)


def _send(answer: Answer) -> Response:
    headers = {k: v for k, v in answer.headers if k.lower() != "content-type"}
    if isinstance(answer.body, dict):
        return JSONResponse(answer.body, status_code=answer.status, headers=headers)
    return Response(answer.body or "", status_code=answer.status, headers=headers)


async def _read_body(request: Request) -> bytes:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise _BadBody(f"the body is over {MAX_BODY_BYTES} bytes")
    return bytes(body)


async def _read_form(request: Request) -> list[tuple[str, str]]:
    body = await _read_body(request)
    try:
        return parse_qsl(body.decode("utf-8"), keep_blank_values=True)
    except UnicodeDecodeError:
        raise _BadBody("the body is not UTF-8") from None


class DevAuthorizationEndpoints:
    def __init__(self, config: DevConfig, public_url: str) -> None:
        self.config = config
        self._public_url = public_url.rstrip("/")

    def _server(self, request: Request) -> DevAuthorizationServer:
        services = services_of(request.scope)
        return DevAuthorizationServer(self.config, DevStore(services.redis), services.http)

    def _oauth_request(self, request: Request, form: list[tuple[str, str]]) -> OAuthRequest:
        query = request.url.query
        uri = self._public_url + request.url.path + (f"?{query}" if query else "")
        return OAuthRequest(request.method, uri, request.headers,
                            request.query_params.multi_items(), form)

    async def _run(self, call: Callable[..., Answer], *args: Any) -> Response:
        try:
            return _send(await run_in_threadpool(call, *args))
        except ValueError:  # authlib refuses to echo characters an error may not carry
            return _error(400, "invalid_request", "the request holds characters OAuth errors "
                          "cannot carry")

    async def metadata(self, request: Request) -> Response:
        return JSONResponse(dict(self.config.metadata), headers={"Cache-Control": "max-age=60"})

    async def authorize(self, request: Request) -> Response:
        try:
            form = await _read_form(request) if request.method == "POST" else []
        except _BadBody as exc:
            return _error(400, "invalid_request", str(exc))
        oauth_request = self._oauth_request(request, form)
        server = self._server(request)
        if request.method == "GET":
            return await self._page(server, oauth_request, SigninForm())
        choice = SigninForm.from_items(form)
        if dict(form).get("decision") == "deny":
            return await self._run(server.authorize, oauth_request, None)
        user = choice.user_or_error()
        if isinstance(user, str):
            return await self._page(server, oauth_request, choice, user)
        return await self._run(server.authorize, oauth_request, user)

    async def _page(self, server: DevAuthorizationServer, oauth_request: OAuthRequest,
                    form: SigninForm, error: str = "") -> Response:
        try:
            grant, answer = await run_in_threadpool(server.consent, oauth_request)
        except ValueError:
            return _error(400, "invalid_request", "the request holds characters OAuth errors "
                          "cannot carry")
        if answer is not None:
            return _send(answer)
        assert grant is not None  # consent answers one or the other
        return signin_page(
            action=oauth_request.uri.split("?", 1)[0], client=grant.request.client,
            redirect_uri=grant.redirect_uri,
            oauth_params=[(k, v) for k, values in oauth_request.payload.datalist.items()
                          for v in values],
            form=form, error=error, status=400 if error else 200,
        )

    async def token(self, request: Request) -> Response:
        try:
            form = await _read_form(request)
        except _BadBody as exc:
            return _error(400, "invalid_request", str(exc))
        server = self._server(request)
        return await self._run(server.create_token_response, self._oauth_request(request, form))

    async def register(self, request: Request) -> Response:
        try:
            body = await _read_body(request)
            data = loads(body)
        except (_BadBody, JsonBodyError) as exc:
            return _error(400, "invalid_client_metadata", str(exc))
        if not isinstance(data, dict):
            return _error(400, "invalid_client_metadata", "send a JSON object of client metadata")
        json_request = OAuthJsonRequest(request.method, str(request.url), request.headers, data)
        server = self._server(request)
        return await self._run(server.create_endpoint_response, "client_registration",
                               json_request)


def build_routes(config: DevConfig, public_url: str, issuer_path: str) -> list[BaseRoute]:
    endpoints = DevAuthorizationEndpoints(config, public_url)
    metadata = open_to_every_origin(endpoints.metadata, ["GET"])
    well_known = [f"/.well-known/oauth-authorization-server{issuer_path}",
                  f"/.well-known/openid-configuration{issuer_path}",
                  f"{issuer_path}/.well-known/openid-configuration"]
    if issuer_path:  # clients of the 2025-03-26 revision look at the root only
        well_known.append("/.well-known/oauth-authorization-server")
    return [
        *(Route(path, metadata, methods=["GET", "OPTIONS"]) for path in well_known),
        Route(f"{issuer_path}/authorize", endpoints.authorize, methods=["GET", "POST"]),
        Route(f"{issuer_path}/token", open_to_every_origin(endpoints.token, ["POST"]),
              methods=["POST", "OPTIONS"]),
        Route(f"{issuer_path}/register", open_to_every_origin(endpoints.register, ["POST"]),
              methods=["POST", "OPTIONS"]),
    ]
