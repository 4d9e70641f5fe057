"""Channel instances, their contacts and buffered group messages.

A channel instance is one messaging-platform connection (a Telegram bot, a Slack app, …) bound to
one agent. Its credentials are a JSON object encrypted at rest and shown masked ("***") in every
response; an update merges credentials key by key ("***" keeps the stored value, null removes the
key). Instances belong to the tenant that created them (X-GoClaw-User-Id → owner_id): other
tenants get 404, admins see all. Names are global slugs (unique across tenants, so a webhook URL
can name the instance); a taken name is 409.

An agent_id the caller cannot see is 409 (an unbindable reference), never 404, which is kept for
the instance itself. A whatsapp `bridge_url` is checked for shape here and by the SSRF guard when
the channel layer connects (`check_outbound`), since DNS answers can change in between.

For the channel layer: `enabled_instances()` / `runtime_instance(id)` (decrypted credentials;
reload on bus kind "channel_instances"), `check_outbound(credentials)`, `record_contact(...)`,
`add_pending_message(...)`, `pending_messages(...)`, `drop_pending_messages(...)`. Contacts and
pending messages are visible to whoever sees their instance, and are deleted with it.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from typing import Any

import psycopg
from psycopg import errors as pg_errors

import db
from auth import Principal
from db import bus
from domain import activity, agents
from domain.paging import page
from gateway import netguard, state
from gateway.errors import ApiError, bad_request, conflict, not_found
from gateway.secrets import MASK, SecretError, mask_values

log = logging.getLogger("goclaw.channels")

CHANNEL_TYPES = ("telegram", "discord", "slack", "whatsapp", "zalo_oa", "zalo_personal", "feishu")
# credentials each channel type cannot work without (documented in openapi_ext/channels.json)
REQUIRED_CREDENTIALS: dict[str, tuple[str, ...]] = {
    "telegram": ("token",),
    "discord": ("token",),
    "slack": ("bot_token", "app_token"),
    "whatsapp": ("bridge_url",),
    "zalo_oa": ("token",),
    "zalo_personal": ("imei", "cookie"),
    "feishu": ("app_id", "app_secret"),
}
URL_CREDENTIALS = ("bridge_url",)  # outbound addresses: shape checked here, SSRF-checked on connect
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_PORT = r"(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})"
URL_PATTERN = rf"^(?:https?|wss?)://{_LABEL}(?:\.{_LABEL})*(?::{_PORT})?(?:[/?#][\x21-\x7e]*)?$"  # also in the contract
URL_RE = re.compile(URL_PATTERN)
KEEP_OR_URL_RE = re.compile(r"^(?:\*\*\*$|" + URL_PATTERN[1:] + ")")  # an update may send the mask
DEFAULT_NAMES = frozenset({"telegram", "discord", "feishu", "zalo_oa", "whatsapp"})  # reference rule
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,99}$")
MAX_CREDENTIALS = 32
MAX_CREDENTIAL_VALUE = 4096
PEER_KINDS = ("direct", "group")
EVENT_KIND = "channel_instances"

INSTANCE_COLUMNS = (
    "i.id, i.name, i.display_name, i.channel_type, i.agent_id, i.credentials, i.config, i.enabled,"
    " i.owner_id, i.created_at, i.updated_at"
)
VISIBLE = "(%(admin)s OR i.owner_id = %(user)s)"

LIST_INSTANCES_SQL = f"""
SELECT {INSTANCE_COLUMNS}, count(*) OVER () AS total
FROM channel_instances i
WHERE {VISIBLE}
  AND (%(channel_type)s::text IS NULL OR i.channel_type = %(channel_type)s)
  AND (%(pattern)s::text IS NULL OR i.name ILIKE %(pattern)s OR i.display_name ILIKE %(pattern)s
       OR i.channel_type ILIKE %(pattern)s)
