-- LLM providers, agents and agent shares.

CREATE TABLE llm_providers (
    id            uuid PRIMARY KEY DEFAULT uuid_v7(),
    name          varchar(50)  NOT NULL UNIQUE,
    display_name  varchar(255),
    provider_type varchar(30)  NOT NULL,
    api_base      text,
    api_key       text,                         -- aes-gcm:<base64>; never plaintext
    enabled       boolean      NOT NULL DEFAULT true,
    settings      jsonb        NOT NULL DEFAULT '{}',
    created_by    varchar(255),
    created_at    timestamptz  NOT NULL DEFAULT now(),
    updated_at    timestamptz  NOT NULL DEFAULT now()
);

CREATE TABLE agents (
    id                    uuid PRIMARY KEY DEFAULT uuid_v7(),
    agent_key             varchar(100) NOT NULL UNIQUE,
    display_name          varchar(255),
    description           text,
    frontmatter           text,
    system_prompt         text,
    owner_id              varchar(255) NOT NULL,
    provider              varchar(50)  NOT NULL DEFAULT '',
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
    CONSTRAINT agents_type_chk CHECK (agent_type IN ('open', 'predefined')),
    CONSTRAINT agents_status_chk CHECK (status IN ('active', 'inactive', 'summoning', 'summon_failed'))
);
CREATE INDEX agents_owner_idx ON agents (owner_id);

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
