-- LLM providers, agents and agent shares.

CREATE TABLE llm_providers (
    id            uuid PRIMARY KEY DEFAULT uuid_v7(),
    name          varchar(50)  NOT NULL UNIQUE,
    display_name  varchar(255),
    provider_type varchar(30)  NOT NULL,
    api_base      text,                         -- NULL: the type's default base
    api_key       text,                         -- aes-gcm:<base64>; never plaintext
    enabled       boolean      NOT NULL DEFAULT true,
    settings      jsonb        NOT NULL DEFAULT '{}',
    created_by    varchar(255),
    created_at    timestamptz  NOT NULL DEFAULT now(),
    updated_at    timestamptz  NOT NULL DEFAULT now(),
    CONSTRAINT llm_providers_name_chk CHECK (name ~ '^[a-z0-9]([a-z0-9-]*[a-z0-9])?$'),
    CONSTRAINT llm_providers_key_chk CHECK (api_key IS NULL OR api_key LIKE 'aes-gcm:%'),
    CONSTRAINT llm_providers_settings_chk CHECK (jsonb_typeof(settings) = 'object')
);

CREATE TABLE agents (
    id                    uuid PRIMARY KEY DEFAULT uuid_v7(),
    agent_key             varchar(100) NOT NULL UNIQUE,
    display_name          varchar(255),
    description           text,
    frontmatter           text,
    system_prompt         text,
    owner_id              varchar(255) NOT NULL,
    -- the provider *name*; NULL = none configured. A rename follows; a provider in use cannot be deleted.
    provider              varchar(50)  REFERENCES llm_providers (name) ON UPDATE CASCADE ON DELETE RESTRICT,
    model                 varchar(200) NOT NULL DEFAULT '',
    context_window        integer      NOT NULL DEFAULT 200000,
    max_tool_iterations   integer      NOT NULL DEFAULT 20,
    workspace             text         NOT NULL DEFAULT '',
    restrict_to_workspace boolean      NOT NULL DEFAULT true,
    agent_type            varchar(20)  NOT NULL DEFAULT 'open',
    is_default            boolean      NOT NULL DEFAULT false,
    status                varchar(20)  NOT NULL DEFAULT 'active',
    budget_monthly_cents  integer,
    tools_config          jsonb        NOT NULL DEFAULT '{}',
    memory_config         jsonb        NOT NULL DEFAULT '{}',
    other_config          jsonb        NOT NULL DEFAULT '{}',
    created_at            timestamptz  NOT NULL DEFAULT now(),
    updated_at            timestamptz  NOT NULL DEFAULT now(),
    CONSTRAINT agents_key_chk CHECK (agent_key ~ '^[a-z0-9]([a-z0-9-]*[a-z0-9])?$'),
    CONSTRAINT agents_type_chk CHECK (agent_type IN ('open', 'predefined')),
    CONSTRAINT agents_status_chk CHECK (status IN ('active', 'inactive', 'summoning', 'summon_failed')),
    CONSTRAINT agents_limits_chk CHECK (context_window > 0 AND max_tool_iterations > 0
                                        AND (budget_monthly_cents IS NULL OR budget_monthly_cents >= 0)),
    CONSTRAINT agents_configs_chk CHECK (jsonb_typeof(tools_config) = 'object'
                                         AND jsonb_typeof(memory_config) = 'object'
                                         AND jsonb_typeof(other_config) = 'object')
);
CREATE INDEX agents_owner_idx ON agents (owner_id, created_at);
CREATE INDEX agents_created_idx ON agents (created_at);
CREATE INDEX agents_provider_idx ON agents (provider);
CREATE INDEX agents_default_idx ON agents (is_default) WHERE is_default;

CREATE TABLE agent_shares (
    id         uuid PRIMARY KEY DEFAULT uuid_v7(),
    agent_id   uuid         NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    user_id    varchar(255) NOT NULL,
    role       varchar(20)  NOT NULL DEFAULT 'user',
    granted_by varchar(255) NOT NULL,
    created_at timestamptz  NOT NULL DEFAULT now(),
    UNIQUE (agent_id, user_id)
);
CREATE INDEX agent_shares_user_idx ON agent_shares (user_id);
