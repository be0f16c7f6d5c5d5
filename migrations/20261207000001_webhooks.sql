-- Outbound webhooks. A tenant's endpoints subscribe to event types; a change
-- that makes an event writes one delivery per subscribed endpoint in its own
-- transaction (the outbox), numbered per endpoint in commit order: the
-- emitting transaction takes the endpoint's row lock to draw the next number
-- and holds it until it commits, so a lower number never commits after a
-- higher one. Any node delivers an endpoint's deliveries in that order,
-- holding the endpoint under a lease it renews; a node that dies mid-delivery
-- leaves the lease to run out and another node sends the same delivery again
-- (at least once; receivers deduplicate on `webhook-id`).

CREATE TABLE webhook_endpoints (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id           uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    url                 text NOT NULL CHECK (length(url) BETWEEN 1 AND 2048),
    description         text NOT NULL DEFAULT '' CHECK (length(description) <= 1000),
    -- Event types (`task.updated`), a category (`task.*`) or everything (`*`).
    events              text[] NOT NULL CHECK (cardinality(events) BETWEEN 1 AND 32),
    enabled             boolean NOT NULL DEFAULT true,
    -- The signing secret, sealed with the tenant's data key.
    secret_sealed       bytea NOT NULL,
    secret_version      integer NOT NULL DEFAULT 1 CHECK (secret_version >= 1),
    -- After a rotation the previous secret (version secret_version - 1)
    -- still signs beside the new one until `previous_until`, so receivers
    -- can switch over without refusing deliveries.
    previous_sealed     bytea,
    previous_until      timestamptz,
    -- The number of the newest delivery, and of the newest one settled
    -- (delivered or given up): deliveries above `settled_seq` are pending.
    last_seq            bigint NOT NULL DEFAULT 0,
    settled_seq         bigint NOT NULL DEFAULT 0,
    -- The circuit: failed attempts in a row, when it may try again, and
    -- until when it is open (set after too many failures in a row).
    failures            integer NOT NULL DEFAULT 0,
    retry_at            timestamptz NOT NULL DEFAULT now(),
    open_until          timestamptz,
    locked_by           text,
    locked_until        timestamptz,
    created_by          text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, id),
    CHECK (settled_seq <= last_seq)
);

CREATE INDEX webhook_endpoints_tenant ON webhook_endpoints (tenant_id, created_at DESC, id DESC);
CREATE INDEX webhook_endpoints_due ON webhook_endpoints (retry_at) WHERE enabled AND settled_seq < last_seq;

CREATE TABLE webhook_deliveries (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id        uuid NOT NULL,
    endpoint_id      uuid NOT NULL,
    seq              bigint NOT NULL CHECK (seq >= 1),
    -- The event's id, sent as `webhook-id`: the same on every attempt and
    -- on a redelivery.
    event_id         text NOT NULL CHECK (length(event_id) BETWEEN 1 AND 100),
    event_type       text NOT NULL CHECK (length(event_type) BETWEEN 1 AND 100),
    payload          jsonb NOT NULL,
    status           text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_status      integer,
    last_error       text,
    last_attempt_at  timestamptz,
    delivered_at     timestamptz,
    -- A redelivery names the delivery it repeats.
    redelivery_of    uuid,
    created_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, id),
    UNIQUE (endpoint_id, seq),
    FOREIGN KEY (tenant_id, endpoint_id) REFERENCES webhook_endpoints (tenant_id, id) ON DELETE CASCADE
);

CREATE INDEX webhook_deliveries_log ON webhook_deliveries (tenant_id, endpoint_id, seq DESC);
CREATE INDEX webhook_deliveries_age ON webhook_deliveries (created_at) WHERE status <> 'pending';

ALTER TABLE webhook_endpoints ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhook_endpoints FORCE ROW LEVEL SECURITY;
CREATE POLICY webhook_endpoints_tenant ON webhook_endpoints
    USING (tenant_id = (SELECT app.current_tenant_id()))
    WITH CHECK (tenant_id = (SELECT app.current_tenant_id()));
-- The delivery workers find due endpoints of every tenant and take their
-- lease; everything else (the URL, the secret, the deliveries) they read
-- inside the endpoint's tenant.
CREATE POLICY webhook_endpoints_platform_read ON webhook_endpoints FOR SELECT
    USING ((SELECT app.is_platform()));
CREATE POLICY webhook_endpoints_platform_lease ON webhook_endpoints FOR UPDATE
    USING ((SELECT app.is_platform())) WITH CHECK ((SELECT app.is_platform()));

ALTER TABLE webhook_deliveries ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhook_deliveries FORCE ROW LEVEL SECURITY;
CREATE POLICY webhook_deliveries_tenant ON webhook_deliveries
    USING (tenant_id = (SELECT app.current_tenant_id()))
    WITH CHECK (tenant_id = (SELECT app.current_tenant_id()));
-- The workers prune settled deliveries past their retention, for every tenant.
CREATE POLICY webhook_deliveries_platform_read ON webhook_deliveries FOR SELECT
    USING ((SELECT app.is_platform()));
CREATE POLICY webhook_deliveries_platform_prune ON webhook_deliveries FOR DELETE
    USING ((SELECT app.is_platform()));

GRANT SELECT, INSERT, UPDATE, DELETE ON webhook_endpoints, webhook_deliveries TO switchboard_runtime;
