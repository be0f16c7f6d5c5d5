-- Steps report their cost beside their tokens, and steps and tool calls take an
-- idempotency key like runs and messages: a worker that retries a request with
-- the same key records nothing new.

ALTER TABLE agent_steps
    ADD COLUMN cost_usd numeric(14, 6) NOT NULL DEFAULT 0 CHECK (cost_usd >= 0),
    ADD COLUMN idempotency_key text CHECK (length(idempotency_key) BETWEEN 1 AND 200),
    ADD CONSTRAINT agent_steps_tenant_idempotency_key UNIQUE (tenant_id, idempotency_key);

ALTER TABLE tool_calls
    ADD COLUMN idempotency_key text CHECK (length(idempotency_key) BETWEEN 1 AND 200),
    ADD CONSTRAINT tool_calls_tenant_idempotency_key UNIQUE (tenant_id, idempotency_key);
