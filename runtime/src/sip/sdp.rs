//! A small SDP (RFC 4566) reader and an RFC 3264 answerer for the one thing this runtime does:
//! a single G.711 audio stream (PCMU 0 / PCMA 8) with RFC 4733 telephone-events.
//!
//! The parser keeps only what the answer needs and ignores every attribute it does not know, so
//! that odd offers still get an answer; it rejects text that is not SDP at all.

use std::collections::hash_map::DefaultHasher;
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};

/// Why an SDP body could not be read or answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    /// The body is not SDP (not UTF-8, no `v=` line, or a malformed line).
    #[error("malformed SDP: {0}")]
    Malformed(&'static str),
    /// The offer has no audio stream with PCMU or PCMA over RTP/AVP (answered with 488).
    #[error("no common codec: the offer has no RTP/AVP audio stream with PCMU or PCMA")]
    NoCommonCodec,
}

/// Media direction attribute of a stream (`a=sendrecv` and friends, RFC 3264 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Both sides send (the default when no attribute is present).
    SendRecv,
    /// The sender of this SDP only sends (the usual way to put a call on hold).
    SendOnly,
    /// The sender of this SDP only receives.
    RecvOnly,
    /// No media in either direction.
    Inactive,
}

impl Direction {
    /// The direction an answerer uses for an offered direction (RFC 3264 §6.1).
    pub fn reversed(self) -> Self {
        match self {
            Self::SendOnly => Self::RecvOnly,
            Self::RecvOnly => Self::SendOnly,
            other => other,
        }
    }

    fn as_attr(self) -> &'static str {
        match self {
            Self::SendRecv => "sendrecv",
            Self::SendOnly => "sendonly",
            Self::RecvOnly => "recvonly",
            Self::Inactive => "inactive",
        }
    }

    fn from_attr(attr: &str) -> Option<Self> {
        match attr {
            "sendrecv" => Some(Self::SendRecv),
            "sendonly" => Some(Self::SendOnly),
            "recvonly" => Some(Self::RecvOnly),
            "inactive" => Some(Self::Inactive),
            _ => None,
        }
    }
}

/// One `a=rtpmap:` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpMap {
    /// RTP payload type.
    pub payload_type: u8,
    /// Encoding name as written (compare case-insensitively).
    pub encoding: String,
    /// Clock rate in Hz.
    pub clock_rate: u32,
}

/// One `m=` section with the attributes the answerer cares about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaDescription {
    /// Media type (`audio`, `video`, …).
    pub kind: String,
    /// Transport port; 0 means the stream is disabled.
    pub port: u16,
    /// Transport protocol (`RTP/AVP`, …).
    pub proto: String,
    /// Format list as written (payload types for RTP).
    pub formats: Vec<String>,
    /// Media-level `c=` address, if present.
    pub connection: Option<String>,
    /// `a=rtpmap:` entries.
    pub rtpmaps: Vec<RtpMap>,
    /// `a=fmtp:` entries as (payload type, parameters).
    pub fmtps: Vec<(u8, String)>,
    /// Media-level direction attribute, if present.
    pub direction: Option<Direction>,
}

/// The parts of a session description this runtime reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDescription {
    /// `o=` session id (kept as text: it may exceed 64 bits).
    pub session_id: String,
    /// `o=` session version.
    pub session_version: String,
    /// Session-level `c=` address, if present.
    pub connection: Option<String>,
    /// Session-level direction attribute, if present.
    pub direction: Option<Direction>,
    /// The media sections in order.
    pub media: Vec<MediaDescription>,
}

/// The G.711 codec chosen for a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// G.711 μ-law, static payload type 0.
    Pcmu,
    /// G.711 A-law, static payload type 8.
    Pcma,
}

impl Codec {
    fn name(self) -> &'static str {
        match self {
            Self::Pcmu => "PCMU",
            Self::Pcma => "PCMA",
        }
    }
}

