"""Who may do what to which document: permissions, grants, signed tokens, revocations.
Pure: no I/O, no clock of its own (callers pass `now`).

A grant gives a permission (`read`, `write` or `admin`) on the documents whose names match
a pattern (`*` and `?` globs, where `*` also crosses `/`: `team/*` is everything under
`team/`), until an expiry. Tokens are JWTs signed with HS256 carrying a grant: claims
`doc` (the pattern), `perm`, `exp`, `iat`, `jti` (the token's id) and optionally `sub`
(the user, as the embedding app knows them). A revocation lowers what matching grants
allow: to nothing, or to read-only.
"""

from __future__ import annotations

import fnmatch
import secrets
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import jwt

from collab.errors import TokenExpired, Unauthorized

Permission = Literal["none", "read", "write", "admin"]
GRANTABLE: tuple[Permission, ...] = ("read", "write", "admin")
_RANK: dict[str, int] = {"none": 0, "read": 1, "write": 2, "admin": 3}
ALGORITHM = "HS256"
MIN_SECRET_LENGTH = 32  # bytes: HS256 wants a key at least as long as its hash
CLOCK_SKEW = 60.0  # seconds a token's issue time may be ahead of ours


def allows(have: Permission, need: Permission) -> bool:
    return _RANK[have] >= _RANK[need]


def lowest(*permissions: Permission) -> Permission:
    return min(permissions, key=_RANK.__getitem__)


def matches(pattern: str, doc: str) -> bool:
    """Whether document name `doc` falls under `pattern` (a name or a glob)."""
    return fnmatch.fnmatchcase(doc, pattern)


@dataclass(frozen=True, slots=True)
class Grant:
    """What a credential allows."""

    permission: Permission
    docs: str = "*"
    expires_at: float | None = None
    subject: str | None = None
    token_id: str | None = None
    issued_at: float | None = None

    def permission_for(self, doc: str) -> Permission:
        return self.permission if matches(self.docs, doc) else "none"


OPEN_GRANT = Grant("admin")  # what everyone gets in --auth open


@dataclass(frozen=True, slots=True)
class Revocation:
    """Grants of a token (by id), or of a user's tokens issued before `at`, allow at most
    `permission` on the documents matching `docs`."""

    at: float
    permission: Permission = "none"
    token_id: str | None = None
    subject: str | None = None
    docs: str = "*"

    def covers(self, grant: Grant, doc: str) -> bool:
        if not matches(self.docs, doc):
            return False
        if self.token_id is not None:
            return grant.token_id == self.token_id
        return (
            self.subject is not None
            and grant.subject == self.subject
            and (grant.issued_at is None or grant.issued_at <= self.at)
        )


def effective(grant: Grant, doc: str, revocations: Iterable[Revocation]) -> Permission:
    """What `grant` allows on `doc` once `revocations` are applied."""
    permission = grant.permission_for(doc)
    for revocation in revocations:
        if revocation.covers(grant, doc):
            permission = lowest(permission, revocation.permission)
    return permission


def mint(
    secret: str,
    docs: str,
    permission: Permission,
    *,
    now: float,
    ttl: float | None = None,
    subject: str | None = None,
) -> str:
    """A signed token granting `permission` on `docs` (a name or pattern)."""
    if permission not in GRANTABLE:
        raise ValueError(f"permission must be one of {', '.join(GRANTABLE)}")
    claims: dict[str, object] = {
        "doc": docs,
        "perm": permission,
        "iat": int(now),
        "jti": secrets.token_urlsafe(12),
    }
    if ttl is not None:
        claims["exp"] = int(now + ttl)
    if subject is not None:
        claims["sub"] = subject
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify(secret: str, token: str, *, now: float) -> Grant:
    """The grant a token carries.

    Raises:
        Unauthorized: the token is malformed, not signed with `secret`, or expired.
    """
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            # Time is checked below against the caller's clock.
            options={
                "require": ["doc", "perm", "iat", "jti"],
                "verify_exp": False,
                "verify_iat": False,
                "verify_nbf": False,
            },
        )
    except jwt.InvalidTokenError as exc:
        raise Unauthorized(f"invalid token: {exc}") from None
    expires, issued = claims.get("exp"), claims["iat"]
    if not isinstance(issued, int | float) or (
        expires is not None and not isinstance(expires, int | float)
    ):
        raise Unauthorized("invalid token: iat or exp is not a time")
    if expires is not None and expires <= now:
        raise TokenExpired("token expired")
    if issued > now + CLOCK_SKEW:
        raise Unauthorized("invalid token: issued in the future")
    if claims["perm"] not in GRANTABLE or not isinstance(claims["doc"], str):
        raise Unauthorized("invalid token: bad doc or perm claim")
    return Grant(
        claims["perm"],
        claims["doc"],
        float(expires) if expires is not None else None,
        claims.get("sub") if isinstance(claims.get("sub"), str) else None,
        str(claims["jti"]),
        float(issued),
    )


@dataclass(frozen=True, slots=True)
class AuthRequest:
    """What an authorizer is told about a WebSocket upgrade or an API call."""

    doc: str | None  # None for requests about no single document (listing, compact)
    token: str | None  # the `token` query parameter or the Bearer token
    headers: Mapping[str, str]
    cookies: Mapping[str, str] = field(default_factory=dict)
    remote: str | None = None


# An app's own decision: a Grant (or just a Permission) for the request.
Decision = Grant | Permission
Authorizer = Callable[[AuthRequest], Decision | Awaitable[Decision]]
