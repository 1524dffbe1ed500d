//! Deliveries a channel refused for good (an HTTP 4xx other than 408 and 429: this payload is
//! wrong for that receiver, and sending it again gets the same answer): set aside rather than
//! retried, so one refused alert never blocks the channel's queue. The last [`KEEP`] are kept
//! in `alerts-dead-letters.json` in the state directory (0600), with the receiver's answer, and
//! counted in `status`.

use std::collections::VecDeque;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::channel::Channel;
use super::Alert;

pub const FILE_NAME: &str = "alerts-dead-letters.json";
pub const KEEP: usize = 100;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub channel: Channel,
    pub alert: Alert,
    pub refused_at_unix_ms: u64,
    /// The receiver's answer, e.g. "answered 400: invalid payload".
    pub answer: String,
}

impl DeadLetter {
    fn bounded(self) -> DeadLetter {
        DeadLetter { alert: self.alert.bounded(), answer: crate::sys::one_line(&self.answer, 300), ..self }
    }
}

pub struct DeadLetters {
    path: Option<PathBuf>,
    items: VecDeque<DeadLetter>,
}

impl DeadLetters {
    /// The letters kept at `path` (none: in memory only); a file that cannot be read is set
    /// aside as the queue's are, and the text says so.
    pub fn load(path: Option<PathBuf>) -> (DeadLetters, Option<String>) {
        let mut d = DeadLetters { path, items: VecDeque::new() };
        let Some(p) = d.path.clone() else { return (d, None) };
        let read = crate::sys::fs::read_regular_file(&p, super::queue::MAX_BYTES as u64);
        let why = match read.map(|b| serde_json::from_slice::<VecDeque<DeadLetter>>(&b)) {
            Ok(Ok(mut items)) => {
                while items.len() > KEEP {
                    items.pop_front();
                }
                // Held to the bounds of a letter the task writes: the file may have been edited,
                // and its last answer is shown in `status` as one line.
                d.items = items.into_iter().map(DeadLetter::bounded).collect();
                return (d, None);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (d, None),
            Err(e) => format!("cannot read {}: {e}", crate::sys::display_path(&p)),
            Ok(Err(e)) => format!("{} is not a list of dead letters ({e})", crate::sys::display_path(&p)),
        };
        match super::queue::set_aside(&p) {
            Ok(bad) => (d, Some(format!("{why}; set aside as {}", crate::sys::display_path(&bad)))),
            Err(e) => {
                d.path = None;
                (d, Some(format!("{why}; it could not be set aside ({e}), so it is left as it is")))
            }
        }
    }

    pub fn push(&mut self, letter: DeadLetter) {
        self.items.push_back(letter);
        while self.items.len() > KEEP {
            self.items.pop_front();
        }
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn last(&self) -> Option<&DeadLetter> {
        self.items.back()
    }

    /// The file and what to write to it (`None`: kept in memory only).
    pub fn serialized(&self) -> Option<(PathBuf, std::io::Result<Vec<u8>>)> {
        let p = self.path.clone()?;
        Some((p, serde_json::to_vec(&self.items).map_err(std::io::Error::other)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::{AlertKey, Severity};

    #[test]
    fn the_last_hundred_are_kept_across_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let (mut d, problem) = DeadLetters::load(Some(path.clone()));
        assert_eq!(problem, None);
        for i in 0..150 {
            d.push(DeadLetter {
                channel: Channel::Webhook,
                alert: Alert::firing(AlertKey::ServiceDown(i.to_string()), Severity::Critical, "down"),
                refused_at_unix_ms: i,
                answer: "answered 400: bad payload".into(),
            });
        }
        assert_eq!(d.len(), KEEP);
        let (p, bytes) = d.serialized().unwrap();
        super::super::queue::write(&p, bytes).unwrap();
        let (again, _) = DeadLetters::load(Some(path.clone()));
        assert_eq!(again.len(), KEEP);
        assert_eq!(again.last().unwrap().alert.key, "service/149");
        // Edited by hand: an answer of a megabyte on many lines, a key with an escape sequence.
        let mut letter = again.last().unwrap().clone();
        letter.answer = "x\n".repeat(500_000);
        letter.alert.key = "service/\u{1b}[2J".into();
        std::fs::write(&path, serde_json::to_vec(&[&letter]).unwrap()).unwrap();
        let (edited, problem) = DeadLetters::load(Some(path.clone()));
        assert_eq!(problem, None);
        let shown = edited.last().unwrap();
        assert!(shown.answer.len() < 1000 && !shown.answer.contains('\n'), "{}", shown.answer.len());
        assert_eq!(shown.alert.key, "service/\\u{1b}[2J");
        std::fs::write(&path, b"[").unwrap();
        let (empty, problem) = DeadLetters::load(Some(path));
        assert!(empty.is_empty() && problem.unwrap().contains("set aside"));
    }
}
