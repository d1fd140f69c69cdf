"""Loopback stand-ins for Google (Calendar API v3, OpenID userinfo) and Slack's Web API, whose
hosts cannot be reached from here. Each serves its provider's documented request and response
shapes, errors included, and is driven through the ``/_standin`` routes of
:mod:`tests.support.standin` (``scopes`` space-separated for Google, comma-separated for Slack).

Google: ``GET /calendar/v3/calendars/{calendarId}/events`` (``orderBy=startTime`` needs
``singleEvents=true``, as Google insists) and ``GET /v1/userinfo``. Errors are Google's JSON
error documents; 401 and a missing scope carry the ``WWW-Authenticate`` challenge Google sends.

Slack: ``POST /api/chat.postMessage`` (JSON body), ``GET|POST /api/auth.test`` and
``auth.revoke``. Slack answers HTTP 200 with ``{"ok": false, "error": code}`` for every
refusal (``missing_scope`` with ``needed``/``provided``), and 429 with ``Retry-After`` when
rate limited.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from tests.support.standin import ACCOUNT, Account, Handler, StandIn

CALENDAR_SCOPES = ("https://www.googleapis.com/auth/calendar",
                   "https://www.googleapis.com/auth/calendar.readonly",
                   "https://www.googleapis.com/auth/calendar.events.readonly")
GOOGLE_REALM = 'Bearer realm="https://accounts.google.com/"'


def _google_error(status: int, message: str, reason: str, code: str,
                  challenge: str | None = None) -> web.Response:
    body = {"error": {"code": status, "message": message, "status": code,
                      "errors": [{"message": message, "domain": "global", "reason": reason}]}}
    headers = {"WWW-Authenticate": challenge} if challenge else None
    return web.json_response(body, status=status, headers=headers)


class GoogleStandIn(StandIn):
    def __init__(self) -> None:
        super().__init__()
        self.app = web.Application(middlewares=[self._google_rules])
        self.app.add_routes([
            *self.control_routes(),
            web.get("/calendar/v3/calendars/{calendar_id}/events", self._events),
            web.get("/v1/userinfo", self._userinfo),
        ])

    @web.middleware
    async def _google_rules(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/_standin/"):
            return await handler(request)
        account = self.bearer_account(request)
        if account is None:
            return _google_error(401, "Request had invalid authentication credentials.",
                                 "authError", "UNAUTHENTICATED",
                                 f'{GOOGLE_REALM}, error="invalid_token"')
        await self.record(request, account)
        failure = account.take_failure()
        if failure:
            return _google_error(failure, "Backend Error", "backendError", "UNAVAILABLE")
        request[ACCOUNT] = account
        return await handler(request)

    async def _events(self, request: web.Request) -> web.Response:
        account = request[ACCOUNT]
        if not account.scope_set(" ").intersection(CALENDAR_SCOPES):
            scopes = " ".join(CALENDAR_SCOPES)
            return _google_error(403, "Request had insufficient authentication scopes.",
                                 "insufficientPermissions", "PERMISSION_DENIED",
                                 f'{GOOGLE_REALM}, error="insufficient_scope", scope="{scopes}"')
        calendar = request.match_info["calendar_id"]
        if calendar not in ("primary", f"{account.login}@example.com"):
            return _google_error(404, "Not Found", "notFound", "NOT_FOUND")
        query = request.query
        if query.get("orderBy") == "startTime" and query.get("singleEvents") != "true":
            return _google_error(400, "The requested ordering is not available for the "
                                 "particular query.", "badRequest", "INVALID_ARGUMENT")
        limit = int(query.get("maxResults", "250"))
        events = [_event(account, n) for n in range(1, 4)]
        page = {"kind": "calendar#events", "etag": '"p33c8v9bq2n0g0"',
                "summary": f"{account.login}@example.com", "description": "",
                "updated": "2025-01-05T08:00:00.000Z", "timeZone": "Europe/Zurich",
                "accessRole": "owner", "defaultReminders": [], "items": events[:limit]}
        if limit < len(events):
            page["nextPageToken"] = "CigKGjRvN2ZxZ2s"
        return web.json_response(page)

    async def _userinfo(self, request: web.Request) -> web.Response:
        login = request[ACCOUNT].login
        return web.json_response({
            "sub": "110169484474386276334", "name": login.title(), "given_name": login.title(),
            "picture": "https://lh3.googleusercontent.com/a/default-user",
            "email": f"{login}@example.com", "email_verified": True,
        })


def _event(account: Account, n: int) -> dict[str, Any]:
    day = f"2025-01-0{5 + n}"
    return {
        "kind": "calendar#event", "etag": f'"31{n}"', "id": f"evt{n}abcdef", "status": "confirmed",
        "htmlLink": f"https://www.google.com/calendar/event?eid=evt{n}",
        "created": "2025-01-01T00:00:00.000Z", "updated": "2025-01-02T00:00:00.000Z",
        "summary": f"Meeting {n}", "location": "Room 4",
        "creator": {"email": f"{account.login}@example.com", "self": True},
        "organizer": {"email": f"{account.login}@example.com", "self": True},
        "start": {"dateTime": f"{day}T09:00:00+01:00", "timeZone": "Europe/Zurich"},
        "end": {"dateTime": f"{day}T09:30:00+01:00", "timeZone": "Europe/Zurich"},
        "iCalUID": f"evt{n}@google.com", "sequence": 0, "eventType": "default",
    }


class SlackStandIn(StandIn):
    def __init__(self) -> None:
        super().__init__()
        self.messages = 0
        self.app = web.Application(middlewares=[self._slack_rules])
        self.app.add_routes([
            *self.control_routes(),
            web.post("/api/chat.postMessage", self._post_message),
            web.route("*", "/api/auth.test", self._auth_test),
            web.route("*", "/api/auth.revoke", self._auth_revoke),
        ])

    @web.middleware
    async def _slack_rules(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/_standin/"):
            return await handler(request)
        if "Authorization" not in request.headers:
            return web.json_response({"ok": False, "error": "not_authed"})
        account = self.bearer_account(request)
        if account is None:
            return web.json_response({"ok": False, "error": "invalid_auth"})
        await self.record(request, account)
        failure = account.take_failure()
        if failure == 429:
            return web.json_response({"ok": False, "error": "ratelimited"}, status=429,
                                     headers={"Retry-After": "30"})
        if failure:
            return web.Response(status=failure, text="Service Unavailable")
        request[ACCOUNT] = account
        return await handler(request)

    async def _post_message(self, request: web.Request) -> web.Response:
        account = request[ACCOUNT]
        if "chat:write" not in account.scope_set():
            return web.json_response({"ok": False, "error": "missing_scope",
                                      "needed": "chat:write", "provided": account.scopes})
        if request.content_type != "application/json":
            return web.json_response({"ok": False, "error": "invalid_arguments"})
        body = await request.json()
        channel, text = body.get("channel"), body.get("text")
        if not channel:
            return web.json_response({"ok": False, "error": "channel_not_found"})
        if not text:
            return web.json_response({"ok": False, "error": "no_text"})
        if channel.startswith("#") and channel != "#general":
            return web.json_response({"ok": False, "error": "channel_not_found"})
        self.messages += 1
        ts = f"1736150400.{self.messages:06d}"
        answer: dict[str, Any] = {
            "ok": True, "channel": "C0GENERAL1" if channel == "#general" else channel, "ts": ts,
            "message": {"type": "message", "user": "U0ALICE01", "text": text, "ts": ts}}
        if request.charset != "utf-8":  # what Slack says of a JSON body without a charset
            answer["warning"] = "missing_charset"
            answer["response_metadata"] = {"warnings": ["missing_charset"]}
        return web.json_response(answer)

    async def _auth_revoke(self, request: web.Request) -> web.Response:
        """``auth.revoke``: the calling token stops working."""
        _, _, token = request.headers["Authorization"].partition(" ")
        del self.accounts[token]
        return web.json_response({"ok": True, "revoked": True})

    async def _auth_test(self, request: web.Request) -> web.Response:
        login = request[ACCOUNT].login
        return web.json_response({
            "ok": True, "url": "https://gatehouse-test.slack.com/", "team": "Gatehouse Test",
            "user": login, "team_id": "T0GATEHSE", "user_id": f"U{login.upper()[:10]}",
        })
