use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

fn tcp(authority: &str, prefix: &str) -> Endpoint {
    Endpoint::Tcp { authority: authority.into(), prefix: prefix.into(), tls: false }
}

#[test]
fn urls() {
    assert_eq!(Endpoint::parse_url("http://127.0.0.1:8787"), Ok(tcp("127.0.0.1:8787", "")));
    assert_eq!(Endpoint::parse_url("http://localhost/dask/"), Ok(tcp("localhost:80", "/dask")));
    assert_eq!(Endpoint::parse_url("http://[::1]:11434"), Ok(tcp("[::1]:11434", "")));
    assert_eq!(Endpoint::parse_url("http://[::1]"), Ok(tcp("[::1]:80", "")));
    let hook = Endpoint::parse_url("https://hooks.slack.com/services/T0/B0/x").unwrap();
    assert_eq!(hook, Endpoint::Tcp { authority: "hooks.slack.com:443".into(), prefix: "/services/T0/B0/x".into(), tls: true });
    assert_eq!(hook.to_string(), "https://hooks.slack.com:443/services/T0/B0/x");
    assert!(Endpoint::parse_url("ftp://x:1").is_err());
    assert!(Endpoint::parse_url("http://").is_err());
    assert!(Endpoint::parse_url("http://h:port").is_err());
    assert!(Endpoint::parse_url("127.0.0.1:8787").is_err());
    assert!(Endpoint::parse_url("http://h:1/a\r\nx: y").is_err(), "no header smuggled through a path");
    assert_eq!(tls::server_name("[::1]:443").unwrap().to_str(), "::1");
    assert_eq!(tls::server_name("hooks.slack.com:443").unwrap().to_str(), "hooks.slack.com");
}

/// Serves one connection with `reply` (raw bytes, in two writes to split it) and returns the
/// request it read.
async fn one_shot(reply: &'static [u8]) -> (Endpoint, tokio::task::JoinHandle<String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = vec![0; 4096];
        let n = s.read(&mut buf).await.unwrap();
        let half = reply.len() / 2;
        s.write_all(&reply[..half]).await.unwrap();
        s.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        s.write_all(&reply[half..]).await.unwrap();
        s.shutdown().await.ok();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    });
    (tcp(&addr.to_string(), ""), handle)
}

/// Serves one connection: `head`, then `filler` again and again until the client goes away.
/// Returns how many bytes it wrote.
async fn endless(head: Vec<u8>, filler: Vec<u8>) -> (Endpoint, tokio::task::JoinHandle<u64>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = vec![0; 4096];
        let _ = s.read(&mut buf).await;
        let mut written = 0u64;
        if s.write_all(&head).await.is_err() {
            return 0;
        }
        let block: Vec<u8> = filler.iter().copied().cycle().take(filler.len() * (65536 / filler.len()).max(1)).collect();
        while s.write_all(&block).await.is_ok() {
            written += block.len() as u64;
            if written > 1 << 30 {
                break;
            }
        }
        written
    });
    (tcp(&addr.to_string(), ""), handle)
}

fn protocol_error_containing(r: &Result<Response, HttpError>, what: &str) -> bool {
    matches!(r, Err(HttpError::Protocol(m)) if m.contains(what))
}

/// A connection this process could not even open (its descriptors, memory or ports) is told
/// apart from the peer's refusal: a probe that meets it has not probed the peer.
#[test]
fn a_shortage_of_our_own_is_not_the_peers_refusal() {
    for own in [libc::EMFILE, libc::ENFILE, libc::ENOBUFS, libc::ENOMEM, libc::EADDRNOTAVAIL] {
        let e = connect_error(std::io::Error::from_raw_os_error(own));
        assert!(matches!(e, HttpError::Local(_)) && e.to_string().contains("not the peer's"), "{e}");
    }
    for peer in [libc::ECONNREFUSED, libc::ECONNRESET, libc::EHOSTUNREACH, libc::ENOENT, libc::EACCES] {
        assert!(matches!(connect_error(std::io::Error::from_raw_os_error(peer)), HttpError::Connect(_)));
    }
}

