"""Storage: list the caller's workspace files."""

from auth import Principal
from domain import storage


async def get_storage_files(principal: Principal, path: str | None = None, depth: int | None = None):
    return await storage.list_files(principal, path, depth)
