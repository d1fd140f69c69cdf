"""The OpenAPI 3.1 document, generated from the endpoint declarations and their models."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel

from gateway.api.models import Problem
from gateway.api.typed_endpoints import Endpoint

_REASONS = {
    400: "Malformed request", 401: "Missing or invalid bearer token",
    403: "Missing permission (insufficient_scope)", 404: "No such resource in your organisation",
    409: "Conflicts with the current state", 413: "Body too large", 415: "Body must be JSON",
    422: "Invalid input", 429: "Rate limited", 503: "A dependency is unavailable; retry later",
}


class _Schemas:
    def __init__(self) -> None:
        self.components: dict[str, Any] = {}

    def ref(self, model: type[BaseModel]) -> dict[str, str]:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        self.components.update(schema.pop("$defs", {}))
        self.components[model.__name__] = schema
        return {"$ref": f"#/components/schemas/{model.__name__}"}


def _parameters(endpoint: Endpoint, schemas: _Schemas) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in re.findall(r"{(\w+)}", endpoint.path)
    ]
    if endpoint.query is not None:
        schema = endpoint.query.model_json_schema()
        for name, prop in schema.get("properties", {}).items():
            params.append({"name": name, "in": "query", "required": False, "schema": prop})
    return params


def _operation(endpoint: Endpoint, schemas: _Schemas) -> dict[str, Any]:
    success: dict[str, Any] = {"description": endpoint.summary}
    if endpoint.response is not None:
        success["content"] = {"application/json": {"schema": schemas.ref(endpoint.response)}}
    problem = {"application/problem+json": {"schema": schemas.ref(Problem)}}
    errors = set(endpoint.errors) | {401, 403, 429, 503}
    if endpoint.body is not None:
        errors |= {413, 415, 422}
    if endpoint.query is not None or "{" in endpoint.path:
        errors |= {404, 422}
    operation: dict[str, Any] = {
        "summary": endpoint.summary,
        "operationId": endpoint.handler.__name__,
        "security": [{"bearer": []}],
        "parameters": _parameters(endpoint, schemas),
        "responses": {
            str(endpoint.status): success,
            **{str(code): {"description": _REASONS[code], "content": problem}
               for code in sorted(errors)},
        },
    }
    if endpoint.body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": schemas.ref(endpoint.body)}},
        }
    return operation


def document(endpoints: list[Endpoint], *, server_url: str) -> dict[str, Any]:
    schemas = _Schemas()
    paths: dict[str, dict[str, Any]] = {}
    for endpoint in endpoints:
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = _operation(
            endpoint, schemas
        )
    return {
        "openapi": "3.1.0",
        "info": {"title": "Gatehouse session API", "version": "1"},
        "servers": [{"url": server_url}],
        "paths": paths,
        "components": {
            "schemas": schemas.components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "bearerFormat": "JWT"}},
        },
    }
