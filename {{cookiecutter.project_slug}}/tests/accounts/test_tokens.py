from __future__ import annotations

import time

import jwt
import pytest

from app.accounts.tokens import ALGORITHM, InvalidToken, TokenExpired, decode_token, issue_token

from .conftest import make_settings


def test_a_token_carries_issuer_audience_subject_and_session() -> None:
    settings = make_settings()
    claims = decode_token(settings, issue_token(settings, "alice", "s1"))
    assert (claims["iss"], claims["aud"]) == ("realtime-chat", "realtime-chat")
    assert (claims["sub"], claims["sid"]) == ("alice", "s1")


@pytest.mark.parametrize("change", [{"iss": "someone-else"}, {"aud": "another-app"}, {"sub": "no/such name"},
                                    {"sub": None}, {"sid": None}])
def test_a_token_with_a_wrong_claim_is_refused(change: dict[str, object]) -> None:
    settings = make_settings()
    now = int(time.time())
    claims = {"iss": "realtime-chat", "aud": "realtime-chat", "sub": "alice", "sid": "s1", "exp": now + 60, **change}
    token = jwt.encode({k: v for k, v in claims.items() if v is not None}, settings.secret_key.get_secret_value(),
                       algorithm=ALGORITHM)
    with pytest.raises(InvalidToken):
        decode_token(settings, token)


def test_expired_missing_and_foreign_tokens_are_refused() -> None:
    settings = make_settings()
    with pytest.raises(TokenExpired):
        decode_token(settings, issue_token(settings, "alice", "s1", ttl=-5))
    with pytest.raises(InvalidToken, match="missing token"):
        decode_token(settings, None)
    with pytest.raises(InvalidToken, match="invalid token"):
        decode_token(settings, issue_token(make_settings(secret_key="other-" + "y" * 40), "alice", "s1"))
