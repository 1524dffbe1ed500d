//! A streamed answer read one line at a time (Docker's `/events`: one JSON object per line,
//! chunked, for as long as the connection lasts), through hyper like every other answer.

use std::path::Path;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::net::UnixStream;

use super::{build_request, drive, handshake, protocol, Connection, HttpError, MAX_HEAD};

/// A line longer than this is not an event: the stream is refused.
pub const MAX_LINE: usize = 1 << 20;

pub struct Lines {
    body: Incoming,
    /// The connection that serves `body`, polled while the body is read; `None` once it ended.
    conn: Option<Connection>,
    /// Body bytes not yet returned as a line.
    pending: Vec<u8>,
}

/// `GET path` on a unix socket; `Ok` once the head says 200, then [`Lines::next_line`]. The
/// deadline covers the connection and the head only.
pub async fn stream_lines(socket: &Path, path: &str, timeout: Duration) -> Result<Lines, HttpError> {
    let open = async {
        let stream = UnixStream::connect(socket).await.map_err(super::connect_error)?;
        let mut req = build_request("localhost", "GET", path, None)?;
        // The stream lasts: no `connection: close`.
        req.headers_mut().remove(hyper::header::CONNECTION);
        // The bytes a stream may carry have no bound; its lines have one (MAX_LINE).
        let (mut sender, conn) = handshake(stream, u64::MAX).await?;
        let mut conn: Option<Connection> = Some(Box::pin(conn));
        let answer = drive(async { sender.send_request(req).await.map_err(|e| protocol(&e)) }, &mut conn).await?;
        if answer.status() != hyper::StatusCode::OK {
            return Err(HttpError::Protocol(format!("answered {}", answer.status().as_u16())));
        }
        Ok(Lines { body: answer.into_body(), conn, pending: Vec::with_capacity(MAX_HEAD) })
    };
    tokio::time::timeout(timeout, open).await.unwrap_or(Err(HttpError::Timeout(timeout)))
}

impl Lines {
    /// The next line (without its newline); `None` when the server ended the stream.
    pub async fn next_line(&mut self) -> Result<Option<Vec<u8>>, HttpError> {
        loop {
            if let Some(i) = self.pending.iter().position(|b| *b == b'\n') {
                let mut line: Vec<u8> = self.pending.drain(..=i).collect();
                line.pop();
                return Ok(Some(line));
            }
            if self.pending.len() > MAX_LINE {
                return Err(HttpError::Protocol(format!("a line of the stream longer than {} KiB", MAX_LINE >> 10)));
            }
            let mut ended = None;
            let frame = match &mut self.conn {
                Some(conn) => tokio::select! {
                    f = self.body.frame() => Some(f),
                    c = conn.as_mut() => {
                        ended = Some(c);
                        None
                    }
                },
                None => Some(self.body.frame().await),
            };
            let Some(frame) = frame else {
                // The connection ended; the body holds what it had read, if anything.
                self.conn = None;
                if let Some(Err(e)) = ended {
                    return Err(protocol(&e));
                }
                continue;
            };
            match frame {
                None => return Ok(None),
                Some(Err(e)) => return Err(protocol(&e)),
                Some(Ok(f)) => {
                    if let Ok(data) = f.into_data() {
                        self.pending.extend_from_slice(&data);
                    }
                }
            }
        }
    }
}
