//! Framing SIP messages out of a byte stream (TCP), RFC 3261 §18.3: a message is its header
//! section up to the blank line plus `Content-Length` bytes of body. Sans-IO: feed bytes in,
//! take whole messages out, and close the connection when the framer says the stream is broken
//! (a missing or contradictory length cannot be resynchronised on a stream).
//!
//! Hostile input: the declared length is bounded in digits and checked against the size limit
//! without overflow, and every byte is scanned once (the search for the blank line resumes
//! where it stopped), so a peer trickling a large header section costs linear time.

use std::fmt;

/// Digits accepted in a Content-Length: more than any message under the size limit needs, few
/// enough that the value cannot overflow.
const MAX_LENGTH_DIGITS: usize = 9;

/// Why a stream can no longer be framed; the connection should be closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The header section grew past the size limit without ending.
    HeadersTooLarge,
    /// The declared body does not fit in the size limit (the value as declared).
    BodyTooLarge(String),
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
    /// Where the search for the blank line resumes: bytes before it hold no `\r\n\r\n`.
    scanned: usize,
    /// The current message's total length, once its header section has been read.
    message_len: Option<usize>,
}

impl StreamFramer {
    /// A framer refusing messages larger than `max_message` bytes.
    pub fn new(max_message: usize) -> Self {
        StreamFramer {
            buf: Vec::new(),
            max_message,
            scanned: 0,
            message_len: None,
        }
    }

    /// Adds received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Whether bytes of an unfinished message are waiting (the connection owes us the rest).
    pub fn is_partial(&self) -> bool {
        !self.buf.is_empty()
    }

    /// The next complete frame, `Ok(None)` when more bytes are needed, or an error when the
    /// stream is broken.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if self.message_len.is_none() {
            if self.buf.starts_with(b"\r\n\r\n") {
                self.consume(4);
                return Ok(Some(Frame::KeepAlive));
            }
            // Stray CRLFs between messages are allowed (RFC 3261 §7.5).
            let leading = self
                .buf
                .iter()
                .take_while(|b| **b == b'\r' || **b == b'\n')
                .count();
            if leading > 0 && leading < self.buf.len() {
                self.consume(leading);
            }
            // Resume three bytes back: the blank line may straddle the previous push.
            let from = self.scanned.saturating_sub(3);
            let Some(at) = find(&self.buf[from..], b"\r\n\r\n") else {
                self.scanned = self.buf.len();
                if self.buf.len() > self.max_message {
                    return Err(FrameError::HeadersTooLarge);
                }
                return Ok(None);
            };
            let end = from + at;
            let headers_len = end + 4;
            if headers_len > self.max_message {
                return Err(FrameError::HeadersTooLarge);
            }
            let declared = content_length(&self.buf[..end])?;
            let body_len = declared
                .parse::<usize>()
                .ok()
                .filter(|n| *n <= self.max_message - headers_len)
                .ok_or(FrameError::BodyTooLarge(declared))?;
            self.message_len = Some(headers_len + body_len);
        }
        let Some(len) = self.message_len else {
            return Ok(None);
        };
        if self.buf.len() < len {
            return Ok(None);
        }
        let message = self.buf[..len].to_vec();
        self.consume(len);
        Ok(Some(Frame::Message(message)))
    }

    /// Drops the first `n` bytes (a frame taken out) and starts over on the rest.
    fn consume(&mut self, n: usize) {
        self.buf.drain(..n);
        self.scanned = 0;
        self.message_len = None;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The Content-Length of a header section (long or compact `l` form), as its digits, leading
/// zeros removed. Required on streams; `1*DIGIT` (RFC 3261 §25.1), so no sign and no blanks
/// inside, and at most [`MAX_LENGTH_DIGITS`] significant digits (longer is too large anyway).
fn content_length(headers: &[u8]) -> Result<String, FrameError> {
    let text = String::from_utf8_lossy(headers);
    let mut found: Option<String> = None;
    for line in text.split("\r\n").skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("l") {
            let value = value.trim();
            if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                return Err(FrameError::BadContentLength);
            }
            let digits = value.trim_start_matches('0');
            let digits = if digits.is_empty() { "0" } else { digits };
            if found.as_deref().is_some_and(|m| m != digits) {
                return Err(FrameError::BadContentLength);
            }
            found = Some(digits.to_owned());
        }
    }
    let mut found = found.ok_or(FrameError::BadContentLength)?;
    if found.len() > MAX_LENGTH_DIGITS {
        // Refused as too large, never parsed; the error quotes a bounded prefix.
        if found.len() > 24 {
            found.truncate(24);
            found.push('…');
        }
        return Err(FrameError::BodyTooLarge(found));
    }
    Ok(found)
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
        assert!(!f.is_partial());
    }

    #[test]
    fn frames_a_message_fed_one_byte_at_a_time() {
        let mut f = StreamFramer::new(65536);
        let mut got = Vec::new();
        for round in 0..3 {
            for (i, b) in MSG.iter().enumerate() {
                f.push(std::slice::from_ref(b));
                match f.next_frame() {
                    Ok(Some(Frame::Message(m))) => {
                        assert_eq!(i, MSG.len() - 1, "round {round}: framed early");
                        got.push(m);
                    }
                    Ok(None) => assert!(f.is_partial()),
                    other => panic!("round {round}, byte {i}: {other:?}"),
                }
            }
        }
        assert_eq!(got, vec![MSG.to_vec(); 3]);
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
        assert_eq!(f.next_frame(), Err(FrameError::BodyTooLarge("5000".into())));
        // Headers and body each under the limit, together over it.
        let mut f = StreamFramer::new(60);
        f.push(b"INVITE sip:a@b SIP/2.0\r\nContent-Length: 20\r\n\r\n");
        assert_eq!(f.next_frame(), Err(FrameError::BodyTooLarge("20".into())));
    }

    #[test]
    fn overflowing_or_malformed_lengths_break_the_stream_without_panicking() {
        for value in [
            "18446744073709551615",
            "18446744073709551616",
            "99999999999999999999999999999999999999",
            "4294967296",
        ] {
            let mut f = StreamFramer::new(65536);
            f.push(format!("INVITE sip:a@b SIP/2.0\r\nContent-Length: {value}\r\n\r\n").as_bytes());
            assert!(
                matches!(f.next_frame(), Err(FrameError::BodyTooLarge(_))),
                "{value}"
            );
        }
        for value in ["+4", "-1", "4 4", "0x10", "", "٤"] {
            let mut f = StreamFramer::new(65536);
            f.push(format!("INVITE sip:a@b SIP/2.0\r\nl: {value}\r\n\r\nabcd").as_bytes());
            assert_eq!(
                f.next_frame(),
                Err(FrameError::BadContentLength),
                "{value:?}"
            );
        }
        // Leading zeros are the same number.
        let mut f = StreamFramer::new(65536);
        f.push(b"INVITE sip:a@b SIP/2.0\r\nContent-Length: 0004\r\nl: 4\r\n\r\nabcd");
        assert!(matches!(f.next_frame(), Ok(Some(Frame::Message(_)))));
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
