-- 1. A run of a conversation goes with it. A run shares its conversation's
--    visibility (only those who see the conversation see the run); with
--    ON DELETE SET NULL, deleting a private conversation left its runs tied to
--    nothing, so visible to the whole tenant.
ALTER TABLE agent_runs
    DROP CONSTRAINT agent_runs_tenant_id_conversation_id_fkey,
    ADD CONSTRAINT agent_runs_tenant_id_conversation_id_fkey
        FOREIGN KEY (tenant_id, conversation_id) REFERENCES conversations (tenant_id, id) ON DELETE CASCADE;

-- 2. Sizes the server caps, held by the schema too, for clients that write
--    directly (a Supabase project's): a project's description and metadata,
--    a message's metadata. The server's own caps are tighter (2,000
--    characters; 16 KiB of compact JSON); these are a backstop, measured on
--    Postgres's own text form of the JSON. NOT VALID: rows stored before are
--    left as they are, every new or changed row is checked.
ALTER TABLE projects
    ADD CONSTRAINT projects_description_length CHECK (length(description) <= 2000) NOT VALID,
    ADD CONSTRAINT projects_metadata_size CHECK (octet_length(metadata::text) <= 65536) NOT VALID;
ALTER TABLE messages
    ADD CONSTRAINT messages_metadata_size CHECK (octet_length(metadata::text) <= 65536) NOT VALID;

-- 3. One pending invalidation per namespace: a change while one is pending
--    moves its sequence number on (so every node sees it again) instead of
--    adding a row, so a flood of changes during an outage cannot bury a
--    revocation behind thousands of older rows.
CREATE SEQUENCE cache_invalidations_seq;
GRANT USAGE ON SEQUENCE cache_invalidations_seq TO switchboard_runtime;
ALTER TABLE cache_invalidations ADD COLUMN seq bigint NOT NULL DEFAULT nextval('cache_invalidations_seq');
DELETE FROM cache_invalidations a USING cache_invalidations b
 WHERE a.pushed_at IS NULL AND b.pushed_at IS NULL
   AND a.tenant_id = b.tenant_id AND a.kind = b.kind AND a.id < b.id;
CREATE UNIQUE INDEX cache_invalidations_one_pending ON cache_invalidations (tenant_id, kind) WHERE pushed_at IS NULL;
CREATE INDEX cache_invalidations_seq_idx ON cache_invalidations (seq);
