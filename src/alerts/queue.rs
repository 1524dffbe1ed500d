//! The deliveries that have not reached their channel yet, in order, bounded, and kept in a
//! file of the state directory (written atomically as soon as an alert is accepted, before any
//! delivery is tried) so neither a restart nor a kill of the daemon loses one.
//!
//! Bounded twice: by count (`[alerts] queue_max`) and by bytes ([`MAX_BYTES`], what the file
//! may hold and what is read back). When either is reached, deliveries are shed in this order:
//! the oldest notice that is not critical, then the oldest delivery of all; each one counted.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::channel::Channel;
use super::{Alert, AlertState};

/// The first retry waits this long; each next one twice as long, up to `[alerts] retry_max`.
pub const RETRY_INITIAL: Duration = Duration::from_secs(5);
pub const FILE_NAME: &str = "alerts-queue.json";
/// The queue's file holds at most this much (alerts are cut to [`super::MAX_SUMMARY`] and
/// friends, so this is thousands of them); a larger file is not read back but set aside.
/// Reading one back holds at most four times this in memory, whatever it holds.
pub const MAX_BYTES: usize = 8 << 20;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    /// Unique within the queue: how a delivery's result finds it again.
    #[serde(default)]
    pub id: u64,
    pub channel: Channel,
    pub alert: Alert,
    pub attempts: u32,
    pub next_try_unix_ms: u64,
    /// The last attempt's error, one line of at most [`super::MAX_ANSWER`] characters (read back so too).
    #[serde(default, deserialize_with = "crate::sys::json::one_line_or_null::<_, { super::MAX_ANSWER }>")]
    pub last_error: Option<String>,
}

impl Delivery {
    pub fn new(channel: Channel, alert: Alert) -> Delivery {
        Delivery { id: 0, channel, alert, attempts: 0, next_try_unix_ms: 0, last_error: None }
    }

    /// Shed first when the queue is full: a notice that is not critical (an emergency measure
    /// taken, a test), never an incident.
    fn sheddable(&self) -> bool {
        self.alert.state == AlertState::Notice && !self.alert.critical()
    }
}

pub struct Queue {
    path: Option<PathBuf>,
    /// Each delivery with its size in the file (bytes of its JSON).
    items: VecDeque<(Delivery, usize)>,
    bytes: usize,
    max: usize,
    next_id: u64,
    pub dropped: u64,
    /// The file is there but could not be read for a reason of the moment rather than of the
    /// file (see [`crate::sys::fs::says_nothing_of_the_file`]): it is not written over, and
    /// [`Queue::read_again`] reads it later.
    unread: bool,
}

