"""Skills: upload a ZIP holding SKILL.md (+ files), list, read, update, delete.

Upload rules (each violation is a 400 unless noted, nothing is written):
* at most 20 MiB uploaded (413); a readable ZIP; at most 500 entries; at most 50 MiB expanded,
  counted from the headers *and* from the bytes actually read, and no entry expanding more than
  200× its compressed size beyond 1 MiB (both 413: zip bombs);
* entry names: relative, no `..`, no backslashes, no control characters, no duplicates; no
  symlinks or other special files (from the Unix mode in external_attr); no encrypted entries;
* `SKILL.md` at the root or inside exactly one top-level folder (which is stripped); UTF-8; YAML
  frontmatter (a mapping) between `---` lines with `name` and `description` strings; optional
  `slug` (else the name slugified), `version`, `tags`, anything else (kept in `frontmatter`).
Slugs are unique per owner (the tenant, '' = shared): uploading an existing slug again makes a new
version of that skill (version + 1) and reactivates it. Files go to
`<data dir>/skills/<owner dir>/<slug>/<version>/`. `{id}` is the UUID or the slug.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import re
import shutil
import stat
import tempfile
import unicodedata
import uuid
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

import yaml
from psycopg.types.json import Jsonb

import db
from agent.skills import SKILL_FILE, skill_dir, split_frontmatter
from auth import Principal
from db import bus
from domain import activity
from domain.tools import modifiable, require_tenant, resolve_agent_ids, visible
from gateway import state
from gateway.errors import ApiError, bad_request, not_found

MAX_UPLOAD = 20 << 20
MAX_EXPANDED = 50 << 20
MAX_ENTRIES = 500
MAX_RATIO = 200
RATIO_FLOOR = 1 << 20
MAX_SKILL_MD = 1 << 20
MAX_NAME_BYTES = 1024
SLUG_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,98}[a-z0-9])?$")
JUNK = re.compile(r"(^|/)(__MACOSX/|\._[^/]*$|\.DS_Store$|Thumbs\.db$|desktop\.ini$)")
UPDATABLE = {"name", "description", "enabled", "tags", "agent_ids"}

COLUMNS = """
s.id, s.slug, s.name, s.description, s.owner_id, s.version, s.status, s.enabled, s.frontmatter, s.tags,
s.file_path, s.file_size, s.file_hash, s.created_by, s.created_at, s.updated_at,
coalesce((SELECT array_agg(g.agent_id ORDER BY g.created_at, g.agent_id) FROM skill_agent_grants g
          WHERE g.skill_id = s.id), '{}') AS agent_ids
"""
LIST_SQL = f"""
SELECT {COLUMNS} FROM skills s WHERE (%(admin)s OR s.owner_id IN (%(user)s, '')) ORDER BY s.name, s.id
"""
BY_REF_SQL = f"""
SELECT {COLUMNS} FROM skills s
WHERE (s.id = %(id)s OR (%(id)s::uuid IS NULL AND s.slug = %(slug)s))
  AND (%(admin)s OR s.owner_id IN (%(user)s, ''))
ORDER BY (s.owner_id = %(user)s) DESC, (s.owner_id = '') DESC, s.created_at
LIMIT 1
"""
BY_ID_SQL = f"SELECT {COLUMNS} FROM skills s WHERE s.id = %s"
LOCK_SLUG_SQL = "SELECT pg_advisory_xact_lock(hashtext('skill:' || %s || ':' || %s))"
CURRENT_SQL = "SELECT id, version, file_path FROM skills WHERE owner_id = %s AND slug = %s FOR UPDATE"
INSERT_SQL = """
INSERT INTO skills (slug, name, description, owner_id, version, frontmatter, tags, file_path, file_size, file_hash,
                    created_by)
VALUES (%(slug)s, %(name)s, %(description)s, %(owner_id)s, %(version)s, %(frontmatter)s, %(tags)s, %(file_path)s,
        %(file_size)s, %(file_hash)s, %(created_by)s)
