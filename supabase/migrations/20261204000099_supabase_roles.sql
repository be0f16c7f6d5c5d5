-- Supabase only: what PostgREST's roles may do, table by table.
--
-- The server runs as its own role and enforces roles and visibility in its
-- handlers; a Supabase client goes straight to the tables as `authenticated`
-- (or `anon`), with the verified JWT in request.jwt.claims. So here the grants
-- and policies themselves must say what a member may read and write: the same
-- as the REST API allows, or less.
--
-- * `anon` gets nothing, on any table or function.
-- * `authenticated` gets no blanket grant (the earlier file's membership in
--   switchboard_runtime is revoked, and Supabase's default privileges, which
--   grant everything on new tables to anon and authenticated, are revoked for
--   tables made from now on), only the privileges below, and on top of the
--   tenant policies, RESTRICTIVE policies that add the role and visibility
--   rules REST enforces:
--     - tenants: read its own;
--     - api_keys: owners and admins read names, prefixes and scopes (never the
--       hash); nobody writes them (keys are made and revoked through the
--       server, which holds the secret that hashes them and tells every node
--       of a revocation);
--     - projects: members read, create and rename; deleting one that holds
--       private conversations the caller cannot see is refused;
--     - conversations: read the visible ones (public, created by, participant
--       of, or any for owners and admins); create as themselves; delete their
--       own (owners and admins: any);
--     - conversation_participants: read one's own (owners and admins: all);
--       only a conversation's creator (or an owner or admin) adds participants;
--     - messages: read those of visible conversations; write as themselves
--       (sender_kind `user`) into visible conversations; never edit or delete;
--     - agent_runs, agent_steps, tool_calls: read those not tied to a private
--       conversation the caller cannot see; runs are created and moved by
--       workers through REST (the state machine and usage accounting live
--       there);
--     - audit_logs: owners and admins read; nobody writes, edits or deletes;
--     - usage_metrics: read;
--     - cache_invalidations: nothing.
-- * `service_role` is Supabase's administrative role and keeps the server's
--   grants.

REVOKE switchboard_runtime FROM authenticated;
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM anon, authenticated;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM anon, authenticated;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA app FROM anon, authenticated, PUBLIC;
REVOKE ALL ON SCHEMA app FROM anon;
ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE ALL ON TABLES FROM anon, authenticated;
ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE ALL ON SEQUENCES FROM anon, authenticated;
ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE ALL ON FUNCTIONS FROM anon, authenticated;

-- The functions the policies call run as the caller.
GRANT USAGE ON SCHEMA app TO authenticated;
GRANT EXECUTE ON FUNCTION app.jwt_claims(), app.try_uuid(text), app.current_tenant_id(),
    app.current_user_id(), app.current_role(), app.is_platform(),
    app.hidden_private_conversations(uuid) TO authenticated;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA app TO switchboard_runtime;

-- Whether the caller is one of the tenant's owners or admins.
CREATE OR REPLACE FUNCTION app.is_tenant_admin() RETURNS boolean
LANGUAGE sql STABLE AS $$
  SELECT (SELECT app.current_role()) IN ('owner', 'admin')
$$;
REVOKE ALL ON FUNCTION app.is_tenant_admin() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app.is_tenant_admin() TO authenticated, switchboard_runtime;

-- Whether the caller can see the conversation (the conversations policy does
-- the work: the subquery runs under it).
CREATE OR REPLACE FUNCTION app.sees_conversation(tenant uuid, conversation uuid) RETURNS boolean
LANGUAGE sql STABLE AS $$
  SELECT EXISTS (SELECT 1 FROM conversations c WHERE c.tenant_id = tenant AND c.id = conversation)
