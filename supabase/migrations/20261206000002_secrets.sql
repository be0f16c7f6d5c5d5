-- Tenant secrets, sealed with AES-256-GCM: each tenant's data key is stored
-- only wrapped by the master key (which never enters the database), and each
-- value only sealed by the data key, bound to its tenant, name and version.

CREATE TABLE tenant_data_keys (
    tenant_id      uuid PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    -- The master key that wrapped it, by id, so rotation knows what to re-wrap.
    master_key_id  text NOT NULL CHECK (length(master_key_id) BETWEEN 1 AND 64),
    wrapped_key    bytea NOT NULL CHECK (length(wrapped_key) = 60),
    created_at     timestamptz NOT NULL DEFAULT now(),
    rewrapped_at   timestamptz
);

CREATE TABLE secrets (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id    uuid NOT NULL REFERENCES tenant_data_keys (tenant_id) ON DELETE CASCADE,
    name         text NOT NULL CHECK (name ~ '^[A-Za-z_][A-Za-z0-9_.-]{0,127}$'),
    description  text NOT NULL DEFAULT '' CHECK (length(description) <= 1000),
    -- Each new value adds one; the value is sealed for its version.
    version      integer NOT NULL DEFAULT 1 CHECK (version > 0),
    ciphertext   bytea NOT NULL,
    created_by   text,
    updated_by   text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name)
);

-- A tenant reads its data key and stores its first; it never changes or
-- deletes one (a key overwritten would make every secret unreadable).
ALTER TABLE tenant_data_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenant_data_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_data_keys_tenant_read ON tenant_data_keys FOR SELECT
    USING (tenant_id = (SELECT app.current_tenant_id()));
CREATE POLICY tenant_data_keys_tenant_add ON tenant_data_keys FOR INSERT
    WITH CHECK (tenant_id = (SELECT app.current_tenant_id()));
-- Re-wrapping under a new master key runs on the platform path: it reads and
-- replaces wrapped keys (useless without the master key), never a value, and
-- may change nothing else (the column grant below).
CREATE POLICY tenant_data_keys_platform_read ON tenant_data_keys FOR SELECT
    USING ((SELECT app.is_platform()));
CREATE POLICY tenant_data_keys_platform_rewrap ON tenant_data_keys FOR UPDATE
    USING ((SELECT app.is_platform())) WITH CHECK ((SELECT app.is_platform()));

ALTER TABLE secrets ENABLE ROW LEVEL SECURITY;
ALTER TABLE secrets FORCE ROW LEVEL SECURITY;
CREATE POLICY secrets_tenant ON secrets
    USING (tenant_id = (SELECT app.current_tenant_id()))
    WITH CHECK (tenant_id = (SELECT app.current_tenant_id()));

GRANT SELECT, INSERT ON tenant_data_keys TO switchboard_runtime;
GRANT UPDATE (master_key_id, wrapped_key, rewrapped_at) ON tenant_data_keys TO switchboard_runtime;
GRANT SELECT, INSERT, UPDATE, DELETE ON secrets TO switchboard_runtime;

-- API keys may carry `secrets`: the one scope that reads a secret's value
-- (`admin` does not imply it).
ALTER TABLE api_keys DROP CONSTRAINT api_keys_scopes_check;
ALTER TABLE api_keys ADD CONSTRAINT api_keys_scopes_check
    CHECK (scopes <@ ARRAY['read', 'write', 'broadcast', 'admin', 'secrets']);
