"""A loopback stand-in for api.github.com (which cannot be reached from here): the only fake.

It serves GitHub's documented REST shapes (2022-11-28) for ``GET /user``, ``GET /user/repos``,
``GET /search/issues``, ``POST /repos/{owner}/{repo}/issues`` and
``GET /repos/{owner}/{repo}/contents/{path}`` (base64 content, as GitHub sends it),
``DELETE /applications/{client_id}/grant`` (disconnect), and
insists on what GitHub documents: ``Authorization: Bearer <token>`` (else 401 "Bad
credentials"), ``Accept: application/vnd.github+json`` and ``X-GitHub-Api-Version``.
Scopes are sent back in ``X-OAuth-Scopes``/``X-Accepted-OAuth-Scopes``; a write without
``repo`` is refused 403 with those headers.

Tests drive it over HTTP through the ``/_standin`` routes of :mod:`tests.support.standin`
(``scopes`` as GitHub spells them: "repo, read:user"); it also runs as a process of its own
for benchmarks: ``python -m tests.support.github_standin --port 9999``.

``POST /login/oauth/access_token`` serves GitHub's refresh grant (client id and secret in the
form, as ``client_secret_post``; errors as HTTP 200 with ``error``, as GitHub does).
"""

from __future__ import annotations

import argparse
import base64
import secrets
from typing import Any

from aiohttp import web

from tests.support.standin import ACCOUNT, Handler, Running, StandIn

API_VERSION = "2022-11-28"
README = "# hello\n\nA repository served by the GitHub stand-in.\n"


def _repo(owner: str, name: str, private: bool, number: int) -> dict[str, Any]:
    full = f"{owner}/{name}"
    return {
        "id": 1000 + number, "node_id": f"R_{number}", "name": name, "full_name": full,
        "private": private, "owner": {"login": owner, "id": 1, "type": "User"},
        "html_url": f"https://github.com/{full}", "description": f"{name} repository",
        "fork": False, "url": f"https://api.github.com/repos/{full}",
        "default_branch": "main", "visibility": "private" if private else "public",
        "created_at": "2024-01-01T00:00:00Z", "updated_at": f"2025-0{number}-01T00:00:00Z",
        "pushed_at": "2025-01-01T00:00:00Z",
    }


def _message(status: int, message: str, **headers: str) -> web.Response:
    body = {"message": message, "documentation_url": "https://docs.github.com/rest",
            "status": str(status)}
    return web.json_response(body, status=status, headers=headers)


