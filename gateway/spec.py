"""The served contract and the rule that finds each operation's code.

Served document = the seed `openapi_spec.json` (never edited) deep-merged with `openapi_ext.json`,
which may only *add*: new keys anywhere, new list items at the end. A list item that is an object
with the `name` (and `in`) of a seed item — a parameter, a tag — is merged into that item instead.
Changing or removing anything the seed says raises at load time.

Resolver convention (documented in README):
  * an `operationId`, when present, names the function ("handlers.agents.list_all" or "agents.list_all");
  * otherwise the first tag picks the module: lower-case, non-alphanumerics → "_"
    ("API Keys" → handlers/api_keys.py, "Built-in Tools" → handlers/built_in_tools.py);
  * and method + path pick the function: the method, then each path segment after `/v1`,
    with `{param}` written `by_<param>`, all lower-case, non-alphanumerics → "_"
    (`DELETE /v1/api-keys/{id}` → `delete_api_keys_by_id`, `GET /health` → `get_health`).
Operations without a function answer 501 with the JSON error body.
"""

from __future__ import annotations

import copy
import importlib
import json
import re
from pathlib import Path
from typing import Any

from connexion.resolver import Resolution, Resolver

from gateway.errors import ApiError

ROOT = Path(__file__).resolve().parent.parent
SEED_PATH = ROOT / "openapi_spec.json"
EXT_PATH = ROOT / "openapi_ext.json"
EXT_DIR = ROOT / "openapi_ext"  # per-area fragments, merged after openapi_ext.json in name order
HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")


class ExtensionConflict(ValueError):
    """The extension tried to change or remove something the seed defines."""


def merge_add_only(seed: Any, ext: Any, where: str = "#") -> Any:
    """Deep-merge `ext` into a copy of `seed`, refusing anything but additions."""
    if isinstance(seed, dict) and isinstance(ext, dict):
        if ("$ref" in seed) != ("$ref" in ext) and ext:
            # keys beside a $ref are ignored by OpenAPI 3.0 tools: that would silently change the seed
            raise ExtensionConflict(f"openapi_ext.json cannot combine $ref with other keys at {where}")
        merged = dict(seed)
        for key, value in ext.items():
            merged[key] = merge_add_only(seed[key], value, f"{where}/{key}") if key in seed else copy.deepcopy(value)
        return merged
    if isinstance(seed, list) and isinstance(ext, list):
        merged_list = list(seed)
        for item in ext:
            index = _same_named(merged_list, item)
            if index is not None:
                merged_list[index] = merge_add_only(merged_list[index], item, f"{where}/{index}")
            elif item not in merged_list:
                merged_list.append(copy.deepcopy(item))
        return merged_list
    if seed != ext:
        raise ExtensionConflict(f"openapi_ext.json may only add; it changes {where}")
    return seed


def _same_named(items: list, item: Any) -> int | None:
    if not isinstance(item, dict) or "name" not in item:
        return None
    for index, existing in enumerate(items):
        if isinstance(existing, dict) and existing.get("name") == item["name"] and existing.get("in") == item.get("in"):
            return index
    return None


def is_subset(small: Any, big: Any) -> bool:
    """True when everything in `small` is present, unchanged, in `big` (lists by prefix)."""
    if isinstance(small, dict):
        return isinstance(big, dict) and all(k in big and is_subset(v, big[k]) for k, v in small.items())
    if isinstance(small, list):
        return isinstance(big, list) and len(big) >= len(small) and all(
            is_subset(a, b) for a, b in zip(small, big, strict=False)
        )
    return small == big


def extension_files(ext_path: Path | None = EXT_PATH, ext_dir: Path = EXT_DIR) -> list[Path]:
    files = [ext_path] if ext_path is not None and ext_path.exists() else []
    return files + sorted(ext_dir.glob("*.json"))


def load_document(seed_path: Path = SEED_PATH, ext_path: Path | None = EXT_PATH, ext_dir: Path = EXT_DIR) -> dict:
    """The served document: the seed, then each extension file merged add-only on top."""
    document = json.loads(seed_path.read_text())
    for path in extension_files(ext_path, ext_dir):
        try:
            document = merge_add_only(document, json.loads(path.read_text()))
        except ExtensionConflict as exc:
            raise ExtensionConflict(f"{path.name}: {exc}") from None
    return document


def _ident(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def module_name(tag: str) -> str:
    return _ident(tag)


def function_name(method: str, path: str) -> str:
    parts = [method.lower()]
    for segment in path.strip("/").split("/"):
        if segment == "v1" and len(parts) == 1:
            continue
        if segment.startswith("{") and segment.endswith("}"):
            parts.append("by_" + _ident(segment[1:-1]))
        elif segment:
            parts.append(_ident(segment))
    return "_".join(p for p in parts if p)


def handler_target(method: str, path: str, operation: dict, package: str = "handlers") -> str:
    """Dotted name of the function serving one operation (see the module docstring)."""
    op_id = operation.get("operationId")
    if op_id:
        return op_id if op_id.startswith(package + ".") else f"{package}.{op_id}"
    tags = operation.get("tags") or ["default"]
    return f"{package}.{module_name(tags[0])}.{function_name(method, path)}"


def operations(document: dict):
    """Yield (method, path, operation) for every operation in the document."""
    for path, item in document.get("paths", {}).items():
        for method in HTTP_METHODS:
            if method in item:
                yield method, path, item[method]


def path_methods(document: dict) -> list[tuple[re.Pattern, str]]:
    """(compiled path template, "GET, POST") pairs, for the Allow header of 405 answers."""
    table = []
    for path, item in document.get("paths", {}).items():
        pattern = re.sub(r"\\{[^/]+?\\}", "[^/]+", re.escape(path))
        methods = [m.upper() for m in HTTP_METHODS if m in item]
        if "GET" in methods:
            methods.append("HEAD")
        table.append((re.compile(f"^{pattern}$"), ", ".join(methods)))
    return table


def import_target(target: str):
    module_path, _, attr = target.rpartition(".")
    try:
        module = importlib.import_module(module_path)
    except ModuleNotFoundError as exc:
        if exc.name and target.startswith(exc.name):
            return None  # the handler module itself is missing, not one of its imports
        raise
    return getattr(module, attr, None)


def not_implemented(method: str, path: str):
    async def handler(*_args: Any, **_kwargs: Any):
        raise ApiError(501, "error.not_implemented", f"{method.upper()} {path}")

    handler.goclaw_missing = True  # type: ignore[attr-defined]
    return handler


class SpecResolver(Resolver):
    """Maps operations to handler functions by the convention above; records what it found."""

    def __init__(self, package: str = "handlers") -> None:
        super().__init__()
        self.package = package
        self._routes: dict[tuple[str, str], dict[str, Any]] = {}

    @property
    def routes(self) -> list[dict[str, Any]]:
        return list(self._routes.values())

    def resolve(self, operation) -> Resolution:
        method, path = operation.method, operation.path
        target = handler_target(method, path, operation._operation, self.package)
        function = import_target(target)
        implemented = function is not None
        if function is None:
            function = not_implemented(method, path)
        # Connexion resolves each operation once per middleware; record it once
        self._routes[(method.upper(), path)] = {
            "method": method.upper(), "path": path, "handler": target, "implemented": implemented,
        }
        return Resolution(function, target)