/// The negotiated session: what the media layer needs plus the SDP text to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The codec both sides use.
    pub codec: Codec,
    /// Payload type of the codec as offered (0 or 8 unless the offer remapped it).
    pub payload_type: u8,
    /// Payload type of telephone-event as offered, if offered (RFC 4733 DTMF).
    pub telephone_event: Option<u8>,
    /// The direction we put in the answer (seen from our side).
    pub direction: Direction,
    /// Where to send RTP; `None` when the offerer asked not to receive (hold, `c=0.0.0.0`, port 0).
    pub remote_rtp: Option<SocketAddr>,
    /// The offer's media address (`c=` and `m=` port) whatever the direction, so a caller on
    /// hold that still sends (music on hold) is known; `None` without a usable address
    /// (absent, `0.0.0.0`, port 0).
    pub remote_media: Option<SocketAddr>,
    /// The SDP answer body.
    pub sdp: Vec<u8>,
}

/// Parses an SDP body.
pub fn parse(body: &[u8]) -> Result<SessionDescription, SdpError> {
    let text = std::str::from_utf8(body).map_err(|_| SdpError::Malformed("not UTF-8"))?;
    let mut sd = SessionDescription {
        session_id: String::new(),
        session_version: String::new(),
        connection: None,
        direction: None,
        media: Vec::new(),
    };
    let mut saw_version = false;
    for raw in text.split('\n') {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.is_empty() {
            continue;
        }
        let mut chars = line.chars();
        let (Some(kind), Some('=')) = (chars.next(), chars.next()) else {
            return Err(SdpError::Malformed("line is not <type>=<value>"));
        };
        let value = &line[kind.len_utf8() + 1..];
        if !saw_version {
            if kind != 'v' {
                return Err(SdpError::Malformed("first line is not v="));
            }
            if value.trim() != "0" {
                return Err(SdpError::Malformed("unsupported SDP version"));
            }
            saw_version = true;
            continue;
        }
        match kind {
            'o' => {
                let fields: Vec<&str> = value.split_whitespace().collect();
                if fields.len() != 6 {
                    return Err(SdpError::Malformed("o= needs six fields"));
                }
                sd.session_id = fields[1].to_owned();
                sd.session_version = fields[2].to_owned();
            }
            'c' => {
                let addr = parse_connection(value)?;
                match sd.media.last_mut() {
                    Some(m) => m.connection = Some(addr),
                    None => sd.connection = Some(addr),
                }
            }
            'm' => sd.media.push(parse_media(value)?),
            'a' => {
                let target = sd.media.last_mut();
                apply_attribute(value, target, &mut sd.direction);
            }
            _ => {}
        }
    }
    if !saw_version {
        return Err(SdpError::Malformed("no v= line"));
    }
    Ok(sd)
}

fn parse_connection(value: &str) -> Result<String, SdpError> {
    let fields: Vec<&str> = value.split_whitespace().collect();
    if fields.len() != 3 || fields[0] != "IN" {
        return Err(SdpError::Malformed("c= needs IN <addrtype> <address>"));
    }
    // Multicast forms carry "/ttl"; the address is what matters for unicast RTP.
    let addr = fields[2].split('/').next().unwrap_or_default();
    Ok(addr.to_owned())
}

fn parse_media(value: &str) -> Result<MediaDescription, SdpError> {
    let fields: Vec<&str> = value.split_whitespace().collect();
    if fields.len() < 4 {
        return Err(SdpError::Malformed(
            "m= needs media, port, proto and formats",
        ));
    }
    let port_text = fields[1].split('/').next().unwrap_or_default();
    let port = port_text
        .parse::<u16>()
        .map_err(|_| SdpError::Malformed("m= port is not a number"))?;
    Ok(MediaDescription {
        kind: fields[0].to_owned(),
        port,
        proto: fields[2].to_owned(),
        formats: fields[3..].iter().map(|f| (*f).to_owned()).collect(),
        connection: None,
        rtpmaps: Vec::new(),
        fmtps: Vec::new(),
        direction: None,
    })
}

