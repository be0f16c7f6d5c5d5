-- Supabase only: PostgREST runs requests as `authenticated` (and `service_role`),
-- so those roles get the application's grants. The policies are the same as the
-- server's: app.current_tenant_id() reads the tenant from request.jwt.claims
-- (`tenant_id`, else `app_metadata.tenant_id`), which is what auth.jwt() returns.
GRANT switchboard_runtime TO authenticated;
GRANT switchboard_runtime TO service_role;