RETURNING id
"""
NEW_VERSION_SQL = """
UPDATE skills SET name = %(name)s, description = %(description)s, version = %(version)s, status = 'active',
       frontmatter = %(frontmatter)s, tags = %(tags)s, file_path = %(file_path)s, file_size = %(file_size)s,
       file_hash = %(file_hash)s, updated_at = now()
WHERE id = %(id)s
"""
UPDATE_SQL = """
UPDATE skills SET name = %(name)s, description = %(description)s, enabled = %(enabled)s, tags = %(tags)s,
       updated_at = now()
WHERE id = %(id)s
"""
DELETE_SQL = "DELETE FROM skills WHERE id = %s"
CLEAR_GRANTS_SQL = "DELETE FROM skill_agent_grants WHERE skill_id = %s"
GRANT_SQL = "INSERT INTO skill_agent_grants (skill_id, agent_id, granted_by) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING"


def archive_error(detail: str) -> ApiError:
    return ApiError(400, "error.skill_archive", detail)


def too_large(detail: str) -> ApiError:
    return ApiError(413, "error.skill_too_large", detail)


def public(row: dict, files: list[str] | None = None) -> dict:
    out = {k: v for k, v in row.items() if k not in ("file_path",)}
    out["agent_ids"] = [str(a) for a in row["agent_ids"] or []]
    out["tags"] = list(row["tags"] or [])
    out["path"] = row["file_path"]
    out["file_hash"] = (row["file_hash"] or "").strip()
    if files is not None:
        out["files"] = files
    return out


def slugify(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    return re.sub(r"[^a-z0-9]+", "-", ascii_text).strip("-")[:100].strip("-")


def owner_dir(owner_id: str) -> str:
    if not owner_id:
        return "_shared"
    return hashlib.sha256(owner_id.encode("utf-8", "surrogatepass")).hexdigest()[:16]


# --- the archive ---------------------------------------------------------------------------------


def _check_entry_name(name: str) -> PurePosixPath:
    if not name or len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise archive_error("an entry name is empty or too long")
    if "\\" in name:
        raise archive_error(f"entry {name[:80]!r} contains a backslash")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        raise archive_error("an entry name contains control characters")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise archive_error(f"entry {name[:80]!r} has an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise archive_error(f"entry {name[:80]!r} escapes the archive (..)")
    return PurePosixPath(*parts) if parts else PurePosixPath()


def _entry_kind(info: zipfile.ZipInfo) -> str:
    mode = (info.external_attr >> 16) & 0xFFFF
    kind = stat.S_IFMT(mode)
    if kind == stat.S_IFLNK:
        return "symlink"
    if info.is_dir() or kind == stat.S_IFDIR:
        return "dir"
    if kind not in (0, stat.S_IFREG):
        return "special"
    return "file"


def extract_archive(data: bytes, target: Path) -> tuple[str, list[str]]:
    """Validate the ZIP and write its files under `target`. Returns (SKILL.md text, file list)."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError):
        raise archive_error("not a readable ZIP file") from None
    with archive:
        infos = archive.infolist()
        if len(infos) > MAX_ENTRIES:
            raise archive_error(f"more than {MAX_ENTRIES} entries")
        declared = 0
        files: list[tuple[zipfile.ZipInfo, PurePosixPath]] = []
        seen: set[str] = set()
        for info in infos:
            path = _check_entry_name(info.filename)
            kind = _entry_kind(info)
            if kind == "symlink":
                raise archive_error(f"entry {info.filename[:80]!r} is a symbolic link")
            if kind == "special":
                raise archive_error(f"entry {info.filename[:80]!r} is not a regular file")
            if kind == "dir" or not path.parts or JUNK.search(info.filename):
                continue
            if info.flag_bits & 0x1:
                raise archive_error(f"entry {info.filename[:80]!r} is encrypted")
            if str(path) in seen:
                raise archive_error(f"entry {info.filename[:80]!r} appears twice")
            seen.add(str(path))
            declared += info.file_size
            if declared > MAX_EXPANDED:
                raise too_large(f"the archive expands to more than {MAX_EXPANDED} bytes")
            if info.file_size > RATIO_FLOOR and info.file_size > MAX_RATIO * max(info.compress_size, 1):
                raise too_large(f"entry {info.filename[:80]!r} is compressed suspiciously well (zip bomb?)")
            files.append((info, path))
        skill_paths = [p for _i, p in files if p.name == SKILL_FILE and len(p.parts) <= 2]
        root = _skill_root(skill_paths, files)
        total = 0
        written: list[str] = []
        skill_md = b""
        for info, path in files:
            if root and (len(path.parts) < 2 or path.parts[0] != root):
                continue  # outside the skill's folder
            relative = PurePosixPath(*path.parts[1:]) if root else path
            destination = target.joinpath(*relative.parts)
            size = 0
            try:
                destination.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(info) as source, open(destination, "xb") as sink:
                    while chunk := source.read(65536):
                        size += len(chunk)
                        total += len(chunk)
                        if size > info.file_size or total > MAX_EXPANDED:
                            raise too_large(f"the archive expands to more than {MAX_EXPANDED} bytes")
                        sink.write(chunk)
                        if relative == PurePosixPath(SKILL_FILE) and len(skill_md) <= MAX_SKILL_MD:
                            skill_md += chunk
            except (zipfile.BadZipFile, EOFError, NotImplementedError, RuntimeError, OSError) as exc:
                if isinstance(exc, (FileExistsError, NotADirectoryError, IsADirectoryError)):
                    raise archive_error(f"entry {info.filename[:80]!r} clashes with another entry") from None
                raise archive_error(f"entry {info.filename[:80]!r} cannot be read ({exc.__class__.__name__})") from None
            written.append(relative.as_posix())
    if len(skill_md) > MAX_SKILL_MD:
        raise archive_error(f"{SKILL_FILE} is larger than {MAX_SKILL_MD} bytes")
    try:
        text = skill_md.decode("utf-8")
    except UnicodeDecodeError:
        raise archive_error(f"{SKILL_FILE} is not valid UTF-8") from None
    if not text.strip():
        raise archive_error(f"{SKILL_FILE} is empty")
    return text, sorted(written)


