-- The X-Request-ID of the request that created the job, so the worker's log
-- lines for its runs carry it (issue #11: a request's jobs in the logs).
ALTER TABLE jobs ADD COLUMN request_id text;
