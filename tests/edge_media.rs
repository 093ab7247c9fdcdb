//! Edge hardening, media: RTP, RFC 4733 events and in-band tones count only from the caller's
//! own media source; RTP timeout and maximum call duration.

mod common;