ORDER BY i.name
LIMIT %(limit)s OFFSET %(offset)s
"""
COUNT_INSTANCES_SQL = f"""
SELECT count(*) AS n FROM channel_instances i
WHERE {VISIBLE}
  AND (%(channel_type)s::text IS NULL OR i.channel_type = %(channel_type)s)
  AND (%(pattern)s::text IS NULL OR i.name ILIKE %(pattern)s OR i.display_name ILIKE %(pattern)s
       OR i.channel_type ILIKE %(pattern)s)
"""
GET_INSTANCE_SQL = f"SELECT {INSTANCE_COLUMNS} FROM channel_instances i WHERE i.id = %(id)s AND {VISIBLE}"
LOCK_INSTANCE_SQL = GET_INSTANCE_SQL + " FOR UPDATE"
FIND_INSTANCE_SQL = f"""
SELECT {INSTANCE_COLUMNS} FROM channel_instances i
WHERE (i.id = %(id)s OR (%(id)s::uuid IS NULL AND i.name = %(name)s)) AND {VISIBLE}
"""
INSERT_INSTANCE_SQL = """
INSERT INTO channel_instances (name, display_name, channel_type, agent_id, credentials, config, enabled, owner_id)
VALUES (%(name)s, %(display_name)s, %(channel_type)s, %(agent_id)s, %(credentials)s, %(config)s, %(enabled)s,
        %(owner_id)s)
RETURNING id, name, display_name, channel_type, agent_id, credentials, config, enabled, owner_id, created_at,
          updated_at
"""
UPDATE_INSTANCE_SQL = """
UPDATE channel_instances SET
    name = %(name)s, display_name = %(display_name)s, channel_type = %(channel_type)s, agent_id = %(agent_id)s,
    credentials = %(credentials)s, config = %(config)s, enabled = %(enabled)s, updated_at = now()
WHERE id = %(id)s
RETURNING id, name, display_name, channel_type, agent_id, credentials, config, enabled, owner_id, created_at,
          updated_at
"""
DELETE_INSTANCE_SQL = "DELETE FROM channel_instances WHERE id = %s"
ENABLED_INSTANCES_SQL = f"SELECT {INSTANCE_COLUMNS} FROM channel_instances i WHERE i.enabled ORDER BY i.name"
RUNTIME_INSTANCE_SQL = f"SELECT {INSTANCE_COLUMNS} FROM channel_instances i WHERE i.id = %s"

# --- contacts (written by the channel layer) ---
CONTACT_UPSERT_SQL = """
INSERT INTO channel_contacts (channel_instance_id, sender_id, user_id, display_name, username, avatar_url,
                              peer_kind, metadata)
VALUES (%(instance_id)s, %(sender_id)s, nullif(%(user_id)s::text, ''), nullif(%(display_name)s::text, ''),
        nullif(%(username)s::text, ''), nullif(%(avatar_url)s::text, ''), nullif(%(peer_kind)s::text, ''),
        coalesce(%(metadata)s::jsonb, '{}'))
ON CONFLICT (channel_instance_id, sender_id) DO UPDATE SET
    user_id = coalesce(EXCLUDED.user_id, channel_contacts.user_id),
    display_name = coalesce(EXCLUDED.display_name, channel_contacts.display_name),
    username = coalesce(EXCLUDED.username, channel_contacts.username),
    avatar_url = coalesce(EXCLUDED.avatar_url, channel_contacts.avatar_url),
    peer_kind = coalesce(EXCLUDED.peer_kind, channel_contacts.peer_kind),
    metadata = channel_contacts.metadata || EXCLUDED.metadata,
    last_seen_at = now()
RETURNING id, channel_instance_id, sender_id, user_id, display_name, username, avatar_url, peer_kind, merged_id,
          first_seen_at, last_seen_at
"""
CONTACT_WHERE = f"""
FROM channel_contacts c JOIN channel_instances i ON i.id = c.channel_instance_id
WHERE {VISIBLE}
  AND (%(channel_type)s::text IS NULL OR i.channel_type = %(channel_type)s)
  AND (%(peer_kind)s::text IS NULL OR c.peer_kind = %(peer_kind)s)
  AND (%(instance_id)s::uuid IS NULL OR c.channel_instance_id = %(instance_id)s)
  AND (%(pattern)s::text IS NULL OR c.display_name ILIKE %(pattern)s OR c.username ILIKE %(pattern)s
       OR c.sender_id ILIKE %(pattern)s)
