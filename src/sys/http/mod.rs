//! The HTTP/1.1 client for the cluster's peers (the Dask scheduler, Ollama, Open WebUI, the
//! Docker Engine on its unix socket, Prometheus) and the alert channels (webhooks,
//! Alertmanager): hyper's `client::conn::http1` over our own TCP, unix and rustls streams.
//!
//! Every byte here comes from outside and any local user can bind a probed port while its
//! service is down, so the wire protocol is hyper's (fuzzed, maintained), and this module only
//! bounds what a peer can make us do:
//! - one request per connection (`connection: close`), one deadline on the whole exchange;
//! - hyper's read buffer at [`MAX_HEAD`] (the status line and headers must fit in it);
//! - at most [`MAX_BODY`] of body, refused up front when `content-length` says more;
//! - at most [`MAX_RAW`] bytes read from the connection in all, whatever they are (interim
//!   `1xx` answers, chunk framing and extensions, the body): an endless `100 Continue` or a
//!   padded chunk-size line ends there, in milliseconds, not at the deadline.
//!
//! `https://` goes through rustls (the system's CA bundle, else the built-in Mozilla roots, plus
//! an optional CA file). Docker's event stream is the one long answer: [`stream_lines`].

mod capped;
mod lines;
mod tls;
pub use tls::check_ca_file;

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};

pub use lines::{stream_lines, Lines};

use capped::Capped;

/// A body larger than this is garbage for our purposes: refused, not read on.
pub const MAX_BODY: usize = 4 << 20;
/// hyper's read buffer: the status line and headers together must fit (hyper's floor is 8 KiB).
pub const MAX_HEAD: usize = 16 << 10;
/// Bytes read from one connection for one answer, whatever they are: the body and its chunk
/// framing (a body sent in chunks of 64 bytes or more costs well under a quarter more), the head,
/// and any interim answers. A peer past this is not answering in good faith.
pub const MAX_RAW: u64 = (MAX_BODY + MAX_BODY / 4 + 4 * MAX_HEAD) as u64;

/// Where a peer listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `host:port` of an `http://` or `https://` URL, plus the URL's path prefix (no trailing
    /// `/`).
    Tcp {
        authority: String,
        prefix: String,
        tls: bool,
    },
    Unix(PathBuf),
}

