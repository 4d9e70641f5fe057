"""Built-in Tools: the registry of tools implemented by the gateway (see domain/tools.py)."""

from auth import Principal
from domain import tools


async def get_tools_builtin(principal: Principal):
    return await tools.list_builtin(principal)


async def get_tools_builtin_by_name(principal: Principal, name: str):
    return await tools.get_builtin(principal, name)


async def put_tools_builtin_by_name(principal: Principal, name: str, body: dict):
    return await tools.update_builtin(principal, name, body)