"""
LIST_CONTACTS_SQL = f"""
SELECT c.id, i.channel_type, i.name AS channel_instance, c.channel_instance_id, c.sender_id, c.user_id,
       c.display_name, c.username, c.avatar_url, c.peer_kind, c.merged_id, c.first_seen_at, c.last_seen_at,
       count(*) OVER () AS total
{CONTACT_WHERE}
ORDER BY c.last_seen_at DESC, c.id DESC
LIMIT %(limit)s OFFSET %(offset)s
"""
COUNT_CONTACTS_SQL = f"SELECT count(*) AS n {CONTACT_WHERE}"

# --- pending group messages (written by the channel layer) ---
PENDING_INSERT_SQL = """
INSERT INTO channel_pending_messages (channel_instance_id, history_key, group_title, sender, sender_id, body,
                                      platform_msg_id, is_summary)
VALUES (%(instance_id)s, %(history_key)s, nullif(%(group_title)s::text, ''), %(sender)s, %(sender_id)s, %(body)s,
        %(platform_msg_id)s, %(is_summary)s)
RETURNING id
"""
PENDING_GROUPS_SQL = f"""
SELECT i.id AS channel_instance_id, i.name AS channel, i.channel_type, p.history_key AS group_key,
       (array_agg(p.group_title ORDER BY p.created_at DESC) FILTER (WHERE p.group_title IS NOT NULL))[1] AS title,
       count(*) AS count,
       bool_or(p.is_summary) AND coalesce(
           max(p.created_at) FILTER (WHERE p.is_summary) >= max(p.created_at) FILTER (WHERE NOT p.is_summary),
           true) AS has_summary,
       min(p.created_at) AS first_message_at,
       max(p.created_at) AS last_message_at