fn apply_attribute(
    value: &str,
    media: Option<&mut MediaDescription>,
    session_dir: &mut Option<Direction>,
) {
    if let Some(dir) = Direction::from_attr(value.trim()) {
        match media {
            Some(m) => m.direction = Some(dir),
            None => *session_dir = Some(dir),
        }
        return;
    }
    let Some(m) = media else { return };
    if let Some(rest) = value.strip_prefix("rtpmap:") {
        // "101 telephone-event/8000[/channels]"; unreadable entries are ignored, not fatal.
        let mut parts = rest.splitn(2, ' ');
        let pt = parts.next().and_then(|p| p.trim().parse::<u8>().ok());
        let enc = parts.next().map(str::trim);
        if let (Some(pt), Some(enc)) = (pt, enc) {
            let mut e = enc.split('/');
            let name = e.next().unwrap_or_default().to_owned();
            let clock = e.next().and_then(|c| c.parse::<u32>().ok()).unwrap_or(0);
            m.rtpmaps.push(RtpMap {
                payload_type: pt,
                encoding: name,
                clock_rate: clock,
            });
        }
    } else if let Some(rest) = value.strip_prefix("fmtp:") {
        let mut parts = rest.splitn(2, ' ');
        if let (Some(Ok(pt)), Some(params)) =
            (parts.next().map(|p| p.trim().parse::<u8>()), parts.next())
        {
            m.fmtps.push((pt, params.trim().to_owned()));
        }
    }
}

impl MediaDescription {
    fn rtpmap(&self, pt: u8) -> Option<&RtpMap> {
        self.rtpmaps.iter().find(|r| r.payload_type == pt)
    }

    /// The first offered format that is PCMU or PCMA, honouring the offerer's preference order.
    fn g711(&self) -> Option<(Codec, u8)> {
        self.formats.iter().find_map(|f| {
            let pt = f.parse::<u8>().ok()?;
            match self.rtpmap(pt) {
                Some(map)
                    if map.encoding.eq_ignore_ascii_case("PCMU") && map.clock_rate == 8000 =>
                {
                    Some((Codec::Pcmu, pt))
                }
                Some(map)
                    if map.encoding.eq_ignore_ascii_case("PCMA") && map.clock_rate == 8000 =>
                {
                    Some((Codec::Pcma, pt))
                }
                Some(_) => None,
                None if pt == 0 => Some((Codec::Pcmu, 0)),
                None if pt == 8 => Some((Codec::Pcma, 8)),
                None => None,
            }
        })
    }

    fn telephone_event(&self) -> Option<u8> {
        self.formats.iter().find_map(|f| {
            let pt = f.parse::<u8>().ok()?;
            let map = self.rtpmap(pt)?;
            (map.encoding.eq_ignore_ascii_case("telephone-event") && map.clock_rate == 8000)
                .then_some(pt)
        })
    }

    fn is_rtp_avp(&self) -> bool {
        self.proto.eq_ignore_ascii_case("RTP/AVP")
    }
}

impl SessionDescription {
    /// Index of the stream we would accept: the first RTP/AVP audio stream with a G.711 format.
    fn usable_audio(&self) -> Option<usize> {
        self.media
            .iter()
            .position(|m| m.kind == "audio" && m.port != 0 && m.is_rtp_avp() && m.g711().is_some())
    }

    /// Whether the offer contains an audio stream this runtime can accept (else 488).
    pub fn has_common_codec(&self) -> bool {
        self.usable_audio().is_some()
    }
}

