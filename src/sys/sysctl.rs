//! `/proc/sys/vm/swappiness` and `vfs_cache_pressure`, read and set under a root directory, with
//! the values found before the first change kept in the state directory so they can be put back,
//! and the values cluster-ai set beside them: a value someone else changed since is theirs, and
//! is left as it is.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tunables {
    pub swappiness: u32,
    pub vfs_cache_pressure: u32,
}

const SAVED: &str = "kernel-previous";

/// `/proc/sys/vm` under a root directory (`/`, or a fixture tree in tests).
pub struct Sysctl {
    root: PathBuf,
}

impl Sysctl {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join("proc/sys/vm").join(key)
    }

    fn get(&self, key: &str) -> std::io::Result<u32> {
        let p = self.path(key);
        let text = super::fs::read_text(&p, super::fs::SMALL_FILE).map_err(|e| named(&p, e))?;
        text.trim().parse().map_err(|_| std::io::Error::other(format!("{}: not a number: {text:?}", p.display())))
    }

    fn set(&self, key: &str, value: u32) -> std::io::Result<()> {
        let p = self.path(key);
        std::fs::write(&p, format!("{value}\n")).map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", p.display())))
    }

    pub fn read(&self) -> std::io::Result<Tunables> {
        Ok(Tunables { swappiness: self.get("swappiness")?, vfs_cache_pressure: self.get("vfs_cache_pressure")? })
    }

    fn write(&self, t: Tunables) -> std::io::Result<()> {
        self.set("swappiness", t.swappiness)?;
        self.set("vfs_cache_pressure", t.vfs_cache_pressure)
    }

    /// Sets `want`, saving the current values first unless an earlier run already saved the
    /// originals (a restart must not save our own values as "previous"), and recording `want`
    /// as what cluster-ai set. Returns the values that were in force.
    pub fn apply(&self, state_dir: &Path, want: Tunables) -> std::io::Result<Tunables> {
        let now = self.read()?;
        let saved = state_dir.join(SAVED);
        let previous = match super::fs::read_text(&saved, super::fs::SMALL_FILE) {
            Ok(text) => parse_saved(&text).map_err(|e| {
                std::io::Error::other(format!("{}: {e}; put the original values there (vm.swappiness=N lines), or delete it to keep the current ones as the originals", saved.display()))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => now,
            Err(e) => return Err(named(&saved, e)),
        };
        std::fs::create_dir_all(state_dir).map_err(|e| named(state_dir, e))?;
        let tmp = state_dir.join(format!("{SAVED}.tmp"));
        std::fs::write(&tmp, saved_text(previous, Some(want))).map_err(|e| named(&tmp, e))?;
        std::fs::rename(&tmp, &saved).map_err(|e| named(&saved, e))?;
        self.write(want)?;
        Ok(now)
    }

    /// Puts back each saved value whose key still holds what cluster-ai set, leaves the others
    /// (someone else changed them), and forgets the saved file; `None` when nothing was saved.
    /// A file from before cluster-ai recorded what it set puts every value back.
    pub fn restore(&self, state_dir: &Path) -> std::io::Result<Option<Restored>> {
        let saved = state_dir.join(SAVED);
        let text = match super::fs::read_text(&saved, super::fs::SMALL_FILE) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(named(&saved, e)),
        };
        let previous = parse_saved(&text).map_err(|e| {
            std::io::Error::other(format!(
                "{}: {e}; nothing was put back: write the values to restore there (vm.swappiness=N and vm.vfs_cache_pressure=N lines), or delete it to keep the current ones",
                saved.display()
            ))
        })?;
        let restored = restore_per_key(previous, parse_set(&text), self.read()?);
        for (key, value) in &restored.put_back {
            self.set(key.trim_start_matches("vm."), *value)?;
        }
        std::fs::remove_file(&saved).map_err(|e| named(&saved, e))?;
        Ok(Some(restored))
    }
}

/// `e` with the file it is about: the bounded reader's "it is a FIFO" names none.
fn named(path: &Path, e: std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// A key cluster-ai did not put back: its value `now` is not the `set` one cluster-ai wrote,
/// or the saved file has lost the record of what it wrote (`None`: edited or cut by hand).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Left {
    /// "vm.swappiness" or "vm.vfs_cache_pressure".
    pub key: &'static str,
    pub now: u32,
    pub set: Option<u32>,
    pub previous: u32,
}

/// What a restore did: the keys put back to their saved value, and the ones left as they were.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Restored {
    pub put_back: Vec<(&'static str, u32)>,
    pub left: Vec<Left>,
}

