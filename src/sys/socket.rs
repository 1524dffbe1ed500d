//! The control socket's file: bound private (0600 in a 0700 directory), never deleting
//! anything but a stale socket.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use super::display_path;

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("another cluster-ai daemon already answers on {}; stop it first", display_path(.0))]
    InUse(PathBuf),
    #[error("control_socket {}: exists and is not a socket; not removing it. Fix: remove it, or set control_socket to another path", display_path(.0))]
    NotASocket(PathBuf),
    #[error("{}: {what}: {source}", display_path(path))]
    Io {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// Binds `path`, creating its directory (0700) if missing. A socket file left by a crashed
/// daemon is replaced; one that still answers means a second daemon, which is refused; a path
/// that is not a socket is never removed.
pub fn bind_private(path: &Path) -> Result<UnixListener, BindError> {
    let io = |what| move |source| BindError::Io { path: path.to_path_buf(), what, source };
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io("cannot create the socket directory"))?;
    }
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("cannot stat it")(e)),
        Ok(m) if !std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()) => return Err(BindError::NotASocket(path.to_path_buf())),
        // Only a socket that nobody answers on is a crashed daemon's leftover.
        Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => return Err(BindError::InUse(path.to_path_buf())),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                std::fs::remove_file(path).map_err(io("cannot remove the stale socket"))?
            }
            Err(e) => return Err(io("cannot tell whether a daemon answers on it")(e)),
        },
    }
    let listener = UnixListener::bind(path).map_err(io("cannot bind"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io("cannot chmod 0600"))?;
    listener.set_nonblocking(true).map_err(io("cannot make it non-blocking"))?;
    Ok(listener)
}

/// Removes the socket file at exit (best effort: it may already be gone).
pub fn remove(path: &Path) {
    let _ = std::fs::remove_file(path);
}

/// Whether an `accept` failed for want of file descriptors (`EMFILE`, `ENFILE`): accepting
/// again at once would spin.
pub fn out_of_descriptors(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}
