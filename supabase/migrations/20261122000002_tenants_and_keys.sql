-- The tenants registry and tenant API keys.
--
-- `tenants` is the platform's table: a tenant may read its own row (status and
-- limits), but only the platform path (app.platform = 'on', or Supabase's
-- service_role) lists, creates, changes or deletes tenants.
--
-- Limits are jsonb so a new limit needs no migration; the server merges them
-- over its configured defaults and validates them on the way in.

CREATE TABLE tenants (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    status      text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
    limits      jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(limits) = 'object'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenants FORCE ROW LEVEL SECURITY;

CREATE POLICY tenants_read_own ON tenants FOR SELECT
    USING (id = (SELECT app.current_tenant_id()) OR (SELECT app.is_platform()));
CREATE POLICY tenants_platform_insert ON tenants FOR INSERT
    WITH CHECK ((SELECT app.is_platform()));
CREATE POLICY tenants_platform_update ON tenants FOR UPDATE
    USING ((SELECT app.is_platform())) WITH CHECK ((SELECT app.is_platform()));
CREATE POLICY tenants_platform_delete ON tenants FOR DELETE
    USING ((SELECT app.is_platform()));

GRANT SELECT, INSERT, UPDATE, DELETE ON tenants TO switchboard_runtime;

-- API keys: `sb_…` shown once at creation; only a keyed hash (HMAC-SHA-256) is
-- stored. `prefix` is the first characters, for people to tell keys apart.
-- A key is looked up by hash before its tenant is known, which is the one
-- tenant-table read the platform path may make.
CREATE TABLE api_keys (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id     uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    prefix        text NOT NULL,
    key_hash      bytea NOT NULL UNIQUE,
    scopes        text[] NOT NULL DEFAULT '{read}'
                  CHECK (scopes <@ ARRAY['read', 'write', 'broadcast', 'admin']),
    created_by    uuid,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz,
    revoked_at    timestamptz,
    UNIQUE (tenant_id, id)
);

CREATE INDEX api_keys_tenant_created ON api_keys (tenant_id, created_at DESC, id DESC);

ALTER TABLE api_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE api_keys FORCE ROW LEVEL SECURITY;

CREATE POLICY api_keys_tenant ON api_keys
    USING (tenant_id = (SELECT app.current_tenant_id()))
    WITH CHECK (tenant_id = (SELECT app.current_tenant_id()));
CREATE POLICY api_keys_platform_lookup ON api_keys FOR SELECT
    USING ((SELECT app.is_platform()));

GRANT SELECT, INSERT, UPDATE, DELETE ON api_keys TO switchboard_runtime;