impl Queue {
    /// The queue kept at `path` (none: in memory only). A file that cannot be read as a queue
    /// (not JSON, larger than [`MAX_BYTES`], not a regular file) is set aside under a name of
    /// its own (`<name>.bad`, `<name>.bad.1`, …: never deleted, never overwritten) and the
    /// queue starts empty; if it cannot be set aside, the queue is kept in memory only, so the
    /// file is never overwritten. A list with some entries that are not deliveries is set
    /// aside whole as well, and its good deliveries kept (the task writes them back at once).
    /// The text says which. A file that cannot be read for a reason of the moment (every
    /// descriptor taken, no memory, no permission) is left as it is and not written over; the
    /// queue starts in memory and [`Queue::read_again`] reads the file later.
    pub fn load(path: Option<PathBuf>, max: usize) -> (Queue, Option<String>) {
        let q = Queue::empty(path, max);
        let Some(p) = q.path.clone() else { return (q, None) };
        let shown = crate::sys::display_path(&p);
        let read = crate::sys::fs::read_regular_file(&p, MAX_BYTES as u64);
        // The list first, each entry as the text it is (borrowed, not copied), then each entry on
        // its own: one entry that is not a delivery (edited by hand, written by another
        // version) sets the file aside, not the deliveries beside it.
        let bytes = match read {
            Ok(bytes) => bytes,
            Err(e) => return q.set_aside_whole(&p, e),
        };
        // A retry time from the file is believed up to the longest retry_max (a day): a clock
        // that was wrong, or a hand-edited file, cannot park a delivery for years. Its alert is
        // held to the bounds the alert task holds every alert to (a file edited by hand, or
        // written by another version, is not the task's). Each is pushed as it is read, so no
        // more than the queue keeps is ever held.
        let latest = crate::sys::unix_ms().saturating_add(86_400_000);
        let mut de = serde_json::Deserializer::from_slice(&bytes);
        let start = Salvaged { q, seen: 0, bad: 0, first_bad: None };
        let parsed = crate::sys::json::each_element(&mut de, start, |s, raw: &serde_json::value::RawValue| {
            s.seen += 1;
            match serde_json::from_str::<Delivery>(raw.get()) {
                Ok(mut d) => {
                    d.next_try_unix_ms = d.next_try_unix_ms.min(latest);
                    d.alert = d.alert.bounded();
                    s.q.push(d);
                }
                Err(e) => {
                    s.bad += 1;
                    if s.first_bad.is_none() {
                        s.first_bad = Some(format!("the first, entry {}: {}", s.seen, crate::sys::json::error_text(&e)));
                    }
                }
            }
            Ok(())
        })
        .and_then(|s| de.end().map(|()| s));
        drop(bytes);
        match parsed {
            Ok(Salvaged { q, bad, first_bad, .. }) => {
                let mut q = q;
                let first = first_bad;
                let Some(first) = first else { return (q, None) };
                let why = format!("{shown}: {bad} entr{} not a delivery ({first})", if bad == 1 { "y is" } else { "ies are" });
                match set_aside(&p) {
                    Ok(aside) => {
                        let kept = format!("the {} good one(s) kept in the queue", q.len());
                        (q, Some(format!("{why}; the whole file set aside as {}; {kept}", crate::sys::display_path(&aside))))
                    }
                    Err(e) => {
                        q.path = None;
                        let n = q.len();
                        (q, Some(format!("{why}; it could not be set aside ({e}), so it is left as it is and the {n} good one(s) kept in memory only until it is moved")))
                    }
                }
            }
            Err(e) => {
                let q = Queue::empty(Some(p.clone()), max);
                q.set_aside_file(&p, format!("{shown} is not an alert queue ({})", crate::sys::json::error_text(&e)))
            }
        }
    }

    /// No delivery yet, kept at `path`, bounded to `max` (at least one).
    fn empty(path: Option<PathBuf>, max: usize) -> Queue {
        Queue { path, items: VecDeque::new(), bytes: 0, max: max.max(1), next_id: 1, dropped: 0, unread: false }
    }

    /// A file that could not be read at all: none found is an empty queue, anything else is
    /// set aside.
    fn set_aside_whole(self, p: &Path, e: std::io::Error) -> (Queue, Option<String>) {
        if e.kind() == std::io::ErrorKind::NotFound {
            return (self, None);
        }
        let why = format!("cannot read {}: {e}", crate::sys::display_path(p));
        if crate::sys::fs::says_nothing_of_the_file(&e) {
            let mut q = self;
            q.unread = true;
            return (
                q,
                Some(format!(
                    "{why}; it is left as it is and read again within {} s; new alerts are queued meanwhile",
                    READ_AGAIN.as_secs()
                )),
            );
        }
        self.set_aside_file(p, why)
    }

    /// Whether the file is still to be read (see [`Queue::load`]).
    pub fn unread(&self) -> bool {
        self.unread
    }

    /// The file left unread by [`Queue::load`], read now: its deliveries first, then those
    /// queued meanwhile (the queue's bounds hold; what they shed is counted in `dropped`). If it
    /// still cannot be read, the queue is as it was and nothing is said. Blocking.
    pub fn read_again(self) -> (Queue, Option<String>) {
        if !self.unread {
            return (self, None);
        }
        let (mut q, said) = Queue::load(self.path.clone(), self.max);
        if q.unread {
            return (self, None);
        }
        q.dropped += self.dropped;
        for (d, _) in self.items {
            q.push(d);
        }
        let read = format!(
            "{}: read after all, {} deliveries in the queue",
            crate::sys::display_path(self.path.as_deref().unwrap_or(Path::new(""))),
            q.len()
        );
        (q, Some(said.map_or(read.clone(), |s| format!("{read}; {s}"))))
    }

