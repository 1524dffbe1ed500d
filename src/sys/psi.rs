//! A PSI memory trigger (Documentation/accounting/psi.rst): the kernel wakes us when tasks
//! stall on memory for `stall` within `window`. Unprivileged triggers (and root without
//! CAP_SYS_RESOURCE) need a window that is a multiple of 2 s.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

pub struct PsiTrigger {
    fd: AsyncFd<File>,
    pub description: String,
}

impl PsiTrigger {
    pub fn new(pressure_file: &Path, stall: Duration, window: Duration) -> std::io::Result<Self> {
        let mut file =
            std::fs::OpenOptions::new().read(true).write(true).custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC).open(pressure_file)?;
        let spec = format!("some {} {}", stall.as_micros(), window.as_micros());
        file.write_all(format!("{spec}\0").as_bytes())?;
        Ok(Self { fd: register(file)?, description: format!("{} \"{spec}\"", pressure_file.display()) })
    }

    /// Waits for the next stall event.
    pub async fn wait(&self) -> std::io::Result<()> {
        let mut ready = self.fd.ready(Interest::PRIORITY).await?;
        ready.clear_ready();
        Ok(())
    }
}

#[allow(unsafe_code)]
fn register(file: File) -> std::io::Result<AsyncFd<File>> {
    // SAFETY: the AsyncFd owns the File, whose descriptor stays open and unchanged while it lives.
    Ok(unsafe { AsyncFd::register_with_interest(file, Interest::PRIORITY) }?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_kernel_accepts_a_two_second_window_and_refuses_a_bad_one() {
        let p = Path::new("/proc/pressure/memory");
        assert!(p.exists(), "this kernel has no PSI; the daemon would poll only");
        let t = PsiTrigger::new(p, Duration::from_millis(150), Duration::from_secs(2)).unwrap();
        assert!(t.description.contains("some 150000 2000000"));
        assert!(PsiTrigger::new(p, Duration::from_millis(150), Duration::from_millis(1500)).is_err(), "window not a multiple of 2 s");
    }
}