def _skill_root(skill_paths: list[PurePosixPath], files: list) -> str:
    """'' when SKILL.md is at the root; else the one top-level folder holding it."""
    if PurePosixPath(SKILL_FILE) in skill_paths:
        return ""
    folders = sorted({p.parts[0] for p in skill_paths})
    if not folders:
        raise archive_error(f"no {SKILL_FILE} at the root of the archive or in its top-level folder")
    top_level = {p.parts[0] for _i, p in files if len(p.parts) > 1} | {p.parts[0] for _i, p in files
                                                                       if len(p.parts) == 1}
    if len(folders) > 1 or len(top_level) > 1:
        raise archive_error(f"{SKILL_FILE} must be at the root or inside exactly one top-level folder")
    return folders[0]


def parse_frontmatter(text: str) -> tuple[dict[str, Any], str]:
    front, body = split_frontmatter(text)
    if not front.strip():
        raise archive_error(f"{SKILL_FILE} needs YAML frontmatter between --- lines (name, description)")
    try:
        meta = yaml.safe_load(front)
    except yaml.YAMLError as exc:
        raise archive_error(f"{SKILL_FILE} frontmatter is not valid YAML ({exc.__class__.__name__})") from None
    if not isinstance(meta, dict):
        raise archive_error(f"{SKILL_FILE} frontmatter must be a mapping")
    for field, limit in (("name", 255), ("description", 4000)):
        value = meta.get(field)
        if not isinstance(value, str) or not value.strip():
            raise archive_error(f"{SKILL_FILE} frontmatter needs a {field}")
        if len(value) > limit:
            raise archive_error(f"{SKILL_FILE} frontmatter {field} is longer than {limit} characters")
    tags = meta.get("tags") or []
    if isinstance(tags, str):
        tags = [t.strip() for t in tags.split(",") if t.strip()]
    if not isinstance(tags, list) or len(tags) > 50 or not all(isinstance(t, str) and len(t) <= 100 for t in tags):
        raise archive_error("tags must be a list of at most 50 short strings")
    meta["tags"] = tags
    slug = meta.get("slug") if meta.get("slug") is not None else slugify(meta["name"])
    if not isinstance(slug, str) or not SLUG_RE.fullmatch(slug):
        raise archive_error("slug must be 1-100 characters of a-z, 0-9 and - (not starting or ending with -)")
    meta["slug"] = slug
    return meta, body


