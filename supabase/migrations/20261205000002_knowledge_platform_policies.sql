-- The platform path reads no tenant's documents or memories: the
-- re-embedding sweep now works tenant by tenant, inside each tenant. On the
-- job queue it only claims, renews and hands back jobs (SELECT and UPDATE);
-- tenants insert their own.

DROP POLICY documents_platform_read ON documents;
DROP POLICY memories_platform_read ON memories;

DROP POLICY embedding_jobs_platform ON embedding_jobs;
CREATE POLICY embedding_jobs_platform_read ON embedding_jobs FOR SELECT
    USING ((SELECT app.is_platform()));
CREATE POLICY embedding_jobs_platform_update ON embedding_jobs FOR UPDATE
    USING ((SELECT app.is_platform())) WITH CHECK ((SELECT app.is_platform()));