#[tokio::test]
async fn json_round_trip_and_chunked_bodies() {
    let (ep, seen) = one_shot(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\n{\"a\r\n4;x=1\r\n\":1}\r\n0\r\n\r\n",
    )
    .await;
    let r = request(&ep, "POST", "/api/x", Some(&serde_json::json!({"n": 1})), Duration::from_secs(5)).await.unwrap();
    assert_eq!((r.status, &r.body[..]), (200, &b"{\"a\":1}"[..]));
    let seen = seen.await.unwrap().to_ascii_lowercase();
    assert!(seen.starts_with("post /api/x http/1.1\r\n"), "{seen}");
    assert!(seen.contains("content-type: application/json") && seen.ends_with("{\"n\":1}"), "{seen}");
    assert!(seen.contains("content-length: 7\r\n") && seen.contains("connection: close\r\n"), "{seen}");
}

#[tokio::test]
async fn bodies_by_length_or_by_the_end_of_the_connection() {
    let (ep, _) = one_shot(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokTRAILING").await;
    let r = request(&ep, "GET", "/health", None, Duration::from_secs(5)).await.unwrap();
    assert_eq!((r.status, &r.body[..]), (200, &b"ok"[..]));
    let (ep, seen) = one_shot(b"HTTP/1.0 503 Service Unavailable\r\nServer: x\r\n\r\nnot yet").await;
    let r = request(&ep, "POST", "/containers/x/restart", None, Duration::from_secs(5)).await.unwrap();
    assert_eq!((r.status, r.snippet().as_str()), (503, "not yet"));
    assert!(seen.await.unwrap().to_ascii_lowercase().contains("content-length: 0\r\n"), "a POST with no body says so");
    let (ep, _) = one_shot(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort").await;
    let r = request(&ep, "GET", "/", None, Duration::from_secs(5)).await;
    assert!(protocol_error_containing(&r, "end of file before message length reached"), "{r:?}");
}

#[tokio::test]
async fn garbage_and_silence_are_errors_not_hangs() {
    let (ep, _) = one_shot(b"this is not http\r\n\r\n").await;
    assert!(matches!(request(&ep, "GET", "/", None, Duration::from_secs(5)).await, Err(HttpError::Protocol(_))));
    let (ep, _) = one_shot(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n").await;
    let r = request(&ep, "GET", "/", None, Duration::from_secs(5)).await;
    assert!(protocol_error_containing(&r, "chunk size"), "{r:?}");
    // Accepts and never answers, as a SIGSTOPped scheduler does.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ep = tcp(&listener.local_addr().unwrap().to_string(), "");
    let r = request(&ep, "GET", "/", None, Duration::from_millis(200)).await;
    assert_eq!(r.unwrap_err(), HttpError::Timeout(Duration::from_millis(200)));
    drop(listener);
    assert!(matches!(request(&ep, "GET", "/", None, Duration::from_secs(5)).await, Err(HttpError::Connect(_))));
}

/// The two answers that aborted the hand-written client: a chunk size that wraps a `usize`,
/// and a non-HTTP first line with a multi-byte character across byte 80.
#[tokio::test]
async fn answers_that_crashed_the_old_client_are_errors() {
    let (ep, _) = one_shot(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n4\r\nabcd\r\nffffffffffffffff\r\nxx\r\n").await;
    let r = request(&ep, "GET", "/", None, Duration::from_secs(5)).await;
    assert!(matches!(r, Err(HttpError::Protocol(_))), "{r:?}");
    let mut line = "x".repeat(79).into_bytes();
    line.extend("é and more text to pass eighty bytes\r\n\r\n".as_bytes());
    let (ep, _) = one_shot(Box::leak(line.into_boxed_slice())).await;
    let r = request(&ep, "GET", "/", None, Duration::from_secs(5)).await;
    assert!(matches!(r, Err(HttpError::Protocol(_))), "{r:?}");
}

#[tokio::test]
async fn bodies_over_the_cap_are_refused() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ep = tcp(&listener.local_addr().unwrap().to_string(), "");
    tokio::spawn(async move {
        for head in [format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", MAX_BODY + 1), "HTTP/1.1 200 OK\r\n\r\n".into()] {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0; 4096];
            let _ = s.read(&mut buf).await;
            s.write_all(head.as_bytes()).await.unwrap();
            let chunk = vec![b'x'; 1 << 16];
            for _ in 0..=(MAX_BODY >> 16) + 1 {
                if s.write_all(&chunk).await.is_err() {
                    break;
                }
            }
        }
    });
    for _ in 0..2 {
        let r = request(&ep, "GET", "/", None, Duration::from_secs(10)).await;
        assert!(protocol_error_containing(&r, "reading the body: larger than 4 MiB"), "{r:?}");
    }
}

/// What a peer can make one request read: bounded by [`MAX_RAW`] whatever the bytes are, and
/// refused then — not at the deadline (a minute here, so a pass means the cap ended it).
#[tokio::test]
async fn a_peer_cannot_make_a_request_read_without_end() {
    let deadline = Duration::from_secs(60);
    let cases: [(&str, Vec<u8>, Vec<u8>); 3] = [
        ("endless interim answers", Vec::new(), b"HTTP/1.1 100 Continue\r\n\r\n".to_vec()),
        (
            "chunk-size lines padded with extensions",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec(),
            format!("1;{}\r\nx\r\n", "e".repeat(1000)).into_bytes(),
        ),
        ("one-byte chunks without end", b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec(), b"1\r\nx\r\n".to_vec()),
    ];
    for (what, head, filler) in cases {
        let (ep, written) = endless(head, filler).await;
        let r = request(&ep, "GET", "/", None, deadline).await;
        // A protocol error, not a timeout: the bound ended it, not the deadline (no clock is
        // read: this machine may be slow).
        assert!(matches!(r, Err(HttpError::Protocol(_))), "{what}: {r:?}");
        let written = written.await.unwrap();
        // What the client read is at most MAX_RAW; the rest sat in the kernel's socket buffers.
        assert!(written < MAX_RAW + (32 << 20), "{what}: the peer wrote {written} bytes");
    }
}

#[tokio::test]
async fn a_head_larger_than_the_buffer_is_refused() {
    let (ep, _) = endless(b"HTTP/1.1 200 OK\r\n".to_vec(), b"x-filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n".to_vec()).await;
    let r = request(&ep, "GET", "/", None, Duration::from_secs(30)).await;
    assert!(matches!(r, Err(HttpError::Protocol(_))), "{r:?}");
}

#[tokio::test]
async fn a_head_sent_one_byte_at_a_time_ends_at_the_deadline() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ep = tcp(&listener.local_addr().unwrap().to_string(), "");
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = vec![0; 4096];
        let _ = s.read(&mut buf).await;
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\n").await;
        loop {
            if s.write_all(b"x").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    let r = request(&ep, "GET", "/", None, Duration::from_millis(500)).await;
    assert_eq!(r.unwrap_err(), HttpError::Timeout(Duration::from_millis(500)));
}

#[tokio::test]
async fn a_streamed_chunked_answer_line_by_line() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("docker.sock");
    let listener = tokio::net::UnixListener::bind(&sock).unwrap();
    let (go_on, mut wait) = tokio::sync::mpsc::channel::<()>(1);
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = vec![0; 4096];
        let _ = s.read(&mut buf).await.unwrap();
        s.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").await.unwrap();
        // One event split across two chunks, then (later) two events in one chunk.
        s.write_all(b"6\r\n{\"a\":1\r\n").await.unwrap();
        s.write_all(b"2\r\n}\n\r\n").await.unwrap();
        wait.recv().await;
        s.write_all(b"10\r\n{\"b\":2}\n{\"c\":3}\n\r\n0\r\n\r\n").await.unwrap();
        // Held open: the client must still see the end of the body.
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    let mut lines = stream_lines(&sock, "/events", Duration::from_secs(5)).await.unwrap();
    assert_eq!(lines.next_line().await.unwrap().unwrap(), b"{\"a\":1}");
    go_on.send(()).await.unwrap();
    assert_eq!(lines.next_line().await.unwrap().unwrap(), b"{\"b\":2}");
    assert_eq!(lines.next_line().await.unwrap().unwrap(), b"{\"c\":3}");
    let end = tokio::time::timeout(Duration::from_secs(5), lines.next_line()).await.expect("the last chunk ends the stream");
    assert_eq!(end.unwrap(), None);
}

#[tokio::test]
async fn a_streamed_line_without_end_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("docker.sock");
    let listener = tokio::net::UnixListener::bind(&sock).unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = vec![0; 4096];
        let _ = s.read(&mut buf).await.unwrap();
        s.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
        let block = vec![b'x'; 1 << 16];
        while s.write_all(&block).await.is_ok() {}
    });
    let mut lines = stream_lines(&sock, "/events", Duration::from_secs(5)).await.unwrap();
    let r = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await.unwrap();
    assert!(matches!(r, Err(HttpError::Protocol(ref m)) if m.contains("longer than")), "{r:?}");
}

