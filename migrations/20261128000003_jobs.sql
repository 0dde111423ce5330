-- Jobs: one extraction run over a document, its status history, its result,
-- and the dead-letter record of a terminal failure. The queue entry that
-- drives a job lives in apalis's own table and is written in the same
-- transaction as the row here; this table is the source of truth.

CREATE TABLE jobs (
    id              uuid PRIMARY KEY,
    owner_id        uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    document_id     uuid NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    status          text NOT NULL CHECK (status IN ('queued', 'processing', 'succeeded', 'failed')),
    -- Attempts started so far; JOB_MAX_ATTEMPTS caps it (copied per job so a
    -- config change does not rewrite the fate of jobs in flight).
    attempts        integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts    integer NOT NULL CHECK (max_attempts >= 1),
    last_error      text,
    -- The client's Idempotency-Key, unique per owner until it expires.
    idempotency_key        text CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    idempotency_expires_at timestamptz,
    -- W3C trace context of the request that created the job.
    traceparent     text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    completed_at    timestamptz,
    CONSTRAINT jobs_owner_idempotency_key UNIQUE (owner_id, idempotency_key),
    CONSTRAINT jobs_idempotency_expiry CHECK ((idempotency_key IS NULL) = (idempotency_expires_at IS NULL))
);

CREATE INDEX jobs_owner_created_idx ON jobs (owner_id, created_at DESC, id DESC);
CREATE INDEX jobs_owner_status_created_idx ON jobs (owner_id, status, created_at DESC, id DESC);
CREATE INDEX jobs_document_idx ON jobs (document_id, created_at DESC);

-- Every status change, numbered per job, written in the transaction that
-- made it: the durable, ordered feed behind live status streams.
CREATE TABLE job_events (
    job_id     uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    seq        integer NOT NULL CHECK (seq >= 1),
    status     text NOT NULL CHECK (status IN ('queued', 'processing', 'retry_scheduled', 'succeeded', 'failed', 'requeued')),
    attempts   integer NOT NULL,
    error      text,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, seq)
);

-- One result per job, ever: a job that is run twice (a rescued orphan)
-- still writes its result once.
CREATE TABLE processing_results (
    job_id      uuid PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    document_id uuid NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    result      jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX processing_results_document_idx ON processing_results (document_id, created_at DESC);

-- Terminal failures, for operators. Written with the job's `failed` status.
CREATE TABLE dead_letter_jobs (
    job_id    uuid PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    reason    text NOT NULL CHECK (reason IN ('permanent', 'transient_exhausted', 'timeout', 'unhandled')),
    error     text NOT NULL,
    attempts  integer NOT NULL,
    failed_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX dead_letter_jobs_failed_at_idx ON dead_letter_jobs (failed_at DESC);
CREATE INDEX dead_letter_jobs_reason_idx ON dead_letter_jobs (reason, failed_at DESC);