FROM channel_pending_messages p JOIN channel_instances i ON i.id = p.channel_instance_id
WHERE {VISIBLE} AND (%(instance_id)s::uuid IS NULL OR i.id = %(instance_id)s)
GROUP BY i.id, i.name, i.channel_type, p.history_key
ORDER BY last_message_at DESC, i.name, p.history_key
LIMIT %(limit)s
"""
PENDING_FOR_KEY_SQL = """
SELECT id, history_key, group_title, sender, sender_id, body, platform_msg_id, is_summary, created_at
FROM channel_pending_messages WHERE channel_instance_id = %s AND history_key = %s
ORDER BY created_at, id
"""
PENDING_DELETE_SQL = "DELETE FROM channel_pending_messages WHERE channel_instance_id = %s AND history_key = %s"


# ---------------------------------------------------------------------------------------------
# helpers


def _params(principal: Principal, **extra: Any) -> dict[str, Any]:
    return {"admin": principal.is_admin, "user": principal.user_id, **extra}


def _uuid(value: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except (ValueError, AttributeError, TypeError):
        raise ApiError(400, "error.invalid_id", what) from None


def like_pattern(search: str | None) -> str | None:
    """`%term%` for ILIKE with the wildcards in the term escaped; None for no search."""
    if not search:
        return None
    escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _decrypt(stored: str | None, instance_id: Any) -> dict[str, Any]:
    if not stored:
        return {}
    try:
        value = state.box().decrypt_json(stored)
    except (SecretError, ValueError):
        log.warning("cannot decrypt the credentials of channel instance %s", instance_id)
        return {}
    return value if isinstance(value, dict) else {}


def public(row: dict) -> dict:
    """The instance as responses show it: credentials masked, never decrypted values."""
    credentials = _decrypt(row.get("credentials"), row["id"])
    return {
        "id": row["id"],
        "name": row["name"],
        "display_name": row["display_name"],
        "channel_type": row["channel_type"],
        "agent_id": row["agent_id"],
        "config": row["config"] or {},
        "enabled": row["enabled"],
        "is_default": row["name"] in DEFAULT_NAMES,
        "has_credentials": bool(row.get("credentials")),
        "credentials": mask_values(credentials),
        "owner_id": row["owner_id"],
        "created_by": row["owner_id"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise bad_request("name must be a slug: 1-100 of a-z, 0-9, '-' and '_', starting with a letter or digit")
    return name


def _check_type(channel_type: Any) -> str:
    if channel_type not in CHANNEL_TYPES:
        raise ApiError(400, "error.invalid_channel_type")
    return channel_type


def _check_display_name(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > 255:
        raise bad_request("display_name must be a string of at most 255 characters")
    return value


def _check_config(value: Any) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise bad_request("config must be an object")
    return value


def _check_credential_values(credentials: Any, *, allow_null: bool) -> dict:
    if credentials is None:
        return {}
    if not isinstance(credentials, dict):
        raise bad_request("credentials must be an object")
    if len(credentials) > MAX_CREDENTIALS:
        raise bad_request(f"credentials may hold at most {MAX_CREDENTIALS} keys")
    for key, value in credentials.items():
        if value is None and allow_null:
            continue
        if not isinstance(value, str) or not value or len(value) > MAX_CREDENTIAL_VALUE:
            raise bad_request(f"credentials.{key} must be a string of 1-{MAX_CREDENTIAL_VALUE} characters")
    return credentials


def _check_required(channel_type: str, credentials: dict, status: int = 400) -> None:
    missing = [k for k in REQUIRED_CREDENTIALS[channel_type] if not credentials.get(k)]
    if missing:
        needed = ", ".join(REQUIRED_CREDENTIALS[channel_type])
        raise ApiError(status, "error.channel_credentials", channel_type, needed)


def _check_urls(credentials: dict, *, update: bool = False) -> None:
    """Shape only: where a URL points is checked when the channel layer connects (`check_outbound`),
    since DNS answers can change between now and then."""
    rule = KEEP_OR_URL_RE if update else URL_RE
    for key in URL_CREDENTIALS:
        value = credentials.get(key)
        if value is not None and not rule.search(value):
            raise bad_request(f"credentials.{key} must be an http(s) or ws(s) URL with a host name or IPv4 address")


async def check_outbound(credentials: dict) -> None:
    """The SSRF guard for an instance's outbound URLs (bridge_url): call it right before connecting.
    Raises ApiError(400) for private, loopback, link-local or reserved addresses (unless
    GOCLAW_ALLOW_PRIVATE_NETWORKS allows them) and for hosts that do not resolve."""
    for key in URL_CREDENTIALS:
        value = credentials.get(key)
        if value:
            scheme, _, rest = value.partition("://")
            as_http = {"ws": "http", "wss": "https"}.get(scheme.lower(), scheme.lower()) + "://" + rest
            await netguard.check_url(as_http, f"credentials.{key}")


def _merge_credentials(stored: dict, changes: dict) -> dict:
    """Apply an update's credentials: '***' keeps the stored value, null removes the key."""
    merged = dict(stored)
    for key, value in changes.items():
        if value is None:
            merged.pop(key, None)
        elif value != MASK:
            merged[key] = value
    if len(merged) > MAX_CREDENTIALS:
        raise bad_request(f"credentials may hold at most {MAX_CREDENTIALS} keys")
    return merged


def _encrypt(credentials: dict) -> str | None:
    return state.box().encrypt_json(credentials) if credentials else None


async def _resolve_agent(principal: Principal, ref: Any) -> uuid.UUID:
    """The agent a body's agent_id names. One the caller cannot see is a 409 (the reference cannot be
    bound, as for a foreign-key violation), not a 404, which would say the instance itself is gone."""
    if not isinstance(ref, str) or not ref or len(ref) > 100:
        raise bad_request("agent_id must be an agent UUID or slug of at most 100 characters")
    try:
        return (await agents.resolve(principal, ref))["id"]
    except ApiError as exc:
        if exc.status == 404:
            raise ApiError(409, "error.not_found", "agent", ref) from None
        raise


# ---------------------------------------------------------------------------------------------
# instances


