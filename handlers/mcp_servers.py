"""MCP Servers: CRUD, agent grants and live tool discovery (see domain/mcp_servers.py)."""

from auth import Principal
from domain import mcp_servers


async def get_mcp_servers(principal: Principal):
    return await mcp_servers.list_servers(principal)


async def post_mcp_servers(principal: Principal, body: dict):
    return await mcp_servers.create_server(principal, body), 201


async def get_mcp_servers_by_id(principal: Principal, id: str):
    return await mcp_servers.get_server(principal, id)


async def put_mcp_servers_by_id(principal: Principal, id: str, body: dict):
    return await mcp_servers.update_server(principal, id, body)


async def delete_mcp_servers_by_id(principal: Principal, id: str):
    return await mcp_servers.delete_server(principal, id)


async def get_mcp_servers_by_id_tools(principal: Principal, id: str):
    return await mcp_servers.list_server_tools(principal, id)