    fn set_aside_file(mut self, p: &Path, why: String) -> (Queue, Option<String>) {
        match set_aside(p) {
            Ok(bad) => (self, Some(format!("{why}; set aside as {}; starting with an empty queue", crate::sys::display_path(&bad)))),
            Err(e) => {
                self.path = None;
                (self, Some(format!("{why}; it could not be set aside ({e}), so it is left as it is and the queue is kept in memory only until it is moved")))
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
        self.items.iter().map(|(d, _)| d)
    }

    /// Adds a delivery at the end (with a new id); returns those shed to make room.
    pub fn push(&mut self, mut d: Delivery) -> Vec<Delivery> {
        d.id = self.next_id;
        self.next_id += 1;
        let size = json_len(&d) + 1;
        self.items.push_back((d, size));
        self.bytes += size;
        let mut shed = Vec::new();
        while self.items.len() > self.max || (self.bytes > MAX_BYTES && self.items.len() > 1) {
            let i = self.items.iter().position(|(d, _)| d.sheddable()).unwrap_or(0);
            let Some((d, size)) = self.items.remove(i) else { break };
            self.bytes -= size;
            self.dropped += 1;
            shed.push(d);
        }
        shed
    }

    /// The first delivery of `channel` (each channel keeps its order), if its time has come.
    pub fn due(&self, channel: Channel, now_ms: u64) -> Option<&Delivery> {
        let d = self.iter().find(|d| d.channel == channel)?;
        (d.next_try_unix_ms <= now_ms).then_some(d)
    }

    /// The delivery `id`, taken out of the queue (it was delivered, or will never be).
    pub fn remove(&mut self, id: u64) -> Option<Delivery> {
        let i = self.items.iter().position(|(d, _)| d.id == id)?;
        let (d, size) = self.items.remove(i)?;
        self.bytes -= size;
        Some(d)
    }

    /// A failed attempt: the delivery waits 5 s, 10 s, 20 s … up to `max_wait`.
    pub fn failed(&mut self, id: u64, error: String, now_ms: u64, max_wait: Duration) {
        if let Some((d, _)) = self.items.iter_mut().find(|(d, _)| d.id == id) {
            d.attempts = d.attempts.saturating_add(1);
            let wait = RETRY_INITIAL.saturating_mul(1 << (d.attempts - 1).min(20)).min(max_wait);
            d.next_try_unix_ms = now_ms.saturating_add(wait.as_millis() as u64);
            d.last_error = Some(crate::sys::one_line(&error, super::MAX_ANSWER));
        }
    }

    /// Deliveries for channels that are no longer configured: dropped (they cannot go anywhere).
    pub fn keep_channels(&mut self, channels: &[Channel]) -> usize {
        let before = self.items.len();
        self.items.retain(|(d, _)| channels.contains(&d.channel));
        self.bytes = self.items.iter().map(|(_, s)| s).sum();
        before - self.items.len()
    }

    /// The file and what to write to it, for a writer off the runtime (`None`: kept in memory
    /// only).
    pub fn serialized(&self) -> Option<(PathBuf, std::io::Result<Vec<u8>>)> {
        if self.unread {
            return None;
        }
        let p = self.path.clone()?;
        let items: Vec<&Delivery> = self.iter().collect();
        Some((p, serde_json::to_vec(&items).map_err(std::io::Error::other)))
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

/// The bytes of `d`'s JSON, counted as they are written rather than held (a delivery read back
/// from a file is counted while the file is still in memory).
fn json_len(d: &Delivery) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    serde_json::to_writer(&mut c, d).map_or(0, |()| c.0)
}

/// What reading a queue file entry by entry gives: the queue of its good deliveries, the
/// entries seen, those that were not deliveries, and the first one's error.
struct Salvaged {
    q: Queue,
    seen: usize,
    bad: usize,
    first_bad: Option<String>,
}

/// How often a file left unread by a reason of the moment is read again.
pub const READ_AGAIN: Duration = Duration::from_secs(30);

/// Writes serialized queue bytes to `path` (0600, atomically).
pub fn write(path: &Path, bytes: std::io::Result<Vec<u8>>) -> std::io::Result<()> {
    crate::sys::fs::write_atomic(path, &bytes?, 0o600)
}

/// Moves an unreadable queue file to the first free `<name>.bad[.N]` beside it.
pub(super) fn set_aside(p: &Path) -> std::io::Result<PathBuf> {
    let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    for n in 0..1000 {
        let bad = p.with_file_name(if n == 0 { format!("{name}.bad") } else { format!("{name}.bad.{n}") });
        // A hard link fails if the name is taken: no earlier file is ever overwritten.
        match std::fs::hard_link(p, &bad) {
            Ok(()) => {
                std::fs::remove_file(p)?;
                return Ok(bad);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("a thousand set-aside queue files are already there"))
}

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;
