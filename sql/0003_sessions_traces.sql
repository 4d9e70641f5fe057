-- Conversations (one row per message, append-only) and run traces with spans.

CREATE TABLE sessions (
    id            uuid PRIMARY KEY DEFAULT uuid_v7(),
    session_key   varchar(500) NOT NULL UNIQUE,
    agent_id      uuid         REFERENCES agents (id) ON DELETE CASCADE,
    user_id       varchar(255),
    channel       varchar(50),
    label         varchar(500),
    summary       text,
    model         varchar(200),
    provider      varchar(50),
    input_tokens  bigint       NOT NULL DEFAULT 0,
    output_tokens bigint       NOT NULL DEFAULT 0,
    metadata      jsonb        NOT NULL DEFAULT '{}',
    created_at    timestamptz  NOT NULL DEFAULT now(),
    updated_at    timestamptz  NOT NULL DEFAULT now()
);
CREATE INDEX sessions_agent_idx ON sessions (agent_id, updated_at DESC);
CREATE INDEX sessions_user_idx ON sessions (user_id, updated_at DESC);

CREATE TABLE session_messages (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    session_id   uuid        NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    role         varchar(20) NOT NULL,
    content      text        NOT NULL DEFAULT '',
    tool_calls   jsonb,
    tool_call_id varchar(200),
    run_id       uuid,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX session_messages_session_idx ON session_messages (session_id, id);

CREATE TABLE traces (
    id                  uuid PRIMARY KEY DEFAULT uuid_v7(),
    parent_trace_id     uuid,
    agent_id            uuid,
    user_id             varchar(255),
    session_key         text,
    run_id              uuid,
    name                text,
    channel             varchar(50),
    start_time          timestamptz   NOT NULL DEFAULT now(),
    end_time            timestamptz,
    duration_ms         integer,
    input_preview       text,
    output_preview      text,
    total_input_tokens  integer       NOT NULL DEFAULT 0,
    total_output_tokens integer       NOT NULL DEFAULT 0,
    total_cost          numeric(14,8) NOT NULL DEFAULT 0,
    span_count          integer       NOT NULL DEFAULT 0,
    llm_call_count      integer       NOT NULL DEFAULT 0,
    tool_call_count     integer       NOT NULL DEFAULT 0,
    status              varchar(20)   NOT NULL DEFAULT 'running',
    error               text,
    metadata            jsonb         NOT NULL DEFAULT '{}',
    created_at          timestamptz   NOT NULL DEFAULT now()
);
CREATE INDEX traces_created_idx ON traces (created_at DESC);
CREATE INDEX traces_agent_idx ON traces (agent_id, created_at DESC);
CREATE INDEX traces_user_idx ON traces (user_id, created_at DESC) WHERE user_id IS NOT NULL;
CREATE INDEX traces_session_idx ON traces (session_key, created_at DESC) WHERE session_key IS NOT NULL;

CREATE TABLE spans (
    id             uuid PRIMARY KEY DEFAULT uuid_v7(),
    trace_id       uuid          NOT NULL REFERENCES traces (id) ON DELETE CASCADE,
    parent_span_id uuid,
    agent_id       uuid,
    span_type      varchar(20)   NOT NULL,
    name           text,
    start_time     timestamptz   NOT NULL DEFAULT now(),
    end_time       timestamptz,
    duration_ms    integer,
    status         varchar(20)   NOT NULL DEFAULT 'completed',
    error          text,
    model          varchar(200),
    provider       varchar(50),
    input_tokens   integer       NOT NULL DEFAULT 0,
    output_tokens  integer       NOT NULL DEFAULT 0,
    total_cost     numeric(14,8) NOT NULL DEFAULT 0,
    finish_reason  varchar(50),
    tool_name      varchar(200),
    tool_call_id   varchar(200),
    input_preview  text,
    output_preview text,
    metadata       jsonb         NOT NULL DEFAULT '{}',
    created_at     timestamptz   NOT NULL DEFAULT now()
);
CREATE INDEX spans_trace_idx ON spans (trace_id, start_time);
CREATE INDEX spans_created_idx ON spans (created_at DESC);

-- Hourly rollup of LLM spans, kept up to date by the trace writer, so usage queries stay fast.
CREATE TABLE usage_hourly (
    bucket_hour    timestamptz   NOT NULL,
    agent_id       uuid          NOT NULL DEFAULT '00000000-0000-0000-0000-000000000000',
    user_id        varchar(255)  NOT NULL DEFAULT '',
    provider       varchar(50)   NOT NULL DEFAULT '',
    model          varchar(200)  NOT NULL DEFAULT '',
    request_count  integer       NOT NULL DEFAULT 0,
    llm_call_count integer       NOT NULL DEFAULT 0,
    tool_call_count integer      NOT NULL DEFAULT 0,
    error_count    integer       NOT NULL DEFAULT 0,
    input_tokens   bigint        NOT NULL DEFAULT 0,
    output_tokens  bigint        NOT NULL DEFAULT 0,
    total_cost     numeric(16,8) NOT NULL DEFAULT 0,
    total_duration_ms bigint     NOT NULL DEFAULT 0,
    PRIMARY KEY (bucket_hour, agent_id, user_id, provider, model)
);

-- Agent-to-agent runs (delegation tools and teams write here).
CREATE TABLE delegation_history (
    id              uuid PRIMARY KEY DEFAULT uuid_v7(),
    source_agent_id uuid          REFERENCES agents (id) ON DELETE SET NULL,
    target_agent_id uuid          REFERENCES agents (id) ON DELETE SET NULL,
    user_id         varchar(255),
    task            text          NOT NULL,
    mode            varchar(20)   NOT NULL DEFAULT 'sync',
    status          varchar(20)   NOT NULL DEFAULT 'running',
    result          text,
    error           text,
    iterations      integer       NOT NULL DEFAULT 0,
    trace_id        uuid,
    duration_ms     integer       NOT NULL DEFAULT 0,
    metadata        jsonb         NOT NULL DEFAULT '{}',
    created_at      timestamptz   NOT NULL DEFAULT now(),
    updated_at      timestamptz   NOT NULL DEFAULT now(),
    completed_at    timestamptz
);
CREATE INDEX delegation_history_created_idx ON delegation_history (created_at DESC);
CREATE INDEX delegation_history_user_idx ON delegation_history (user_id, created_at DESC);
