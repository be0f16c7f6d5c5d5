-- Tenant context: the one place row-level security learns who is asking.
--
-- The server runs every tenant-scoped statement inside a transaction that first
-- calls set_config('app.tenant_id', …, true) (and app.user_id, app.role); `true`
-- makes the setting local to the transaction, so a connection handed back to the
-- pool carries no tenant. Under Supabase, PostgREST puts the verified JWT in
-- request.jwt.claims instead, and the same functions read the tenant from the
-- claims (`tenant_id`, else `app_metadata.tenant_id`), so one set of policies
-- serves both.
--
-- The functions are STABLE and policies call them as `(SELECT app.f())`, which
-- Postgres evaluates once per statement (an InitPlan) rather than once per row.

CREATE EXTENSION IF NOT EXISTS vector;

CREATE SCHEMA IF NOT EXISTS app;

-- The claims of a Supabase request, or NULL outside PostgREST. A malformed
-- setting reads as no claims rather than an error: no claims means no rows.
CREATE OR REPLACE FUNCTION app.jwt_claims() RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
BEGIN
  RETURN NULLIF(current_setting('request.jwt.claims', true), '')::jsonb;
EXCEPTION WHEN others THEN
  RETURN NULL;
END
$$;

-- Text that is a UUID, else NULL (a forged claim must not raise, only match nothing).
CREATE OR REPLACE FUNCTION app.try_uuid(value text) RETURNS uuid
LANGUAGE sql IMMUTABLE AS $$
  SELECT CASE
    WHEN value ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN value::uuid
  END
$$;

-- The tenant every policy compares against. NULL (no context) matches no row.
CREATE OR REPLACE FUNCTION app.current_tenant_id() RETURNS uuid
LANGUAGE sql STABLE AS $$
  SELECT COALESCE(
    app.try_uuid(NULLIF(current_setting('app.tenant_id', true), '')),
    app.try_uuid(app.jwt_claims() ->> 'tenant_id'),
    app.try_uuid(app.jwt_claims() #>> '{app_metadata,tenant_id}')
  )
$$;

-- The user behind the request (JWT `sub`), when there is one.
CREATE OR REPLACE FUNCTION app.current_user_id() RETURNS uuid
LANGUAGE sql STABLE AS $$
  SELECT COALESCE(
    app.try_uuid(NULLIF(current_setting('app.user_id', true), '')),
    app.try_uuid(app.jwt_claims() ->> 'sub')
  )
$$;

-- The caller's role in its tenant: owner, admin, member, or service (an API key).
CREATE OR REPLACE FUNCTION app.current_role() RETURNS text
LANGUAGE sql STABLE AS $$
  SELECT COALESCE(
    NULLIF(current_setting('app.role', true), ''),
    app.jwt_claims() ->> 'tenant_role',
    app.jwt_claims() #>> '{app_metadata,tenant_role}',
    'member'
  )
$$;

-- True only on the server's platform path (the tenants registry, API-key lookup),
-- or for a Supabase service_role request.
CREATE OR REPLACE FUNCTION app.is_platform() RETURNS boolean
LANGUAGE sql STABLE AS $$
  SELECT COALESCE(current_setting('app.platform', true), '') = 'on'
      OR COALESCE(app.jwt_claims() ->> 'role', '') = 'service_role'
$$;

-- The grants live on a role that cannot log in; `switchboard migrate` makes the
-- application's login role a member of it. Nothing here owns a table.
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'switchboard_runtime') THEN
    CREATE ROLE switchboard_runtime NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
  END IF;
END
$$;

GRANT USAGE ON SCHEMA app TO switchboard_runtime;
GRANT USAGE ON SCHEMA public TO switchboard_runtime;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA app TO switchboard_runtime;
