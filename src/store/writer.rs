//! Group commit for events: intake hands each accepted event to one writer task, which stores
//! whatever has queued up meanwhile with one statement, in one transaction. A burst then costs
//! one commit (one fsync) per batch instead of one per event, and each request still hears
//! back only once the transaction holding its event has committed: stored durably, then
//! answered.
//!
//! No batch waits on a timer: the writer takes what is queued the moment it is free (after a
//! turn for handlers about to queue theirs), so a lone event is written at once and a burst
//! groups itself while the previous commit runs.

use std::time::{Duration, Instant};

use anyhow::anyhow;
use sqlx::{AnyConnection, AnyPool, Executor};
use tokio::sync::{mpsc, oneshot};

use super::events::{NewEvent, insert_rows};
use super::{Backend, now};

/// Events waiting for the writer; when it is full, intake waits instead of piling up memory.
const QUEUE: usize = 4096;
/// Events in one transaction at most.
const MAX_BATCH: usize = 512;
/// Turns the writer gives waiting handlers before it writes what it has.
const GATHER_TURNS: usize = 4;
/// While another connection writes to SQLite, the writer asks again this often. SQLite's own
/// wait (`busy_timeout`) sleeps in growing steps of up to 100 ms, which would keep every event
/// behind a long transaction of the enrichment worker waiting far longer than that
/// transaction; so the writer's connection does not use it.
const BUSY_RETRY: Duration = Duration::from_millis(1);
/// How long the writer keeps asking, as long as the pool's `busy_timeout`.
const BUSY_PATIENCE: Duration = Duration::from_secs(10);

/// The way in to the writer task. The task ends when the last clone is dropped.
#[derive(Clone)]
pub(super) struct EventWriter {
    queue: mpsc::Sender<Queued>,
}

struct Queued {
    event: NewEvent,
    stored: oneshot::Sender<anyhow::Result<()>>,
}

/// The writer could not take the event (its runtime has ended); here it is back.
pub(super) struct WriterGone(pub NewEvent);

impl EventWriter {
    /// Starts the writer task on the current tokio runtime.
    pub(super) fn start(pool: AnyPool, backend: Backend) -> EventWriter {
        let (queue, queued) = mpsc::channel(QUEUE);
        tokio::spawn(run(Writer::new(pool, backend), queued));
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

async fn run(mut writer: Writer, mut queued: mpsc::Receiver<Queued>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queued.recv_many(&mut batch, MAX_BATCH).await > 0 {
        gather(&mut queued, &mut batch).await;
        writer.write(&mut batch).await;
    }
}

/// Under load, the handlers about to queue an event are runnable at this very moment: a turn
/// or two for them before writing makes fewer, larger commits, and costs a lone event next to
/// nothing (one turn in which nothing more arrives).
async fn gather(queued: &mut mpsc::Receiver<Queued>, batch: &mut Vec<Queued>) {
    for _ in 0..GATHER_TURNS {
        let before = batch.len();
        tokio::task::yield_now().await;
        while batch.len() < MAX_BATCH
            && let Ok(more) = queued.try_recv()
        {
            batch.push(more);
        }
        if batch.len() == before || batch.len() == MAX_BATCH {
            return;
        }
    }
}

/// The writer's own connection, taken from the pool and detached from it, so that a batch
/// neither waits for a pooled connection nor pays the pool's check of it.
struct Writer {
    pool: AnyPool,
    backend: Backend,
    conn: Option<AnyConnection>,
}

impl Writer {
    fn new(pool: AnyPool, backend: Backend) -> Writer {
        Writer {
            pool,
            backend,
            conn: None,
        }
    }

    /// Stores `batch` and answers every event in it, emptying it.
    async fn write(&mut self, batch: &mut Vec<Queued>) {
        let events: Vec<&NewEvent> = batch.iter().map(|queued| &queued.event).collect();
        let together = self.insert(&events).await;
        drop(events);

        match together {
            Ok(()) => {
                for queued in batch.drain(..) {
                    let _ = queued.stored.send(Ok(()));
                }
            }
            Err(err) if batch.len() == 1 => {
                let _ = batch.remove(0).stored.send(Err(err));
            }
            // One bad event (its portal deleted meanwhile, say) must not cost the others
            // theirs, so each gets a try of its own. Should the failure have hidden a commit
            // after all, an event is stored twice, which enrichment takes for a repeated
            // delivery: better than losing it.
            Err(err) => {
                tracing::warn!(
                    events = batch.len(),
                    "a batch of events failed, storing them one by one: {err:#}"
                );
                for queued in batch.drain(..) {
                    let alone = self.insert(&[&queued.event]).await;
                    let _ = queued.stored.send(alone);
                }
            }
        }
    }

    /// Inserts `events` with one statement, which commits them all or none.
    async fn insert(&mut self, events: &[&NewEvent]) -> anyhow::Result<()> {
        let (started, backend) = (Instant::now(), self.backend);
        loop {
            let conn = self.connection().await?;
            match insert_rows(conn, backend, events, now()).await {
                Ok(()) => return Ok(()),
                // Nothing was written: the database is busy with another writer.
                Err(err) if is_busy(&err) && started.elapsed() < BUSY_PATIENCE => {
                    tokio::time::sleep(BUSY_RETRY).await;
                }
                Err(err) => {
                    // The connection may be what failed; the next try takes a fresh one.
                    self.conn = None;
                    return Err(err);
                }
            }
        }
    }

    async fn connection(&mut self) -> anyhow::Result<&mut AnyConnection> {
        if self.conn.is_none() {
            let mut conn = self.pool.acquire().await?.detach();
            if self.backend == Backend::Sqlite {
                conn.execute("PRAGMA busy_timeout = 0").await?;
            }
            self.conn = Some(conn);
        }
        Ok(self.conn.as_mut().expect("connected above"))
    }
}

/// SQLITE_BUSY, in any of its extended forms.
fn is_busy(err: &anyhow::Error) -> bool {
    let Some(sqlx::Error::Database(err)) = err.downcast_ref::<sqlx::Error>() else {
        return false;
    };
    err.code()
        .and_then(|code| code.parse::<i32>().ok())
        .is_some_and(|code| code & 0xff == 5)
}