async def list_instances(
    principal: Principal,
    *,
    search: str | None = None,
    channel_type: str | None = None,
    limit: int | None = None,
    offset: int | None = None,
) -> dict:
    limit, offset = page(limit, offset)
    if channel_type is not None:
        _check_type(channel_type)
    params = _params(principal, channel_type=channel_type, pattern=like_pattern(search), limit=limit, offset=offset)
    rows = await db.fetch_all(LIST_INSTANCES_SQL, params)
    if rows:
        total = rows[0]["total"]
    else:
        total = (await db.fetch_one(COUNT_INSTANCES_SQL, params))["n"] if offset else 0
    return {"instances": [public(r) for r in rows], "total": total, "limit": limit, "offset": offset}


async def get_instance(principal: Principal, instance_id: str) -> dict:
    uid = _uuid(instance_id, "instance")
    row = await db.fetch_one(GET_INSTANCE_SQL, _params(principal, id=uid))
    if row is None:
        raise not_found("channel instance", instance_id)
    return public(row)


async def create_instance(principal: Principal, body: dict) -> dict:
    name = _check_name(body.get("name"))
    channel_type = _check_type(body.get("channel_type"))
    display_name = _check_display_name(body.get("display_name"))
    config = _check_config(body.get("config"))
    enabled = body.get("enabled", True)
    if not isinstance(enabled, bool):
        raise bad_request("enabled must be a boolean")
    credentials = _check_credential_values(body.get("credentials"), allow_null=False)
    if MASK in credentials.values():
        raise bad_request(f"credentials cannot be '{MASK}' on create")
    _check_required(channel_type, credentials)
    _check_urls(credentials)
    agent_id = await _resolve_agent(principal, body.get("agent_id"))
    async with db.transaction() as conn:
        values = {
            "name": name, "display_name": display_name, "channel_type": channel_type, "agent_id": agent_id,
            "credentials": _encrypt(credentials), "config": json.dumps(config), "enabled": enabled,
            "owner_id": principal.user_id,
        }
        try:
            row = await db.fetch_one(INSERT_INSTANCE_SQL, values, conn=conn)
        except pg_errors.UniqueViolation:
            raise conflict("channel instance", name) from None
        except pg_errors.ForeignKeyViolation:  # the agent was deleted meanwhile
            raise ApiError(409, "error.not_found", "agent", body.get("agent_id")) from None
        await activity.record(
            conn, principal, "channel_instance.created", "channel_instance", str(row["id"]),
            {"name": name, "channel_type": channel_type},
        )
        await bus.publish(conn, EVENT_KIND, id=str(row["id"]), action="created")
    return public(row)


async def update_instance(principal: Principal, instance_id: str, changes: dict) -> dict:
    uid = _uuid(instance_id, "instance")
    if not isinstance(changes, dict):
        raise bad_request("the body must be a JSON object")
    incoming = _check_credential_values(changes.get("credentials"), allow_null=True)
    _check_urls(incoming, update=True)
    if await db.fetch_one(GET_INSTANCE_SQL, _params(principal, id=uid)) is None:
        raise not_found("channel instance", instance_id)
    name = _check_name(changes["name"]) if "name" in changes else None
    channel_type = _check_type(changes["channel_type"]) if "channel_type" in changes else None
    display_name = _check_display_name(changes["display_name"]) if "display_name" in changes else None
    config = _check_config(changes["config"]) if "config" in changes else None
    enabled = changes.get("enabled")
    if enabled is not None and not isinstance(enabled, bool):
        raise bad_request("enabled must be a boolean")
    agent_id = await _resolve_agent(principal, changes["agent_id"]) if "agent_id" in changes else None
    async with db.transaction() as conn:
        row = await db.fetch_one(LOCK_INSTANCE_SQL, _params(principal, id=uid), conn=conn)
        if row is None:  # deleted meanwhile
            raise not_found("channel instance", instance_id)
        channel_type = channel_type or row["channel_type"]
        credentials = _merge_credentials(_decrypt(row["credentials"], row["id"]), incoming)
        _check_required(channel_type, credentials, status=409)  # valid request, but not with what is stored
        values = {
            "id": uid,
            "name": row["name"] if name is None else name,
            "display_name": row["display_name"] if display_name is None else display_name,
            "channel_type": channel_type,
            "agent_id": row["agent_id"] if agent_id is None else agent_id,
            "credentials": _encrypt(credentials),
            "config": json.dumps((row["config"] or {}) if config is None else config),
            "enabled": row["enabled"] if enabled is None else enabled,
        }
        try:
            updated = await db.fetch_one(UPDATE_INSTANCE_SQL, values, conn=conn)
        except pg_errors.UniqueViolation:
            raise conflict("channel instance", name) from None
        except pg_errors.ForeignKeyViolation:
            raise ApiError(409, "error.not_found", "agent", changes.get("agent_id")) from None
        await activity.record(
            conn, principal, "channel_instance.updated", "channel_instance", str(uid), {"fields": sorted(changes)}
        )
        await bus.publish(conn, EVENT_KIND, id=str(uid), action="updated")
    return {"status": "updated", "instance": public(updated)}


