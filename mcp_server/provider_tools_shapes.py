"""Turning providers' documented JSON answers into small, stable tool results.

Agents get the fields that matter, not 100-field provider objects; anything unexpected in a
provider answer yields empty fields rather than an exception.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

MAX_TEXT_BYTES = 512_000


def _pick(document: Any, *keys: str) -> dict[str, Any]:
    source = document if isinstance(document, dict) else {}
    return {key: source.get(key) for key in keys}


def _items(document: Any) -> list[Any]:
    return document if isinstance(document, list) else []


def repository_summary(document: Any) -> list[dict[str, Any]]:
    return [
        _pick(repo, "full_name", "private", "html_url", "description", "default_branch",
              "updated_at")
        for repo in _items(document)
    ]


def _issue(item: Any) -> dict[str, Any]:
    summary = _pick(item, "number", "title", "state", "html_url", "created_at", "updated_at")
    source = item if isinstance(item, dict) else {}
    user = source.get("user")
    summary["author"] = user.get("login") if isinstance(user, dict) else None
    repository_url = source.get("repository_url")
    summary["repository"] = (
        "/".join(repository_url.rstrip("/").split("/")[-2:])
        if isinstance(repository_url, str) else None
    )
    summary["is_pull_request"] = "pull_request" in source
    return summary


def search_results(document: Any) -> dict[str, Any]:
    source = document if isinstance(document, dict) else {}
    return {
        "total_count": source.get("total_count"),
        "incomplete_results": source.get("incomplete_results"),
        "items": [_issue(item) for item in _items(source.get("items"))],
    }


def issue_summary(document: Any) -> dict[str, Any]:
    return _pick(document, "number", "title", "state", "html_url", "url")


def file_contents(document: Any) -> dict[str, Any]:
    if isinstance(document, list):  # a directory
        return {"type": "dir", "entries": [_pick(e, "name", "path", "type", "size")
                                           for e in document]}
    result = _pick(document, "type", "path", "sha", "size", "html_url")
    source = document if isinstance(document, dict) else {}
    if source.get("encoding") != "base64" or not isinstance(source.get("content"), str):
        result["text"] = None  # too large for the contents API, a submodule or a symlink
        return result
    try:
        raw = base64.b64decode(source["content"], validate=False)
    except (binascii.Error, ValueError):
        result["text"] = None
        return result
    try:
        result["text"] = raw[:MAX_TEXT_BYTES].decode("utf-8")
        result["truncated"] = len(raw) > MAX_TEXT_BYTES
    except UnicodeDecodeError:
        result["text"] = None
        result["content_base64"] = base64.b64encode(raw[:MAX_TEXT_BYTES]).decode()
    return result


def calendar_events(document: Any) -> dict[str, Any]:
    source = document if isinstance(document, dict) else {}
    events = []
    for event in _items(source.get("items")):
        summary = _pick(event, "id", "summary", "status", "htmlLink", "location")
        for edge in ("start", "end"):
            when = event.get(edge) if isinstance(event, dict) else None
            when = when if isinstance(when, dict) else {}
            summary[edge] = when.get("dateTime") or when.get("date")
        events.append(summary)
    return {"events": events, "next_page_token": source.get("nextPageToken")}
