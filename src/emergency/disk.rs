//! The disk measure: the cleaners that are switched on, each limited to what it is told
//! (Docker's dangling images and build cache, the journal, old files in the named directories).

use super::*;

impl Emergency {
    pub(super) async fn disk_act(&mut self, why: &str) {
        let c = self.cfg.clone();
        if c.journal_vacuum_size.is_none() && c.pip_cache_dirs.is_empty() && !c.docker_prune && c.temp_dirs.is_empty() {
            self.problem(
                "disk",
                Some("disk is over its threshold and no cleaner is on: see [emergency] journal_vacuum_size, pip_cache_dirs, docker_prune, temp_dirs".into()),
            );
            return;
        }
        if let Some(size) = c.journal_vacuum_size {
            self.vacuum_journal(why, size).await;
        }
        for dir in c.pip_cache_dirs {
            self.sweep(why, "clean_pip_cache", dir, None).await;
        }
        for dir in c.temp_dirs {
            self.sweep(why, "clean_temp_dir", dir, Some(c.temp_max_age)).await;
        }
        if c.docker_prune {
            let docker = Endpoint::Unix(c.docker_socket.clone());
            if !self.act {
                self.record("disk", "docker_prune", why, "prune Docker's dangling images and build cache".into(), None, false);
                return;
            }
            match peers::docker_prune_images(&docker).await {
                Ok(p) => {
                    self.problem("docker", None);
                    self.record(
                        "disk",
                        "docker_prune_images",
                        why,
                        format!("pruned {} dangling Docker image(s)", p.items),
                        Some(p.bytes),
                        true,
                    );
                }
                Err(e) => return self.problem("docker", Some(format!("{docker}: {e}"))),
            }
            match peers::docker_prune_build_cache(&docker).await {
                Ok(p) => self.record(
                    "disk",
                    "docker_prune_build_cache",
                    why,
                    format!("pruned {} build cache record(s)", p.items),
                    Some(p.bytes),
                    true,
                ),
                Err(e) => self.record("disk", "docker_prune_build_cache", why, format!("prune the build cache: {e}"), None, false),
            }
        }
    }

    pub(super) async fn vacuum_journal(&mut self, why: &str, size: u64) {
        let arg = format!("--vacuum-size={size}");
        if !self.act {
            return self.record("disk", "vacuum_journal", why, format!("journalctl {arg}"), None, false);
        }
        let node = self.node.clone();
        match tokio::task::spawn_blocking(move || node.vacuum_journal(size)).await {
            Ok(Ok(freed)) => self.record("disk", "vacuum_journal", why, format!("journalctl {arg}"), Some(freed), true),
            Ok(Err(e)) => self.record("disk", "vacuum_journal", why, e, None, false),
            Err(e) => self.record("disk", "vacuum_journal", why, format!("journalctl {arg}: {e}"), None, false),
        }
    }

    pub(super) async fn sweep(&mut self, why: &str, action: &str, dir: PathBuf, age: Option<Duration>) {
        let shown = crate::sys::display_path(&dir);
        let what = match age {
            Some(a) => format!("files older than {} under {shown}", fmt(a)),
            None => format!("files under {shown}"),
        };
        if !self.act {
            return self.record("disk", action, why, format!("remove {what}"), None, false);
        }
        let d = dir.clone();
        match tokio::task::spawn_blocking(move || crate::sys::sweep::remove_files(&d, age)).await {
            Ok(Ok(s)) => {
                let errors = if s.errors > 0 { format!(" ({} left: not readable or not removable)", s.errors) } else { String::new() };
                self.record("disk", action, why, format!("removed {} {what}{errors}", s.files), Some(s.bytes), true)
            }
            Ok(Err(e)) => self.record("disk", action, why, format!("{shown}: {e}"), None, false),
            Err(e) => self.record("disk", action, why, format!("{shown}: {e}"), None, false),
        }
    }
}