/// Builds the RFC 3264 answer to `offer` for a local RTP endpoint.
///
/// Picks the offerer's first PCMU/PCMA format, keeps telephone-event's payload type from the offer,
/// mirrors hold (`sendonly` → `recvonly`, `inactive` → `inactive`, `c=0.0.0.0` → we receive only
/// and do not send) and resume (`sendrecv`), and rejects every other stream with port 0 so the
/// answer has as many `m=` lines as the offer. The `o=` version is 1; [`super::SipCore`] rewrites
/// it per dialog so re-answers keep or bump it as RFC 3264 §8 requires.
pub fn answer(
    offer: &SessionDescription,
    local_ip: IpAddr,
    local_port: u16,
) -> Result<Answer, SdpError> {
    let chosen = offer.usable_audio().ok_or(SdpError::NoCommonCodec)?;
    let stream = &offer.media[chosen];
    let (codec, payload_type) = stream.g711().ok_or(SdpError::NoCommonCodec)?;
    let telephone_event = stream.telephone_event();

    let offered_dir = stream
        .direction
        .or(offer.direction)
        .unwrap_or(Direction::SendRecv);
    let remote_addr = stream.connection.as_deref().or(offer.connection.as_deref());
    let remote_ip = remote_addr.and_then(|a| a.parse::<IpAddr>().ok());
    // RFC 2543 hold: a zero address means "do not send to me"; we still listen.
    let zero_hold = remote_ip.is_some_and(|ip| ip.is_unspecified());
    let mut direction = offered_dir.reversed();
    if zero_hold {
        direction = match direction {
            Direction::SendRecv | Direction::RecvOnly => Direction::RecvOnly,
            other => other,
        };
    }
    let we_send = matches!(direction, Direction::SendRecv | Direction::SendOnly);
    let remote_media = remote_ip
        .filter(|ip| !ip.is_unspecified() && stream.port != 0)
        .map(|ip| SocketAddr::new(ip, stream.port));
    let remote_rtp = match remote_ip {
        Some(ip) if we_send && !ip.is_unspecified() => Some(SocketAddr::new(ip, stream.port)),
        _ => None,
    };

    let mut hasher = DefaultHasher::new();
    (&offer.session_id, local_ip, local_port).hash(&mut hasher);
    // Keep the id within 63 bits: some stacks parse it as a signed 64-bit number.
    let session_id = hasher.finish() >> 1;
    let ip_kind = if local_ip.is_ipv4() { "IP4" } else { "IP6" };

    let mut sdp = String::new();
    // Writing into a String cannot fail; the results are ignored on purpose.
    let _ = write!(
        sdp,
        "v=0\r\no=wasm-ivr {session_id} 1 IN {ip_kind} {local_ip}\r\ns=wasm-ivr\r\nc=IN {ip_kind} {local_ip}\r\nt=0 0\r\n"
    );
    for (i, m) in offer.media.iter().enumerate() {
        if i != chosen {
            let first = m.formats.first().map(String::as_str).unwrap_or("0");
            let _ = write!(sdp, "m={} 0 {} {}\r\n", m.kind, m.proto, first);
            continue;
        }
        let _ = write!(sdp, "m=audio {local_port} RTP/AVP {payload_type}");
        if let Some(te) = telephone_event {
            let _ = write!(sdp, " {te}");
        }
        let _ = write!(sdp, "\r\na=rtpmap:{payload_type} {}/8000\r\n", codec.name());
        if let Some(te) = telephone_event {
            let _ = write!(
                sdp,
                "a=rtpmap:{te} telephone-event/8000\r\na=fmtp:{te} 0-15\r\n"
            );
        }
        let _ = write!(sdp, "a=ptime:20\r\na={}\r\n", direction.as_attr());
    }

    Ok(Answer {
        codec,
        payload_type,
        telephone_event,
        direction,
        remote_rtp,
        remote_media,
        sdp: sdp.into_bytes(),
    })
}

/// Returns `sdp` with the `o=` session version replaced by `version`, or `None` if the body has
/// no well-formed `o=` line (the core then sends the body unchanged).
pub fn with_origin_version(sdp: &[u8], version: u64) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(sdp).ok()?;
    let mut out = String::with_capacity(text.len() + 8);
    let mut replaced = false;
    for piece in text.split_inclusive('\n') {
        if !replaced && let Some(rest) = piece.strip_prefix("o=") {
            let (line, ending) = split_ending(rest);
            let mut fields: Vec<String> = line.split(' ').map(str::to_owned).collect();
            if fields.len() == 6 {
                fields[2] = version.to_string();
                out.push_str("o=");
                out.push_str(&fields.join(" "));
                out.push_str(ending);
                replaced = true;
                continue;
            }
        }
        out.push_str(piece);
    }
    replaced.then(|| out.into_bytes())
}

