//! Where the daemon keeps its runtime files, for the daemon and the CLI alike.

use std::path::PathBuf;

pub const DEFAULT_CONFIG: &str = "/etc/cluster-ai/config.toml";
pub const SOCKET_NAME: &str = "control.sock";

/// `$RUNTIME_DIRECTORY` when set (systemd sets it from `RuntimeDirectory=`), else
/// `/run/cluster-ai` as root, else `$XDG_RUNTIME_DIR/cluster-ai`.
pub fn runtime_dir() -> Result<PathBuf, String> {
    runtime_dir_from(
        std::env::var_os("RUNTIME_DIRECTORY"),
        nix::unistd::geteuid().is_root(),
        std::env::var_os("XDG_RUNTIME_DIR"),
    )
}

fn runtime_dir_from(
    runtime_directory: Option<std::ffi::OsString>,
    is_root: bool,
    xdg_runtime_dir: Option<std::ffi::OsString>,
) -> Result<PathBuf, String> {
    if let Some(dirs) = runtime_directory.filter(|d| !d.is_empty()) {
        // systemd joins several RuntimeDirectory= entries with ':'; ours is the first.
        let dirs = dirs.to_string_lossy().into_owned();
        return Ok(PathBuf::from(dirs.split(':').next().unwrap_or(&dirs)));
    }
    if is_root {
        return Ok(PathBuf::from("/run/cluster-ai"));
    }
    match xdg_runtime_dir.filter(|d| !d.is_empty()) {
        Some(dir) => Ok(PathBuf::from(dir).join("cluster-ai")),
        None => Err("no runtime directory: not root and neither RUNTIME_DIRECTORY nor XDG_RUNTIME_DIR is set; \
                     set one of them or pass --socket PATH"
            .into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_dir_precedence() {
        let os = |s: &str| Some(std::ffi::OsString::from(s));
        assert_eq!(
            runtime_dir_from(os("/run/cluster-ai:/run/x"), false, os("/run/user/1")).unwrap(),
            PathBuf::from("/run/cluster-ai")
        );
        assert_eq!(
            runtime_dir_from(None, true, os("/run/user/0")).unwrap(),
            PathBuf::from("/run/cluster-ai")
        );
        assert_eq!(
            runtime_dir_from(os(""), false, os("/run/user/1000")).unwrap(),
            PathBuf::from("/run/user/1000/cluster-ai")
        );
        let err = runtime_dir_from(None, false, None).unwrap_err();
        assert!(err.contains("XDG_RUNTIME_DIR"), "{err}");
    }
}
