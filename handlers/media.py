"""Media: upload (multipart, MIME sniffed from the content) and serving with HTTP caching and ranges.

Serving returns a Starlette response, which Connexion passes through untouched: the body is
streamed from disk in chunks, never loaded whole."""

from __future__ import annotations

import json

import anyio
from connexion import request
from starlette.datastructures import UploadFile
from starlette.responses import Response, StreamingResponse

from auth import Principal
from domain import media
from gateway.errors import ApiError
from gateway.i18n import parse_accept_language

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    # even if a browser were to render it, uploaded content runs with no privileges on our origin
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; sandbox",
    "Accept-Ranges": "bytes",
}


async def post_media_upload(principal: Principal, file: UploadFile | None = None):
    if not isinstance(file, UploadFile):
        raise ApiError(400, "error.missing_file_field")
    try:
        return await media.save_stream(principal, file.filename, file.file)
    finally:
        await file.close()


async def _chunks(path, start: int, length: int):
    async with await anyio.open_file(path, "rb") as handle:
        await handle.seek(start)
        remaining = length
        while remaining > 0:
            chunk = await handle.read(min(media.CHUNK, remaining))
            if not chunk:
                break
            remaining -= len(chunk)
            yield chunk


async def get_media_by_id(principal: Principal, id: str, token: str | None = None):
    """`token` is read by the security handler (for <img src="…?token=…">); nothing to do here."""
    row = await media.get_media(principal, id)
    headers = request.headers
    validators = media.cache_headers(row)
    if media.not_modified(row, headers.get("if-none-match"), headers.get("if-modified-since")):
        return Response(status_code=304, headers={**validators, **SECURITY_HEADERS})
    size = row["size"]
    common = {
        **validators,
        **SECURITY_HEADERS,
        "Content-Disposition": media.content_disposition(row["mime_type"], row["filename"]),
    }
    wanted = None
    if media.range_applies(headers.get("if-range"), row):
        wanted = media.parse_range(headers.get("range"), size)
    if wanted is False:
        message = ApiError(416, "error.range_not_satisfiable", size).message(
            parse_accept_language(headers.get("accept-language"))
        )
        return Response(
            json.dumps({"error": message}),
            status_code=416,
            media_type="application/json",
            headers={"Content-Range": f"bytes */{size}", **SECURITY_HEADERS},
        )
    start, end, status = 0, size - 1, 200
    if wanted:
        start, end = wanted
        status = 206
        common["Content-Range"] = f"bytes {start}-{end}/{size}"
    length = end - start + 1
    return StreamingResponse(
        _chunks(row["file"], start, length),
        status_code=status,
        media_type=media.content_type_header(row["mime_type"]),
        headers={**common, "Content-Length": str(length)},
    )