class GitHubStandIn(StandIn):
    def __init__(self, client: tuple[str, str] = ("gatehouse-test", "test-secret")) -> None:
        super().__init__()
        self.client = client
        app = web.Application(middlewares=[self._github_rules])
        app.add_routes([
            *self.control_routes(),
            web.post("/login/oauth/access_token", self._refresh),
            web.get("/user", self._user),
            web.get("/user/repos", self._repos),
            web.get("/search/issues", self._search),
            web.post("/repos/{owner}/{repo}/issues", self._create_issue),
            web.get("/repos/{owner}/{repo}/contents/{path:.+}", self._contents),
            web.delete("/applications/{client_id}/grant", self._delete_grant),
        ])
        self.app = app

    @web.middleware
    async def _github_rules(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(("/_standin/", "/login/", "/applications/")):
            return await handler(request)
        account = self.bearer_account(request)
        if account is None:
            return _message(401, "Bad credentials")
        await self.record(request, account,
                          api_version=request.headers.get("X-GitHub-Api-Version"))
        failure = account.take_failure()
        if failure:
            return _message(failure, "Server Error" if failure >= 500
                            else "Stand-in failure <script>alert(1)</script>")
        if request.headers.get("Accept") != "application/vnd.github+json":
            return _message(415, "Unsupported 'Accept' header")
        if request.headers.get("X-GitHub-Api-Version") != API_VERSION:
            return _message(400, "Unsupported API version")
        request[ACCOUNT] = account
        response = await handler(request)
        response.headers["X-OAuth-Scopes"] = account.scopes
        response.headers["X-GitHub-Api-Version-Selected"] = API_VERSION
        return response

    async def _refresh(self, request: web.Request) -> web.Response:
        """GitHub's token endpoint for ``grant_type=refresh_token`` (expiring user tokens)."""
        form = await request.post()
        if (form.get("client_id"), form.get("client_secret")) != self.client:
            return web.json_response({"error": "incorrect_client_credentials"})
        account = self.refresh_tokens.pop(str(form.get("refresh_token")), None)
        if form.get("grant_type") != "refresh_token" or account is None:
            return web.json_response({"error": "bad_refresh_token"})  # GitHub answers 200
        token, refresh = f"ghu_{secrets.token_hex(16)}", f"ghr_{secrets.token_hex(16)}"
        self.accounts[token] = account
        self.refresh_tokens[refresh] = account
        account.refreshes += 1
        return web.json_response({
            "access_token": token, "expires_in": 28800, "refresh_token": refresh,
            "refresh_token_expires_in": 15897600, "scope": "", "token_type": "bearer",
        })

    async def _delete_grant(self, request: web.Request) -> web.Response:
        """"Delete an app authorization": the client's credentials as HTTP Basic, the access
        token in a JSON body; 204 ends every token of that grant. GitHub answers 404 for a
        token it does not know and for wrong client credentials alike."""
        pair = base64.b64encode(":".join(self.client).encode()).decode()
        if (request.match_info["client_id"] != self.client[0]
                or request.headers.get("Authorization") != f"Basic {pair}"):
            return _message(404, "Not Found")
        body = await request.json()
        account = self.accounts.get(str(body.get("access_token"))) if isinstance(body, dict) \
            else None
        if account is None:
            return _message(404, "Not Found")
        for tokens in (self.accounts, self.refresh_tokens):
            for token in [t for t, owner in tokens.items() if owner is account]:
                del tokens[token]
        return web.Response(status=204)

    async def _user(self, request: web.Request) -> web.Response:
        login = request[ACCOUNT].login
        return web.json_response({
            "login": login, "id": 4242, "node_id": "U_4242", "type": "User",
            "name": login.title(), "email": f"{login}@example.com",
            "html_url": f"https://github.com/{login}", "site_admin": False,
        })

    async def _repos(self, request: web.Request) -> web.Response:
        login = request[ACCOUNT].login
        repos = [_repo(login, "hello", False, 1), _repo(login, "secret", True, 2),
                 _repo("octo-org", "tools", False, 3)]
        visibility = request.query.get("visibility", "all")
        if visibility != "all":
            repos = [r for r in repos if r["visibility"] == visibility]
        per_page, page = int(request.query.get("per_page", 30)), int(request.query.get("page", 1))
        return web.json_response(repos[(page - 1) * per_page: page * per_page])

    async def _search(self, request: web.Request) -> web.Response:
        query = request.query.get("q", "")
        if not query:
            return _message(422, "Validation Failed")
        login = request[ACCOUNT].login
        items: list[dict[str, Any]] = [{
            "url": f"https://api.github.com/repos/{login}/hello/issues/{n}",
            "repository_url": f"https://api.github.com/repos/{login}/hello",
            "html_url": f"https://github.com/{login}/hello/issues/{n}", "id": 9000 + n,
            "number": n, "title": f"Issue {n} matching {query}", "state": "open",
            "user": {"login": login, "id": 4242}, "labels": [], "comments": 0,
            "created_at": "2025-01-01T00:00:00Z", "updated_at": "2025-01-02T00:00:00Z",
            "body": "details", "score": 1.0,
        } for n in (1, 2)]
        return web.json_response(
            {"total_count": len(items), "incomplete_results": False, "items": items}
        )

    async def _create_issue(self, request: web.Request) -> web.Response:
        account = request[ACCOUNT]
        if "repo" not in account.scope_set():
            return _message(403, "Resource not accessible by integration",
                            **{"X-Accepted-OAuth-Scopes": "repo"})
        body = await request.json()
        if not isinstance(body, dict) or not body.get("title"):
            return _message(422, "Validation Failed")
        account.issues += 1
        owner, repo, number = request.match_info["owner"], request.match_info["repo"], \
            account.issues
        return web.json_response({
            "id": 7000 + number, "node_id": f"I_{number}", "number": number,
            "url": f"https://api.github.com/repos/{owner}/{repo}/issues/{number}",
            "html_url": f"https://github.com/{owner}/{repo}/issues/{number}",
            "title": body["title"], "body": body.get("body"), "state": "open",
            "labels": [{"name": n} for n in body.get("labels", [])],
            "user": {"login": account.login}, "created_at": "2025-01-03T00:00:00Z",
        }, status=201, headers={"Location": f"https://api.github.com/repos/{owner}/{repo}/"
                                            f"issues/{number}"})

    async def _contents(self, request: web.Request) -> web.Response:
        owner, repo = request.match_info["owner"], request.match_info["repo"]
        path = request.match_info["path"]
        if (repo, path) != ("hello", "README.md"):
            return _message(404, "Not Found")
        raw = base64.b64encode(README.encode()).decode()
        content = "\n".join(raw[i:i + 60] for i in range(0, len(raw), 60)) + "\n"
        url = f"https://api.github.com/repos/{owner}/{repo}/contents/{path}"
        return web.json_response({
            "type": "file", "encoding": "base64", "size": len(README), "name": "README.md",
            "path": path, "content": content, "sha": "3d21ec53a331a6f037a91c368710b99387d012c1",
            "url": url, "git_url": None, "download_url": None,
            "html_url": f"https://github.com/{owner}/{repo}/blob/main/{path}",
            "_links": {"self": url},
        })


class RunningStandIn(Running):
    """The GitHub stand-in served from a background thread; ``url`` is its base URL."""

    def __init__(self) -> None:
        self.standin = GitHubStandIn()
        super().__init__(self.standin.app)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9999)
    args = parser.parse_args()
    web.run_app(GitHubStandIn().app, host="127.0.0.1", port=args.port, access_log=None,
                print=None)


if __name__ == "__main__":
    main()