async def delete_instance(principal: Principal, instance_id: str) -> dict:
    uid = _uuid(instance_id, "instance")
    async with db.transaction() as conn:
        row = await db.fetch_one(LOCK_INSTANCE_SQL, _params(principal, id=uid), conn=conn)
        if row is None:
            raise not_found("channel instance", instance_id)
        await db.execute(DELETE_INSTANCE_SQL, (uid,), conn=conn)
        await activity.record(
            conn, principal, "channel_instance.deleted", "channel_instance", str(uid),
            {"name": row["name"], "channel_type": row["channel_type"]},
        )
        await bus.publish(conn, EVENT_KIND, id=str(uid), action="deleted")
    return {"status": "deleted", "id": str(uid)}


async def find_instance(principal: Principal, ref: str, *, conn=None) -> dict:
    """The visible instance named by UUID or name, as a raw row; 404 otherwise."""
    try:
        uid: uuid.UUID | None = uuid.UUID(ref)
    except ValueError:
        uid = None
    row = await db.fetch_one(FIND_INSTANCE_SQL, _params(principal, id=uid, name=ref), conn=conn)
    if row is None:
        raise not_found("channel instance", ref)
    return row


# ---------------------------------------------------------------------------------------------
# for the channel layer (no caller: the platform is talking to us)


def runtime_view(row: dict) -> dict:
    """An instance with its credentials decrypted: for connecting to the platform, never for responses."""
    return {**public(row), "credentials": _decrypt(row.get("credentials"), row["id"])}


async def enabled_instances() -> list[dict]:
    """Every enabled instance with decrypted credentials (reload on bus kind 'channel_instances')."""
    return [runtime_view(r) for r in await db.fetch_all(ENABLED_INSTANCES_SQL)]


async def runtime_instance(instance_id: uuid.UUID | str) -> dict | None:
    """One instance with decrypted credentials, or None."""
    row = await db.fetch_one(RUNTIME_INSTANCE_SQL, (uuid.UUID(str(instance_id)),))
    return runtime_view(row) if row else None


async def record_contact(
    instance_id: uuid.UUID | str,
    sender_id: str,
    *,
    display_name: str | None = None,
    username: str | None = None,
    avatar_url: str | None = None,
    peer_kind: str | None = None,
    user_id: str | None = None,
    metadata: dict | None = None,
    conn: psycopg.AsyncConnection | None = None,
) -> dict:
    """Upsert the sender of an inbound message. Non-empty values replace stored ones, empty ones keep
    them; metadata keys are merged; last_seen_at becomes now."""
    if not sender_id:
        raise bad_request("sender_id is required")
    if peer_kind not in (None, "", *PEER_KINDS):
        raise bad_request("peer_kind must be 'direct' or 'group'")
    params = {
        "instance_id": uuid.UUID(str(instance_id)),
        "sender_id": sender_id[:255],
        "user_id": (user_id or "")[:255],
        "display_name": (display_name or "")[:255],
        "username": (username or "")[:255],
        "avatar_url": avatar_url or "",
        "peer_kind": peer_kind or "",
        "metadata": json.dumps(metadata) if metadata else None,
    }
    return await db.fetch_one(CONTACT_UPSERT_SQL, params, conn=conn)