#[tokio::test]
async fn https_to_a_server_nobody_vouches_for_is_refused() {
    // A TLS handshake with a listener that is not TLS: an error naming TLS, never a hang
    // or a plain-text exchange.
    let (ep, _) = one_shot(b"HTTP/1.1 200 OK\r\n\r\n").await;
    let Endpoint::Tcp { authority, .. } = ep else { unreachable!() };
    let ep = Endpoint::Tcp { authority, prefix: String::new(), tls: true };
    let r = request(&ep, "GET", "/", None, Duration::from_secs(5)).await;
    assert!(matches!(r, Err(HttpError::Tls(_))), "{r:?}");
}

mod any_answer {
    use proptest::prelude::*;

    use super::super::{build_request, send, HttpError, MAX_BODY};

    /// Pieces an answer is made of, well-formed and not: status lines, framing headers with any
    /// number, chunk-size lines with any hex, interim answers, raw bytes, multi-byte text.
    fn piece() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            Just(b"HTTP/1.1 200 OK\r\n".to_vec()),
            Just(b"HTTP/1.1 100 Continue\r\n\r\n".to_vec()),
            (100u16..1000).prop_map(|c| format!("HTTP/1.1 {c} X\r\n").into_bytes()),
            any::<u64>().prop_map(|n| format!("content-length: {n}\r\n").into_bytes()),
            Just(b"transfer-encoding: chunked\r\n".to_vec()),
            Just(b"\r\n".to_vec()),
            any::<u64>().prop_map(|n| format!("{n:x}\r\n").into_bytes()),
            "[0-9a-fA-F;= ]{0,40}\r\n".prop_map(String::into_bytes),
            "\\PC{0,100}".prop_map(String::into_bytes),
            prop::collection::vec(any::<u8>(), 0..200),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Whatever a peer answers, the client returns a response with a body within the cap,
        /// or an error; it never panics and never waits past the peer's end.
        #[test]
        fn any_answer_is_a_response_or_an_error(pieces in prop::collection::vec(piece(), 0..24)) {
            let answer: Vec<u8> = pieces.concat();
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let r = rt.block_on(async move {
                let (client, mut server) = tokio::io::duplex(1 << 16);
                tokio::spawn(async move {
                    use tokio::io::AsyncWriteExt;
                    let _ = server.write_all(&answer).await;
                    let _ = server.shutdown().await;
                    // Keep our end (and its unread request) until the client is done.
                    tokio::time::sleep(std::time::Duration::from_secs(10)).await;
                });
                let req = build_request("peer", "GET", "/", None).unwrap();
                tokio::time::timeout(std::time::Duration::from_secs(5), send(client, req)).await
            });
            match r {
                Ok(Ok(resp)) => prop_assert!(resp.body.len() <= MAX_BODY),
                Ok(Err(HttpError::Protocol(m))) => prop_assert!(!m.contains('\n'), "{m}"),
                Ok(Err(e)) => prop_assert!(false, "only protocol errors from a connected peer: {e:?}"),
                Err(_) => prop_assert!(false, "waited past the peer's end"),
            }
        }
    }
}
