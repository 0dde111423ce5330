-- The worker's queue gauges (depth by status, oldest queued job) read only
-- the jobs that are still active. A partial index keeps that query small as
-- finished jobs pile up: it covers the few active rows, not the history.
CREATE INDEX jobs_active_status_updated_idx ON jobs (status, updated_at)
    WHERE status IN ('queued', 'processing');
