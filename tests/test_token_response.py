"""Token endpoint answers (RFC 6749 §5.1 and the documented provider variants) parse or refuse."""

from __future__ import annotations

import pytest

from oauth.errors import TokenEndpointError
from oauth.token_endpoint import TokenResponse


def test_standard_answer() -> None:
    parsed = TokenResponse.parse({"access_token": "at", "token_type": "Bearer",
                                  "expires_in": 3600, "refresh_token": "rt", "scope": "a b"})
    assert (parsed.access_token, parsed.expires_in, parsed.refresh_token, parsed.scope) == (
        "at", 3600.0, "rt", "a b")
    assert "at" not in repr(parsed) and "rt" not in repr(parsed)


def test_slack_user_token_is_taken_from_authed_user() -> None:
    """oauth.v2.access with only user_scope: no top-level token (Slack's documented shape)."""
    parsed = TokenResponse.parse({
        "ok": True, "app_id": "A0KRD7HC3",
        "authed_user": {"id": "U1234", "scope": "chat:write,users:read",
                        "access_token": "xoxp-1234", "token_type": "user"},
        "team": {"id": "T9TK3CUKW", "name": "Slack Softball Team"},
        "enterprise": None, "is_enterprise_install": False})
    assert (parsed.access_token, parsed.scope) == ("xoxp-1234", "chat:write,users:read")


def test_a_top_level_token_wins_over_authed_user() -> None:
    parsed = TokenResponse.parse({"access_token": "xoxb-bot", "scope": "commands",
                                  "authed_user": {"access_token": "xoxp-user"}})
    assert parsed.access_token == "xoxb-bot"


@pytest.mark.parametrize("document", [
    None, [], {}, {"ok": False, "error": "invalid_code"}, {"access_token": ""},
    {"access_token": 5}, {"access_token": "a", "refresh_token": 7},
    {"access_token": "a", "expires_in": "soon"}, {"access_token": "a", "expires_in": [1]},
    {"authed_user": "xoxp"}, {"authed_user": {"id": "U1"}},
])
def test_unusable_answers_are_refused(document: object) -> None:
    with pytest.raises(TokenEndpointError):
        TokenResponse.parse(document)
