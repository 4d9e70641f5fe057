"""The function-level authorization matrix: which credential may call which operation.

One table, derived from the code: `auth.principal.required_role` (the HTTP role ladder every
request passes) plus the operations whose domain function asks for an admin on top of it
(`DOMAIN_ADMIN_ONLY`). `tests/test_security_authz.py` checks every cell over HTTP; the README's
"Security" section shows the same table — regenerate it with

    .venv/bin/python -m tests.support.authz            # HTTP operations
    .venv/bin/python -m tests.support.authz --ws       # WebSocket methods (ws/methods.py)
"""

from __future__ import annotations

import sys

from auth.principal import Role, required_role

# Operations open to an operator by the ladder whose domain function requires an admin anyway
# (built-in tool settings and custom tools run commands on the gateway host).
DOMAIN_ADMIN_ONLY = {
    ("PUT", "/v1/tools/builtin/{name}"),
    ("POST", "/v1/tools/custom"),
    ("PUT", "/v1/tools/custom/{id}"),
}
PUBLIC = {("GET", "/health")}  # no credentials at all

# name → (API-key scopes, or None for the gateway token / no credential)
CREDENTIALS: dict[str, tuple[str, ...] | None] = {
    "none": None,
    "viewer": ("operator.read",),
    "operator": ("operator.read", "operator.write"),
    "approvals": ("operator.approvals",),
    "pairing": ("operator.pairing",),
    "admin key": ("operator.admin",),
    "gateway token": None,
}
ROLE_OF = {
    "none": None,
    "viewer": Role.VIEWER,
    "operator": Role.OPERATOR,
    "approvals": Role.OPERATOR,
    "pairing": Role.OPERATOR,
    "admin key": Role.ADMIN,
    "gateway token": Role.ADMIN,
}


def lowest_role(method: str, path: str) -> Role | None:
    """None for public operations."""
    if (method, path) in PUBLIC:
        return None
    if (method, path) in DOMAIN_ADMIN_ONLY:
        return Role.ADMIN
    return required_role(method, path)


def expected(method: str, path: str, credential: str) -> int | None:
    """401 or 403 when refused, None when allowed (any other status)."""
    needed = lowest_role(method, path)
    if needed is None:
        return None
    have = ROLE_OF[credential]
    if have is None:
        return 401
    return 403 if have < needed else None


def cell(outcome: int | None) -> str:
    return "✓" if outcome is None else str(outcome)


def operations(document: dict) -> list[tuple[str, str]]:
    found = []
    for path, item in document["paths"].items():
        for method in ("get", "post", "put", "patch", "delete"):
            if method in item:
                found.append((method.upper(), path))
    return sorted(found, key=lambda op: (op[1], ["GET", "POST", "PUT", "PATCH", "DELETE"].index(op[0])))


def http_table(document: dict) -> str:
    names = list(CREDENTIALS)
    lines = ["| Operation | Lowest role | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for method, path in operations(document):
        needed = lowest_role(method, path)
        role = "public" if needed is None else needed.name.lower()
        if (method, path) in DOMAIN_ADMIN_ONLY:
            role += " (domain)"
        cells = " | ".join(cell(expected(method, path, name)) for name in names)
        lines.append(f"| `{method} {path}` | {role} | {cells} |")
    return "\n".join(lines)


# --- WebSocket: methods are checked against the credential's scopes (Principal.has_scope) --------

WS_CREDENTIALS = {name: scopes for name, scopes in CREDENTIALS.items() if name != "none"}


def ws_allowed(scope: str | None, credential: str) -> bool:
    from auth.principal import Principal

    scopes = WS_CREDENTIALS[credential]
    if scopes is None:  # the gateway token
        principal = Principal(Role.ADMIN, "gateway_token")
    else:
        from auth.principal import role_from_scopes

        principal = Principal(role_from_scopes(scopes), "api_key", scopes=frozenset(scopes))
    return scope is None or principal.has_scope(scope)


def ws_table() -> str:
    from ws.methods import METHODS

    names = list(WS_CREDENTIALS)
    lines = ["| Method | Scope | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for method, spec in METHODS.items():
        scope = f"`{spec.scope}`" if spec.scope else ("none" if method == "connect" else "authenticated")
        cells = " | ".join("✓" if ws_allowed(spec.scope, name) else "denied" for name in names)
        lines.append(f"| `{method}` | {scope} | {cells} |")
    return "\n".join(lines)


if __name__ == "__main__":
    if "--ws" in sys.argv:
        print(ws_table())
    else:
        from gateway.spec import EXT_PATH, SEED_PATH, load_document

        print(http_table(load_document(SEED_PATH, EXT_PATH)))
