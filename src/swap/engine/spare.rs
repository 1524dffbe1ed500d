//! The spare swap file (issue 19): made ahead, enabled only when the policy adds a file.

use super::*;

impl Engine {
    /// Carries out the spare rule's step (blocking).
    pub fn spare(&mut self, step: SpareStep) -> Result<String, SwapError> {
        match step {
            SpareStep::Make { size } => self.make_spare(size),
            SpareStep::Remove { why } => self.remove_spare(why.describe()).map(|_| String::new()),
        }
    }

    /// Makes the spare (blocking): `size` bytes, fallocated, header written, synced, not
    /// enabled; refused past the disk guard.
    pub fn make_spare(&mut self, size: u64) -> Result<String, SwapError> {
        let fs = self.managing_fs()?;
        let inv = self.inventory()?;
        if inv.spare.is_some() {
            return Ok(String::new());
        }
        let size = policy::check_expand(&self.cfg, &self.books(&inv), size).map_err(|hold| {
            SwapError::Refused(format!("spare: {} on {}", Decision::Hold { why: hold }.describe(), display_path(&self.cfg.dir)))
        })?;
        let start = StdInstant::now();
        let (path, steps) = match files::create_spare(self.os.as_mut(), &self.cfg.dir, fs, size) {
            Ok(made) => made,
            Err(e) => {
                self.spare_retry_at = Some(StdInstant::now() + SPARE_RETRY);
                // As for a file: found out once, monitoring only.
                if let Some(why) = impossible_here(&e, fs) {
                    self.mode = Mode::MonitoringOnly(why.clone());
                    return Err(SwapError::Refused(format!(
                        "cannot manage swap: {why}; monitoring only until swap.dir changes or the daemon restarts"
                    )));
                }
                return Err(SwapError::Io(std::io::Error::new(
                    e.kind(),
                    format!("making the spare swap file (next try in {} s): {e}", SPARE_RETRY.as_secs()),
                )));
            }
        };
        self.spare_retry_at = None;
        if let Ok(inv) = self.inventory() {
            self.publish(&inv);
        }
        tracing::info!(
            file = %display_path(&path),
            size,
            elapsed_ms = start.elapsed().as_secs_f64() * 1000.0,
            steps = %steps,
            "spare swap file ready: {} (made, not enabled: a burst could need it sooner than a file is made)",
            human_size(size)
        );
        Ok(format!("made the spare {}", display_path(&path)))
    }

    /// Deletes the spare, if there is one (blocking). Returns whether there was.
    pub fn remove_spare(&mut self, why: &str) -> Result<bool, SwapError> {
        self.managing_fs()?;
        let inv = self.inventory()?;
        let Some((path, size)) = inv.spare else { return Ok(false) };
        self.os.delete(files::name_of(&path))?;
        if let Ok(inv) = self.inventory() {
            self.publish(&inv);
        }
        tracing::info!(file = %display_path(&path), size, "spare swap file removed ({why})");
        Ok(true)
    }
}
