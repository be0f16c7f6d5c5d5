-- Projects, conversations (with participants for private ones) and messages.
--
-- Every child carries tenant_id and points at its parent through (tenant_id, id),
-- so a row can never reference another tenant's parent, whatever the server does.
-- Every index leads with tenant_id: each access path starts from the tenant.

CREATE TABLE projects (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id    uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    description  text NOT NULL DEFAULT '',
    metadata     jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, id)
);

CREATE INDEX projects_tenant_created ON projects (tenant_id, created_at DESC, id DESC);

-- A public conversation is visible to every member of its tenant; a private one
-- to its participants, its creator, and the tenant's owners, admins and services.
CREATE TABLE conversations (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id   uuid NOT NULL,
    project_id  uuid NOT NULL,
    title       text NOT NULL DEFAULT '' CHECK (length(title) <= 500),
    visibility  text NOT NULL DEFAULT 'public' CHECK (visibility IN ('public', 'private')),
    created_by  uuid,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, id),
    FOREIGN KEY (tenant_id, project_id) REFERENCES projects (tenant_id, id) ON DELETE CASCADE
);

CREATE INDEX conversations_tenant_project ON conversations (tenant_id, project_id, created_at DESC, id DESC);

CREATE TABLE conversation_participants (
    tenant_id        uuid NOT NULL,
    conversation_id  uuid NOT NULL,
    user_id          uuid NOT NULL,
    added_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, conversation_id, user_id),
    FOREIGN KEY (tenant_id, conversation_id) REFERENCES conversations (tenant_id, id) ON DELETE CASCADE
);

CREATE INDEX conversation_participants_user ON conversation_participants (tenant_id, user_id);

-- Messages: deleting a conversation deletes its messages. `seq` orders messages
-- within the tenant for cursor pagination without relying on clock ties.
CREATE TABLE messages (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id        uuid NOT NULL,
    conversation_id  uuid NOT NULL,
    seq              bigint GENERATED ALWAYS AS IDENTITY,
    sender_id        uuid,
    sender_kind      text NOT NULL DEFAULT 'user' CHECK (sender_kind IN ('user', 'agent', 'system')),
    content          text NOT NULL CHECK (length(content) BETWEEN 1 AND 65536),
    metadata         jsonb NOT NULL DEFAULT '{}'::jsonb,
    idempotency_key  text CHECK (length(idempotency_key) BETWEEN 1 AND 200),
    created_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, id),
    UNIQUE (tenant_id, idempotency_key),
    FOREIGN KEY (tenant_id, conversation_id) REFERENCES conversations (tenant_id, id) ON DELETE CASCADE
);

CREATE INDEX messages_tenant_conversation_seq ON messages (tenant_id, conversation_id, seq DESC);

ALTER TABLE projects ENABLE ROW LEVEL SECURITY;
ALTER TABLE projects FORCE ROW LEVEL SECURITY;
CREATE POLICY projects_tenant ON projects
    USING (tenant_id = (SELECT app.current_tenant_id()))
    WITH CHECK (tenant_id = (SELECT app.current_tenant_id()));

ALTER TABLE conversations ENABLE ROW LEVEL SECURITY;
ALTER TABLE conversations FORCE ROW LEVEL SECURITY;
CREATE POLICY conversations_tenant ON conversations
    USING (
        tenant_id = (SELECT app.current_tenant_id())
        AND (
            visibility = 'public'
            OR (SELECT app.current_role()) IN ('owner', 'admin', 'service')
            OR created_by = (SELECT app.current_user_id())
            OR EXISTS (
                SELECT 1 FROM conversation_participants p
                WHERE p.tenant_id = conversations.tenant_id
                  AND p.conversation_id = conversations.id
                  AND p.user_id = (SELECT app.current_user_id())
            )
        )
    )
    WITH CHECK (tenant_id = (SELECT app.current_tenant_id()));

ALTER TABLE conversation_participants ENABLE ROW LEVEL SECURITY;
ALTER TABLE conversation_participants FORCE ROW LEVEL SECURITY;
CREATE POLICY conversation_participants_tenant ON conversation_participants
    USING (tenant_id = (SELECT app.current_tenant_id()))
    WITH CHECK (tenant_id = (SELECT app.current_tenant_id()));

ALTER TABLE messages ENABLE ROW LEVEL SECURITY;
ALTER TABLE messages FORCE ROW LEVEL SECURITY;
CREATE POLICY messages_tenant ON messages
    USING (tenant_id = (SELECT app.current_tenant_id()))
    WITH CHECK (tenant_id = (SELECT app.current_tenant_id()));

GRANT SELECT, INSERT, UPDATE, DELETE ON projects, conversations, conversation_participants, messages
    TO switchboard_runtime;
