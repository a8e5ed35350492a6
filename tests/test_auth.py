"""Tokens, grants, patterns and revocations. Pure."""

from __future__ import annotations

import jwt
import pytest

from collab.auth import Grant, Revocation, allows, effective, matches, mint, verify
from collab.errors import Unauthorized

SECRET = "s" * 32
NOW = 1_800_000_000.0


def test_a_token_carries_its_grant() -> None:
    token = mint(SECRET, "team/*", "read", now=NOW, ttl=60, subject="ada")
    grant = verify(SECRET, token, now=NOW + 30)
    assert (grant.permission, grant.docs, grant.subject) == ("read", "team/*", "ada")
    assert grant.expires_at == NOW + 60 and grant.issued_at == NOW and grant.token_id


@pytest.mark.parametrize(
    ("token", "message"),
    [
        (mint(SECRET, "d", "write", now=NOW, ttl=60), "token expired"),  # checked at NOW+60
        (mint("o" * 32, "d", "write", now=NOW, ttl=600), "invalid token"),
        ("not.a.token", "invalid token"),
        (jwt.encode({"doc": "d", "perm": "root", "iat": 1, "jti": "x"}, SECRET), "bad doc or perm"),
        (jwt.encode({"doc": "d", "perm": "read"}, SECRET), "invalid token"),  # no iat, jti
        (
            jwt.encode(
                # Another algorithm than the one we accept (HS512 wants a longer key).
                {"doc": "d", "perm": "read", "iat": 1, "jti": "x"},
                SECRET * 2,
                algorithm="HS512",
            ),
            "invalid token",
        ),
    ],
)
def test_bad_tokens_are_unauthorized(token: str, message: str) -> None:
    with pytest.raises(Unauthorized, match=message):
        verify(SECRET, token, now=NOW + 60)


def test_a_token_from_the_future_is_refused() -> None:
    with pytest.raises(Unauthorized, match="future"):
        verify(SECRET, mint(SECRET, "d", "read", now=NOW + 3600), now=NOW)


def test_the_none_algorithm_is_refused() -> None:
    unsigned = jwt.encode(
        {"doc": "*", "perm": "admin", "iat": 1, "jti": "x"}, None, algorithm="none"
    )
    with pytest.raises(Unauthorized):
        verify(SECRET, unsigned, now=NOW)


def test_patterns_match_names_across_slashes() -> None:
    assert matches("team/*", "team/notes/today")
    assert matches("doc-?", "doc-1") and not matches("doc-?", "doc-10")
    assert not matches("team/*", "teams/x")
    assert matches("exact", "exact") and not matches("exact", "exactly")


def test_permissions_are_ordered() -> None:
    assert allows("admin", "write") and allows("write", "read") and not allows("read", "write")
    assert not allows("none", "read")


def test_revocations_lower_the_grants_they_cover() -> None:
    grant = Grant("write", "team/*", subject="ada", token_id="t1", issued_at=NOW)
    assert effective(grant, "team/a", []) == "write"
    assert effective(grant, "other", []) == "none"
    by_token = Revocation(NOW + 1, "none", token_id="t1")
    assert effective(grant, "team/a", [by_token]) == "none"
    downgrade = Revocation(NOW + 1, "read", subject="ada", docs="team/a")
    assert effective(grant, "team/a", [downgrade]) == "read"
    assert effective(grant, "team/b", [downgrade]) == "write"
    # A user's tokens issued after a revocation are not covered by it.
    later = Grant("write", "team/*", subject="ada", token_id="t2", issued_at=NOW + 5)
    assert effective(later, "team/a", [downgrade]) == "write"
