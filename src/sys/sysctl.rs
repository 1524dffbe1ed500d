//! `/proc/sys/vm/swappiness` and `vfs_cache_pressure`, read and set under a root directory, with
//! the values found before the first change kept in the state directory so they can be put back.

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
        let text = super::fs::read_text(&p, super::fs::SMALL_FILE)?;
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
    /// originals (a restart must not save our own values as "previous"). Returns the values
    /// that were in force.
    pub fn apply(&self, state_dir: &Path, want: Tunables) -> std::io::Result<Tunables> {
        let now = self.read()?;
        let saved = state_dir.join(SAVED);
        if !saved.exists() {
            std::fs::create_dir_all(state_dir)?;
            let tmp = state_dir.join(format!("{SAVED}.tmp"));
            std::fs::write(&tmp, saved_text(now))?;
            std::fs::rename(&tmp, &saved)?;
        }
        self.write(want)?;
        Ok(now)
    }

    /// Puts back the saved values and forgets them; `None` when nothing was saved.
    pub fn restore(&self, state_dir: &Path) -> std::io::Result<Option<Tunables>> {
        let saved = state_dir.join(SAVED);
        let text = match super::fs::read_text(&saved, super::fs::SMALL_FILE) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let previous = parse_saved(&text).map_err(|e| std::io::Error::other(format!("{}: {e}", saved.display())))?;
        self.write(previous)?;
        std::fs::remove_file(&saved)?;
        Ok(Some(previous))
    }
}

/// The saved values' file: `sysctl.conf` lines, so an admin can read (and apply) it by hand.
fn saved_text(t: Tunables) -> String {
    format!("vm.swappiness={}\nvm.vfs_cache_pressure={}\n", t.swappiness, t.vfs_cache_pressure)
}

/// The values in a saved file: the first valid line of each key.
fn parse_saved(text: &str) -> Result<Tunables, String> {
    let value = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('=')?.trim().parse::<u32>().ok())
            .ok_or_else(|| format!("no valid {key}"))
    };
    Ok(Tunables { swappiness: value("vm.swappiness")?, vfs_cache_pressure: value("vm.vfs_cache_pressure")? })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_saves_the_originals_once_and_restore_puts_them_back() {
        let t = tempfile::tempdir().unwrap();
        let vm = t.path().join("proc/sys/vm");
        std::fs::create_dir_all(&vm).unwrap();
        std::fs::write(vm.join("swappiness"), "60\n").unwrap();
        std::fs::write(vm.join("vfs_cache_pressure"), "100\n").unwrap();
        let state = t.path().join("state");
        let s = Sysctl::new(t.path());
        assert_eq!(
            s.apply(&state, Tunables { swappiness: 10, vfs_cache_pressure: 50 }).unwrap(),
            Tunables { swappiness: 60, vfs_cache_pressure: 100 }
        );
        assert_eq!(s.read().unwrap(), Tunables { swappiness: 10, vfs_cache_pressure: 50 });
        // A restart applies again: the saved originals stay 60/100.
        s.apply(&state, Tunables { swappiness: 30, vfs_cache_pressure: 100 }).unwrap();
        assert_eq!(s.read().unwrap(), Tunables { swappiness: 30, vfs_cache_pressure: 100 });
        assert_eq!(s.restore(&state).unwrap(), Some(Tunables { swappiness: 60, vfs_cache_pressure: 100 }));
        assert_eq!(s.read().unwrap(), Tunables { swappiness: 60, vfs_cache_pressure: 100 });
        assert_eq!(s.restore(&state).unwrap(), None, "nothing saved any more");
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
            fn saved_values_round_trip(swappiness in any::<u32>(), vfs_cache_pressure in any::<u32>()) {
                let t = Tunables { swappiness, vfs_cache_pressure };
                prop_assert_eq!(parse_saved(&saved_text(t)), Ok(t));
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
