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
    /// The receiver's answer, e.g. "answered 400: invalid payload": one line of at most
    /// [`super::MAX_ANSWER`] characters (read back so too).
    #[serde(deserialize_with = "crate::sys::json::one_line::<_, { super::MAX_ANSWER }>")]
    pub answer: String,
}

impl DeadLetter {
    fn bounded(self) -> DeadLetter {
        DeadLetter { alert: self.alert.bounded(), answer: crate::sys::one_line(&self.answer, super::MAX_ANSWER), ..self }
    }
}

pub struct DeadLetters {
    path: Option<PathBuf>,
    items: VecDeque<DeadLetter>,
    /// As the queue's: a file not read for a reason of the moment, not written over.
    unread: bool,
}

impl DeadLetters {
    /// The letters kept at `path` (none: in memory only); a file that cannot be read is set
    /// aside as the queue's are, and the text says so; one that cannot be read for a reason
    /// of the moment is left as it is, as the queue's, and read by [`DeadLetters::read_again`].
    pub fn load(path: Option<PathBuf>) -> (DeadLetters, Option<String>) {
        let mut d = DeadLetters { path, items: VecDeque::new(), unread: false };
        let Some(p) = d.path.clone() else { return (d, None) };
        let shown = crate::sys::display_path(&p);
        let bytes = match crate::sys::fs::read_regular_file(&p, super::queue::MAX_BYTES as u64) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (d, None),
            Err(e) if crate::sys::fs::says_nothing_of_the_file(&e) => {
                d.unread = true;
                let every = super::queue::READ_AGAIN.as_secs();
                return (d, Some(format!("cannot read {shown}: {e}; it is left as it is and read again within {every} s")));
            }
            Err(e) => return d.set_aside(&p, format!("cannot read {shown}: {e}")),
        };
        // Entry by entry, as the queue's file: one that is not a letter sets the file aside, not
        // the letters beside it. Each is held to the bounds of a letter the task writes: the
        // file may have been edited, and its last answer is shown in `status` as one line.
        let (mut seen, mut bad, mut first_bad) = (0usize, 0usize, None);
        let mut de = serde_json::Deserializer::from_slice(&bytes);
        let read = crate::sys::json::each_element(&mut de, VecDeque::new(), |items, raw: &serde_json::value::RawValue| {
            seen += 1;
            match serde_json::from_str::<DeadLetter>(raw.get()) {
                Ok(letter) => {
                    items.push_back(letter.bounded());
                    if items.len() > KEEP {
                        items.pop_front();
                    }
                }
                Err(e) => {
                    bad += 1;
                    first_bad.get_or_insert_with(|| format!("the first, entry {seen}: {}", crate::sys::json::error_text(&e)));
                }
            }
            Ok(())
        })
        .and_then(|items| de.end().map(|()| items));
        drop(bytes);
        match read {
            Ok(items) => {
                d.items = items;
                let Some(first) = first_bad else { return (d, None) };
                let n = d.items.len();
                let (d, said) = d
                    .set_aside(&p, format!("{shown}: {bad} entr{} not a dead letter ({first})", if bad == 1 { "y is" } else { "ies are" }));
                (d, said.map(|s| format!("{s}; the {n} good one(s) kept")))
            }
            Err(e) => {
                let why = format!("{shown} is not a list of dead letters ({})", crate::sys::json::error_text(&e));
                d.set_aside(&p, why)
            }
        }
    }

    /// Moves the file at `p` aside, saying `why`; kept in memory only if it cannot be moved.
    fn set_aside(mut self, p: &std::path::Path, why: String) -> (DeadLetters, Option<String>) {
        match super::queue::set_aside(p) {
            Ok(bad) => (self, Some(format!("{why}; set aside as {}", crate::sys::display_path(&bad)))),
            Err(e) => {
                self.path = None;
                (self, Some(format!("{why}; it could not be set aside ({e}), so it is left as it is")))
            }
        }
    }

    /// Whether the file is still to be read.
    pub fn unread(&self) -> bool {
        self.unread
    }

    /// The file left unread by [`DeadLetters::load`], read now: its letters, then those set
    /// aside meanwhile, the last [`KEEP`] kept. Unchanged, and nothing said, while it still
    /// cannot be read. Blocking.
    pub fn read_again(self) -> (DeadLetters, Option<String>) {
        if !self.unread {
            return (self, None);
        }
        let (mut d, said) = DeadLetters::load(self.path.clone());
        if d.unread {
            return (self, None);
        }
        for letter in self.items {
            d.push(letter);
        }
        (d, said)
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
        if self.unread {
            return None;
        }
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
        // One entry that is not a letter: the file set aside as it was, the others kept.
        let text = format!("[{},{{\"channel\":\"pager\"}}]", serde_json::to_string(&letter).unwrap());
        std::fs::write(&path, &text).unwrap();
        let (kept, problem) = DeadLetters::load(Some(path.clone()));
        let problem = problem.unwrap();
        assert_eq!(kept.len(), 1, "{problem}");
        assert!(
            problem.contains("1 entry is not a dead letter (the first, entry 2: ") && problem.ends_with("the 1 good one(s) kept"),
            "{problem}"
        );
        assert_eq!(std::fs::read_to_string(dir.path().join(format!("{FILE_NAME}.bad"))).unwrap(), text);
        std::fs::write(&path, b"[").unwrap();
        let (empty, problem) = DeadLetters::load(Some(path));
        assert!(empty.is_empty() && problem.unwrap().contains("set aside"));
    }
}
