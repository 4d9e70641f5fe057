"""Where tenants' and agents' files live on disk, and the one rule for confining a path to a root.

Layout under `<GOCLAW_DATA_DIR>/workspace`:

    users/<safe user>/                      a tenant's files (`user_root`)
    users/<safe user>/agents/<safe agent>/  an agent's files for that tenant (`agent_root`)

`<safe …>` is a readable slug of the id plus the first 12 hex digits of its SHA-256, so any user
id (any Unicode, slashes, dots, 255 chars) maps to one short, filesystem-safe directory name and
two different ids never share one. The tenant '' (no X-GoClaw-User-Id) is `users/_anonymous`.

`resolve_inside(root, relative)` is the only way a client-supplied path becomes a filesystem path:
it refuses `..` segments, absolute paths, backslashes, control characters (NUL included),
percent-encoded leftovers (`%2e%2e`, `%2f`, …: the caller passes decoded text, so any `%XX` left
means double encoding) and symlinks whose real path leaves the root. It checks a snapshot: a
symlink swapped in afterwards is the caller's race to close (open with O_NOFOLLOW if it matters).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from pathlib import Path, PurePosixPath

from gateway import state
from gateway.errors import ApiError

MAX_RELATIVE_PATH = 4096
ANONYMOUS = "_anonymous"

_SLUG_DROP = re.compile(r"[^a-z0-9_-]+")
_PERCENT_ESCAPE = re.compile(r"%[0-9a-fA-F]{2}")


def invalid_path() -> ApiError:
    return ApiError(400, "error.invalid_path")


def workspace_root() -> Path:
    """`<data dir>/workspace`, absolute (it need not exist yet)."""
    return (state.settings.data_dir / "workspace").absolute()


def safe_name(ident: str) -> str:
    """A filesystem-safe, collision-free directory name for any id: `<slug>-<sha256[:12]>`."""
    digest = hashlib.sha256(ident.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    ascii_text = unicodedata.normalize("NFKD", ident).encode("ascii", "ignore").decode()
    slug = _SLUG_DROP.sub("-", ascii_text.lower()).strip("-_")[:40].strip("-_")
    return f"{slug}-{digest}" if slug else digest


def user_root(user_id: str) -> Path:
    """The tenant's directory (not created here)."""
    return workspace_root() / "users" / (safe_name(user_id) if user_id else ANONYMOUS)


def agent_root(agent_key: str, user_id: str) -> Path:
    """The directory an agent works in for one tenant (not created here)."""
    return user_root(user_id) / "agents" / safe_name(agent_key)


def display_path(path: Path) -> str:
    """A path as clients see it: relative to the data dir (`workspace/users/…`), never absolute."""
    base = state.settings.data_dir.absolute()
    try:
        return path.absolute().relative_to(base).as_posix()
    except ValueError:
        return path.name


def check_relative(relative: str) -> PurePosixPath:
    """The client's relative path as clean segments, or ApiError(400, error.invalid_path)."""
    if len(relative) > MAX_RELATIVE_PATH:
        raise invalid_path()
    if "\\" in relative or _PERCENT_ESCAPE.search(relative):
        raise invalid_path()
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in relative):
        raise invalid_path()
    if relative.startswith("/"):
        raise invalid_path()
    parts = [p for p in relative.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise invalid_path()
    return PurePosixPath(*parts) if parts else PurePosixPath()


def resolve_inside(root: Path, relative: str) -> Path:
    """`root / relative`, fully resolved, guaranteed to stay inside `root` (see module docstring).

    The returned path need not exist. Raises ApiError(400, "error.invalid_path") otherwise."""
    clean = check_relative(relative)
    real_root = root.resolve()
    try:
        target = (real_root / clean).resolve()
    except (OSError, RuntimeError):  # symlink loops, names the OS refuses
        raise invalid_path() from None
    if not target.is_relative_to(real_root):
        raise invalid_path()
    return target