impl Restored {
    /// One line on the keys left as they were; `None` when every key was put back.
    pub fn left_text(&self) -> Option<String> {
        let parts: Vec<String> = self
            .left
            .iter()
            .map(|l| match l.set {
                Some(set) => format!(
                    "{} is {}, not the {set} cluster-ai set: someone else changed it; left as it is (not put back to {})",
                    l.key, l.now, l.previous
                ),
                None => format!(
                    "{} is {}, and the saved file no longer records what cluster-ai set (edited or cut): it may not be ours; left as it is (not put back to {})",
                    l.key, l.now, l.previous
                ),
            })
            .collect();
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

impl std::fmt::Display for Restored {
    /// "vm.swappiness 60 and vm.vfs_cache_pressure 100 restored; vm.… is …, left as it is".
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let back: Vec<String> = self.put_back.iter().map(|(k, v)| format!("{k} {v}")).collect();
        if !back.is_empty() {
            write!(f, "{} restored", back.join(" and "))?;
        }
        if let Some(left) = self.left_text() {
            write!(f, "{}{left}", if back.is_empty() { "" } else { "; " })?;
        }
        Ok(())
    }
}

/// Per key: the saved `previous` value goes back while the kernel holds the value cluster-ai
/// `set` (`None`: not recorded, an older state file: put back); otherwise it is left.
pub fn restore_plan(previous: Tunables, set: Option<Tunables>, now: Tunables) -> Restored {
    restore_per_key(previous, set.map(|t| [Some(t.swappiness), Some(t.vfs_cache_pressure)]), now)
}

/// [`restore_plan`] from the saved file's record, key by key: with a record (`Some`), a key
/// whose own line is missing or garbled is left, not put back blindly; a file with no record
/// at all (`None`, written before there was one) puts every key back.
fn restore_per_key(previous: Tunables, record: Option<[Option<u32>; 2]>, now: Tunables) -> Restored {
    let keys = [
        ("vm.swappiness", previous.swappiness, record.map(|r| r[0]), now.swappiness),
        ("vm.vfs_cache_pressure", previous.vfs_cache_pressure, record.map(|r| r[1]), now.vfs_cache_pressure),
    ];
    let mut r = Restored::default();
    for (key, previous, set, now) in keys {
        match set {
            Some(Some(set)) if set == now => r.put_back.push((key, previous)),
            Some(set) => r.left.push(Left { key, now, set, previous }),
            None => r.put_back.push((key, previous)),
        }
    }
    r
}

/// How the values cluster-ai set are recorded in the saved file: comments to `sysctl`.
const SET_PREFIX: &str = "# set by cluster-ai: ";

/// The saved values' file: `sysctl.conf` lines, so an admin can read (and apply) it by hand,
/// and, as comments, the values cluster-ai set.
fn saved_text(previous: Tunables, set: Option<Tunables>) -> String {
    let mut text = format!("vm.swappiness={}\nvm.vfs_cache_pressure={}\n", previous.swappiness, previous.vfs_cache_pressure);
    if let Some(t) = set {
        text += &format!("{SET_PREFIX}vm.swappiness={}\n{SET_PREFIX}vm.vfs_cache_pressure={}\n", t.swappiness, t.vfs_cache_pressure);
    }
    text
}

/// The values cluster-ai recorded as set, per key (`None` where that key's line is missing or
/// not a number); `None` for a file with no record line at all, one written before there was
/// a record.
fn parse_set(text: &str) -> Option<[Option<u32>; 2]> {
    let lines: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix(SET_PREFIX.trim_end())).map(str::trim_start).collect();
    (!lines.is_empty()).then(|| ["vm.swappiness", "vm.vfs_cache_pressure"].map(|key| lines.iter().find_map(|l| value_of(l, key))))
}

/// `KEY=N` (spaces around `=` allowed, as in sysctl.conf) as N.
fn value_of(line: &str, key: &str) -> Option<u32> {
    line.trim_start().strip_prefix(key)?.trim_start().strip_prefix('=')?.trim().parse().ok()
}

