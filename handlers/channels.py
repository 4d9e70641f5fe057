"""Channels: channel instances, contacts and pending group messages."""

from auth import Principal
from domain import channels


async def get_channels_instances(
    principal: Principal,
    limit: int | None = None,
    offset: int | None = None,
    search: str | None = None,
    channel_type: str | None = None,
):
    return await channels.list_instances(
        principal, search=search, channel_type=channel_type, limit=limit, offset=offset
    )


async def post_channels_instances(principal: Principal, body: dict):
    return await channels.create_instance(principal, body), 201


async def get_channels_instances_by_id(principal: Principal, id: str):
    return await channels.get_instance(principal, id)


async def put_channels_instances_by_id(principal: Principal, id: str, body: dict):
    return await channels.update_instance(principal, id, body)


async def delete_channels_instances_by_id(principal: Principal, id: str):
    return await channels.delete_instance(principal, id)


async def get_contacts(
    principal: Principal,
    search: str | None = None,
    channel_type: str | None = None,
    peer_kind: str | None = None,
    channel_instance_id: str | None = None,
    limit: int | None = None,
    offset: int | None = None,
):
    return await channels.list_contacts(
        principal, search=search, channel_type=channel_type, peer_kind=peer_kind,
        channel_instance_id=channel_instance_id, limit=limit, offset=offset,
    )


async def get_pending_messages(principal: Principal, channel: str | None = None, limit: int | None = None):
    return await channels.list_pending_groups(principal, channel=channel, limit=limit)


async def delete_pending_messages(principal: Principal, channel: str | None = None, key: str | None = None):
    return await channels.clear_pending_group(principal, channel, key)
