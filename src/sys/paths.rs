//! Where the daemon keeps its runtime files, for the daemon and the CLI alike.

use std::path::{Path, PathBuf};

pub const DEFAULT_CONFIG: &str = "/etc/cluster-ai/config.toml";
pub const SOCKET_NAME: &str = "control.sock";
/// The runtime directory of the system daemon (root, or `RuntimeDirectory=` under systemd).
pub const SYSTEM_RUNTIME_DIR: &str = "/run/cluster-ai";

/// `$STATE_DIRECTORY` when set (systemd sets it from `StateDirectory=`), else
/// `/var/lib/cluster-ai`.
pub fn state_dir() -> PathBuf {
    match std::env::var_os("STATE_DIRECTORY").filter(|d| !d.is_empty()) {
        Some(dirs) => {
            let dirs = dirs.to_string_lossy().into_owned();
            PathBuf::from(dirs.split(':').next().unwrap_or(&dirs))
        }
        None => PathBuf::from("/var/lib/cluster-ai"),
    }
}

/// `$RUNTIME_DIRECTORY` when set (systemd sets it from `RuntimeDirectory=`), else
/// `/run/cluster-ai` as root, else `$XDG_RUNTIME_DIR/cluster-ai`, else (a user without a login
/// session, say over plain ssh) `/tmp/cluster-ai-UID`, which must then be the user's own and
/// closed to others.
pub fn runtime_dir() -> Result<PathBuf, String> {
    let uid = nix::unistd::geteuid().as_raw();
    let dir = runtime_dir_from(std::env::var_os("RUNTIME_DIRECTORY"), uid, std::env::var_os("XDG_RUNTIME_DIR"));
    if dir.starts_with(std::env::temp_dir()) {
        check_private(&dir, uid)?;
    }
    Ok(dir)
}

fn runtime_dir_from(runtime_directory: Option<std::ffi::OsString>, uid: u32, xdg_runtime_dir: Option<std::ffi::OsString>) -> PathBuf {
    if let Some(dirs) = runtime_directory.filter(|d| !d.is_empty()) {
        // systemd joins several RuntimeDirectory= entries with ':'; ours is the first.
        let dirs = dirs.to_string_lossy().into_owned();
        return PathBuf::from(dirs.split(':').next().unwrap_or(&dirs));
    }
    if uid == 0 {
        return PathBuf::from(SYSTEM_RUNTIME_DIR);
    }
    match xdg_runtime_dir.filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("cluster-ai"),
        None => std::env::temp_dir().join(format!("cluster-ai-{uid}")),
    }
}

/// A directory in the shared /tmp is only usable if nobody else made it first.
fn check_private(dir: &Path, uid: u32) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    match std::fs::symlink_metadata(dir) {
        Err(_) => Ok(()),
        Ok(m) if m.is_dir() && m.uid() == uid && m.mode() & 0o077 == 0 => Ok(()),
        Ok(_) => Err(format!("{}: not a directory of uid {uid} with mode 0700; remove it, or set XDG_RUNTIME_DIR", dir.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_dir_precedence() {
        let os = |s: &str| Some(std::ffi::OsString::from(s));
        assert_eq!(runtime_dir_from(os("/run/cluster-ai:/run/x"), 1000, os("/run/user/1")), PathBuf::from("/run/cluster-ai"));
        assert_eq!(runtime_dir_from(None, 0, os("/run/user/0")), PathBuf::from("/run/cluster-ai"));
        assert_eq!(runtime_dir_from(os(""), 1000, os("/run/user/1000")), PathBuf::from("/run/user/1000/cluster-ai"));
        assert_eq!(runtime_dir_from(None, 1000, None), std::env::temp_dir().join("cluster-ai-1000"));
    }

    #[test]
    fn a_shared_tmp_dir_must_be_private() {
        use std::os::unix::fs::PermissionsExt;
        let me = nix::unistd::geteuid().as_raw();
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("cluster-ai-x");
        assert!(check_private(&dir, me).is_ok(), "absent: will be created 0700");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(check_private(&dir, me).is_ok());
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(check_private(&dir, me).unwrap_err().contains("mode 0700"));
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(check_private(&dir, me + 1).is_err(), "someone else's directory");
    }
}