/// The values in a saved file: the first valid line of each key.
fn parse_saved(text: &str) -> Result<Tunables, String> {
    let value = |key: &str| text.lines().find_map(|l| value_of(l, key)).ok_or_else(|| format!("no valid {key}"));
    Ok(Tunables { swappiness: value("vm.swappiness")?, vfs_cache_pressure: value("vm.vfs_cache_pressure")? })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A kernel tree with vm.swappiness 60 and vm.vfs_cache_pressure 100 (the kernel's
    /// defaults): the tempdir (kept alive by the caller), its vm directory, the state file's
    /// path, and the Sysctl on it.
    fn kernel_at_60_100() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf, Sysctl) {
        let t = tempfile::tempdir().unwrap();
        let vm = t.path().join("proc/sys/vm");
        std::fs::create_dir_all(&vm).unwrap();
        std::fs::write(vm.join("swappiness"), "60\n").unwrap();
        std::fs::write(vm.join("vfs_cache_pressure"), "100\n").unwrap();
        let state = t.path().join("state");
        let s = Sysctl::new(t.path());
        (t, vm, state, s)
    }

    #[test]
    fn apply_saves_the_originals_once_and_restore_puts_them_back() {
        let (_t, _vm, state, s) = kernel_at_60_100();
        assert_eq!(
            s.apply(&state, Tunables { swappiness: 10, vfs_cache_pressure: 50 }).unwrap(),
            Tunables { swappiness: 60, vfs_cache_pressure: 100 }
        );
        assert_eq!(s.read().unwrap(), Tunables { swappiness: 10, vfs_cache_pressure: 50 });
        // A restart applies again: the saved originals stay 60/100.
        s.apply(&state, Tunables { swappiness: 30, vfs_cache_pressure: 100 }).unwrap();
        assert_eq!(s.read().unwrap(), Tunables { swappiness: 30, vfs_cache_pressure: 100 });
        let r = s.restore(&state).unwrap().unwrap();
        assert_eq!(r.put_back, [("vm.swappiness", 60), ("vm.vfs_cache_pressure", 100)]);
        assert_eq!(r.to_string(), "vm.swappiness 60 and vm.vfs_cache_pressure 100 restored");
        assert_eq!(s.read().unwrap(), Tunables { swappiness: 60, vfs_cache_pressure: 100 });
        assert_eq!(s.restore(&state).unwrap(), None, "nothing saved any more");
    }

    #[test]
    fn a_value_someone_else_changed_is_left_and_said() {
        let (_t, vm, state, s) = kernel_at_60_100();
        s.apply(&state, Tunables { swappiness: 10, vfs_cache_pressure: 50 }).unwrap();
        // An admin (or another tool) sets swappiness after us.
        std::fs::write(vm.join("swappiness"), "35\n").unwrap();
        let r = s.restore(&state).unwrap().unwrap();
        assert_eq!(r.put_back, [("vm.vfs_cache_pressure", 100)]);
        assert_eq!(r.left, [Left { key: "vm.swappiness", now: 35, set: Some(10), previous: 60 }]);
        assert_eq!(
            r.to_string(),
            "vm.vfs_cache_pressure 100 restored; vm.swappiness is 35, not the 10 cluster-ai set: someone else changed it; left as it is (not put back to 60)"
        );
        assert_eq!(s.read().unwrap(), Tunables { swappiness: 35, vfs_cache_pressure: 100 });
        assert!(!state.join(SAVED).exists(), "done with the saved file");
    }

    #[test]
    fn a_saved_file_from_before_the_record_puts_everything_back() {
        let (r, now, _) = restore_from((35, 50), "vm.swappiness=60\nvm.vfs_cache_pressure=100\n");
        let r = r.unwrap().unwrap();
        assert!(r.left.is_empty(), "{r}");
        assert_eq!(now, Tunables { swappiness: 60, vfs_cache_pressure: 100 });
    }

    /// A root with the kernel at `now` and a saved file of `text`; what restore did.
    fn restore_from(now: (u32, u32), text: &str) -> (std::io::Result<Option<Restored>>, Tunables, bool) {
        let t = tempfile::tempdir().unwrap();
        let vm = t.path().join("proc/sys/vm");
        std::fs::create_dir_all(&vm).unwrap();
        std::fs::write(vm.join("swappiness"), format!("{}\n", now.0)).unwrap();
        std::fs::write(vm.join("vfs_cache_pressure"), format!("{}\n", now.1)).unwrap();
        std::fs::write(t.path().join(SAVED), text).unwrap();
        let s = Sysctl::new(t.path());
        let r = s.restore(t.path());
        (r, s.read().unwrap(), t.path().join(SAVED).exists())
    }

    #[test]
    fn a_record_cut_or_edited_leaves_the_key_it_lost() {
        // Cut after the first record line: swappiness is still ours (10) and goes back; the
        // vfs_cache_pressure record is gone, so its 77 (someone's?) stays, and is said.
        let cut = "vm.swappiness=60\nvm.vfs_cache_pressure=100\n# set by cluster-ai: vm.swappiness=10\n# set by cluster-ai: vm.vfs_cac";
        let (r, now, kept) = restore_from((10, 77), cut);
        let r = r.unwrap().unwrap();
        assert_eq!(now, Tunables { swappiness: 60, vfs_cache_pressure: 77 }, "{r}");
        assert_eq!(r.left, [Left { key: "vm.vfs_cache_pressure", now: 77, set: None, previous: 100 }]);
        assert!(r.to_string().contains("vm.vfs_cache_pressure is 77, and the saved file no longer records what cluster-ai set"), "{r}");
        assert!(!kept);
        // A record line garbled by hand: the same.
        let (r, now, _) = restore_from((35, 50), "vm.swappiness=60\nvm.vfs_cache_pressure=100\n# set by cluster-ai: vm.swappiness=ten\n# set by cluster-ai: vm.vfs_cache_pressure=50\n");
        assert_eq!(now, Tunables { swappiness: 35, vfs_cache_pressure: 100 }, "{:?}", r);
        // Written as sysctl.conf allows, spaces around '=': read, not refused.
        let (r, now, _) = restore_from((10, 50), "vm.swappiness = 60\nvm.vfs_cache_pressure = 100\n# set by cluster-ai: vm.swappiness = 10\n# set by cluster-ai: vm.vfs_cache_pressure = 50\n");
        assert!(r.unwrap().unwrap().left.is_empty());
        assert_eq!(now, Tunables { swappiness: 60, vfs_cache_pressure: 100 });
    }

    #[test]
    fn a_saved_file_that_says_nothing_puts_nothing_back_and_says_the_fix() {
        for text in ["", "vm.swappiness=60\n", "\0\0\0garbage", "vm.swappiness=-1\nvm.vfs_cache_pressure=100\n"] {
            let (r, now, kept) = restore_from((10, 50), text);
            let e = r.unwrap_err().to_string();
            assert!(e.contains("kernel-previous") && e.contains("nothing was put back") && e.contains("delete it"), "{text:?}: {e}");
            assert_eq!(now, Tunables { swappiness: 10, vfs_cache_pressure: 50 }, "{text:?}");
            assert!(kept, "kept for the admin to mend: {text:?}");
        }
    }

    #[test]
    fn a_saved_file_that_is_no_file_is_named() {
        let t = tempfile::tempdir().unwrap();
        let vm = t.path().join("proc/sys/vm");
        std::fs::create_dir_all(&vm).unwrap();
        std::fs::write(vm.join("swappiness"), "10\n").unwrap();
        std::fs::write(vm.join("vfs_cache_pressure"), "50\n").unwrap();
        std::fs::create_dir(t.path().join(SAVED)).unwrap();
        let s = Sysctl::new(t.path());
        for e in [s.restore(t.path()).unwrap_err(), s.apply(t.path(), Tunables { swappiness: 1, vfs_cache_pressure: 1 }).unwrap_err()] {
            assert_eq!(e.to_string(), format!("{}: it is a directory, not a regular file", t.path().join(SAVED).display()));
        }
        assert_eq!(s.read().unwrap(), Tunables { swappiness: 10, vfs_cache_pressure: 50 }, "nothing set, nothing put back");
    }

    #[test]
    fn garbage_is_an_error() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("proc/sys/vm")).unwrap();
        std::fs::write(t.path().join("proc/sys/vm/swappiness"), "lots\n").unwrap();
        assert!(Sysctl::new(t.path()).read().is_err());
        std::fs::write(t.path().join("kernel-previous"), "vm.swappiness=x\n").unwrap();
        assert!(Sysctl::new(t.path()).restore(t.path()).is_err());
    }

    mod props {
        use proptest::prelude::*;

        use super::super::*;
        use crate::testing::text_like;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn saved_values_round_trip(swappiness in any::<u32>(), vfs_cache_pressure in any::<u32>(), set in any::<Option<(u32, u32)>>()) {
                let t = Tunables { swappiness, vfs_cache_pressure };
                let set = set.map(|(swappiness, vfs_cache_pressure)| Tunables { swappiness, vfs_cache_pressure });
                prop_assert_eq!(parse_saved(&saved_text(t, set)), Ok(t));
                prop_assert_eq!(parse_set(&saved_text(t, set)), set.map(|s| [Some(s.swappiness), Some(s.vfs_cache_pressure)]));
            }

            /// A saved file edited, cut or corrupted: values or an error naming the key, never a panic.
            #[test]
            fn any_saved_text_is_values_or_an_error(t in text_like("vm.swappiness=60\nvm.vfs_cache_pressure=100\n")) {
                if let Err(e) = parse_saved(&t) {
                    prop_assert!(e.contains("vm.swappiness") || e.contains("vm.vfs_cache_pressure"), "{e}");
                }
            }
        }
    }
}
