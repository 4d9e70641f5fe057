"""Listing a workspace: a tenant sees its own directory (`workspace.user_root`), admins the whole
workspace. Paths go through `workspace.resolve_inside`, so nothing outside the base is ever read;
symbolic links inside the tree are not listed and not followed; OS junk files are skipped."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime
from pathlib import Path

from auth import Principal
from domain.workspace import display_path, resolve_inside, user_root, workspace_root
from gateway.errors import ApiError, bad_request, not_found

MIN_DEPTH, MAX_DEPTH, DEFAULT_DEPTH = 1, 3, 1
MAX_ENTRIES = 1000
JUNK = frozenset({".DS_Store", "Thumbs.db", "desktop.ini", ".Spotlight-V100", ".Trashes", ".fseventsd", "__MACOSX"})


def base_dir(principal: Principal) -> Path:
    return workspace_root() if principal.is_admin else user_root(principal.user_id)


def _text(name: str) -> str:
    """File names that are not valid UTF-8 on disk are shown with U+FFFD, never as broken JSON."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _walk(base: Path, start: Path, depth: int) -> tuple[list[dict], bool]:
    entries: list[dict] = []
    truncated = False

    def visit(directory: Path, level: int) -> None:
        nonlocal truncated
        try:
            with os.scandir(directory) as it:
                children = sorted(it, key=lambda e: e.name)
        except OSError:  # unreadable or vanished meanwhile: list what we can
            return
        for child in children:
            if child.name in JUNK or child.name.startswith("._") or child.is_symlink():
                continue
            if len(entries) >= MAX_ENTRIES:
                truncated = True
                return
            try:
                info = child.stat(follow_symlinks=False)
                is_dir = child.is_dir(follow_symlinks=False)
            except OSError:
                continue
            path = Path(child.path)
            entries.append({
                "name": _text(child.name),
                "path": _text(path.relative_to(base).as_posix()),
                "size": 0 if is_dir else info.st_size,
                "mtime": datetime.fromtimestamp(info.st_mtime, UTC),
                "is_dir": is_dir,
            })
            if is_dir and level < depth:
                visit(path, level + 1)
                if truncated:
                    return

    visit(start, 1)
    return entries, truncated


async def list_files(principal: Principal, path: str | None = None, depth: int | None = None) -> dict:
    """Entries under `path` (relative to the caller's base), `depth` levels deep, at most 1000."""
    depth = DEFAULT_DEPTH if depth is None else depth
    if not MIN_DEPTH <= depth <= MAX_DEPTH:
        raise bad_request(f"depth must be between {MIN_DEPTH} and {MAX_DEPTH}")
    base = base_dir(principal)
    target = resolve_inside(base, path or "")
    real_base = base.resolve()
    try:
        exists, is_dir = target.exists(), target.is_dir()
    except OSError:  # e.g. a name longer than the filesystem allows: it cannot exist
        exists = is_dir = False
    if not exists:
        if target == real_base:  # the tenant has no files yet
            return {"files": [], "baseDir": display_path(base), "path": "", "depth": depth, "truncated": False}
        raise not_found("directory", path)
    if not is_dir:
        raise ApiError(400, "error.not_a_directory", path)
    files, truncated = await asyncio.to_thread(_walk, real_base, target, depth)
    relative = target.relative_to(real_base).as_posix()
    return {
        "files": files,
        "baseDir": display_path(base),
        "path": "" if relative == "." else _text(relative),
        "depth": depth,
        "truncated": truncated,
    }