async def add_pending_message(
    instance_id: uuid.UUID | str,
    history_key: str,
    sender: str,
    body: str,
    *,
    sender_id: str = "",
    platform_msg_id: str = "",
    is_summary: bool = False,
    group_title: str | None = None,
    conn: psycopg.AsyncConnection | None = None,
) -> uuid.UUID:
    """Buffer one group-chat message the bot was not mentioned in; returns the row id."""
    if not history_key:
        raise bad_request("history_key is required")
    params = {
        "instance_id": uuid.UUID(str(instance_id)),
        "history_key": history_key[:200],
        "group_title": (group_title or "")[:255],
        "sender": sender[:255],
        "sender_id": sender_id[:255],
        "body": body,
        "platform_msg_id": platform_msg_id[:100],
        "is_summary": is_summary,
    }
    return (await db.fetch_one(PENDING_INSERT_SQL, params, conn=conn))["id"]


async def pending_messages(instance_id: uuid.UUID | str, history_key: str) -> list[dict]:
    """The buffered messages of one group, oldest first (to prepend on the next mention)."""
    return await db.fetch_all(PENDING_FOR_KEY_SQL, (uuid.UUID(str(instance_id)), history_key))


async def drop_pending_messages(instance_id: uuid.UUID | str, history_key: str) -> int:
    """Forget one group's buffer (after it was delivered); returns the number of rows removed."""
    return await db.execute(PENDING_DELETE_SQL, (uuid.UUID(str(instance_id)), history_key))


# ---------------------------------------------------------------------------------------------
# contacts and pending messages over HTTP


async def list_contacts(
    principal: Principal,
    *,
    search: str | None = None,
    channel_type: str | None = None,
    peer_kind: str | None = None,
    channel_instance_id: str | None = None,
    limit: int | None = None,
    offset: int | None = None,
) -> dict:
    limit, offset = page(limit, offset)
    if channel_type is not None:
        _check_type(channel_type)
    if peer_kind is not None and peer_kind not in PEER_KINDS:
        raise bad_request("peer_kind must be 'direct' or 'group'")
    instance = _uuid(channel_instance_id, "instance") if channel_instance_id is not None else None
    params = _params(
        principal, channel_type=channel_type, peer_kind=peer_kind, instance_id=instance,
        pattern=like_pattern(search), limit=limit, offset=offset,
    )
    rows = await db.fetch_all(LIST_CONTACTS_SQL, params)
    if rows:
        total = rows[0]["total"]
    else:
        total = (await db.fetch_one(COUNT_CONTACTS_SQL, params))["n"] if offset else 0
    for row in rows:
        row.pop("total")
    return {"contacts": rows, "total": total, "limit": limit, "offset": offset}


async def list_pending_groups(principal: Principal, *, channel: str | None = None, limit: int | None = None) -> dict:
    limit, _ = page(limit, 0, default=200, max_limit=1000)
    instance_id = (await find_instance(principal, channel))["id"] if channel else None
    rows = await db.fetch_all(PENDING_GROUPS_SQL, _params(principal, instance_id=instance_id, limit=limit))
    return {"groups": rows}


async def clear_pending_group(principal: Principal, channel: str | None, key: str | None) -> dict:
    """Delete every buffered message of one group. The instance must be visible (else 404); an
    already-empty group is not an error (`deleted: 0`), so the call is idempotent."""
    if not channel or not key:
        raise ApiError(400, "error.channel_key_required")
    async with db.transaction() as conn:
        instance = await find_instance(principal, channel, conn=conn)
        deleted = await db.execute(PENDING_DELETE_SQL, (instance["id"], key), conn=conn)
        if deleted:
            await activity.record(
                conn, principal, "pending_messages.cleared", "channel_instance", str(instance["id"]),
                {"history_key": key, "deleted": deleted},
            )
    return {"status": "ok", "deleted": deleted}
