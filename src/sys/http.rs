//! A small HTTP/1.1 client for the cluster's local peers (the Dask scheduler, Ollama, the
//! Docker Engine on its unix socket): one connection per request, a deadline on the whole
//! exchange (a hung peer that accepts TCP and never answers costs at most that), and a cap on
//! the body. Plain HTTP only: every peer is on this machine.

use std::path::PathBuf;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};

/// A body larger than this is garbage for our purposes: refused, not read on.
pub const MAX_BODY: usize = 4 << 20;

/// Where a peer listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `host:port` of an `http://` URL, plus the URL's path prefix (no trailing `/`).
    Tcp {
        authority: String,
        prefix: String,
    },
    Unix(PathBuf),
}

impl Endpoint {
    /// `http://host:port[/prefix]`; https is refused (the peers are local and speak plain
    /// HTTP).
    pub fn parse_url(url: &str) -> Result<Endpoint, String> {
        let rest = url.strip_prefix("http://").ok_or_else(|| format!("{url:?} is not an http:// URL"))?;
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if authority.is_empty() || authority.contains(['@', ' ', '?', '#']) {
            return Err(format!("{url:?} has no host:port"));
        }
        let authority = if authority.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) || authority.ends_with(']') {
            authority.to_string()
        } else if authority.contains(':') && !authority.starts_with('[') {
            return Err(format!("{url:?} has a bad port"));
        } else {
            format!("{authority}:80")
        };
        Ok(Endpoint::Tcp { authority, prefix: prefix.to_string() })
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Tcp { authority, prefix } => write!(f, "http://{authority}{prefix}"),
            Endpoint::Unix(p) => write!(f, "unix:{}", crate::sys::display_path(p)),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HttpError {
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Protocol(String),
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub body: Bytes,
}

impl Response {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The start of the body as one line, for an error message.
    pub fn snippet(&self) -> String {
        let s = String::from_utf8_lossy(&self.body[..self.body.len().min(200)]);
        s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect::<String>().trim().to_string()
    }
}

/// One request; `body` is sent as JSON when present.
pub async fn request(
    endpoint: &Endpoint,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
    timeout: Duration,
) -> Result<Response, HttpError> {
    match tokio::time::timeout(timeout, exchange(endpoint, method, path, body)).await {
        Ok(r) => r,
        Err(_) => Err(HttpError::Timeout(timeout)),
    }
}

async fn exchange(endpoint: &Endpoint, method: &str, path: &str, body: Option<&serde_json::Value>) -> Result<Response, HttpError> {
    let (host, full_path) = match endpoint {
        Endpoint::Tcp { authority, prefix } => (authority.clone(), format!("{prefix}{path}")),
        Endpoint::Unix(_) => ("localhost".to_string(), path.to_string()),
    };
    let bytes = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
    let mut req = hyper::Request::builder().method(method).uri(&full_path).header("host", host).header("user-agent", "cluster-ai");
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let req = req.body(Full::new(bytes)).map_err(|e| HttpError::Protocol(format!("bad request: {e}")))?;
    match endpoint {
        Endpoint::Tcp { authority, .. } => {
            let stream = TcpStream::connect(authority.as_str()).await.map_err(|e| HttpError::Connect(e.to_string()))?;
            send(stream, req).await
        }
        Endpoint::Unix(path) => {
            let stream = UnixStream::connect(path).await.map_err(|e| HttpError::Connect(e.to_string()))?;
            send(stream, req).await
        }
    }
}

async fn send<S>(stream: S, req: hyper::Request<Full<Bytes>>) -> Result<Response, HttpError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let protocol = |e: hyper::Error| HttpError::Protocol(e.to_string());
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(protocol)?;
    // The connection is driven beside the request and dropped with it; its errors reach the
    // request or the body, so its own end is not a result.
    let driver = async move {
        let _ = conn.await;
        std::future::pending::<()>().await
    };
    let exchange = async move {
        let resp = sender.send_request(req).await.map_err(protocol)?;
        let status = resp.status().as_u16();
        let body = Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| HttpError::Protocol(format!("reading the body: {e}")))?
            .to_bytes();
        Ok(Response { status, body })
    };
    tokio::select! {
        r = exchange => r,
        () = driver => Err(HttpError::Protocol("the connection ended".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn urls() {
        let tcp = |a: &str, p: &str| Endpoint::Tcp { authority: a.into(), prefix: p.into() };
        assert_eq!(Endpoint::parse_url("http://127.0.0.1:8787"), Ok(tcp("127.0.0.1:8787", "")));
        assert_eq!(Endpoint::parse_url("http://localhost/dask/"), Ok(tcp("localhost:80", "/dask")));
        assert_eq!(Endpoint::parse_url("http://[::1]:11434"), Ok(tcp("[::1]:11434", "")));
        assert!(Endpoint::parse_url("https://x:1").is_err());
        assert!(Endpoint::parse_url("http://").is_err());
        assert!(Endpoint::parse_url("http://h:port").is_err());
        assert!(Endpoint::parse_url("127.0.0.1:8787").is_err());
    }

    /// Serves one connection with `reply` (raw bytes) and returns the request it read.
    async fn one_shot(reply: &'static [u8]) -> (Endpoint, tokio::task::JoinHandle<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0; 4096];
            let n = s.read(&mut buf).await.unwrap();
            s.write_all(reply).await.unwrap();
            s.shutdown().await.ok();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        });
        (Endpoint::Tcp { authority: addr.to_string(), prefix: String::new() }, handle)
    }

    #[tokio::test]
    async fn json_round_trip_and_chunked_bodies() {
        let (ep, seen) = one_shot(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\n{\"a\r\n4\r\n\":1}\r\n0\r\n\r\n").await;
        let r = request(&ep, "POST", "/api/x", Some(&serde_json::json!({"n": 1})), Duration::from_secs(5)).await.unwrap();
        assert_eq!((r.status, &r.body[..]), (200, &b"{\"a\":1}"[..]));
        let seen = seen.await.unwrap();
        assert!(seen.starts_with("POST /api/x HTTP/1.1\r\n"), "{seen}");
        assert!(seen.contains("content-type: application/json") && seen.ends_with("{\"n\":1}"), "{seen}");
    }

    #[tokio::test]
    async fn garbage_and_silence_are_errors_not_hangs() {
        let (ep, _) = one_shot(b"this is not http\r\n\r\n").await;
        assert!(matches!(request(&ep, "GET", "/", None, Duration::from_secs(5)).await, Err(HttpError::Protocol(_))));
        // Accepts and never answers, as a SIGSTOPped scheduler does.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ep = Endpoint::Tcp { authority: listener.local_addr().unwrap().to_string(), prefix: String::new() };
        let r = request(&ep, "GET", "/", None, Duration::from_millis(200)).await;
        assert_eq!(r.unwrap_err(), HttpError::Timeout(Duration::from_millis(200)));
        drop(listener);
        assert!(matches!(request(&ep, "GET", "/", None, Duration::from_secs(5)).await, Err(HttpError::Connect(_))));
    }

    #[tokio::test]
    async fn bodies_over_the_cap_are_refused() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ep = Endpoint::Tcp { authority: listener.local_addr().unwrap().to_string(), prefix: String::new() };
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0; 4096];
            let _ = s.read(&mut buf).await;
            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", MAX_BODY + 1);
            s.write_all(head.as_bytes()).await.unwrap();
            let chunk = vec![b'x'; 1 << 16];
            for _ in 0..=(MAX_BODY >> 16) {
                if s.write_all(&chunk).await.is_err() {
                    break;
                }
            }
        });
        let r = request(&ep, "GET", "/", None, Duration::from_secs(10)).await;
        assert!(matches!(r, Err(HttpError::Protocol(ref m)) if m.contains("reading the body")), "{r:?}");
    }
}
