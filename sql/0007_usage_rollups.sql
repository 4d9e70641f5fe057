-- Coarser rollups so global (admin) usage questions over long periods read few rows:
-- the same hourly buckets without the user dimension, and which users were active per day.
CREATE TABLE usage_hourly_global (
    bucket_hour       timestamptz   NOT NULL,
    agent_id          uuid          NOT NULL,
    provider          varchar(50)   NOT NULL DEFAULT '',
    model             varchar(200)  NOT NULL DEFAULT '',
    request_count     integer       NOT NULL DEFAULT 0,
    llm_call_count    integer       NOT NULL DEFAULT 0,
    tool_call_count   integer       NOT NULL DEFAULT 0,
    error_count       integer       NOT NULL DEFAULT 0,
    input_tokens      bigint        NOT NULL DEFAULT 0,
    output_tokens     bigint        NOT NULL DEFAULT 0,
    total_cost        numeric(16,8) NOT NULL DEFAULT 0,
    total_duration_ms bigint        NOT NULL DEFAULT 0,
    PRIMARY KEY (bucket_hour, agent_id, provider, model)
);

CREATE TABLE usage_daily_users (
    day      date         NOT NULL,
    user_id  varchar(255) NOT NULL,
    agent_id uuid         NOT NULL,
    PRIMARY KEY (day, user_id, agent_id)
);

-- tenant-scoped questions read the per-user rollup through this index
CREATE INDEX usage_hourly_user_idx ON usage_hourly (user_id, bucket_hour);

INSERT INTO usage_hourly_global (bucket_hour, agent_id, provider, model, request_count, llm_call_count,
    tool_call_count, error_count, input_tokens, output_tokens, total_cost, total_duration_ms)
SELECT bucket_hour, agent_id, provider, model, sum(request_count), sum(llm_call_count), sum(tool_call_count),
       sum(error_count), sum(input_tokens), sum(output_tokens), sum(total_cost), sum(total_duration_ms)
FROM usage_hourly GROUP BY 1, 2, 3, 4;

INSERT INTO usage_daily_users (day, user_id, agent_id)
SELECT DISTINCT (bucket_hour AT TIME ZONE 'UTC')::date, user_id, agent_id FROM usage_hourly
WHERE user_id <> '' AND request_count > 0;