/// The body with the `o=` version field blanked, to tell "same session, new version" from
/// "unchanged" (RFC 3264 §8: an unchanged SDP keeps its version).
pub(crate) fn without_origin_version(sdp: &[u8]) -> Vec<u8> {
    with_origin_version(sdp, 0).unwrap_or_else(|| sdp.to_vec())
}

fn split_ending(s: &str) -> (&str, &str) {
    if let Some(line) = s.strip_suffix("\r\n") {
        (line, "\r\n")
    } else if let Some(line) = s.strip_suffix('\n') {
        (line, "\n")
    } else {
        (s, "")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIPP_OFFER: &str = "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\na=sendrecv\r\n";

    fn local() -> IpAddr {
        "127.0.0.1".parse().unwrap()
    }

    #[test]
    fn answers_sipp_offer_with_pcmu_and_telephone_event() {
        let offer = parse(SIPP_OFFER.as_bytes()).unwrap();
        let a = answer(&offer, local(), 20000).unwrap();
        assert_eq!(a.codec, Codec::Pcmu);
        assert_eq!(a.payload_type, 0);
        assert_eq!(a.telephone_event, Some(101));
        assert_eq!(a.direction, Direction::SendRecv);
        assert_eq!(a.remote_rtp, Some("127.0.0.1:6000".parse().unwrap()));
        let text = String::from_utf8(a.sdp).unwrap();
        assert!(text.contains("m=audio 20000 RTP/AVP 0 101\r\n"), "{text}");
        assert!(text.contains("a=rtpmap:101 telephone-event/8000"));
        assert!(text.contains("c=IN IP4 127.0.0.1"));
        assert!(text.contains("a=sendrecv"));
        parse(text.as_bytes()).unwrap();
    }

    #[test]
    fn prefers_offer_order_and_keeps_dynamic_telephone_event() {
        let sdp = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 18 8 0 96\r\na=rtpmap:96 telephone-event/8000\r\n";
        let a = answer(&parse(sdp.as_bytes()).unwrap(), local(), 1).unwrap();
        assert_eq!(
            (a.codec, a.payload_type, a.telephone_event),
            (Codec::Pcma, 8, Some(96))
        );
    }

    #[test]
    fn hold_and_resume() {
        let hold = SIPP_OFFER.replace("a=sendrecv", "a=sendonly");
        let a = answer(&parse(hold.as_bytes()).unwrap(), local(), 1).unwrap();
        assert_eq!(a.direction, Direction::RecvOnly);
        assert_eq!(a.remote_rtp, None);
        // On hold the caller may still send (music on hold): its address stays known.
        assert_eq!(a.remote_media, Some("127.0.0.1:6000".parse().unwrap()));
        assert!(String::from_utf8(a.sdp).unwrap().contains("a=recvonly"));

        let inactive = SIPP_OFFER.replace("a=sendrecv", "a=inactive");
        let a = answer(&parse(inactive.as_bytes()).unwrap(), local(), 1).unwrap();
        assert_eq!(a.direction, Direction::Inactive);

        let zero = SIPP_OFFER.replace("c=IN IP4 127.0.0.1", "c=IN IP4 0.0.0.0");
        let a = answer(&parse(zero.as_bytes()).unwrap(), local(), 1).unwrap();
        assert_eq!(a.direction, Direction::RecvOnly);
        assert_eq!(a.remote_rtp, None);
        assert_eq!(a.remote_media, None);

        let a = answer(&parse(SIPP_OFFER.as_bytes()).unwrap(), local(), 1).unwrap();
        assert_eq!(a.direction, Direction::SendRecv);
    }

    #[test]
    fn no_common_codec_and_extra_streams() {
        let g726 = "v=0\r\no=- 1 0 IN IP6 2001:db8::20\r\ns=x\r\nc=IN IP6 2001:db8::20\r\nt=0 0\r\nm=audio 6000 RTP/AVP 2\r\na=rtpmap:2 G726-32/8000\r\n";
        assert_eq!(
            answer(&parse(g726.as_bytes()).unwrap(), local(), 1),
            Err(SdpError::NoCommonCodec)
        );
        let with_video = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nt=0 0\r\nm=audio 22334 RTP/AVP 0\r\nc=IN IP4 192.0.2.1\r\nm=video 6024 RTP/AVP 107\r\nc=IN IP6 2001:db8::1\r\n";
        let a = answer(&parse(with_video.as_bytes()).unwrap(), local(), 7).unwrap();
        let text = String::from_utf8(a.sdp).unwrap();
        assert!(text.contains("m=video 0 RTP/AVP 107"), "{text}");
        assert_eq!(a.remote_rtp, Some("192.0.2.1:22334".parse().unwrap()));
    }

    #[test]
    fn rejects_non_sdp() {
        assert!(parse(b"<audio/>").is_err());
        assert!(parse(b"").is_err());
        assert!(parse(&[0xff, 0xfe]).is_err());
    }

    #[test]
    fn origin_version_rewrite() {
        let out = with_origin_version(SIPP_OFFER.as_bytes(), 7).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("o=user1 53655765 7 IN IP4 127.0.0.1\r\n"));
        assert_eq!(
            without_origin_version(text.as_bytes()),
            without_origin_version(SIPP_OFFER.as_bytes())
        );
        assert_eq!(with_origin_version(b"v=0\r\n", 1), None);
    }
}

