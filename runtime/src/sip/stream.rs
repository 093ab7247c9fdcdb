//! Framing SIP messages out of a byte stream (TCP), RFC 3261 §18.3: a message is its header
//! section up to the blank line plus `Content-Length` bytes of body. Sans-IO: feed bytes in,
//! take whole messages out, and close the connection when the framer says the stream is broken
//! (a missing or contradictory length cannot be resynchronised on a stream).

use std::fmt;

/// Why a stream can no longer be framed; the connection should be closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The header section grew past the size limit without ending.
    HeadersTooLarge,
    /// The declared body is larger than the size limit.
    BodyTooLarge(usize),
    /// Content-Length is not a number, or several differ.
    BadContentLength,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::HeadersTooLarge => write!(f, "header section too large"),
            FrameError::BodyTooLarge(n) => write!(f, "declared body of {n} bytes is too large"),
            FrameError::BadContentLength => {
                write!(f, "missing, malformed or conflicting Content-Length")
            }
        }
    }
}

impl std::error::Error for FrameError {}

/// What the framer found next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A whole message.
    Message(Vec<u8>),
    /// A keep-alive (RFC 5626 double CRLF ping); answer with a single CRLF.
    KeepAlive,
}

/// Splits one connection's byte stream into messages.
#[derive(Debug)]
pub struct StreamFramer {
    buf: Vec<u8>,
    max_message: usize,
}

impl StreamFramer {
    /// A framer refusing messages larger than `max_message` bytes.
    pub fn new(max_message: usize) -> Self {
        StreamFramer {
            buf: Vec::new(),
            max_message,
        }
    }

    /// Adds received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame, `Ok(None)` when more bytes are needed, or an error when the
    /// stream is broken.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if self.buf.starts_with(b"\r\n\r\n") {
            self.buf.drain(..4);
            return Ok(Some(Frame::KeepAlive));
        }
        // Stray CRLFs between messages are allowed (RFC 3261 §7.5).
        let leading = self
            .buf
            .iter()
            .take_while(|b| **b == b'\r' || **b == b'\n')
            .count();
        if leading > 0 && leading < self.buf.len() {
            self.buf.drain(..leading);
        }
        let Some(end) = find(&self.buf, b"\r\n\r\n") else {
            if self.buf.len() > self.max_message {
                return Err(FrameError::HeadersTooLarge);
            }
            return Ok(None);
        };
        let headers_len = end + 4;
        let body_len = content_length(&self.buf[..end])?;
        if headers_len + body_len > self.max_message {
            return Err(FrameError::BodyTooLarge(body_len));
        }
        if self.buf.len() < headers_len + body_len {
            return Ok(None);
        }
        let message: Vec<u8> = self.buf.drain(..headers_len + body_len).collect();
        Ok(Some(Frame::Message(message)))
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The Content-Length of a header section (long or compact `l` form). Required on streams.
fn content_length(headers: &[u8]) -> Result<usize, FrameError> {
    let text = String::from_utf8_lossy(headers);
    let mut found: Option<usize> = None;
    for line in text.split("\r\n").skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("l") {
            let n: usize = value
                .trim()
                .parse()
                .map_err(|_| FrameError::BadContentLength)?;
            if found.is_some_and(|m| m != n) {
                return Err(FrameError::BadContentLength);
            }
            found = Some(n);
        }
    }
    found.ok_or(FrameError::BadContentLength)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nContent-Length: 4\r\n\r\nbody";

    #[test]
    fn frames_split_and_joined_messages() {
        let mut f = StreamFramer::new(65536);
        f.push(&MSG[..10]);
        assert_eq!(f.next_frame(), Ok(None));
        f.push(&MSG[10..]);
        f.push(b"\r\n");
        f.push(MSG);
        assert_eq!(f.next_frame(), Ok(Some(Frame::Message(MSG.to_vec()))));
        assert_eq!(f.next_frame(), Ok(Some(Frame::Message(MSG.to_vec()))));
        assert_eq!(f.next_frame(), Ok(None));
    }

    #[test]
    fn keepalive_and_limits() {
        let mut f = StreamFramer::new(64);
        f.push(b"\r\n\r\n");
        assert_eq!(f.next_frame(), Ok(Some(Frame::KeepAlive)));
        f.push(&[b'a'; 100]);
        assert_eq!(f.next_frame(), Err(FrameError::HeadersTooLarge));
        let mut f = StreamFramer::new(200);
        f.push(b"INVITE sip:a@b SIP/2.0\r\nContent-Length: 5000\r\n\r\n");
        assert_eq!(f.next_frame(), Err(FrameError::BodyTooLarge(5000)));
    }

    #[test]
    fn conflicting_or_missing_lengths_break_the_stream() {
        let mut f = StreamFramer::new(65536);
        f.push(b"INVITE sip:a@b SIP/2.0\r\nContent-Length: 3\r\nl: 4\r\n\r\nabcd");
        assert_eq!(f.next_frame(), Err(FrameError::BadContentLength));
        let mut f = StreamFramer::new(65536);
        f.push(b"INVITE sip:a@b SIP/2.0\r\nVia: x\r\n\r\n");
        assert_eq!(f.next_frame(), Err(FrameError::BadContentLength));
        let mut f = StreamFramer::new(65536);
        f.push(b"INVITE sip:a@b SIP/2.0\r\nl: 2\r\n\r\nok");
        assert_eq!(
            f.next_frame(),
            Ok(Some(Frame::Message(
                b"INVITE sip:a@b SIP/2.0\r\nl: 2\r\n\r\nok".to_vec()
            )))
        );
    }
}
