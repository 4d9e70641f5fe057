"""Resolve a request's credentials to a Principal, and the Connexion security handler for
the spec's `bearerAuth` scheme (the spec file carries no x-bearerInfoFunc; we supply it)."""

from __future__ import annotations

import hmac

from connexion.security import AbstractSecurityHandler

from auth.principal import Principal, Role, required_role, role_from_scopes, validate_user_id
from gateway import state
from gateway.errors import ApiError


def _unauthorized() -> ApiError:
    return ApiError(401, "error.unauthorized", headers={"WWW-Authenticate": "Bearer"})


def bearer_token(authorization: str | None) -> str | None:
    """The token after an exact `Bearer ` prefix; anything else counts as no token."""
    if authorization and authorization.startswith("Bearer "):
        token = authorization[7:].strip()
        return token or None
    return None


async def resolve_token(token: str | None, user_header: str | None, ip: str | None = None) -> Principal:
    """Gateway token → admin; live API key → role from scopes; none → 'auth disabled' operator
    when no gateway token is configured. A token that is present but wrong is always 401."""
    settings = state.settings
    user_id = validate_user_id(user_header)
    owner = user_id in settings.owner_ids
    if token is None:
        if settings.auth_disabled:
            return Principal(Role.OPERATOR, "anonymous", user_id, ip=ip, owner=owner)
        raise _unauthorized()
    if settings.gateway_token and hmac.compare_digest(token.encode(), settings.gateway_token.encode()):
        return Principal(Role.ADMIN, "gateway_token", user_id, ip=ip, owner=owner)
    info = await state.key_cache.lookup(token)
    if info is None:
        raise _unauthorized()
    return Principal(role_from_scopes(info.scopes), "api_key", user_id, info.scopes, info.id, ip, owner)


def authorize(principal: Principal, method: str, path: str) -> None:
    principal.require(required_role(method, path), path)


async def authenticate_request(request) -> dict:
    """Connexion verification function: stores the Principal in the request context."""
    headers = request.headers
    method, path = request.method, request.scope["path"]  # the scope's path: no URL object to build
    token = bearer_token(headers.get("authorization"))
    if token is None and method == "GET" and path.startswith("/v1/media/"):
        token = request.query_params.get("token") or None  # for <img src=...?token=>
    client = request.client
    principal = await resolve_token(token, headers.get("x-goclaw-user-id"), client.host if client else None)
    authorize(principal, method, path)
    request.context["principal"] = principal
    return {"sub": principal.user_id, "role": int(principal.role)}


class BearerAuth(AbstractSecurityHandler):
    """Replaces Connexion's bearer handler: every secured operation goes through
    `authenticate_request`, which raises ApiError (401/403) rather than problem+json."""

    def get_fn(self, security_scheme, required_scopes):
        return authenticate_request


SECURITY_MAP = {"bearer": BearerAuth}
