"""`/v1/openapi.json` and Swagger UI at `/docs`, answered before Connexion's stack.

The document is served exactly as loaded (Connexion would serve a processed copy with $refs
inlined and `servers` rewritten, which is not our contract). Swagger UI's assets come from the
`swagger_ui_bundle` package, so /docs works without internet access."""

from __future__ import annotations

import json
import mimetypes
from pathlib import Path

from starlette.types import ASGIApp, Receive, Scope, Send

SPEC_PATH = "/v1/openapi.json"
DOCS_PATH = "/docs"

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>GoClaw Gateway API</title>
<link rel="stylesheet" href="/docs/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/docs/swagger-ui-bundle.js"></script>
<script>window.ui = SwaggerUIBundle({url: "/v1/openapi.json", dom_id: "#swagger-ui", deepLinking: true});</script>
</body></html>
"""


def _assets_dir() -> Path | None:
    try:
        import swagger_ui_bundle
    except ImportError:
        return None
    return Path(swagger_ui_bundle.swagger_ui_path)


class DocsAndSpec:
    def __init__(self, app: ASGIApp, document: dict) -> None:
        self.app = app
        self.spec_body = json.dumps(document, ensure_ascii=False).encode()
        self.assets = _assets_dir()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD") or not (
            path == SPEC_PATH or path == DOCS_PATH or path.startswith(DOCS_PATH + "/")
        ):
            await self.app(scope, receive, send)
            return
        if path == SPEC_PATH:
            await _reply(scope, send, 200, self.spec_body, "application/json", cors=True)
        elif path == DOCS_PATH:
            await _reply(scope, send, 308, b"", "text/plain", location="/docs/")
        elif path == DOCS_PATH + "/":
            await _reply(scope, send, 200, PAGE.encode(), "text/html; charset=utf-8")
        else:
            await self._asset(scope, send, path[len(DOCS_PATH) + 1:])

    async def _asset(self, scope: Scope, send: Send, name: str) -> None:
        allowed = self.assets is not None and "/" not in name and not name.startswith(".")
        file = self.assets / name if allowed else None
        if file is None or not file.is_file():
            await _reply(scope, send, 404, b'{"error": "not found"}', "application/json")
            return
        kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
        await _reply(scope, send, 200, file.read_bytes(), kind, cache=True)


async def _reply(scope: Scope, send: Send, status: int, body: bytes, content_type: str, *, cors: bool = False,
                 cache: bool = False, location: str | None = None) -> None:
    headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
    if cors:
        headers.append((b"access-control-allow-origin", b"*"))
    if cache:
        headers.append((b"cache-control", b"public, max-age=86400"))
    if location:
        headers.append((b"location", location.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body if scope["method"] == "GET" else b""})
