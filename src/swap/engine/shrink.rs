//! Taking swap away: the newest file at a shrink, every managed file at `swap clean`.

use super::*;

impl Engine {
    /// Removes the newest managed file (blocking), if what is left keeps min_size and its
    /// pages fit in available memory.
    pub fn shrink(&mut self, reason: &str) -> Result<PathBuf, SwapError> {
        self.managing_fs()?;
        let inv = self.inventory()?;
        let Some(newest) = inv.newest().cloned() else {
            return Err(SwapError::Refused("no managed swap file to remove".into()));
        };
        let r = self.readings(Instant::now())?;
        match policy::check_shrink(&self.cfg, &self.books(&inv), &r) {
            Ok(()) => {}
            Err(Hold::AtMin { .. }) => {
                return Err(SwapError::Refused(format!(
                    "removing {} would leave {} managed, below swap.min_size {}",
                    display_path(&newest.path),
                    human_size(inv.managed_total().saturating_sub(newest.size_bytes)),
                    format_size(self.cfg.min_size)
                )))
            }
            Err(_) => {
                return Err(SwapError::Refused(format!(
                    "the {} in use in {} would not fit in {} of available memory",
                    human_size(newest.used_bytes),
                    display_path(&newest.path),
                    human_size(r.mem_available)
                )))
            }
        }
        self.remove_file(&newest, reason, r.used_percent())?;
        Ok(newest.path)
    }

    fn remove_file(&mut self, f: &ManagedFile, reason: &str, memory_percent: f64) -> Result<(), SwapError> {
        let start = StdInstant::now();
        files::remove(self.os.as_mut(), &f.path)?;
        self.counters.shrinks += 1;
        if let Ok(inv) = self.inventory() {
            self.publish(&inv);
        }
        tracing::info!(
            file = %display_path(&f.path),
            size = f.size_bytes,
            used = f.used_bytes,
            reason,
            memory_percent,
            elapsed_ms = start.elapsed().as_secs_f64() * 1000.0,
            "swap file removed ({reason})"
        );
        Ok(())
    }

    /// swapoff and delete every managed file, newest first, and put back kernel tunables.
    /// Refused when memory could not take their pages, unless `force`.
    pub fn clean(&mut self, force: bool) -> Result<String, SwapError> {
        self.managing_fs()?;
        let inv = self.inventory()?;
        let r = self.readings(Instant::now())?;
        let used = inv.managed_used();
        if !force && !policy::fits_in_memory(used, &r) {
            return Err(SwapError::Refused(format!(
                "{} of managed swap is in use and {} of memory is available: swapping it all in could run out of memory; use --force to do it anyway",
                human_size(used),
                human_size(r.mem_available)
            )));
        }
        let mut removed = 0;
        for f in inv.managed.iter().rev() {
            self.remove_file(f, "swap clean", r.used_percent())?;
            removed += 1;
        }
        for p in inv.inactive.iter().chain(&inv.partials).chain(inv.spare.as_ref().map(|(p, _)| p)) {
            self.os.delete(files::name_of(p))?;
            removed += 1;
        }
        let restored = match self.os.restore_tuning() {
            Ok(Some(r)) => {
                if let Some(left) = r.left_text() {
                    tracing::warn!("swap clean: {left}");
                }
                format!("; {r}")
            }
            Ok(None) => String::new(),
            Err(e) => format!("; restoring kernel settings failed: {e}"),
        };
        Ok(format!("removed {removed} swap file(s) from {}{restored}", display_path(&self.cfg.dir)))
    }
}