$$;
REVOKE ALL ON FUNCTION app.sees_conversation(uuid, uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app.sees_conversation(uuid, uuid) TO authenticated, switchboard_runtime;

-- Whether the caller created the conversation. (A function, so that a policy
-- of conversation_participants can ask without naming conversations, whose own
-- policy reads conversation_participants.)
CREATE OR REPLACE FUNCTION app.created_conversation(tenant uuid, conversation uuid) RETURNS boolean
LANGUAGE sql STABLE AS $$
  SELECT EXISTS (SELECT 1 FROM conversations c
                  WHERE c.tenant_id = tenant AND c.id = conversation
                    AND c.created_by = (SELECT app.current_user_id()))
$$;
REVOKE ALL ON FUNCTION app.created_conversation(uuid, uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app.created_conversation(uuid, uuid) TO authenticated, switchboard_runtime;

-- Whether the caller can see the run (and so its steps and tool calls).
CREATE OR REPLACE FUNCTION app.sees_run(tenant uuid, run uuid) RETURNS boolean
LANGUAGE sql STABLE AS $$
  SELECT EXISTS (
    SELECT 1 FROM agent_runs r
     WHERE r.tenant_id = tenant AND r.id = run
       AND (r.conversation_id IS NULL OR app.sees_conversation(r.tenant_id, r.conversation_id)))
$$;
REVOKE ALL ON FUNCTION app.sees_run(uuid, uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app.sees_run(uuid, uuid) TO authenticated, switchboard_runtime;

-- tenants
GRANT SELECT ON tenants TO authenticated;

-- api_keys: never the hash; only revoking changes a key.
GRANT SELECT (id, tenant_id, name, prefix, scopes, created_by, created_at, last_used_at, revoked_at)
    ON api_keys TO authenticated;
CREATE POLICY api_keys_admins_only ON api_keys AS RESTRICTIVE FOR SELECT TO authenticated
    USING ((SELECT app.is_tenant_admin()));

-- projects
GRANT SELECT, INSERT, UPDATE, DELETE ON projects TO authenticated;
CREATE POLICY projects_delete_what_one_sees ON projects AS RESTRICTIVE FOR DELETE TO authenticated
    USING ((SELECT app.is_tenant_admin()) OR app.hidden_private_conversations(id) = 0);

-- conversations (the tenant policy already hides private ones from others)
GRANT SELECT, INSERT, DELETE ON conversations TO authenticated;
CREATE POLICY conversations_created_as_oneself ON conversations AS RESTRICTIVE FOR INSERT TO authenticated
    WITH CHECK (created_by = (SELECT app.current_user_id()));
CREATE POLICY conversations_deleted_by_their_creator ON conversations AS RESTRICTIVE FOR DELETE TO authenticated
    USING (created_by = (SELECT app.current_user_id()) OR (SELECT app.is_tenant_admin()));

-- conversation_participants
GRANT SELECT, INSERT ON conversation_participants TO authenticated;
-- (Not through conversations: their policy reads this table, so this one must not read theirs.)
CREATE POLICY participants_own_rows ON conversation_participants AS RESTRICTIVE FOR SELECT
    TO authenticated USING (user_id = (SELECT app.current_user_id()) OR (SELECT app.is_tenant_admin()));
CREATE POLICY participants_added_by_the_creator ON conversation_participants AS RESTRICTIVE FOR INSERT
    TO authenticated WITH CHECK (
        (SELECT app.is_tenant_admin()) OR app.created_conversation(tenant_id, conversation_id));

-- messages
GRANT SELECT ON messages TO authenticated;
GRANT INSERT (tenant_id, conversation_id, sender_id, sender_kind, content, metadata) ON messages TO authenticated;
CREATE POLICY messages_of_visible_conversations ON messages AS RESTRICTIVE FOR SELECT TO authenticated
    USING (app.sees_conversation(tenant_id, conversation_id));
CREATE POLICY messages_sent_as_oneself ON messages AS RESTRICTIVE FOR INSERT TO authenticated
    WITH CHECK (
        sender_id = (SELECT app.current_user_id())
        AND sender_kind = 'user'
        AND app.sees_conversation(tenant_id, conversation_id));

-- agent runs, steps, tool calls: read only.
GRANT SELECT ON agent_runs, agent_steps, tool_calls TO authenticated;
CREATE POLICY runs_outside_hidden_conversations ON agent_runs AS RESTRICTIVE FOR SELECT TO authenticated
    USING (conversation_id IS NULL OR app.sees_conversation(tenant_id, conversation_id));
CREATE POLICY steps_of_visible_runs ON agent_steps AS RESTRICTIVE FOR SELECT TO authenticated
    USING (app.sees_run(tenant_id, run_id));
CREATE POLICY tool_calls_of_visible_runs ON tool_calls AS RESTRICTIVE FOR SELECT TO authenticated
    USING (app.sees_run(tenant_id, run_id));

-- audit logs: owners and admins read.
GRANT SELECT ON audit_logs TO authenticated;
CREATE POLICY audit_logs_admins_only ON audit_logs AS RESTRICTIVE FOR SELECT TO authenticated
    USING ((SELECT app.is_tenant_admin()));

-- usage
GRANT SELECT ON usage_metrics TO authenticated;
