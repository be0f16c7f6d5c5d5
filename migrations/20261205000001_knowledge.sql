-- Knowledge: documents per project and their chunks (text, a full-text vector,
-- an embedding), memories per user, and the queue of embedding jobs that any
-- node works.
--
-- Embeddings are stored untyped (`vector`) with the model and its dimensions
-- beside them, so a tenant's chunks can move to another model (re-embedded in
-- the background) without a schema change; the HNSW index covers one
-- dimension count through an expression index (`embedding::vector(384)`,
-- `WHERE dims = 384`), which is what the built-in model produces. A provider
-- with other dimensions is searched exactly until an index for them is added.

CREATE TABLE documents (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id        uuid NOT NULL,
    project_id       uuid NOT NULL,
    title            text NOT NULL CHECK (length(title) BETWEEN 1 AND 500),
    source           text CHECK (length(source) <= 2000),
    content_type     text NOT NULL CHECK (content_type IN ('text/plain', 'text/markdown', 'application/json')),
    metadata         jsonb NOT NULL DEFAULT '{}'::jsonb,
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'processing', 'ready', 'failed')),
    progress         real NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 1),
    error            text,
    checksum         text NOT NULL CHECK (checksum ~ '^[0-9a-f]{64}$'),
    content          text NOT NULL,
    bytes            integer NOT NULL CHECK (bytes >= 0),
    chunk_count      integer NOT NULL DEFAULT 0 CHECK (chunk_count >= 0),
    model            text,
    idempotency_key  text CHECK (length(idempotency_key) BETWEEN 1 AND 200),
    idempotency_fingerprint bytea CHECK (octet_length(idempotency_fingerprint) = 32),
    created_by       uuid,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, id),
    UNIQUE (tenant_id, idempotency_key),
    FOREIGN KEY (tenant_id, project_id) REFERENCES projects (tenant_id, id) ON DELETE CASCADE
);

CREATE INDEX documents_tenant_project ON documents (tenant_id, project_id, created_at DESC, id DESC);

CREATE TABLE chunks (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id    uuid NOT NULL,
    project_id   uuid NOT NULL,
    document_id  uuid NOT NULL,
    position     integer NOT NULL CHECK (position >= 0),
    heading      text NOT NULL DEFAULT '',
    content      text NOT NULL,
    token_count  integer NOT NULL CHECK (token_count >= 0),
    embedding    vector,
    model        text,
    dims         integer CHECK (dims > 0),
    tsv          tsvector GENERATED ALWAYS AS (
                     setweight(to_tsvector('english', heading), 'A') || setweight(to_tsvector('english', content), 'B')
                 ) STORED,
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, id),
    UNIQUE (tenant_id, document_id, position),
    FOREIGN KEY (tenant_id, document_id) REFERENCES documents (tenant_id, id) ON DELETE CASCADE,
    CHECK ((embedding IS NULL) = (dims IS NULL) AND (embedding IS NULL) = (model IS NULL)),
    CHECK (embedding IS NULL OR vector_dims(embedding) = dims)
);

CREATE INDEX chunks_tenant_document ON chunks (tenant_id, document_id, position);
CREATE INDEX chunks_tenant_project ON chunks (tenant_id, project_id);
CREATE INDEX chunks_tsv ON chunks USING gin (tsv);
CREATE INDEX chunks_embedding_384 ON chunks USING hnsw ((embedding::vector(384)) vector_cosine_ops) WHERE dims = 384;

CREATE TABLE memories (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id    uuid NOT NULL,
    user_id      uuid NOT NULL,
    project_id   uuid,
    content      text NOT NULL CHECK (length(content) BETWEEN 1 AND 8000),
    tags         text[] NOT NULL DEFAULT '{}' CHECK (cardinality(tags) <= 32),
    importance   real NOT NULL DEFAULT 0.5 CHECK (importance BETWEEN 0 AND 1),
    expires_at   timestamptz,
    embedding    vector,
    model        text,
    dims         integer CHECK (dims > 0),
    tsv          tsvector GENERATED ALWAYS AS (to_tsvector('english', content)) STORED,
    created_by   uuid,
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, id),
    FOREIGN KEY (tenant_id, project_id) REFERENCES projects (tenant_id, id) ON DELETE CASCADE,
    CHECK ((embedding IS NULL) = (dims IS NULL) AND (embedding IS NULL) = (model IS NULL)),
    CHECK (embedding IS NULL OR vector_dims(embedding) = dims)
);

