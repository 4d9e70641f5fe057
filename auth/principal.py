"""Who is calling: role, scopes and tenant (the external user id)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from gateway.errors import ApiError

SCOPES = ("operator.admin", "operator.read", "operator.write", "operator.approvals", "operator.pairing")
MAX_USER_ID = 255


class Role(enum.IntEnum):
    VIEWER = 1
    OPERATOR = 2
    ADMIN = 3


def role_from_scopes(scopes: frozenset[str] | set[str] | list[str]) -> Role:
    if "operator.admin" in scopes:
        return Role.ADMIN
    if {"operator.write", "operator.approvals", "operator.pairing"} & set(scopes):
        return Role.OPERATOR
    return Role.VIEWER


def required_role(method: str, path: str) -> Role:
    """The HTTP role ladder: API-key management and the route table are admin, reads viewer,
    everything else operator."""
    if path.startswith("/v1/api-keys") or path == "/v1/system/routes":
        return Role.ADMIN
    if method in ("GET", "HEAD", "OPTIONS"):
        return Role.VIEWER
    return Role.OPERATOR


def validate_user_id(raw: str | None) -> str:
    """The tenant id from X-GoClaw-User-Id: at most 255 chars, printable, no control characters."""
    if raw is None:
        return ""
    value = raw.strip()
    if len(value) > MAX_USER_ID or any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise ApiError(400, "error.invalid_user_id")
    return value


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller. `user_id` is the tenant; '' means none was given."""

    role: Role
    kind: str  # "gateway_token" | "api_key" | "anonymous"
    user_id: str = ""
    scopes: frozenset[str] = field(default_factory=frozenset)
    key_id: str | None = None
    ip: str | None = None
    owner: bool = False  # listed in GOCLAW_OWNER_IDS: sees every tenant's data

    @property
    def is_admin(self) -> bool:
        return self.role >= Role.ADMIN or self.owner

    @property
    def actor_id(self) -> str:
        return self.user_id or ("system" if self.kind != "api_key" else f"api_key:{self.key_id}")

    def has_scope(self, scope: str) -> bool:
        """Fine-grained check: the gateway token holds every scope; admin keys too."""
        if self.kind in ("gateway_token",) or "operator.admin" in self.scopes:
            return True
        if self.kind == "anonymous":
            return scope != "operator.admin"
        if scope == "operator.read":
            return bool(self.scopes)
        return scope in self.scopes

    def require(self, role: Role, what: str) -> None:
        if self.role < role:
            raise ApiError(403, "error.permission_denied", what)
