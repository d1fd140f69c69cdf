"""The little of JSON-RPC 2.0 the gateway must understand to refuse bad input clearly."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.errors import JsonBodyError, RpcError
from gateway.jsonbody import loads

PARSE_ERROR = -32700
INVALID_REQUEST = -32600


@dataclass(frozen=True)
class RpcMessage:
    method: str | None  # None for a client's response to a server request
    id: Any
    name: str | None  # the tool of tools/call, the prompt of prompts/get


def parse_message(body: bytes) -> RpcMessage:
    try:
        message = loads(body)
    except JsonBodyError as exc:
        raise RpcError(PARSE_ERROR, f"Parse error: {exc}") from exc
    if not isinstance(message, dict):
        raise RpcError(INVALID_REQUEST, "Invalid Request: expected one JSON-RPC message object")
    request_id = message.get("id")
    if not isinstance(request_id, str | int | None) or isinstance(request_id, bool):
        raise RpcError(INVALID_REQUEST, "Invalid Request: id must be a string or integer")
    if message.get("jsonrpc") != "2.0":
        raise RpcError(INVALID_REQUEST, 'Invalid Request: "jsonrpc" must be "2.0"', request_id)
    method = message.get("method")
    if method is None:
        if "result" not in message and "error" not in message:
            raise RpcError(INVALID_REQUEST, "Invalid Request: no method", request_id)
        return RpcMessage(None, request_id, None)
    if not isinstance(method, str) or not method:
        raise RpcError(INVALID_REQUEST, "Invalid Request: method must be a string", request_id)
    params = message.get("params")
    if params is not None and not isinstance(params, dict):
        raise RpcError(INVALID_REQUEST, "Invalid Request: params must be an object", request_id)
    name = params.get("name") if method in ("tools/call", "prompts/get") and params else None
    return RpcMessage(method, request_id, name if isinstance(name, str) else None)
