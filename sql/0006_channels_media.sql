-- Channel instances (one messaging-platform connection bound to an agent), the contacts and the
-- buffered group messages the channel layer records for them, and uploaded media.
-- Tenancy: channel_instances.owner_id / media_files.owner_id = X-GoClaw-User-Id of the creator;
-- contacts and pending messages belong to their instance (and disappear with it).

CREATE TABLE channel_instances (
    id           uuid PRIMARY KEY DEFAULT uuid_v7(),
    name         varchar(100) NOT NULL UNIQUE,
    display_name varchar(255) NOT NULL DEFAULT '',
    channel_type varchar(30)  NOT NULL,
    agent_id     uuid         NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    credentials  text,                          -- aes-gcm:<base64> of a JSON object; never plaintext
    config       jsonb        NOT NULL DEFAULT '{}',
    enabled      boolean      NOT NULL DEFAULT true,
    owner_id     varchar(255) NOT NULL DEFAULT '',
    created_at   timestamptz  NOT NULL DEFAULT now(),
    updated_at   timestamptz  NOT NULL DEFAULT now(),
    CONSTRAINT channel_instances_type_chk CHECK (
        channel_type IN ('telegram', 'discord', 'slack', 'whatsapp', 'zalo_oa', 'zalo_personal', 'feishu')
    )
);
CREATE INDEX channel_instances_owner_idx ON channel_instances (owner_id, name);
CREATE INDEX channel_instances_agent_idx ON channel_instances (agent_id);

CREATE TABLE channel_contacts (
    id                  uuid PRIMARY KEY DEFAULT uuid_v7(),
    channel_instance_id uuid         NOT NULL REFERENCES channel_instances (id) ON DELETE CASCADE,
    sender_id           varchar(255) NOT NULL,
    user_id             varchar(255),
    display_name        varchar(255),
    username            varchar(255),
    avatar_url          text,
    peer_kind           varchar(20),
    metadata            jsonb        NOT NULL DEFAULT '{}',
    merged_id           uuid,
    first_seen_at       timestamptz  NOT NULL DEFAULT now(),
    last_seen_at        timestamptz  NOT NULL DEFAULT now(),
    UNIQUE (channel_instance_id, sender_id),
    CONSTRAINT channel_contacts_peer_kind_chk CHECK (peer_kind IS NULL OR peer_kind IN ('direct', 'group'))
);
CREATE INDEX channel_contacts_seen_idx ON channel_contacts (last_seen_at DESC, id DESC);
CREATE INDEX channel_contacts_merged_idx ON channel_contacts (merged_id) WHERE merged_id IS NOT NULL;

CREATE TABLE channel_pending_messages (
    id                  uuid PRIMARY KEY DEFAULT uuid_v7(),
    channel_instance_id uuid         NOT NULL REFERENCES channel_instances (id) ON DELETE CASCADE,
    history_key         varchar(200) NOT NULL,
    group_title         varchar(255),
    sender              varchar(255) NOT NULL,
    sender_id           varchar(255) NOT NULL DEFAULT '',
    body                text         NOT NULL,
    platform_msg_id     varchar(100) NOT NULL DEFAULT '',
    is_summary          boolean      NOT NULL DEFAULT false,
    created_at          timestamptz  NOT NULL DEFAULT now(),
    updated_at          timestamptz  NOT NULL DEFAULT now()
);
CREATE INDEX channel_pending_key_idx ON channel_pending_messages (channel_instance_id, history_key, created_at);

CREATE TABLE media_files (
    id           uuid PRIMARY KEY,              -- UUID v4 from the application: unguessable
    owner_id     varchar(255) NOT NULL DEFAULT '',
    filename     varchar(255) NOT NULL,
    mime_type    varchar(100) NOT NULL,
    size         bigint       NOT NULL CHECK (size > 0),
    sha256       char(64)     NOT NULL,
    storage_path text         NOT NULL,         -- relative to <data dir>/media
    created_at   timestamptz  NOT NULL DEFAULT now()
);
CREATE INDEX media_files_owner_idx ON media_files (owner_id, created_at DESC);
