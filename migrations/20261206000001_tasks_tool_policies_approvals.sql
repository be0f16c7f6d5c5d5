-- Agents acting for a tenant: tasks per project (runs link to them), the
-- tenant's tool policy (which tool calls are allowed, held for a person's
-- approval, or denied), and the approvals that hold tool calls.

CREATE TABLE tasks (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id         uuid NOT NULL,
    project_id        uuid NOT NULL,
    title             text NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    description       text NOT NULL DEFAULT '' CHECK (length(description) <= 20000),
    status            text NOT NULL DEFAULT 'todo'
                      CHECK (status IN ('todo', 'in_progress', 'waiting_approval', 'done', 'cancelled')),
    -- A person (a user id) or an agent (its name), or no one.
    assignee_user_id  uuid,
    assignee_agent    text CHECK (length(assignee_agent) BETWEEN 1 AND 200),
    created_by        uuid,
    idempotency_key   text CHECK (length(idempotency_key) BETWEEN 1 AND 200),
    idempotency_fingerprint bytea,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, id),
    UNIQUE (tenant_id, idempotency_key),
    CHECK (assignee_user_id IS NULL OR assignee_agent IS NULL),
    FOREIGN KEY (tenant_id, project_id) REFERENCES projects (tenant_id, id) ON DELETE CASCADE
);

CREATE INDEX tasks_tenant_project ON tasks (tenant_id, project_id, created_at DESC, id DESC);

-- A run may work on a task of its own project.
ALTER TABLE agent_runs ADD COLUMN task_id uuid;
ALTER TABLE agent_runs ADD CONSTRAINT agent_runs_task
    FOREIGN KEY (tenant_id, task_id) REFERENCES tasks (tenant_id, id) ON DELETE SET NULL (task_id);
CREATE INDEX agent_runs_tenant_task ON agent_runs (tenant_id, task_id, created_at) WHERE task_id IS NOT NULL;

-- One policy per tenant: its rules in order (the first whose pattern matches
-- the tool's name, and whose roles include the caller's when it names any,
-- decides), and what happens when none does. The rules' shape is checked by
-- the API; the database keeps them whole so a policy changes atomically.
CREATE TABLE tool_policies (
    tenant_id       uuid PRIMARY KEY,
    rules           jsonb NOT NULL DEFAULT '[]'::jsonb CHECK (jsonb_typeof(rules) = 'array'),
    default_action  text NOT NULL DEFAULT 'allow' CHECK (default_action IN ('allow', 'require_approval', 'deny')),
    version         integer NOT NULL DEFAULT 1 CHECK (version > 0),
    updated_by      text,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Tool calls a rule holds wait for a person (`pending_approval`); a decision
-- clears them to run (`pending`), or ends them (`rejected`, `expired`).
ALTER TABLE tool_calls DROP CONSTRAINT tool_calls_status_check;
ALTER TABLE tool_calls ADD CONSTRAINT tool_calls_status_check
    CHECK (status IN ('pending_approval', 'pending', 'running', 'succeeded', 'failed', 'rejected', 'expired'));

CREATE TABLE approvals (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id       uuid NOT NULL,
    project_id      uuid NOT NULL,
    run_id          uuid NOT NULL,
    tool_call_id    uuid NOT NULL,
    tool            text NOT NULL,
    -- The rule that asked for it and the roles it lets decide.
    rule            text NOT NULL,
    approver_roles  text[] NOT NULL CHECK (cardinality(approver_roles) > 0),
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'approved', 'rejected', 'expired')),
    reason          text CHECK (length(reason) <= 2000),
    decided_by      uuid,
    decided_by_role text,
    decided_at      timestamptz,
    expires_at      timestamptz NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, id),
    UNIQUE (tenant_id, tool_call_id),
    CHECK ((status = 'pending') = (decided_at IS NULL)),
    FOREIGN KEY (tenant_id, run_id) REFERENCES agent_runs (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, tool_call_id) REFERENCES tool_calls (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, project_id) REFERENCES projects (tenant_id, id) ON DELETE CASCADE
);

CREATE INDEX approvals_tenant_status ON approvals (tenant_id, status, created_at DESC, id DESC);
CREATE INDEX approvals_due ON approvals (expires_at) WHERE status = 'pending';

ALTER TABLE tasks ENABLE ROW LEVEL SECURITY;
ALTER TABLE tasks FORCE ROW LEVEL SECURITY;
CREATE POLICY tasks_tenant ON tasks
    USING (tenant_id = (SELECT app.current_tenant_id()))
    WITH CHECK (tenant_id = (SELECT app.current_tenant_id()));

ALTER TABLE tool_policies ENABLE ROW LEVEL SECURITY;
ALTER TABLE tool_policies FORCE ROW LEVEL SECURITY;
CREATE POLICY tool_policies_tenant ON tool_policies
    USING (tenant_id = (SELECT app.current_tenant_id()))
    WITH CHECK (tenant_id = (SELECT app.current_tenant_id()));

ALTER TABLE approvals ENABLE ROW LEVEL SECURITY;
ALTER TABLE approvals FORCE ROW LEVEL SECURITY;
CREATE POLICY approvals_tenant ON approvals
    USING (tenant_id = (SELECT app.current_tenant_id()))
    WITH CHECK (tenant_id = (SELECT app.current_tenant_id()));
-- The expiry sweep finds, on the platform path, which tenants have pending
-- approvals past their time (it expires them inside each tenant).
CREATE POLICY approvals_platform_due ON approvals FOR SELECT
    USING ((SELECT app.is_platform()) AND status = 'pending' AND expires_at <= now());

GRANT SELECT, INSERT, UPDATE, DELETE ON tasks, tool_policies, approvals TO switchboard_runtime;
