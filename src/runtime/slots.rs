//! Connection slots for a listener that strangers can reach (`/metrics`, the control socket):
//! a bounded number of connections served at once, shared fairly. A client that has not sent
//! its whole request yet holds its slot only until someone else needs it: when every slot is
//! held, the oldest such connection is dropped for the newcomer. So a few slow clients (one byte
//! a second, "slowloris") cannot shut out a scrape or a `cluster-ai status` that sends its
//! request at once; only connections already being answered are never dropped.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::task::AbortHandle;

pub struct Slots {
    max: usize,
    held: VecDeque<Slot>,
    /// Connections dropped for a newcomer, and newcomers refused, since the start.
    pub evicted: u64,
    pub refused: u64,
}

struct Slot {
    request_seen: Arc<AtomicBool>,
    task: AbortHandle,
}

/// Given to a connection's task: [`RequestSeen::mark`] once its request is whole.
#[derive(Clone)]
pub struct RequestSeen(Arc<AtomicBool>);

impl RequestSeen {
    pub fn mark(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl Slots {
    pub fn new(max: usize) -> Slots {
        Slots { max: max.max(1), held: VecDeque::new(), evicted: 0, refused: 0 }
    }

    /// Every slot is held by a connection being answered: [`Slots::spawn`] would refuse the
    /// next one (its caller may tell the client why first).
    pub fn all_answering(&mut self) -> bool {
        self.held.retain(|s| !s.task.is_finished());
        self.held.len() >= self.max && self.held.iter().all(|s| s.request_seen.load(Ordering::Relaxed))
    }

    /// Serves a new connection with `serve` on a task of its own, making room for it if every
    /// slot is held; `false` when every slot is answering a request (the connection is dropped).
    pub fn spawn<F, Fut>(&mut self, serve: F) -> bool
    where
        F: FnOnce(RequestSeen) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.held.retain(|s| !s.task.is_finished());
        if self.held.len() >= self.max {
            match self.held.iter().position(|s| !s.request_seen.load(Ordering::Relaxed)) {
                Some(i) => {
                    if let Some(s) = self.held.remove(i) {
                        s.task.abort();
                        self.evicted += 1;
                    }
                }
                None => {
                    self.refused += 1;
                    return false;
                }
            }
        }
        let seen = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(serve(RequestSeen(seen.clone()))).abort_handle();
        self.held.push_back(Slot { request_seen: seen, task });
        true
    }

    /// Connections held now.
    pub fn len(&self) -> usize {
        self.held.iter().filter(|s| !s.task.is_finished()).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn the_oldest_client_without_a_request_makes_room_and_answering_ones_stay() {
        let mut slots = Slots::new(3);
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<usize>();
        let mut marks = Vec::new();
        for i in 0..3 {
            let tx = done_tx.clone();
            let (mark_tx, mark_rx) = tokio::sync::oneshot::channel::<RequestSeen>();
            marks.push(mark_rx);
            assert!(slots.spawn(move |seen| async move {
                let _ = mark_tx.send(seen);
                tokio::time::sleep(Duration::from_secs(3600)).await;
                let _ = tx.send(i);
            }));
        }
        tokio::task::yield_now().await;
        let mut seen: Vec<RequestSeen> = Vec::new();
        for m in marks {
            seen.push(m.await.unwrap());
        }
        // Client 1 has sent its request: it is being answered.
        seen[1].mark();
        // A fourth client evicts client 0 (the oldest without a request) and ends at once; a
        // fifth then finds its slot free.
        assert!(slots.spawn(|_| async {}));
        tokio::task::yield_now().await;
        assert!(slots.spawn(|seen| async move {
            seen.mark();
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }));
        tokio::task::yield_now().await;
        assert_eq!((slots.evicted, slots.len()), (1, 3));
        // Held: 1 and the fifth (answering), 2 (no request yet): a sixth evicts 2.
        assert!(slots.spawn(|seen| async move {
            seen.mark();
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }));
        tokio::task::yield_now().await;
        assert_eq!(slots.evicted, 2);
        // All three are answering: a newcomer is refused, nobody is dropped.
        assert!(slots.all_answering());
        assert!(!slots.spawn(|_| async {}));
        assert_eq!((slots.refused, slots.len()), (1, 3));
        drop(done_tx);
        assert!(done_rx.try_recv().is_err(), "no evicted task ran on");
    }
}
