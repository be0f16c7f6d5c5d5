-- Three changes that keep one tenant, or one member, from reaching what is not theirs.
--
-- 1. Idempotent writes store the fingerprint of the whole request beside its key
--    (SHA-256 of the request's kind, its sender and every field, computed by the
--    server). A retry with the same key replays only if its fingerprint is the
--    same; any other request under that key is a conflict. Keys recorded before
--    this migration have no fingerprint and so cannot prove a retry is the same
--    request: they answer a conflict.
ALTER TABLE messages
    ADD COLUMN idempotency_fingerprint bytea CHECK (octet_length(idempotency_fingerprint) = 32);
ALTER TABLE agent_runs
    ADD COLUMN idempotency_fingerprint bytea CHECK (octet_length(idempotency_fingerprint) = 32);
ALTER TABLE agent_steps
    ADD COLUMN idempotency_fingerprint bytea CHECK (octet_length(idempotency_fingerprint) = 32);
ALTER TABLE tool_calls
    ADD COLUMN idempotency_fingerprint bytea CHECK (octet_length(idempotency_fingerprint) = 32);

-- 2. A project's private conversations that the caller cannot see. Deleting a
--    project cascades into its conversations, and referential actions ignore
--    row-level security, so a member could otherwise delete private
--    conversations they have never seen. The count is taken with the caller's
--    tenant (RLS still applies) but an admin's view of visibility, set for the
--    one statement and put back, and only the count leaves the function.
CREATE OR REPLACE FUNCTION app.hidden_private_conversations(project uuid) RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  prior text := current_setting('app.role', true);
  hidden bigint;
BEGIN
  PERFORM set_config('app.role', 'admin', true);
  SELECT count(*) INTO hidden
    FROM conversations c
   WHERE c.tenant_id = (SELECT app.current_tenant_id())
     AND c.project_id = project
     AND c.visibility = 'private'
     AND c.created_by IS DISTINCT FROM (SELECT app.current_user_id())
     AND NOT EXISTS (
           SELECT 1 FROM conversation_participants p
            WHERE p.tenant_id = c.tenant_id AND p.conversation_id = c.id
              AND p.user_id = (SELECT app.current_user_id()));
  PERFORM set_config('app.role', COALESCE(prior, ''), true);
  RETURN hidden;
EXCEPTION WHEN OTHERS THEN
  PERFORM set_config('app.role', COALESCE(prior, ''), true);
  RAISE;
END
$$;
REVOKE ALL ON FUNCTION app.hidden_private_conversations(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app.hidden_private_conversations(uuid) TO switchboard_runtime;

-- 3. Cache invalidations that could not reach Redis (it was down or cut off
--    when an API key was revoked or a tenant suspended). Nodes poll this table,
--    so the change holds on every node while Redis is away, and push it to
--    Redis once it is back, so entries cached before the outage are never read
--    again. A platform table: only the server's platform path reads or writes it.
CREATE TABLE cache_invalidations (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The namespace's tenant (the nil UUID for platform-wide namespaces).
    tenant_id   uuid NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('tenant', 'api_key', 'authz', 'run')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- Set once a node has bumped the namespace's version in Redis.
    pushed_at   timestamptz
);

CREATE INDEX cache_invalidations_pending ON cache_invalidations (id) WHERE pushed_at IS NULL;

ALTER TABLE cache_invalidations ENABLE ROW LEVEL SECURITY;
ALTER TABLE cache_invalidations FORCE ROW LEVEL SECURITY;
CREATE POLICY cache_invalidations_platform ON cache_invalidations
    USING ((SELECT app.is_platform())) WITH CHECK ((SELECT app.is_platform()));

GRANT SELECT, INSERT, UPDATE, DELETE ON cache_invalidations TO switchboard_runtime;