impl Endpoint {
    /// `http://host:port[/prefix]` or `https://…` (port 80 or 443 when none is given).
    pub fn parse_url(url: &str) -> Result<Endpoint, String> {
        let (rest, tls) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
            (Some(r), _) => (r, false),
            (_, Some(r)) => (r, true),
            _ => return Err(format!("{url:?} is not an http:// or https:// URL")),
        };
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return Err(format!("{url:?} has user:password@, which is never sent (it would show in logs); remove it"));
        }
        if authority.contains(['?', '#']) {
            return Err(format!("{url:?} has a query or fragment right after the host; put a / before the ? or #"));
        }
        if authority.is_empty() || authority.contains(' ') {
            return Err(format!("{url:?} has no host:port"));
        }
        if prefix.contains(|c: char| c.is_whitespace() || c.is_control()) {
            return Err(format!("{url:?} has a space or a control character in its path"));
        }
        let authority = if authority.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) && !authority.ends_with(']') {
            authority.to_string()
        } else if authority.contains(':') && !(authority.starts_with('[') && authority.ends_with(']')) {
            return Err(format!("{url:?} has a bad port"));
        } else {
            format!("{authority}:{}", if tls { 443 } else { 80 })
        };
        Ok(Endpoint::Tcp { authority, prefix: prefix.to_string(), tls })
    }

    /// The same server with no path prefix.
    pub fn origin(&self) -> Endpoint {
        match self {
            Endpoint::Tcp { authority, tls, .. } => Endpoint::Tcp { authority: authority.clone(), prefix: String::new(), tls: *tls },
            Endpoint::Unix(p) => Endpoint::Unix(p.clone()),
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Tcp { authority, prefix, tls } => write!(f, "{}://{authority}{prefix}", if *tls { "https" } else { "http" }),
            Endpoint::Unix(p) => write!(f, "unix:{}", crate::sys::display_path(p)),
        }
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum HttpError {
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The connection could not even be tried for want of this process's own resources (see
    /// [`is_own_shortage`]): it says nothing of the peer.
    #[error("cannot open a connection: {0} (this process's own shortage, not the peer's)")]
    Local(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("{0}")]
    Protocol(String),
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Response {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The start of the body as one line, for an error message: at most 200 characters, control
    /// characters escaped (a peer's text cannot forge a log line).
    pub fn snippet(&self) -> String {
        snippet(&self.body)
    }
}

/// The start of a body as one line: at most 200 characters, control characters escaped.
pub fn snippet(body: &[u8]) -> String {
    crate::sys::one_line(String::from_utf8_lossy(&body[..body.len().min(800)]).trim(), 200)
}

/// One request; `body` is sent as JSON when present.
pub async fn request(
    endpoint: &Endpoint,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
    timeout: Duration,
) -> Result<Response, HttpError> {
    request_trusting(endpoint, method, path, body, timeout, None).await
}

/// [`request`], trusting the certificate authorities in `ca_file` (PEM) too for `https://`.
pub async fn request_trusting(
    endpoint: &Endpoint,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
    timeout: Duration,
    ca_file: Option<&Path>,
) -> Result<Response, HttpError> {
    match tokio::time::timeout(timeout, exchange(endpoint, method, path, body, ca_file)).await {
        Ok(r) => r,
        Err(_) => Err(HttpError::Timeout(timeout)),
    }
}

/// The request as hyper sends it: `host`, `user-agent`, `connection: close`, and a
/// `content-length` on every request that may carry a body (Docker wants one on an empty POST).
fn build_request(
    host: &str,
    method: &str,
    full_path: &str,
    body: Option<&serde_json::Value>,
) -> Result<hyper::Request<Full<Bytes>>, HttpError> {
    let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(full_path)
        .header(hyper::header::HOST, host)
        .header(hyper::header::USER_AGENT, "cluster-ai")
        .header(hyper::header::CONNECTION, "close");
    if !body.is_empty() {
        req = req.header(hyper::header::CONTENT_TYPE, "application/json");
    }
    if !body.is_empty() || (method != "GET" && method != "HEAD") {
        req = req.header(hyper::header::CONTENT_LENGTH, body.len());
    }
    req.body(Full::new(body)).map_err(|e| HttpError::Protocol(format!("bad request {method} {full_path:?}: {e}")))
}

/// The path on the server: the endpoint's prefix, then `path`; `/` when both are empty.
fn request_target(endpoint: &Endpoint, path: &str) -> Result<(String, String), HttpError> {
    let (host, full_path) = match endpoint {
        Endpoint::Tcp { authority, prefix, .. } => (authority.clone(), format!("{prefix}{path}")),
        Endpoint::Unix(_) => ("localhost".to_string(), path.to_string()),
    };
    let full_path = if full_path.is_empty() { "/".to_string() } else { full_path };
    if !full_path.starts_with('/') || full_path.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err(HttpError::Protocol(format!("bad request path {full_path:?}")));
    }
    Ok((host, full_path))
}

async fn exchange(
    endpoint: &Endpoint,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
    ca_file: Option<&Path>,
) -> Result<Response, HttpError> {
    let (host, full_path) = request_target(endpoint, path)?;
    let req = build_request(&host, method, &full_path, body)?;
    match endpoint {
        Endpoint::Tcp { authority, tls, .. } => {
            let stream = TcpStream::connect(authority.as_str()).await.map_err(connect_error)?;
            if !tls {
                return send(stream, req).await;
            }
            send(tls::connect(stream, authority, ca_file).await?, req).await
        }
        Endpoint::Unix(path) => {
            let stream = UnixStream::connect(path).await.map_err(connect_error)?;
            send(stream, req).await
        }
    }
}

/// Whether a connect error is a shortage of this process or this machine rather than an answer
/// of the peer's: every file descriptor taken (EMFILE, ENFILE), no buffer space or memory
/// (ENOBUFS, ENOMEM), no local port free (EADDRNOTAVAIL). A health probe that meets one has not
/// probed the service (Kubernetes calls such a result Unknown: no action is taken).
pub fn is_own_shortage(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM | libc::EADDRNOTAVAIL))
}

