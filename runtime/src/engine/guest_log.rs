//! A guest's stdout and stderr, forwarded line by line to the runtime's log.
//!
//! Guests have no files, network or environment; what they print is the one thing they can
//! emit besides the WIT imports. Each line is logged tagged with the call and the IVR. Output is
//! bounded per call so a chatty guest cannot flood the log or grow memory: past the limit the
//! rest is counted, not kept.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// Bytes of guest output logged per stream per call; the rest is dropped (and counted).
pub const MAX_LOGGED_BYTES: usize = 64 * 1024;
/// The longest line logged as is; longer lines are cut.
const MAX_LINE: usize = 4096;

#[derive(Default)]
struct Lines {
    partial: Vec<u8>,
    logged: usize,
    dropped: usize,
}

/// One output stream (stdout or stderr) of one guest on one call.
#[derive(Clone)]
pub struct GuestLog {
    call_id: Arc<str>,
    ivr: Arc<str>,
    stream: &'static str,
    lines: Arc<Mutex<Lines>>,
}

impl GuestLog {
    /// A sink for `stream` ("stdout" or "stderr") of `ivr` on call `call_id`.
    pub fn new(call_id: Arc<str>, ivr: String, stream: &'static str) -> Self {
        GuestLog {
            call_id,
            ivr: Arc::from(ivr),
            stream,
            lines: Arc::default(),
        }
    }

    fn emit(&self, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        tracing::info!(call_id = %self.call_id, ivr = %self.ivr, stream = self.stream, "guest: {}", text.trim_end());
    }

    fn write_bytes(&self, buf: &[u8]) {
        let Ok(mut lines) = self.lines.lock() else {
            return;
        };
        if lines.logged >= MAX_LOGGED_BYTES {
            lines.dropped += buf.len();
            return;
        }
        lines.logged += buf.len();
        for &byte in buf {
            if byte == b'\n' {
                let line = std::mem::take(&mut lines.partial);
                self.emit(&line);
            } else if lines.partial.len() < MAX_LINE {
                lines.partial.push(byte);
            }
        }
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        if self.dropped > 0 {
            tracing::info!("guest output: {} more bytes not logged", self.dropped);
        }
    }
}

impl IsTerminal for GuestLog {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestLog {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl AsyncWrite for GuestLog {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.write_bytes(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let partial = self
            .lines
            .lock()
            .map(|mut l| std::mem::take(&mut l.partial))
            .unwrap_or_default();
        if !partial.is_empty() {
            self.emit(&partial);
        }
        Poll::Ready(Ok(()))
    }
}
