"""API Keys (admin only)."""

from auth import Principal
from domain import api_keys


async def get_api_keys(principal: Principal):
    return await api_keys.list_keys()


async def post_api_keys(principal: Principal, body: dict):
    created = await api_keys.create(principal, body["name"], body["scopes"], body.get("expires_in"))
    return created, 201


async def delete_api_keys_by_id(principal: Principal, id: str):
    return await api_keys.revoke(principal, id)


async def post_api_keys_by_id_revoke(principal: Principal, id: str):
    """The reference's revoke route, kept so existing GoClaw clients work."""
    return await api_keys.revoke(principal, id)
