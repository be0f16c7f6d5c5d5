-- Inbound webhooks: GitHub and Slack post to /hooks/<provider>/<id>; each
-- hook names the tenant secret its requests are signed with and the channel
-- topic its events go to. Deliveries already seen are remembered for a day,
-- so a replayed request is refused.

CREATE TABLE inbound_hooks (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id    uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    provider     text NOT NULL CHECK (provider IN ('github', 'slack')),
    secret_name  text NOT NULL CHECK (length(secret_name) BETWEEN 1 AND 128),
    topic        text NOT NULL CHECK (length(topic) BETWEEN 1 AND 200),
    description  text NOT NULL DEFAULT '' CHECK (length(description) <= 1000),
    created_by   text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, id)
);

CREATE INDEX inbound_hooks_tenant ON inbound_hooks (tenant_id, created_at DESC, id DESC);

CREATE TABLE inbound_deliveries (
    tenant_id     uuid NOT NULL,
    hook_id       uuid NOT NULL,
    -- GitHub's X-GitHub-Delivery, or Slack's timestamp and signature.
    delivery_key  text NOT NULL CHECK (length(delivery_key) BETWEEN 1 AND 300),
    received_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, hook_id, delivery_key),
    FOREIGN KEY (tenant_id, hook_id) REFERENCES inbound_hooks (tenant_id, id) ON DELETE CASCADE
);

CREATE INDEX inbound_deliveries_age ON inbound_deliveries (tenant_id, hook_id, received_at);

ALTER TABLE inbound_hooks ENABLE ROW LEVEL SECURITY;
ALTER TABLE inbound_hooks FORCE ROW LEVEL SECURITY;
CREATE POLICY inbound_hooks_tenant ON inbound_hooks
    USING (tenant_id = (SELECT app.current_tenant_id()))
    WITH CHECK (tenant_id = (SELECT app.current_tenant_id()));
-- A request to /hooks/... carries no credential but the hook's id: the
-- platform path finds which tenant it belongs to, then everything else runs
-- inside that tenant.
CREATE POLICY inbound_hooks_platform_read ON inbound_hooks FOR SELECT
    USING ((SELECT app.is_platform()));

ALTER TABLE inbound_deliveries ENABLE ROW LEVEL SECURITY;
ALTER TABLE inbound_deliveries FORCE ROW LEVEL SECURITY;
CREATE POLICY inbound_deliveries_tenant ON inbound_deliveries
    USING (tenant_id = (SELECT app.current_tenant_id()))
    WITH CHECK (tenant_id = (SELECT app.current_tenant_id()));

GRANT SELECT, INSERT, DELETE ON inbound_hooks, inbound_deliveries TO switchboard_runtime;
