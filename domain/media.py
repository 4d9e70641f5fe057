"""Uploaded media: stored by content, typed by content, served only to their owner.

Files live at `<data dir>/media/<safe tenant>/<uuid4>` (no extension: the name on disk never comes
from the client) with one `media_files` row each: owner (X-GoClaw-User-Id), sanitised filename,
MIME type sniffed from the first bytes (the client's Content-Type and extension are ignored),
size and SHA-256 (the ETag). Text is only ever `text/plain` or `application/json`: HTML, SVG and
scripts are served as plain text, so nothing uploaded can run in a browser on our origin.
Other tenants get 404 for an id they don't own; admins see everything.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import logging
import os
import re
import unicodedata
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from pathlib import Path
from typing import IO
from urllib.parse import quote

import db
from auth import Principal
from domain import activity
from domain.workspace import ANONYMOUS, safe_name
from gateway import state
from gateway.errors import ApiError, not_found

log = logging.getLogger("goclaw.media")

CHUNK = 1 << 16
SNIFF_BYTES = 4096
MAX_FILENAME = 255
MAX_JSON_CHECK = 8 << 20  # larger JSON-looking uploads are stored as text/plain rather than parsed
CACHE_MAX_AGE = 86400
INLINE_PREFIXES = ("image/", "audio/", "video/", "application/pdf")
MIME_TYPES = (
    "image/png", "image/jpeg", "image/gif", "image/webp", "application/pdf", "audio/mpeg", "audio/wav",
    "audio/ogg", "audio/mp4", "video/mp4", "application/zip", "application/json", "text/plain",
    "application/octet-stream",
)

COLUMNS = "id, owner_id, filename, mime_type, size, sha256, storage_path, created_at"
INSERT_SQL = f"""
INSERT INTO media_files (id, owner_id, filename, mime_type, size, sha256, storage_path)
VALUES (%(id)s, %(owner_id)s, %(filename)s, %(mime_type)s, %(size)s, %(sha256)s, %(storage_path)s)
RETURNING {COLUMNS}
"""
GET_SQL = f"SELECT {COLUMNS} FROM media_files WHERE id = %(id)s AND (%(admin)s OR owner_id = %(user)s)"

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


# ---------------------------------------------------------------------------------------------
# content


def sniff_mime(head: bytes) -> str:
    """The MIME type the first bytes prove; application/octet-stream when they prove nothing."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "audio/wav"
    if head.startswith(b"%PDF-"):
        return "application/pdf"
    if head.startswith(b"OggS"):
        return "audio/ogg"
    if head.startswith(b"ID3") or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0 and head[1] & 0x06):
        return "audio/mpeg"  # an ID3 tag or an MPEG audio frame header (layer bits non-zero)
    if head[4:8] == b"ftyp":
        return "audio/mp4" if head[8:11] == b"M4A" else "video/mp4"
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "application/zip"
    return _sniff_text(head)


def _sniff_text(head: bytes) -> str:
    if not head or b"\x00" in head:
        return "application/octet-stream"
    text = head.lstrip(b"\xef\xbb\xbf")
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError as exc:
        cut = len(head) >= SNIFF_BYTES and exc.start >= len(text) - 3  # a character split by the sniff window
        if not cut:
            return "application/octet-stream"
        decoded = text[: exc.start].decode("utf-8")
    controls = sum(1 for ch in decoded if ord(ch) < 32 and ch not in "\t\n\r\f")
    if controls:
        return "application/octet-stream"
    stripped = decoded.lstrip()
    if stripped[:1] in ("{", "["):
        return "application/json"  # confirmed against the whole file in `save_stream`
    return "text/plain"


