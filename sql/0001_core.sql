-- Core: time-ordered ids, API keys, audit trail.

CREATE EXTENSION IF NOT EXISTS vector;

-- UUID v7 (48-bit ms timestamp + random), so primary keys sort by creation time.
CREATE OR REPLACE FUNCTION uuid_v7() RETURNS uuid
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    ms bigint := floor(extract(epoch FROM clock_timestamp()) * 1000);
    bytes bytea := uuid_send(gen_random_uuid());
BEGIN
    bytes := overlay(bytes PLACING substring(int8send(ms) FROM 3) FROM 1 FOR 6);
    bytes := set_byte(bytes, 6, (get_byte(bytes, 6) & 15) | 112);
    RETURN encode(bytes, 'hex')::uuid;
END $$;

CREATE TABLE api_keys (
    id           uuid PRIMARY KEY DEFAULT uuid_v7(),
    name         varchar(100) NOT NULL,
    prefix       varchar(8)   NOT NULL,
    key_hash     char(64)     NOT NULL UNIQUE,
    scopes       text[]       NOT NULL DEFAULT '{}',
    expires_at   timestamptz,
    last_used_at timestamptz,
    revoked      boolean      NOT NULL DEFAULT false,
    created_by   varchar(255),
    created_at   timestamptz  NOT NULL DEFAULT now(),
    updated_at   timestamptz  NOT NULL DEFAULT now()
);
CREATE INDEX api_keys_created_idx ON api_keys (created_at DESC);

CREATE TABLE activity_logs (
    id          uuid PRIMARY KEY DEFAULT uuid_v7(),
    actor_type  varchar(20)  NOT NULL,
    actor_id    varchar(255) NOT NULL,
    action      varchar(100) NOT NULL,
    entity_type varchar(50),
    entity_id   varchar(255),
    details     jsonb,
    ip_address  varchar(45),
    created_at  timestamptz  NOT NULL DEFAULT now()
);
CREATE INDEX activity_logs_created_idx ON activity_logs (created_at DESC);
CREATE INDEX activity_logs_actor_idx ON activity_logs (actor_type, actor_id, created_at DESC);
CREATE INDEX activity_logs_action_idx ON activity_logs (action, created_at DESC);
CREATE INDEX activity_logs_entity_idx ON activity_logs (entity_type, entity_id, created_at DESC);
