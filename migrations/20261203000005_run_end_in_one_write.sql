-- Recording a run's end writes fewer rows (issue #14). A no-op run cost a
-- job update, two event rows and a result row, each with index entries and
-- foreign-key checks; graphile-worker's costs one update and one delete.
-- See docs/queue.md.

-- A job's result is a column of its row, written by the update that marks
-- it succeeded: one heap write instead of a row in another table with two
-- indexes and a check against `documents`. A job succeeds once, ever (only
-- failed and cancelled jobs are requeued), so it holds at most one. A large
-- result is stored out of line by Postgres (TOAST), and the lists never
-- read the column.
ALTER TABLE jobs ADD COLUMN result jsonb;
UPDATE jobs j SET result = r.result FROM processing_results r WHERE r.job_id = j.id;
DROP TABLE processing_results;

-- A run that starts and ends before its start is written (within the
-- worker's start-mark delay) records both events on one row: the row of
-- its end (`seq`) also stands for its `processing` event (`seq - 1`, at
-- `processing_at`). Readers expand it (`db::job_events`), so a client sees
-- the same numbered history as before.
ALTER TABLE job_events
    ADD COLUMN processing_at timestamptz,
    ADD CONSTRAINT job_events_processing_before CHECK (processing_at IS NULL OR seq >= 2);
