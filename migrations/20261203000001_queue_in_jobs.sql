-- The jobs row is the queue entry (issue #14). Until now a job's state lived
-- in two tables, ours and apalis-postgres's `apalis.jobs`, kept in step by a
-- keep-alive, a pruner and a supervisor. From here on:
--   - a job is claimable while it is `queued`, due (`run_at`) and unleased;
--   - a claim leases it to a worker process (`lease_owner`) under a new run
--     id and counts the attempt; it stays `queued` until the run starts;
--   - `processing` means the run started (written by the worker, with its
--     event), so a rescue after a crash knows whether the attempt was used.
-- See docs/queue.md for the design.

-- Cancellation is a final state (POST /jobs/{id}/cancel).
ALTER TABLE jobs DROP CONSTRAINT jobs_status_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_status_check
    CHECK (status IN ('queued', 'processing', 'succeeded', 'failed', 'cancelled'));
ALTER TABLE job_events DROP CONSTRAINT job_events_status_check;
ALTER TABLE job_events ADD CONSTRAINT job_events_status_check
    CHECK (status IN ('queued', 'processing', 'retry_scheduled', 'succeeded', 'failed', 'requeued', 'cancelled'));

ALTER TABLE jobs
    -- When a queued job may run: now for a new job, the backoff for a retry.
    ADD COLUMN run_at       timestamptz NOT NULL DEFAULT now(),
    -- Higher runs first among one owner's jobs (POST /jobs `priority`).
    ADD COLUMN priority     smallint NOT NULL DEFAULT 0 CHECK (priority BETWEEN -10 AND 10),
    -- The current run while leased: every write a run makes is guarded by
    -- it, so a run that was rescued, cancelled or requeued records nothing.
    ADD COLUMN run_id       uuid,
    -- The worker process (queue_workers.id) that holds the run.
    ADD COLUMN lease_owner  uuid,
    ADD COLUMN claimed_at   timestamptz,
    -- The number of the job's latest event: the next one takes it + 1, so a
    -- batch of transitions numbers its events without reading job_events.
    ADD COLUMN event_seq    integer NOT NULL DEFAULT 0 CHECK (event_seq >= 0);

-- Runs in flight under the old queue get a run id and a lease nobody holds
-- (the nil id), so the first leader rescues them like a dead worker's.
UPDATE jobs SET run_id = gen_random_uuid(),
                lease_owner = '00000000-0000-0000-0000-000000000000',
                claimed_at = updated_at
WHERE status = 'processing';
ALTER TABLE jobs
    ADD CONSTRAINT jobs_lease_has_run CHECK ((run_id IS NULL) = (lease_owner IS NULL)),
    ADD CONSTRAINT jobs_running_is_leased CHECK (status <> 'processing' OR lease_owner IS NOT NULL),
    ADD CONSTRAINT jobs_lease_is_active CHECK (lease_owner IS NULL OR status IN ('queued', 'processing'));

UPDATE jobs SET event_seq = coalesce((SELECT max(seq) FROM job_events e WHERE e.job_id = jobs.id), 0);

-- Indexes. A claim changes no indexed column (not even one named in an
-- index predicate), so Postgres rewrites the row in place (a HOT update:
-- no index entry written); the table leaves room on each page for it. A
-- status change writes a new version into every index whose predicate it
-- matches, which the partial indexes keep small.
ALTER TABLE jobs SET (fillfactor = 75);
-- The claim: per owner, queued jobs by priority then age (leased ones are
-- skipped by the scan; there are at most as many as workers hold). Its
-- leading column also serves the loose scan over owners.
CREATE INDEX jobs_claim_idx ON jobs (owner_id, priority DESC, run_at, id) WHERE status = 'queued';
-- Runs in progress: rescue, gauges.
CREATE INDEX jobs_processing_idx ON jobs (owner_id) WHERE status = 'processing';
-- Lists filtered by status. Failures and cancellations are rare and final,
-- so their index never churns; queued and running jobs are found through
-- the claim and processing indexes, successes (the bulk of any history)
-- through jobs_owner_created_idx. An index that every job passes through
-- is left mostly empty by the queue draining, and then looks so expensive
-- to the planner that it prefers scanning the table.
DROP INDEX jobs_owner_status_created_idx;
CREATE INDEX jobs_owner_final_status_idx ON jobs (owner_id, status, created_at DESC, id DESC)
    WHERE status IN ('failed', 'cancelled');
-- The queue gauges read the claim and processing indexes now.
DROP INDEX jobs_active_status_updated_idx;
-- Idempotency keys are rare; rows without one need no entry.
ALTER TABLE jobs DROP CONSTRAINT jobs_owner_idempotency_key;
CREATE UNIQUE INDEX jobs_owner_idempotency_key ON jobs (owner_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- How many of each owner's jobs are leased (claimed or running), for the
-- per-owner cap at claim time: leases taken minus leases given back, kept
-- by the statements that take and give them (claim; the batched outcomes
-- and cancel), in their own transactions. Taken and given back are rows
-- of their own, so a claim and a completer never wait for each other's
-- row lock. (An index on the lease itself would cost every claim its
-- in-place update.)
CREATE TABLE queue_owner_load (
    owner_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    counter  text NOT NULL CHECK (counter IN ('taken', 'returned')),
    leases   bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (owner_id, counter)
);
INSERT INTO queue_owner_load (owner_id, counter, leases)
SELECT owner_id, 'taken', count(*) FROM jobs WHERE lease_owner IS NOT NULL GROUP BY owner_id;

-- A result is written in the same statement that moves its job, for the
-- job it moves, so its reference to the job needs no check; the check (a
-- row lock on the job just updated) cost the batched write more than all
-- its other work. A job is deleted only with its document (or its owner),
-- whose cascade removes the result too.
ALTER TABLE processing_results DROP CONSTRAINT processing_results_job_id_fkey;

-- One row per live worker process, renewed by its heartbeat on a connection
-- of its own. A lease whose heartbeat is older than the TTL belongs to a
-- process that is gone; the leader rescues its jobs and deletes the row.
CREATE TABLE queue_workers (
    id           uuid PRIMARY KEY,
    hostname     text NOT NULL,
    pid          integer NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now()
);
-- The old queue's runs in flight (leased to the nil id above) belong to a
-- worker that is gone.
INSERT INTO queue_workers (id, hostname, pid, heartbeat_at)
SELECT '00000000-0000-0000-0000-000000000000', 'before the queue core', 0, '-infinity'
WHERE EXISTS (SELECT 1 FROM jobs WHERE lease_owner IS NOT NULL);

-- Entries waiting in apalis-postgres's table become due times on our rows,
-- once; then its schema goes.
DO $$
BEGIN
    IF to_regclass('apalis.jobs') IS NOT NULL THEN
        UPDATE jobs j
        SET run_at = greatest(j.run_at, a.run_at)
        FROM apalis.jobs a
        WHERE a.job_type = 'docflow.process_document'
          AND a.status IN ('Pending', 'Queued', 'Failed')
          AND j.status = 'queued'
          AND j.id = (convert_from(a.job, 'UTF8')::jsonb ->> 'job_id')::uuid;
        DROP SCHEMA apalis CASCADE;
    END IF;
END;
$$;