CREATE INDEX memories_tenant_user ON memories (tenant_id, user_id, created_at DESC, id DESC);
CREATE INDEX memories_tsv ON memories USING gin (tsv);

-- One job per document or memory to embed. A node claims jobs with
-- FOR UPDATE SKIP LOCKED and holds each for a lease (`locked_until`) it
-- renews while it works; a job whose node died is claimed again once its lease
-- has run out. `attempts` counts claims that ended in an error; past the limit
-- the job is `dead` and its document `failed`.
CREATE TABLE embedding_jobs (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id     uuid NOT NULL,
    document_id   uuid,
    memory_id     uuid,
    status        text NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'running', 'done', 'dead')),
    attempts      integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    run_after     timestamptz NOT NULL DEFAULT now(),
    locked_by     text,
    locked_until  timestamptz,
    last_error    text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, id),
    CHECK (num_nonnulls(document_id, memory_id) = 1),
    FOREIGN KEY (tenant_id, document_id) REFERENCES documents (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, memory_id) REFERENCES memories (tenant_id, id) ON DELETE CASCADE
);

CREATE INDEX embedding_jobs_due ON embedding_jobs (run_after) WHERE status IN ('queued', 'running');
CREATE UNIQUE INDEX embedding_jobs_one_open_per_document ON embedding_jobs (tenant_id, document_id)
    WHERE status IN ('queued', 'running') AND document_id IS NOT NULL;
CREATE UNIQUE INDEX embedding_jobs_one_open_per_memory ON embedding_jobs (tenant_id, memory_id)
    WHERE status IN ('queued', 'running') AND memory_id IS NOT NULL;

ALTER TABLE documents ENABLE ROW LEVEL SECURITY;
ALTER TABLE documents FORCE ROW LEVEL SECURITY;
CREATE POLICY documents_tenant ON documents
    USING (tenant_id = (SELECT app.current_tenant_id()))
    WITH CHECK (tenant_id = (SELECT app.current_tenant_id()));
-- The re-embedding sweep finds documents of an older model on every tenant.
CREATE POLICY documents_platform_read ON documents FOR SELECT USING ((SELECT app.is_platform()));

ALTER TABLE chunks ENABLE ROW LEVEL SECURITY;
ALTER TABLE chunks FORCE ROW LEVEL SECURITY;
CREATE POLICY chunks_tenant ON chunks
    USING (tenant_id = (SELECT app.current_tenant_id()))
    WITH CHECK (tenant_id = (SELECT app.current_tenant_id()));

-- A member sees and changes only their own memories; owners, admins and API
-- keys (agents acting for users) see the tenant's.
ALTER TABLE memories ENABLE ROW LEVEL SECURITY;
ALTER TABLE memories FORCE ROW LEVEL SECURITY;
CREATE POLICY memories_tenant ON memories
    USING (tenant_id = (SELECT app.current_tenant_id())
           AND ((SELECT app.current_role()) IN ('owner', 'admin', 'service') OR user_id = (SELECT app.current_user_id())))
    WITH CHECK (tenant_id = (SELECT app.current_tenant_id())
           AND ((SELECT app.current_role()) IN ('owner', 'admin', 'service') OR user_id = (SELECT app.current_user_id())));
CREATE POLICY memories_platform_read ON memories FOR SELECT USING ((SELECT app.is_platform()));

-- Tenants enqueue their own jobs; the platform path claims and settles them
-- for every tenant (it never reads their content through this table).
ALTER TABLE embedding_jobs ENABLE ROW LEVEL SECURITY;
ALTER TABLE embedding_jobs FORCE ROW LEVEL SECURITY;
CREATE POLICY embedding_jobs_tenant ON embedding_jobs
    USING (tenant_id = (SELECT app.current_tenant_id()))
    WITH CHECK (tenant_id = (SELECT app.current_tenant_id()));
CREATE POLICY embedding_jobs_platform ON embedding_jobs
    USING ((SELECT app.is_platform())) WITH CHECK ((SELECT app.is_platform()));

GRANT SELECT, INSERT, UPDATE, DELETE ON documents, chunks, memories, embedding_jobs TO switchboard_runtime;