/// Payload type this runtime offers for telephone-event when it makes the offer.
pub const OFFERED_TELEPHONE_EVENT: u8 = 101;

/// Builds an offer of one codec (and telephone-event): for the leg a bridged transfer places,
/// so the two legs share a codec and packets can be relayed untouched.
pub fn offer_codec(local_ip: IpAddr, local_port: u16, codec: Codec) -> Vec<u8> {
    let family = if local_ip.is_ipv6() { "IP6" } else { "IP4" };
    let te = OFFERED_TELEPHONE_EVENT;
    let (pt, name) = match codec {
        Codec::Pcmu => (0, "PCMU"),
        Codec::Pcma => (8, "PCMA"),
    };
    format!(
        "v=0\r\no=wasm-ivr 1 1 IN {family} {local_ip}\r\ns=wasm-ivr\r\nc=IN {family} {local_ip}\r\n\
         t=0 0\r\nm=audio {local_port} RTP/AVP {pt} {te}\r\na=rtpmap:{pt} {name}/8000\r\n\
         a=rtpmap:{te} telephone-event/8000\r\na=fmtp:{te} 0-15\r\na=ptime:20\r\na=sendrecv\r\n"
    )
    .into_bytes()
}

/// Builds our offer, for an INVITE that arrived without one (the caller answers in its ACK):
/// PCMU, PCMA and telephone-event on a local RTP endpoint.
pub fn offer(local_ip: IpAddr, local_port: u16) -> Vec<u8> {
    let family = if local_ip.is_ipv6() { "IP6" } else { "IP4" };
    let te = OFFERED_TELEPHONE_EVENT;
    format!(
        "v=0\r\no=wasm-ivr 1 1 IN {family} {local_ip}\r\ns=wasm-ivr\r\nc=IN {family} {local_ip}\r\n\
         t=0 0\r\nm=audio {local_port} RTP/AVP 0 8 {te}\r\na=rtpmap:0 PCMU/8000\r\n\
         a=rtpmap:8 PCMA/8000\r\na=rtpmap:{te} telephone-event/8000\r\na=fmtp:{te} 0-15\r\n\
         a=ptime:20\r\na=sendrecv\r\n"
    )
    .into_bytes()
}

#[cfg(test)]
mod offer_tests {
    use super::*;

    #[test]
    fn our_offer_parses_and_is_answerable() {
        let body = offer("127.0.0.1".parse().unwrap(), 30000);
        let parsed = parse(&body).unwrap();
        assert!(parsed.has_common_codec());
        let negotiated = answer(&parsed, "127.0.0.1".parse().unwrap(), 40000).unwrap();
        assert_eq!(negotiated.codec, Codec::Pcmu);
        assert_eq!(negotiated.telephone_event, Some(OFFERED_TELEPHONE_EVENT));
        assert_eq!(
            negotiated.remote_rtp,
            Some("127.0.0.1:30000".parse().unwrap())
        );
    }
}