def _jsonable(value: Any) -> Any:
    """YAML can hold dates and other non-JSON values: keep them as text."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


# --- operations ----------------------------------------------------------------------------------


async def read_upload(file: Any) -> bytes:
    if file is None or not hasattr(file, "read"):
        raise ApiError(400, "error.missing_file_field")
    data = await file.read(MAX_UPLOAD + 1)
    if len(data) > MAX_UPLOAD:
        raise too_large(f"the upload is larger than {MAX_UPLOAD} bytes")
    if not data:
        raise ApiError(400, "error.empty_file")
    return data


async def upload(principal: Principal, file: Any) -> dict:
    require_tenant(principal)
    data = await read_upload(file)
    skills_root = state.settings.data_dir / "skills"
    await asyncio.to_thread(skills_root.mkdir, parents=True, exist_ok=True)
    staging = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix=".upload-", dir=skills_root))
    try:
        text, files = await asyncio.to_thread(extract_archive, data, staging)
        meta, _body = parse_frontmatter(text)
        return await _store(principal, meta, files, data, staging)
    finally:
        await asyncio.to_thread(shutil.rmtree, staging, True)


async def _store(principal: Principal, meta: dict, files: list[str], data: bytes, staging: Path) -> dict:
    owner = principal.user_id
    slug = meta["slug"]
    async with db.transaction() as conn:
        await conn.execute(LOCK_SLUG_SQL, (owner, slug))
        current = await db.fetch_one(CURRENT_SQL, (owner, slug), conn=conn)
        previous = skill_dir(current["file_path"]) if current else None
        version = (current["version"] + 1) if current else 1
        relative = f"skills/{owner_dir(owner)}/{slug}/{version}"
        final = skill_dir(relative)
        await asyncio.to_thread(_place, staging, final)
        params = {
            "slug": slug,
            "name": meta["name"].strip(),
            "description": meta["description"].strip(),
            "owner_id": owner,
            "version": version,
            "frontmatter": Jsonb(_jsonable({k: v for k, v in meta.items() if k not in ("name", "description")})),
            "tags": meta["tags"],
            "file_path": relative,
            "file_size": len(data),
            "file_hash": hashlib.sha256(data).hexdigest(),
            "created_by": principal.actor_id[:255],
        }
        try:
            if current:
                skill_id = current["id"]
                await db.execute(NEW_VERSION_SQL, {**params, "id": skill_id}, conn=conn)
            else:
                skill_id = (await db.fetch_one(INSERT_SQL, params, conn=conn))["id"]
            details = {"slug": slug, "version": version, "name": params["name"]}
            await activity.record(conn, principal, "skill.uploaded", "skill", str(skill_id), details)
            await bus.publish(conn, "skills", id=str(skill_id))
            row = await db.fetch_one(BY_ID_SQL, (skill_id,), conn=conn)
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, final, True)
            raise
    if previous is not None and previous != final:  # only the current version is kept
        await asyncio.to_thread(shutil.rmtree, previous, True)
    return public(row, files)


def _place(staging: Path, final: Path) -> None:
    if final.exists():  # left over from a failed attempt: this version number was never committed
        shutil.rmtree(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging.rename(final)


def _files_of(row: dict) -> list[str]:
    folder = skill_dir(row["file_path"])
    if not folder.is_dir():
        return []
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def _ref(principal: Principal, ref: str) -> dict:
    try:
        skill_id = uuid.UUID(ref)
    except ValueError:
        skill_id = None
    return {"id": skill_id, "slug": ref, "admin": principal.is_admin, "user": principal.user_id}


async def _row(principal: Principal, ref: str, *, conn=None) -> dict:
    row = await db.fetch_one(BY_REF_SQL, _ref(principal, ref), conn=conn)
    if row is None or not visible(principal, row["owner_id"]):
        raise not_found("skill", ref)
    return row


async def list_skills(principal: Principal) -> dict:
    rows = await db.fetch_all(LIST_SQL, {"admin": principal.is_admin, "user": principal.user_id})
    return {"skills": [public(r) for r in rows]}


async def get_skill(principal: Principal, ref: str) -> dict:
    row = await _row(principal, ref)
    return public(row, await asyncio.to_thread(_files_of, row))


def _clean_update(body: Any) -> dict:
    if not isinstance(body, dict):
        raise bad_request("body must be a JSON object")
    unknown = set(body) - UPDATABLE
    if unknown:
        raise bad_request(f"unknown field: {sorted(unknown)[0]}")
    values: dict[str, Any] = {}
    if "name" in body:
        if not isinstance(body["name"], str) or not re.search(r"[^ \t\r\n\f\v]", body["name"]) \
                or len(body["name"]) > 255:
            raise bad_request("name must be a non-blank string of at most 255 characters")
        values["name"] = body["name"].strip(" \t\r\n\f\v")
    if "description" in body:
        if not isinstance(body["description"], str) or len(body["description"]) > 4000:
            raise bad_request("description must be a string of at most 4000 characters")
        values["description"] = body["description"]
    if "enabled" in body:
        if not isinstance(body["enabled"], bool):
            raise bad_request("enabled must be a boolean")
        values["enabled"] = body["enabled"]
    if "tags" in body:
        tags = body["tags"]
        if not isinstance(tags, list) or len(tags) > 50 or not all(isinstance(t, str) and len(t) <= 100 for t in tags):
            raise bad_request("tags must be a list of at most 50 strings of at most 100 characters")
        values["tags"] = tags
    return values


async def update_skill(principal: Principal, ref: str, body: Any) -> dict:
    values = _clean_update(body)
    async with db.transaction() as conn:
        current = await _row(principal, ref, conn=conn)
        await conn.execute("SELECT 1 FROM skills WHERE id = %s FOR UPDATE", (current["id"],))
        if not modifiable(principal, current["owner_id"]):
            raise ApiError(403, "error.admin_only", "change a shared skill")
        params = {
            "id": current["id"],
            "name": values.get("name", current["name"]),
            "description": values.get("description", current["description"]),
            "enabled": values.get("enabled", current["enabled"]),
            "tags": values.get("tags", current["tags"]),
        }
        await db.execute(UPDATE_SQL, params, conn=conn)
        if "agent_ids" in body:
            agent_ids = await resolve_agent_ids(principal, body["agent_ids"])
            await db.execute(CLEAR_GRANTS_SQL, (current["id"],), conn=conn)
            for agent_id in agent_ids:
                await db.execute(GRANT_SQL, (current["id"], agent_id, principal.actor_id[:255]), conn=conn)
        details = {"slug": current["slug"], "fields": sorted(body)}
        await activity.record(conn, principal, "skill.updated", "skill", str(current["id"]), details)
        await bus.publish(conn, "skills", id=str(current["id"]))
        row = await db.fetch_one(BY_ID_SQL, (current["id"],), conn=conn)
    return public(row)


async def delete_skill(principal: Principal, ref: str) -> dict:
    async with db.transaction() as conn:
        current = await _row(principal, ref, conn=conn)
        await conn.execute("SELECT 1 FROM skills WHERE id = %s FOR UPDATE", (current["id"],))
        if not modifiable(principal, current["owner_id"]):
            raise ApiError(403, "error.admin_only", "delete a shared skill")
        await db.execute(DELETE_SQL, (current["id"],), conn=conn)
        await activity.record(conn, principal, "skill.deleted", "skill", str(current["id"]),
                              {"slug": current["slug"]})
        await bus.publish(conn, "skills", id=str(current["id"]))
    folder = skill_dir(current["file_path"]).parent  # every version of this slug
    await asyncio.to_thread(shutil.rmtree, folder, True)
    return {"status": "deleted", "id": str(current["id"]), "slug": current["slug"]}
