"""The curated provider tools, each with the scopes it needs declared in its description.

Only enabled providers' tools are registered (at start-up, once providers are configured; see
:func:`register`). Each has ``<provider>_whoami`` (its userinfo endpoint), catalogue providers
and OpenID providers configured by discovery alike. GitHub: list repositories, search issues,
create an issue, get file contents. Google: list calendar events. Slack: post a message.
Requests follow each provider's documented REST shapes; paths are resolved against the
provider's (overridable) ``api_base_url``, and every path segment taken from arguments is
validated and percent-encoded, so arguments cannot reach another endpoint.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastmcp import Context, FastMCP
from pydantic import Field

from mcp_server.errors import ToolFailed
from mcp_server.provider_runner import run_provider_tool
from mcp_server.provider_tools_shapes import (
    calendar_events,
    file_contents,
    issue_summary,
    repository_summary,
    search_results,
)
from oauth.provider_client import ProviderApi

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
PerPage = Annotated[int, Field(ge=1, le=100)]
Page = Annotated[int, Field(ge=1, le=1000)]

WHOAMI_SCOPES: dict[str, tuple[str, ...]] = {
    "github": ("read:user",), "google": ("openid", "email"), "microsoft": ("User.Read",),
    "slack": (), "atlassian": ("read:me",), "notion": (),
}


def _segment(value: str, what: str) -> str:
    if not _NAME.match(value) or value in (".", ".."):
        raise ToolFailed(f"{what} must be 1-100 letters, digits, '-', '_' or '.'")
    return quote(value, safe="")


def _file_path(path: str) -> str:
    parts = path.strip("/").split("/")
    if not path.strip("/") or len(path) > 1000 or any(p in ("", ".", "..") for p in parts):
        raise ToolFailed("path must be a relative file path without '.' or '..' segments")
    return "/".join(quote(p, safe="") for p in parts)


def _scopes_note(scopes: tuple[str, ...]) -> str:
    return f" Needs scope: {', '.join(scopes)}." if scopes else ""


def register_whoami(mcp: FastMCP, provider: str, display: str, scopes: tuple[str, ...]) -> str:
    async def whoami(ctx: Context) -> dict[str, Any]:
        async def call(api: ProviderApi, token: str) -> dict[str, Any]:
            url = api.spec.userinfo_endpoint
            if url is None:
                raise ToolFailed(f"{display} has no userinfo endpoint")
            document = await api.request(token, "GET", url)
            return document if isinstance(document, dict) else {"userinfo": document}

        return await run_provider_tool(ctx, f"{provider}_whoami", provider, scopes, call)

    mcp.tool(whoami, name=f"{provider}_whoami",
             description=f"Your {display} account, from its userinfo endpoint."
             + _scopes_note(scopes))
    return f"{provider}_whoami"


def register_github(mcp: FastMCP) -> list[str]:
    repo_scopes = ("repo",)

    @mcp.tool(description="List repositories you can access on GitHub (GET /user/repos)."
              + _scopes_note(repo_scopes))
    async def github_list_repositories(
        ctx: Context,
        visibility: Literal["all", "public", "private"] = "all",
        sort: Literal["created", "updated", "pushed", "full_name"] = "updated",
        per_page: PerPage = 30,
        page: Page = 1,
    ) -> list[dict[str, Any]]:
        params = {"visibility": visibility, "sort": sort, "per_page": str(per_page),
                  "page": str(page)}

        async def call(api: ProviderApi, token: str) -> list[dict[str, Any]]:
            return repository_summary(await api.request(token, "GET", api.url("/user/repos"),
                                                        params=params))

        return await run_provider_tool(ctx, "github_list_repositories", "github", repo_scopes,
                                       call)

    @mcp.tool(description="Search GitHub issues and pull requests (GET /search/issues), "
              "with GitHub's search syntax, e.g. 'repo:owner/name is:open label:bug'."
              + _scopes_note(repo_scopes))
    async def github_search_issues(
        ctx: Context, query: Annotated[str, Field(min_length=1, max_length=256)],
        per_page: PerPage = 30, page: Page = 1,
    ) -> dict[str, Any]:
        params = {"q": query, "per_page": str(per_page), "page": str(page)}

        async def call(api: ProviderApi, token: str) -> dict[str, Any]:
            return search_results(await api.request(token, "GET", api.url("/search/issues"),
                                                    params=params))

        return await run_provider_tool(ctx, "github_search_issues", "github", repo_scopes, call)

    @mcp.tool(description="Create an issue in a GitHub repository "
              "(POST /repos/{owner}/{repo}/issues)." + _scopes_note(repo_scopes))
    async def github_create_issue(
        ctx: Context, owner: str, repo: str,
        title: Annotated[str, Field(min_length=1, max_length=256)],
        body: Annotated[str, Field(max_length=65_536)] = "",
        labels: Annotated[list[str], Field(max_length=20)] | None = None,
    ) -> dict[str, Any]:
        path = f"/repos/{_segment(owner, 'owner')}/{_segment(repo, 'repo')}/issues"
        payload: dict[str, Any] = {"title": title, "body": body}
        if labels:
            payload["labels"] = labels

        async def call(api: ProviderApi, token: str) -> dict[str, Any]:
            return issue_summary(await api.request(token, "POST", api.url(path),
                                                   json_body=payload))

        return await run_provider_tool(ctx, "github_create_issue", "github", repo_scopes, call)

    @mcp.tool(description="Read a file from a GitHub repository "
              "(GET /repos/{owner}/{repo}/contents/{path}); text is decoded, binary stays "
              "base64; a directory lists its entries." + _scopes_note(repo_scopes))
    async def github_get_file_contents(
        ctx: Context, owner: str, repo: str, path: str,
        ref: Annotated[str, Field(max_length=256)] | None = None,
    ) -> dict[str, Any]:
        url_path = (f"/repos/{_segment(owner, 'owner')}/{_segment(repo, 'repo')}/contents/"
                    f"{_file_path(path)}")
        params = {"ref": ref} if ref else None

        async def call(api: ProviderApi, token: str) -> dict[str, Any]:
            return file_contents(await api.request(token, "GET", api.url(url_path),
                                                   params=params))

        return await run_provider_tool(ctx, "github_get_file_contents", "github", repo_scopes,
                                       call)

    return ["github_list_repositories", "github_search_issues", "github_create_issue",
            "github_get_file_contents"]


def register_google(mcp: FastMCP) -> list[str]:
    scopes = ("https://www.googleapis.com/auth/calendar.readonly",)

    @mcp.tool(description="List events of a Google Calendar (GET "
              "/calendar/v3/calendars/{calendarId}/events), soonest first. Times are RFC 3339."
              + _scopes_note(scopes))
    async def google_list_calendar_events(
        ctx: Context,
        calendar_id: Annotated[str, Field(min_length=1, max_length=256)] = "primary",
        time_min: str | None = None, time_max: str | None = None,
        max_results: Annotated[int, Field(ge=1, le=250)] = 25,
    ) -> dict[str, Any]:
        path = f"/calendar/v3/calendars/{quote(calendar_id, safe='')}/events"
        params = {"singleEvents": "true", "orderBy": "startTime", "maxResults": str(max_results)}
        params.update({k: v for k, v in (("timeMin", time_min), ("timeMax", time_max)) if v})

        async def call(api: ProviderApi, token: str) -> dict[str, Any]:
            return calendar_events(await api.request(token, "GET", api.url(path), params=params))

        return await run_provider_tool(ctx, "google_list_calendar_events", "google", scopes,
                                       call)

    return ["google_list_calendar_events"]


def register_slack(mcp: FastMCP) -> list[str]:
    scopes = ("chat:write",)

    @mcp.tool(description="Post a message to a Slack channel as you (POST chat.postMessage)."
              + _scopes_note(scopes))
    async def slack_post_message(
        ctx: Context, channel: Annotated[str, Field(min_length=1, max_length=80)],
        text: Annotated[str, Field(min_length=1, max_length=40_000)],
        thread_ts: str | None = None,
    ) -> dict[str, Any]:
        payload = {"channel": channel, "text": text}
        if thread_ts:
            payload["thread_ts"] = thread_ts

        async def call(api: ProviderApi, token: str) -> dict[str, Any]:
            answer = await api.request(token, "POST", api.url("/chat.postMessage"),
                                       json_body=payload)
            answer = answer if isinstance(answer, dict) else {}
            return {"channel": answer.get("channel"), "ts": answer.get("ts")}

        return await run_provider_tool(ctx, "slack_post_message", "slack", scopes, call)

    return ["slack_post_message"]


# A provider's tools beyond its whoami, each registrar returning the names it registered.
_EXTRA_TOOLS: dict[str, Callable[[FastMCP], list[str]]] = {
    "github": register_github, "google": register_google, "slack": register_slack,
}


def register(mcp: FastMCP, enabled: Mapping[str, str]) -> list[str]:
    """Register the tools of the ``enabled`` providers (name -> display name) and return their
    names: ``<name>_whoami`` for each, plus the curated tools of GitHub, Google and Slack.

    Only enabled providers (configured, and a token vault to hold users' grants) get tools: a
    listed tool that can only fail would cost every model a wrong first call.
    """
    names = []
    for name, display in enabled.items():
        names.append(register_whoami(mcp, name, display, WHOAMI_SCOPES.get(name, ("openid",))))
        if name in _EXTRA_TOOLS:
            names += _EXTRA_TOOLS[name](mcp)
    return names
