// No-op throughput of graphile-worker, to set beside DocFlow's queue benchmark
// (`cargo bench --bench queue`, figure (b)) on the same Postgres.
//
// N jobs are queued in bulk, then an in-process worker with a handler that
// does nothing drains them; the clock runs from just before the worker starts
// until the last job is gone from the jobs table (graphile-worker deletes a
// job when it succeeds), so start-up is included, as in DocFlow's bench.
//
// Env: DATABASE_URL (default the local server), BENCH_NOOP_JOBS (20000),
// BENCH_RUNS (runs per configuration, 2).

import { EventEmitter } from "node:events";
import { createRequire } from "node:module";
import pg from "pg";
import { Logger, makeWorkerUtils, run } from "graphile-worker";

const VERSION = createRequire(import.meta.url)("graphile-worker/package.json").version;
const ADMIN_URL = process.env.DATABASE_URL || "postgres://postgres@127.0.0.1:5432/postgres";
const N = Number(process.env.BENCH_NOOP_JOBS || 20000);
const RUNS = Number(process.env.BENCH_RUNS || 2);
const TIMEOUT_MS = 10 * 60 * 1000;

const CONFIGS = [
  // Nothing set: concurrency 1, pool of 10, no local queue, one completion
  // query per job.
  { label: "default", options: {} },
  // The configuration graphile-worker's own performance page uses
  // (https://worker.graphile.org/docs/performance): jobs fetched and locked
  // 500 at a time, completions batched. These are preset options; `run()`
  // takes them under `preset.worker`.
  {
    label: "tuned",
    options: {
      preset: {
        worker: {
          concurrentJobs: 24,
          maxPoolSize: 25,
          localQueue: { size: 500 },
          completeJobBatchDelay: 0,
          failJobBatchDelay: 0,
        },
      },
    },
  },
];

// graphile-worker logs every job at info level; the numbers are all we print.
const logger = new Logger(() => () => {});

// A database of our own, so nothing else's tables or load are in the way.
const dbName = `graphile_bench_${process.pid}`;
const admin = new pg.Client({ connectionString: ADMIN_URL });
await admin.connect();
await admin.query(`CREATE DATABASE ${dbName}`); // name: fixed prefix + pid
const url = new URL(ADMIN_URL);
url.pathname = `/${dbName}`;
const connectionString = url.toString();

let failed = false;
try {
  const utils = await makeWorkerUtils({ connectionString, logger });
  try {
    await utils.migrate();
    for (const { label, options } of CONFIGS) {
      for (let i = 0; i < RUNS; i++) {
        const seconds = await drain(utils, options);
        const what = label === "default" ? label : `${label} (${describe(options.preset.worker)})`;
        console.log(
          `graphile-worker ${VERSION} ${what}: ${N} jobs in ${seconds.toFixed(2)} s = ${Math.round(N / seconds)} jobs/s`,
        );
      }
    }
  } finally {
    await utils.release();
  }
} catch (err) {
  failed = true;
  console.error(err);
} finally {
  // graphile-worker ends its pools without awaiting them, and a connection
  // terminated while its pool is ending is an unhandled 'error' that kills
  // the process: let them close (up to 10 s) before the DROP.
  for (let i = 0; i < 200; i++) {
    const { rows } = await admin.query("SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1", [dbName]);
    if (rows[0].n === 0) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  // Dropped whatever happened; FORCE ends connections a failed run left open.
  await admin.query(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`);
  await admin.end();
}
process.exitCode = failed ? 1 : 0;

// Queues N no-op jobs, runs a worker with `options` until they are all done,
// and returns the seconds that took.
async function drain(utils, options) {
  // Bulk insert: `addJobs` is one `graphile_worker.add_jobs(...)` call per
  // chunk; chunks keep the JSON parameter a reasonable size.
  for (let i = 0; i < N; i += 5000) {
    const specs = [];
    for (let j = i; j < Math.min(N, i + 5000); j++) {
      specs.push({ identifier: "noop", payload: { n: j } });
    }
    await utils.addJobs(specs);
  }
  // Earlier runs leave dead rows behind; every run starts from a clean table.
  await utils.withPgClient((c) => c.query("VACUUM ANALYZE graphile_worker._private_jobs"));

  // Progress comes from the worker's events rather than polling, so the
  // count itself puts no load on the server while the worker runs.
  const events = new EventEmitter();
  let succeeded = 0;
  let timer;
  const done = new Promise((resolve, reject) => {
    events.on("job:success", () => ++succeeded === N && resolve());
    events.on("job:error", ({ error }) => reject(error)); // a no-op never fails
    timer = setTimeout(() => reject(new Error(`only ${succeeded} of ${N} done after 10 min`)), TIMEOUT_MS);
  });

  // Handled below, but it may settle while `run()` is still starting.
  done.catch(() => {});

  const started = performance.now();
  let runner;
  try {
    runner = await run({
      ...options,
      connectionString,
      logger,
      events,
      noHandleSignals: true,
      taskList: { noop: async () => {} },
    });
    await done;
    // With batched completion a job succeeds before its row is deleted; the
    // run is over when the table is empty.
    const remaining = async () =>
      Number((await utils.withPgClient((c) => c.query("SELECT count(*) FROM graphile_worker._private_jobs"))).rows[0].count);
    while ((await remaining()) > 0) await new Promise((r) => setTimeout(r, 5));
    return (performance.now() - started) / 1000;
  } finally {
    clearTimeout(timer);
    await runner?.stop();
  }
}

function describe(worker) {
  return Object.entries(worker)
    .map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`)
    .join(", ");
}
