//! The deliveries that have not reached their channel yet, in order, bounded, and kept in a
//! file of the state directory (written atomically after every change) so a restart of the
//! daemon loses none of them. When it is full the oldest delivery is dropped and counted.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::channel::Channel;
use super::Alert;

/// The first retry waits this long; each next one twice as long, up to `[alerts] retry_max`.
pub const RETRY_INITIAL: Duration = Duration::from_secs(5);
pub const FILE_NAME: &str = "alerts-queue.json";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    pub channel: Channel,
    pub alert: Alert,
    pub attempts: u32,
    pub next_try_unix_ms: u64,
    pub last_error: Option<String>,
}

pub struct Queue {
    path: Option<PathBuf>,
    items: VecDeque<Delivery>,
    max: usize,
    pub dropped: u64,
}

impl Queue {
    /// The queue kept at `path` (none: in memory only). A file that cannot be read as a queue is
    /// set aside as `<name>.bad` (never deleted) and the queue starts empty; the text says so.
    pub fn load(path: Option<PathBuf>, max: usize) -> (Queue, Option<String>) {
        let mut q = Queue { path, items: VecDeque::new(), max, dropped: 0 };
        let Some(p) = q.path.clone() else { return (q, None) };
        let bytes = match crate::sys::fs::read_regular_file(&p, 64 << 20) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (q, None),
            Err(e) => return (q, Some(format!("cannot read {}: {e}; starting with an empty queue", p.display()))),
        };
        match serde_json::from_slice::<VecDeque<Delivery>>(&bytes) {
            Ok(items) => {
                q.items = items;
                while q.items.len() > q.max {
                    q.items.pop_front();
                    q.dropped += 1;
                }
                (q, None)
            }
            Err(e) => {
                let bad = p.with_extension("json.bad");
                let moved = std::fs::rename(&p, &bad).map(|_| format!("set aside as {}", bad.display()));
                let what = moved.unwrap_or_else(|e| format!("could not be set aside: {e}"));
                (q, Some(format!("{} is not an alert queue ({e}); {what}; starting with an empty queue", p.display())))
            }
        }
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Delivery> {
        self.items.iter()
    }

    /// Adds a delivery at the end; returns the oldest one if it had to be dropped for room.
    pub fn push(&mut self, d: Delivery) -> Option<Delivery> {
        self.items.push_back(d);
        if self.items.len() > self.max {
            self.dropped += 1;
            return self.items.pop_front();
        }
        None
    }

    /// The first delivery of `channel` (each channel keeps its order), if its time has come.
    pub fn due(&self, channel: Channel, now_ms: u64) -> Option<usize> {
        let i = self.items.iter().position(|d| d.channel == channel)?;
        (self.items[i].next_try_unix_ms <= now_ms).then_some(i)
    }

    pub fn remove(&mut self, i: usize) -> Option<Delivery> {
        self.items.remove(i)
    }

    /// A failed attempt: the delivery waits 5 s, 10 s, 20 s … up to `max_wait`.
    pub fn failed(&mut self, i: usize, error: String, now_ms: u64, max_wait: Duration) {
        if let Some(d) = self.items.get_mut(i) {
            d.attempts += 1;
            let wait = RETRY_INITIAL.saturating_mul(1 << (d.attempts - 1).min(20)).min(max_wait);
            d.next_try_unix_ms = now_ms + wait.as_millis() as u64;
            d.last_error = Some(error);
        }
    }

    /// Deliveries for channels that are no longer configured: dropped (they cannot go anywhere).
    pub fn keep_channels(&mut self, channels: &[Channel]) -> usize {
        let before = self.items.len();
        self.items.retain(|d| channels.contains(&d.channel));
        before - self.items.len()
    }

    /// The file and what to write to it, for a writer off the runtime (`None`: kept in memory
    /// only).
    pub fn serialized(&self) -> Option<(PathBuf, std::io::Result<Vec<u8>>)> {
        let p = self.path.clone()?;
        Some((p, serde_json::to_vec(&self.items).map_err(std::io::Error::other)))
    }

    /// Writes the queue to its file (0600, atomically). Blocking: the task calls it through
    /// `spawn_blocking`.
    pub fn save(&self) -> std::io::Result<()> {
        match self.serialized() {
            None => Ok(()),
            Some((p, bytes)) => write(&p, bytes),
        }
    }
}

/// Writes serialized queue bytes to `path` (0600, atomically).
pub fn write(path: &std::path::Path, bytes: std::io::Result<Vec<u8>>) -> std::io::Result<()> {
    crate::sys::fs::write_atomic(path, &bytes?, 0o600)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(channel: Channel, key: &str, at: u64) -> Delivery {
        Delivery { channel, alert: Alert::notice(key, "info", key), attempts: 0, next_try_unix_ms: at, last_error: None }
    }

    #[test]
    fn bounded_ordered_per_channel_and_kept_across_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let (mut q, problem) = Queue::load(Some(path.clone()), 3);
        assert_eq!(problem, None);
        q.push(delivery(Channel::Webhook, "a", 0));
        q.push(delivery(Channel::Alertmanager, "b", 0));
        q.push(delivery(Channel::Webhook, "c", 0));
        let dropped = q.push(delivery(Channel::Webhook, "d", 0));
        assert_eq!(dropped.unwrap().alert.key, "a", "the oldest goes");
        assert_eq!((q.len(), q.dropped), (3, 1));
        // The webhook's first is "c": it fails and waits 5 s; "d" waits behind it.
        let i = q.due(Channel::Webhook, 0).unwrap();
        q.failed(i, "down".into(), 0, Duration::from_secs(60));
        assert_eq!(q.due(Channel::Webhook, 4_999), None);
        assert_eq!(q.due(Channel::Webhook, 5_000), Some(i));
        assert_eq!(q.due(Channel::Alertmanager, 0), Some(0), "Alertmanager's own first is due now");
        q.failed(i, "down".into(), 5_000, Duration::from_secs(60));
        assert_eq!(q.iter().nth(i).unwrap().next_try_unix_ms, 15_000, "then 10 s");
        q.save().unwrap();
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o600);
        let (again, _) = Queue::load(Some(path.clone()), 3);
        let keys: Vec<&str> = again.iter().map(|d| d.alert.key.as_str()).collect();
        assert_eq!(keys, ["b", "c", "d"]);
        // Garbage is set aside, not lost, and the queue starts empty.
        std::fs::write(&path, b"{not json").unwrap();
        let (empty, problem) = Queue::load(Some(path.clone()), 3);
        assert!(empty.is_empty());
        assert!(problem.unwrap().contains("is not an alert queue"));
        assert_eq!(std::fs::read(dir.path().join("alerts-queue.json.bad")).unwrap(), b"{not json");
    }
}
