//! Writes new jobs in batches: the `POST /jobs` requests that arrive while
//! one write is in flight share the next statement and its commit (group
//! commit, as the worker's completer does for outcomes). At 64 concurrent
//! requests, one commit per request kept the server waiting on its own
//! write-ahead log; each request still returns only once its job is
//! committed.

use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};

use crate::db::{
    self,
    jobs::{Inserted, NewJob},
};

/// Most jobs one statement writes.
const MAX_BATCH: usize = 256;
/// Requests waiting for a write before `create` waits for room.
const QUEUE_LIMIT: usize = 4_096;

type Reply = oneshot::Sender<Result<Inserted, sqlx::Error>>;

#[derive(Clone)]
pub struct Creator {
    queue: mpsc::Sender<(NewJob, Reply)>,
}

impl Creator {
    /// Starts the writing task (it ends when every `Creator` is dropped).
    pub fn spawn(db: PgPool) -> Self {
        let (queue, receiver) = mpsc::channel(QUEUE_LIMIT);
        tokio::spawn(write_loop(db, receiver));
        Self { queue }
    }

    /// Writes `job`; returns once it is committed (or refused).
    pub async fn create(&self, job: NewJob) -> Result<Inserted, sqlx::Error> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send((job, reply))
            .await
            .map_err(|_| sqlx::Error::PoolClosed)?;
        answer.await.map_err(|_| sqlx::Error::PoolClosed)?
    }
}

async fn write_loop(db: PgPool, mut receiver: mpsc::Receiver<(NewJob, Reply)>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while receiver.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (jobs, replies): (Vec<NewJob>, Vec<Reply>) = batch.drain(..).unzip();
        match db::jobs::insert_many(&db, &jobs).await {
            Ok(outcomes) => {
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            // One job's document was deleted meanwhile (or another error):
            // write them one by one, so each gets its own answer.
            Err(_) if jobs.len() > 1 => {
                for (job, reply) in jobs.into_iter().zip(replies) {
                    let outcome = db::jobs::insert_many(&db, std::slice::from_ref(&job))
                        .await
                        .map(|mut outcomes| outcomes.pop().unwrap_or(Inserted::NoDocument));
                    let _ = reply.send(outcome);
                }
            }
            Err(err) => {
                if let Some(reply) = replies.into_iter().next() {
                    let _ = reply.send(Err(err));
                }
            }
        }
    }
}