def _is_json(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            json.loads(handle.read().decode("utf-8-sig"))
        return True
    except (ValueError, RecursionError):
        return False


def sanitize_filename(name: str | None) -> str:
    """A display name safe to store and to put in a header: the last path segment only, no
    control/bidi characters, NFC-normalised Unicode kept, at most 255 characters; 'file' if
    nothing is left."""
    text = unicodedata.normalize("NFC", name or "")
    text = text.replace("\\", "/").rsplit("/", 1)[-1]
    # control (Cc) and format (Cf) characters go: the latter include the bidi overrides that make
    # "invoice\u202egpj.exe" display as "invoiceexe.jpg" (the emoji zero-width joiner stays)
    text = "".join(ch for ch in text if unicodedata.category(ch) not in ("Cc", "Cf", "Cs") or ch == "\u200d")
    text = text.replace("\ufffd", "").strip().strip(".")
    text = text[:MAX_FILENAME].strip()
    return text or "file"


def media_dir() -> Path:
    return (state.settings.data_dir / "media").absolute()


def file_path(row: dict) -> Path:
    return media_dir() / row["storage_path"]


def public(row: dict) -> dict:
    return {
        "id": row["id"],
        "filename": row["filename"],
        "mime_type": row["mime_type"],
        "size": row["size"],
        "sha256": row["sha256"].strip(),
        "path": f"/v1/media/{row['id']}",
        "created_at": row["created_at"],
    }


# ---------------------------------------------------------------------------------------------
# storing


def _copy(source: IO[bytes], dest: Path, limit: int) -> tuple[int, str, bytes]:
    """Stream `source` into `dest` (created exclusively); returns size, sha256 and the first bytes."""
    digest = hashlib.sha256()
    head = b""
    size = 0
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        while chunk := source.read(CHUNK):
            size += len(chunk)
            if size > limit:
                raise ApiError(413, "error.file_too_large", limit)
            if len(head) < SNIFF_BYTES:
                head += chunk[: SNIFF_BYTES - len(head)]
            digest.update(chunk)
            out.write(chunk)
    return size, digest.hexdigest(), head


def _store(source: IO[bytes], owner_dir: Path, media_id: uuid.UUID, limit: int) -> tuple[Path, int, str, str]:
    owner_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    final = owner_dir / str(media_id)
    partial = owner_dir / f".{media_id}.part"
    try:
        size, sha256, head = _copy(source, partial, limit)
        if size == 0:
            raise ApiError(400, "error.empty_file")
        mime = sniff_mime(head)
        if mime == "application/json" and (size > MAX_JSON_CHECK or not _is_json(partial)):
            mime = "text/plain"
        os.replace(partial, final)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return final, size, sha256, mime


async def save_stream(principal: Principal, filename: str | None, source: IO[bytes]) -> dict:
    """Store a (blocking, file-like) stream as the caller's media; returns the public record.
    400 when empty, 413 beyond GOCLAW_MAX_UPLOAD_BYTES."""
    media_id = uuid.uuid4()
    owner_dir_name = safe_name(principal.user_id) if principal.user_id else ANONYMOUS
    limit = state.settings.max_upload_bytes
    final, size, sha256, mime = await asyncio.to_thread(_store, source, media_dir() / owner_dir_name, media_id, limit)
    name = sanitize_filename(filename)
    values = {
        "id": media_id, "owner_id": principal.user_id, "filename": name, "mime_type": mime, "size": size,
        "sha256": sha256, "storage_path": f"{owner_dir_name}/{media_id}",
    }
    try:
        async with db.transaction() as conn:
            row = await db.fetch_one(INSERT_SQL, values, conn=conn)
            await activity.record(
                conn, principal, "media.uploaded", "media", str(media_id),
                {"filename": name, "mime_type": mime, "size": size},
            )
    except BaseException:
        final.unlink(missing_ok=True)
        raise
    return public(row)


async def save_bytes(principal: Principal, filename: str | None, data: bytes) -> dict:
    """Store bytes produced server-side (tool output, generated images) as the caller's media."""
    return await save_stream(principal, filename, io.BytesIO(data))


async def get_media(principal: Principal, media_id: str) -> dict:
    """The stored row (with `file`, the path on disk) if the caller owns it (or is admin); else 404."""
    try:
        uid = uuid.UUID(media_id)
    except ValueError:
        raise ApiError(400, "error.invalid_id", "media") from None
    row = await db.fetch_one(GET_SQL, {"id": uid, "admin": principal.is_admin, "user": principal.user_id})
    if row is None:
        raise not_found("media", media_id)
    path = file_path(row)
    if not path.is_file():
        log.warning("media %s has a row but no file at %s", uid, path)
        raise not_found("media", media_id)
    return {**row, "sha256": row["sha256"].strip(), "file": path}


# ---------------------------------------------------------------------------------------------
# HTTP semantics kept here so WebSocket/other transports serve media the same way


def etag_of(row: dict) -> str:
    return f'"{row["sha256"]}"'


def etag_matches(header: str | None, etag: str) -> bool:
    """If-None-Match uses the weak comparison: W/ prefixes are ignored, `*` matches anything."""
    if not header:
        return False
    candidates: Iterable[str] = (part.strip() for part in header.split(","))
    return any(c == "*" or c.removeprefix("W/") == etag for c in candidates)


def parse_range(header: str | None, size: int) -> tuple[int, int] | bool | None:
    """One byte range from a Range header as (start, end inclusive).

    None: no usable Range (absent, malformed, several ranges, or a unit other than bytes) — serve
    the whole file, as RFC 9110 allows. False: syntactically valid but unsatisfiable (416)."""
    if not header:
        return None
    match = _RANGE.match(header.strip().replace(" ", ""))
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # suffix: the last N bytes
        length = int(last)
        if length == 0:
            return False
        return max(0, size - length), size - 1
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None
    if start >= size:
        return False
    return start, min(end, size - 1)


def content_type_header(mime: str) -> str:
    return f"{mime}; charset=utf-8" if mime.startswith("text/") else mime


def content_disposition(mime: str, filename: str) -> str:
    """inline for images/audio/video/PDF, attachment otherwise; ASCII fallback + RFC 5987 filename*."""
    kind = "inline" if mime.startswith(INLINE_PREFIXES) else "attachment"
    fallback = "".join(ch if 32 <= ord(ch) < 127 and ch not in '"\\' else "_" for ch in filename) or "file"
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def _http_date(moment: datetime) -> str:
    return format_datetime(moment.astimezone(UTC), usegmt=True)


def cache_headers(row: dict) -> dict[str, str]:
    """Validators and caching policy sent with 200, 206 and 304 answers."""
    return {
        "ETag": etag_of(row),
        "Last-Modified": _http_date(row["created_at"]),
        "Cache-Control": f"private, max-age={CACHE_MAX_AGE}",
    }


def not_modified(row: dict, if_none_match: str | None, if_modified_since: str | None) -> bool:
    """RFC 9110 §13.2.2: If-None-Match decides when present; otherwise If-Modified-Since."""
    if if_none_match:
        return etag_matches(if_none_match, etag_of(row))
    if if_modified_since:
        try:
            since = parsedate_to_datetime(if_modified_since)
        except (TypeError, ValueError, IndexError):
            return False
        if since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        return row["created_at"].replace(microsecond=0) <= since
    return False


def range_applies(if_range: str | None, row: dict) -> bool:
    """If-Range: honour the Range only while the representation still has this ETag (or date)."""
    if not if_range:
        return True
    if if_range.startswith('"') or if_range.startswith("W/"):
        return if_range == etag_of(row)
    return if_range == _http_date(row["created_at"])
