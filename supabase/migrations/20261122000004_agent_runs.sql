-- Agent runs, their steps and tool calls.
--
-- A run moves queued → running → succeeded | failed | cancelled; the server
-- enforces the moves, the CHECK keeps any other status out. Usage is accumulated
-- on the run in the same statement that records the step reporting it.

CREATE TABLE agent_runs (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id        uuid NOT NULL,
    project_id       uuid NOT NULL,
    conversation_id  uuid,
    status           text NOT NULL DEFAULT 'queued'
                     CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    agent            text NOT NULL DEFAULT '' CHECK (length(agent) <= 200),
    input            jsonb NOT NULL DEFAULT '{}'::jsonb,
    output           jsonb,
    error            text,
    tokens_in        bigint NOT NULL DEFAULT 0 CHECK (tokens_in >= 0),
    tokens_out       bigint NOT NULL DEFAULT 0 CHECK (tokens_out >= 0),
    cost_usd         numeric(14, 6) NOT NULL DEFAULT 0 CHECK (cost_usd >= 0),
    idempotency_key  text CHECK (length(idempotency_key) BETWEEN 1 AND 200),
    created_by       uuid,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    finished_at      timestamptz,
    UNIQUE (tenant_id, id),
    UNIQUE (tenant_id, idempotency_key),
    FOREIGN KEY (tenant_id, project_id) REFERENCES projects (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, conversation_id) REFERENCES conversations (tenant_id, id) ON DELETE SET NULL (conversation_id)
);

CREATE INDEX agent_runs_tenant_created ON agent_runs (tenant_id, created_at DESC, id DESC);
CREATE INDEX agent_runs_tenant_project ON agent_runs (tenant_id, project_id, created_at DESC);
CREATE INDEX agent_runs_tenant_status ON agent_runs (tenant_id, status, created_at DESC);

CREATE TABLE agent_steps (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id   uuid NOT NULL,
    run_id      uuid NOT NULL,
    seq         integer NOT NULL CHECK (seq >= 1),
    kind        text NOT NULL DEFAULT 'message' CHECK (length(kind) BETWEEN 1 AND 64),
    content     text NOT NULL DEFAULT '',
    data        jsonb NOT NULL DEFAULT '{}'::jsonb,
    tokens_in   bigint NOT NULL DEFAULT 0 CHECK (tokens_in >= 0),
    tokens_out  bigint NOT NULL DEFAULT 0 CHECK (tokens_out >= 0),
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, id),
    UNIQUE (tenant_id, run_id, seq),
    FOREIGN KEY (tenant_id, run_id) REFERENCES agent_runs (tenant_id, id) ON DELETE CASCADE
);

CREATE TABLE tool_calls (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id    uuid NOT NULL,
    run_id       uuid NOT NULL,
    step_id      uuid,
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    arguments    jsonb NOT NULL DEFAULT '{}'::jsonb,
    result       jsonb,
    status       text NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'running', 'succeeded', 'failed')),
    latency_ms   integer CHECK (latency_ms >= 0),
    created_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    UNIQUE (tenant_id, id),
    FOREIGN KEY (tenant_id, run_id) REFERENCES agent_runs (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, step_id) REFERENCES agent_steps (tenant_id, id) ON DELETE SET NULL (step_id)
);

CREATE INDEX tool_calls_tenant_run ON tool_calls (tenant_id, run_id, created_at);

ALTER TABLE agent_runs ENABLE ROW LEVEL SECURITY;
ALTER TABLE agent_runs FORCE ROW LEVEL SECURITY;
CREATE POLICY agent_runs_tenant ON agent_runs
    USING (tenant_id = (SELECT app.current_tenant_id()))
    WITH CHECK (tenant_id = (SELECT app.current_tenant_id()));

ALTER TABLE agent_steps ENABLE ROW LEVEL SECURITY;
ALTER TABLE agent_steps FORCE ROW LEVEL SECURITY;
CREATE POLICY agent_steps_tenant ON agent_steps
    USING (tenant_id = (SELECT app.current_tenant_id()))
    WITH CHECK (tenant_id = (SELECT app.current_tenant_id()));

ALTER TABLE tool_calls ENABLE ROW LEVEL SECURITY;
ALTER TABLE tool_calls FORCE ROW LEVEL SECURITY;
CREATE POLICY tool_calls_tenant ON tool_calls
    USING (tenant_id = (SELECT app.current_tenant_id()))
    WITH CHECK (tenant_id = (SELECT app.current_tenant_id()));

GRANT SELECT, INSERT, UPDATE, DELETE ON agent_runs, agent_steps, tool_calls TO switchboard_runtime;
