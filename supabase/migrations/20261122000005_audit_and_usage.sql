-- Audit log and usage metrics.
--
-- The audit log is append-only for the application: it may insert and read its
-- own tenant's rows, never change or remove them (no UPDATE/DELETE grant). Rows
-- go away only with their tenant.
--
-- Usage is one row per tenant, day and metric, incremented with an upsert in the
-- same transaction as the write that reports it.

CREATE TABLE audit_logs (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id    uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    actor_kind   text NOT NULL CHECK (actor_kind IN ('user', 'api_key', 'platform', 'system')),
    actor_id     text NOT NULL,
    action       text NOT NULL CHECK (length(action) BETWEEN 1 AND 100),
    target_type  text NOT NULL DEFAULT '',
    target_id    text NOT NULL DEFAULT '',
    request_id   text,
    ip           inet,
    details      jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX audit_logs_tenant_created ON audit_logs (tenant_id, created_at DESC, id DESC);
CREATE INDEX audit_logs_tenant_action ON audit_logs (tenant_id, action, created_at DESC);

ALTER TABLE audit_logs ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_logs FORCE ROW LEVEL SECURITY;
CREATE POLICY audit_logs_tenant ON audit_logs
    USING (tenant_id = (SELECT app.current_tenant_id()))
    WITH CHECK (tenant_id = (SELECT app.current_tenant_id()));

GRANT SELECT, INSERT ON audit_logs TO switchboard_runtime;

CREATE TABLE usage_metrics (
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    day         date NOT NULL,
    metric      text NOT NULL CHECK (length(metric) BETWEEN 1 AND 64),
    value       numeric(20, 6) NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, day, metric)
);

ALTER TABLE usage_metrics ENABLE ROW LEVEL SECURITY;
ALTER TABLE usage_metrics FORCE ROW LEVEL SECURITY;
CREATE POLICY usage_metrics_tenant ON usage_metrics
    USING (tenant_id = (SELECT app.current_tenant_id()))
    WITH CHECK (tenant_id = (SELECT app.current_tenant_id()));

GRANT SELECT, INSERT, UPDATE ON usage_metrics TO switchboard_runtime;