/// A connect error as an [`HttpError`]: `Local` for [`is_own_shortage`], else `Connect`.
pub fn connect_error(e: std::io::Error) -> HttpError {
    if is_own_shortage(&e) {
        HttpError::Local(e.to_string())
    } else {
        HttpError::Connect(e.to_string())
    }
}

/// A query string's value: everything but unreserved characters as %XX.
pub fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

/// hyper's client for one connection, reading at most `raw_cap` bytes from it.
async fn handshake<S>(
    stream: S,
    raw_cap: u64,
) -> Result<(hyper::client::conn::http1::SendRequest<Full<Bytes>>, hyper::client::conn::http1::Connection<IoOf<S>, Full<Bytes>>), HttpError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    hyper::client::conn::http1::Builder::new()
        .max_buf_size(MAX_HEAD)
        .handshake(hyper_util::rt::TokioIo::new(Capped::new(stream, raw_cap)))
        .await
        .map_err(|e| protocol(&e))
}

type IoOf<S> = hyper_util::rt::TokioIo<Capped<S>>;

/// Sends the request and reads one whole answer, driving the connection in this task.
async fn send<S>(stream: S, req: hyper::Request<Full<Bytes>>) -> Result<Response, HttpError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = handshake(stream, MAX_RAW).await?;
    let work = async move {
        let answer = sender.send_request(req).await.map_err(|e| protocol(&e))?;
        let status = answer.status().as_u16();
        let body = read_body(answer.into_body()).await?;
        Ok(Response { status, body })
    };
    drive(work, &mut Some(Box::pin(conn))).await
}

/// hyper's connection future: it reads and writes the socket while the request and the answer
/// are handled through its `SendRequest` and the answer's body.
type Connection = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), hyper::Error>> + Send>>;

/// Runs `work` while polling the connection that serves it (`None` once it has ended); the
/// connection's own error (the cap, a parse error) is the one reported when both fail.
async fn drive<T, F>(work: F, conn: &mut Option<Connection>) -> Result<T, HttpError>
where
    F: std::future::Future<Output = Result<T, HttpError>>,
{
    tokio::pin!(work);
    let mut conn_error = None;
    loop {
        let Some(c) = conn.as_mut() else {
            return work.await.map_err(|e| conn_error.take().unwrap_or(e));
        };
        tokio::select! {
            r = &mut work => return r.map_err(|e| conn_error.take().unwrap_or(e)),
            ended = c.as_mut() => {
                *conn = None;
                conn_error = ended.err().map(|e| protocol(&e));
            }
        }
    }
}

/// The whole body, at most [`MAX_BODY`]: refused at once when its length says more.
async fn read_body(body: Incoming) -> Result<Vec<u8>, HttpError> {
    use hyper::body::Body;
    if body.size_hint().lower() > MAX_BODY as u64 {
        return Err(too_large());
    }
    match http_body_util::Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes().to_vec()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(e) => Err(match e.downcast::<hyper::Error>() {
            Ok(h) => protocol(&h),
            Err(other) => HttpError::Protocol(format!("reading the body: {other}")),
        }),
    }
}

fn too_large() -> HttpError {
    HttpError::Protocol(format!("reading the body: larger than {} MiB", MAX_BODY >> 20))
}

/// hyper's error with its cause (the cap's, the parser's), as one line.
fn protocol(e: &hyper::Error) -> HttpError {
    use std::error::Error;
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    HttpError::Protocol(crate::sys::one_line(&text, 300))
}

#[cfg(test)]
mod tests;
