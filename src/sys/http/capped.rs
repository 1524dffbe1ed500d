//! A stream that reads at most a set number of bytes, whatever they are: the bound under
//! hyper's parser on what one answer may cost (interim answers, chunk framing, the body).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pub struct Capped<S> {
    inner: S,
    /// Bytes that may still be read.
    left: u64,
    cap: u64,
}

impl<S> Capped<S> {
    pub fn new(inner: S, cap: u64) -> Capped<S> {
        Capped { inner, left: cap, cap }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Capped<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.left == 0 {
            let cap = self.cap;
            return Poll::Ready(Err(io::Error::other(format!("the peer sent more than {} KiB for one answer", cap >> 10))));
        }
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let n = (buf.filled().len() - before) as u64;
                this.left = this.left.saturating_sub(n);
                Poll::Ready(Ok(()))
            }
            // A TLS peer that closes without close_notify ends the stream all the same: the
            // body's framing says whether the answer was whole.
            Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => Poll::Ready(Ok(())),
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Capped<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn reads_up_to_the_cap_then_fails() {
        let (mut w, r) = tokio::io::duplex(64);
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let _ = w.write_all(&[7u8; 40]).await;
        });
        let mut c = Capped::new(r, 30);
        let mut out = Vec::new();
        let e = c.read_to_end(&mut out).await.unwrap_err();
        assert!(out.len() >= 30 && out.len() <= 40, "{}", out.len());
        assert!(e.to_string().contains("more than 0 KiB"), "{e}");
    }
}
