//! Group commit for events: intake hands each accepted event to one writer task, which stores
//! whatever has queued up meanwhile in one transaction. A burst then costs one commit (one
//! fsync) per batch instead of one per event, and each request still hears back only once the
//! transaction holding its event has committed: stored durably, then answered.
//!
//! No batch waits to fill: the writer takes what is queued the moment it is free, so a lone
//! event is written at once and a burst groups itself while the previous commit runs.

use anyhow::anyhow;
use sqlx::AnyPool;
use tokio::sync::{mpsc, oneshot};

use super::events::{NewEvent, insert_rows};
use super::now;

/// Events waiting for the writer; when it is full, intake waits instead of piling up memory.
const QUEUE: usize = 4096;
/// Events in one transaction at most.
const MAX_BATCH: usize = 512;

/// The way in to the writer task. The task ends when the last clone is dropped.
#[derive(Clone)]
pub(super) struct EventWriter {
    queue: mpsc::Sender<Queued>,
}

struct Queued {
    event: NewEvent,
    stored: oneshot::Sender<anyhow::Result<()>>,
}

/// Why the writer could not take an event; the caller may store it by itself.
pub(super) struct WriterGone(pub NewEvent);

impl EventWriter {
    /// Starts the writer task on the current tokio runtime.
    pub(super) fn start(pool: AnyPool) -> EventWriter {
        let (queue, queued) = mpsc::channel(QUEUE);
        tokio::spawn(run(pool, queued));
        EventWriter { queue }
    }

    /// Queues `event` and waits until its transaction has committed.
    pub(super) async fn store(&self, event: NewEvent) -> Result<anyhow::Result<()>, WriterGone> {
        let (stored, committed) = oneshot::channel();
        if let Err(refused) = self.queue.send(Queued { event, stored }).await {
            return Err(WriterGone(refused.0.event));
        }
        // Without an answer the event may or may not be on disk: say it failed.
        Ok(committed
            .await
            .unwrap_or_else(|_| Err(anyhow!("the event writer stopped before answering"))))
    }
}

async fn run(pool: AnyPool, mut queued: mpsc::Receiver<Queued>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queued.recv_many(&mut batch, MAX_BATCH).await > 0 {
        write_batch(&pool, &mut batch).await;
        batch.clear();
    }
}

/// Stores `batch` in one transaction and answers every event in it.
async fn write_batch(pool: &AnyPool, batch: &mut Vec<Queued>) {
    let outcome = insert_together(pool, batch).await;

    match outcome {
        Ok(()) => {
            for queued in batch.drain(..) {
                let _ = queued.stored.send(Ok(()));
            }
        }
        // One bad event (its portal deleted meanwhile, say) must not cost the others theirs:
        // nothing of the batch was written, so each gets a try of its own.
        Err(Failed::Insert(err)) if batch.len() > 1 => {
            tracing::warn!(
                events = batch.len(),
                "a batch of events failed, storing them one by one: {err:#}"
            );
            for queued in batch.drain(..) {
                let result = insert_alone(pool, &queued.event).await;
                let _ = queued.stored.send(result);
            }
        }
        // A failed commit may still have reached the disk, so nothing is written again.
        Err(Failed::Insert(err) | Failed::Commit(err)) => {
            let reason = format!("{err:#}");
            for queued in batch.drain(..) {
                let _ = queued
                    .stored
                    .send(Err(anyhow!("storing the event: {reason}")));
            }
        }
    }
}

enum Failed {
    /// Nothing was written.
    Insert(anyhow::Error),
    /// Unknown whether it was written.
    Commit(anyhow::Error),
}

async fn insert_together(pool: &AnyPool, batch: &[Queued]) -> Result<(), Failed> {
    let events: Vec<&NewEvent> = batch.iter().map(|queued| &queued.event).collect();
    let insert = async {
        let mut tx = pool.begin().await?;
        insert_rows(&mut tx, &events, now()).await?;
        anyhow::Ok(tx)
    };
    let t0 = std::time::Instant::now();
    let tx = insert.await.map_err(Failed::Insert)?;
    let t1 = t0.elapsed();
    let r = tx.commit().await.map_err(|err| Failed::Commit(err.into()));
    if std::env::var("WRITER_DEBUG").is_ok() {
        eprintln!(
            "DBG batch {} insert {:?} commit {:?}",
            batch.len(),
            t1,
            t0.elapsed() - t1
        );
    }
    r
}

async fn insert_alone(pool: &AnyPool, event: &NewEvent) -> anyhow::Result<()> {
    let mut conn = pool.acquire().await?;
    insert_rows(&mut conn, &[event], now()).await
}
