//! SIP message parsing, validation and printing (RFC 3261 §7, §20, §25).
//!
//! Parsing is done in two steps. [`parse`] frames a datagram (start line, unfolded headers with
//! compact names expanded, body cut at Content-Length) and then validates what every request or
//! response must carry. A request that is malformed but answerable comes back as
//! [`ParseError::Reject`] with the headers needed to build the error response; anything else
//! malformed is dropped by the caller.
//!
//! Why not `rsip`: rsip 0.4 rejects 19 of the messages RFC 4475/5118 say must be accepted (IPv6
//! references, folded lines, compact header names, extension methods, escaped user parts) and
//! prints bodies through a lossy UTF-8 conversion, so this module carries its own small parser.

use std::fmt::Write as _;
use std::net::SocketAddr;

/// Largest CSeq sequence number allowed (RFC 3261 §8.1.1.5: less than 2**31).
const MAX_CSEQ: u64 = (1 << 31) - 1;

/// A request method; methods are case-sensitive tokens (RFC 3261 §7.1).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    /// INVITE
    Invite,
    /// ACK
    Ack,
    /// BYE
    Bye,
    /// CANCEL
    Cancel,
    /// OPTIONS
    Options,
    /// INFO (RFC 6086)
    Info,
    /// REGISTER
    Register,
    /// REFER (RFC 3515)
    Refer,
    /// UPDATE (RFC 3311)
    Update,
    /// PRACK (RFC 3262)
    Prack,
    /// SUBSCRIBE (RFC 6665)
    Subscribe,
    /// NOTIFY (RFC 6665)
    Notify,
    /// MESSAGE (RFC 3428)
    Message,
    /// PUBLISH (RFC 3903)
    Publish,
    /// Any other token: answered with 501.
    Extension(String),
}

impl Method {
    /// Parses a method token; `None` when the text is not a token.
    pub fn parse(s: &str) -> Option<Self> {
        if !is_token(s) {
            return None;
        }
        Some(match s {
            "INVITE" => Self::Invite,
            "ACK" => Self::Ack,
            "BYE" => Self::Bye,
            "CANCEL" => Self::Cancel,
            "OPTIONS" => Self::Options,
            "INFO" => Self::Info,
            "REGISTER" => Self::Register,
            "REFER" => Self::Refer,
            "UPDATE" => Self::Update,
            "PRACK" => Self::Prack,
            "SUBSCRIBE" => Self::Subscribe,
            "NOTIFY" => Self::Notify,
            "MESSAGE" => Self::Message,
            "PUBLISH" => Self::Publish,
            other => Self::Extension(other.to_owned()),
        })
    }

    /// The method as it appears on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Invite => "INVITE",
            Self::Ack => "ACK",
            Self::Bye => "BYE",
            Self::Cancel => "CANCEL",
            Self::Options => "OPTIONS",
            Self::Info => "INFO",
            Self::Register => "REGISTER",
            Self::Refer => "REFER",
            Self::Update => "UPDATE",
            Self::Prack => "PRACK",
            Self::Subscribe => "SUBSCRIBE",
            Self::Notify => "NOTIFY",
            Self::Message => "MESSAGE",
            Self::Publish => "PUBLISH",
            Self::Extension(s) => s,
        }
    }
}

/// One header field, unfolded, with a compact name expanded to its long form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Header name (long form for known compact names, otherwise as received).
    pub name: String,
    /// Header value with surrounding whitespace removed and folding replaced by one space.
    pub value: String,
}

/// The header fields of a message in wire order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<Header>);

impl Headers {
    /// The first value of `name` (case-insensitive).
    pub fn get<'a>(&'a self, name: &str) -> Option<&'a str> {
        self.get_all(name).next()
    }

    /// Every header line named `name` (case-insensitive), in order.
    pub fn get_all<'a, 'n>(&'a self, name: &'n str) -> impl Iterator<Item = &'a str> + use<'a, 'n> {
        self.0
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }

    /// Every comma-separated element of every `name` line, trimmed, in order (RFC 3261 §7.3.1).
    pub fn list<'a>(&'a self, name: &str) -> Vec<&'a str> {
        self.get_all(name)
            .flat_map(split_list)
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect()
    }

    /// How many header lines are named `name`.
    pub fn count(&self, name: &str) -> usize {
        self.get_all(name).count()
    }

    /// All headers in order.
    pub fn iter(&self) -> impl Iterator<Item = &Header> {
        self.0.iter()
    }

    /// Appends a header.
    pub fn push(&mut self, name: &str, value: impl Into<String>) {
        self.0.push(Header {
            name: name.to_owned(),
            value: value.into(),
        });
    }
}

/// A URI as used in SIP: parsed for `sip`/`sips`/`tel`, kept opaque for other schemes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Uri {
    /// A `sip:` or `sips:` URI.
    Sip(SipUri),
    /// A `tel:` URI (RFC 3966).
    Tel {
        /// The telephone-subscriber part before any parameter.
        number: String,
    },
    /// Any other scheme, which we neither route to nor reject in From/To.
    Other {
        /// Lower-cased scheme.
        scheme: String,
    },
}

/// The parts of a SIP URI this runtime uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipUri {
    /// `sips:` rather than `sip:`.
    pub secure: bool,
    /// User part as written (escaped), without the password.
    pub user: Option<String>,
    /// Host: domain name, IPv4 address or bracketed IPv6 reference.
    pub host: String,
    /// Port, if present.
    pub port: Option<u16>,
    /// URI parameters (`;lr`, `;transport=udp`, …), names lower-cased.
    pub params: Vec<(String, Option<String>)>,
    /// Whether a `?headers` part is present (forbidden in a Request-URI).
    pub has_headers: bool,
}

impl Uri {
    /// Parses a URI (without angle brackets).
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        let colon = s.find(':').ok_or("URI has no scheme")?;
        let scheme = &s[..colon];
        let rest = &s[colon + 1..];
        let mut chars = scheme.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
        if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) {
            return Err("URI scheme is malformed");
        }
        if s.chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>')
        {
            return Err("URI contains whitespace or angle brackets");
        }
        let scheme_lc = scheme.to_ascii_lowercase();
        match scheme_lc.as_str() {
            "sip" | "sips" => parse_sip_uri(scheme_lc == "sips", rest).map(Self::Sip),
            "tel" => {
                let number = rest.split(';').next().unwrap_or_default();
                if number.is_empty() {
                    return Err("tel URI has no number");
                }
                Ok(Self::Tel {
                    number: number.to_owned(),
                })
            }
            _ => Ok(Self::Other { scheme: scheme_lc }),
        }
    }

    /// The user part, percent-decoded, without user parameters: the number for `tel:` URIs.
    pub fn user(&self) -> Option<String> {
        match self {
            Self::Sip(u) => u.user.as_deref().map(|user| {
                let plain = user.split(';').next().unwrap_or_default();
                percent_decode(plain)
            }),
            Self::Tel { number } => Some(strip_visual_separators(&percent_decode(number))),
            Self::Other { .. } => None,
        }
    }

    /// Whether this is a SIP URI carrying the `lr` (loose routing) parameter.
    pub fn is_loose_route(&self) -> bool {
        matches!(self, Self::Sip(u) if u.params.iter().any(|(n, _)| n == "lr"))
    }
}

fn parse_sip_uri(secure: bool, rest: &str) -> Result<SipUri, &'static str> {
    // '@' cannot appear unescaped in host, parameters or headers, so the last one ends userinfo.
    let (userinfo, hostpart) = match rest.rfind('@') {
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => (None, rest),
    };
    let user = match userinfo {
        Some("") => return Err("URI user part is empty"),
        Some(ui) => {
            let user = ui.split(':').next().unwrap_or_default();
            if user.is_empty() {
                return Err("URI user part is empty");
            }
            Some(user.to_owned())
        }
        None => None,
    };
    let (before_headers, has_headers) = match hostpart.find('?') {
        Some(q) => (&hostpart[..q], true),
        None => (hostpart, false),
    };
    let mut pieces = before_headers.split(';');
    let hostport = pieces.next().unwrap_or_default();
    let (host, port) = parse_hostport(hostport)?;
    let mut params = Vec::new();
    for p in pieces {
        if p.is_empty() {
            return Err("URI has an empty parameter");
        }
        let (name, value) = match p.split_once('=') {
            Some((n, v)) => (n, Some(v.to_owned())),
            None => (p, None),
        };
        if name.is_empty() {
            return Err("URI parameter has no name");
        }
        params.push((name.to_ascii_lowercase(), value));
    }
    Ok(SipUri {
        secure,
        user,
        host,
        port,
        params,
        has_headers,
    })
}

/// Parses `host[:port]` where host may be an IPv6 reference in brackets.
fn parse_hostport(s: &str) -> Result<(String, Option<u16>), &'static str> {
    let (host, port_text) = if let Some(inner) = s.strip_prefix('[') {
        let close = inner.find(']').ok_or("IPv6 reference is not closed")?;
        let addr = &inner[..close];
        // Loose on purpose: RFC 5118 asks to tolerate the "2001:db8:::192.0.2.1" ABNF variant.
        if addr.is_empty()
            || !addr
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
        {
            return Err("IPv6 reference is malformed");
        }
        let after = &inner[close + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err("junk after IPv6 reference"),
        };
        (format!("[{addr}]"), port)
    } else {
        let (h, p) = match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        };
        if h.is_empty()
            || !h
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        {
            return Err("host is malformed");
        }
        (h.to_owned(), p)
    };
    let port = match port_text {
        None => None,
        Some(p) if !p.is_empty() && p.len() <= 5 && p.chars().all(|c| c.is_ascii_digit()) => {
            Some(p.parse::<u16>().map_err(|_| "port is out of range")?)
        }
        Some(_) => return Err("port is malformed"),
    };
    Ok((host, port))
}

/// A `name-addr` or `addr-spec` with header parameters (From, To, Contact, Route, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    /// Display name, unquoted, if present.
    pub display: Option<String>,
    /// The URI text as written between the brackets (or the bare addr-spec).
    pub uri_text: String,
    /// The parsed URI.
    pub uri: Uri,
    /// Header parameters after the URI, names lower-cased.
    pub params: Vec<(String, Option<String>)>,
}

impl NameAddr {
    /// Parses one element of a From/To/Contact/Route-style header.
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        let s = s.trim();
        let (display, uri_text, rest) = if s.starts_with('"') || s.contains('<') {
            let (display, after_display) = if let Some(q) = s.strip_prefix('"') {
                let end = quoted_end(q).ok_or("unbalanced quotes in display name")?;
                (Some(unescape_quoted(&q[..end])), q[end + 1..].trim_start())
            } else {
                let lt = s.find('<').ok_or("missing '<'")?;
                let name = s[..lt].trim();
                ((!name.is_empty()).then(|| name.to_owned()), &s[lt..])
            };
            let inner = after_display
                .strip_prefix('<')
                .ok_or("display name not followed by '<'")?;
            let gt = inner.find('>').ok_or("missing '>'")?;
            // Spaces inside the brackets are invalid but harmless (RFC 4475 badaspec): tolerate.
            (display, inner[..gt].trim(), &inner[gt + 1..])
        } else {
            match s.find(';') {
                Some(semi) => (None, s[..semi].trim_end(), &s[semi..]),
                None => (None, s, ""),
            }
        };
        let uri = Uri::parse(uri_text)?;
        let params = parse_params(rest)?;
        Ok(Self {
            display,
            uri_text: uri_text.to_owned(),
            uri,
            params,
        })
    }

    /// The `tag` parameter.
    pub fn tag(&self) -> Option<&str> {
        self.param("tag")
    }

    /// A header parameter's value (empty string for a valueless parameter).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_deref().unwrap_or(""))
    }
}

/// The top Via of a message (RFC 3261 §20.42).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// Transport token (UDP, TCP, …), upper-cased.
    pub transport: String,
    /// sent-by host.
    pub host: String,
    /// sent-by port.
    pub port: Option<u16>,
    /// Via parameters, names lower-cased.
    pub params: Vec<(String, Option<String>)>,
}

impl Via {
    /// Parses one Via element.
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        let s = s.trim();
        let mut parts = s.splitn(3, '/');
        let (Some(name), Some(version), Some(rest)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err("Via sent-protocol is malformed");
        };
        if !name.trim().eq_ignore_ascii_case("SIP") || !is_token(version.trim()) {
            return Err("Via sent-protocol is malformed");
        }
        let rest = rest.trim_start();
        let transport_end = rest
            .find(|c: char| c.is_whitespace())
            .ok_or("Via has no sent-by")?;
        let transport = &rest[..transport_end];
        if !is_token(transport) {
            return Err("Via transport is malformed");
        }
        let rest = rest[transport_end..].trim_start();
        let sent_by_end = rest.find(';').unwrap_or(rest.len());
        let sent_by = rest[..sent_by_end].trim();
        let (host, port) = parse_hostport(sent_by).map_err(|_| "Via sent-by is malformed")?;
        let params = parse_params(&rest[sent_by_end..])?;
        Ok(Self {
            transport: transport.to_ascii_uppercase(),
            host,
            port,
            params,
        })
    }

    /// The branch parameter.
    pub fn branch(&self) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == "branch")
            .and_then(|(_, v)| v.as_deref())
    }

    /// `host[:port]` as used for transaction matching (RFC 3261 §17.2.3).
    pub fn sent_by(&self) -> String {
        match self.port {
            Some(p) => format!("{}:{}", self.host, p),
            None => self.host.clone(),
        }
    }
}

/// A CSeq header value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    /// Sequence number (< 2**31).
    pub seq: u32,
    /// Method token.
    pub method: Method,
}

impl CSeq {
    /// Parses `1*DIGIT LWS Method`.
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        let mut it = s.split_whitespace();
        let (Some(num), Some(method), None) = (it.next(), it.next(), it.next()) else {
            return Err("CSeq is malformed");
        };
        if num.is_empty() || !num.chars().all(|c| c.is_ascii_digit()) {
            return Err("CSeq number is malformed");
        }
        let trimmed = num.trim_start_matches('0');
        let seq = if trimmed.len() > 10 {
            u64::MAX
        } else {
            trimmed.parse::<u64>().unwrap_or(0)
        };
        if seq > MAX_CSEQ {
            return Err("CSeq number is too large");
        }
        let method = Method::parse(method).ok_or("CSeq method is malformed")?;
        Ok(Self {
            seq: u32::try_from(seq).map_err(|_| "CSeq number is too large")?,
            method,
        })
    }
}

/// A validated request.
#[derive(Debug, Clone)]
pub struct Request {
    /// Method from the request line.
    pub method: Method,
    /// Request-URI text.
    pub uri_text: String,
    /// Parsed Request-URI.
    pub uri: Uri,
    /// All headers.
    pub headers: Headers,
    /// Body, cut at Content-Length.
    pub body: Vec<u8>,
    /// Top Via.
    pub via: Via,
    /// From.
    pub from: NameAddr,
    /// To.
    pub to: NameAddr,
    /// Call-ID.
    pub call_id: String,
    /// CSeq.
    pub cseq: CSeq,
    /// Max-Forwards, when present.
    pub max_forwards: Option<u8>,
    /// Content-Type media type, lower-cased, without parameters.
    pub content_type: Option<String>,
}

/// A validated response.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code (100–699).
    pub status: u16,
    /// Reason phrase.
    pub reason: String,
    /// All headers.
    pub headers: Headers,
    /// Body, cut at Content-Length.
    pub body: Vec<u8>,
    /// The only Via.
    pub via: Via,
    /// Call-ID.
    pub call_id: String,
    /// CSeq.
    pub cseq: CSeq,
}

/// A parsed message.
#[derive(Debug, Clone)]
pub enum Message {
    /// A request (boxed, like the response: both are a few hundred bytes).
    Request(Box<Request>),
    /// A response.
    Response(Box<Response>),
}

/// Why a datagram could not be turned into a [`Message`].
#[derive(Debug, Clone, thiserror::Error)]
pub enum ParseError {
    /// Only CRLFs: a keep-alive (RFC 5626), silently ignored.
    #[error("keep-alive")]
    KeepAlive,
    /// No empty line ends the header section: truncated or not SIP.
    #[error("incomplete message: no end of header section")]
    Incomplete,
    /// A response that cannot be used; responses are never answered.
    #[error("malformed response: {0}")]
    BadResponse(&'static str),
    /// A request we can answer with `status` (400, 505, …) using the copied `headers`.
    #[error("{status} {reason}")]
    Reject {
        /// Status code to send.
        status: u16,
        /// Reason phrase saying what is wrong.
        reason: String,
        /// The headers read so far, for Via/From/To/Call-ID/CSeq of the response.
        headers: Headers,
    },
    /// A request we cannot answer (no usable Via) or that is not SIP at all.
    #[error("unanswerable request: {0}")]
    Unanswerable(&'static str),
}

struct Framed<'a> {
    start: String,
    headers: Headers,
    header_problem: Option<&'static str>,
    rest: &'a [u8],
}

fn frame(data: &[u8]) -> Result<Framed<'_>, ParseError> {
    let mut data = data;
    while let Some(rest) = data
        .strip_prefix(b"\r\n")
        .or_else(|| data.strip_prefix(b"\n"))
    {
        data = rest;
    }
    if data.is_empty() {
        return Err(ParseError::KeepAlive);
    }
    // The header section ends at the first empty line; accept bare LF for robustness.
    let mut end = None;
    let mut line_start = 0;
    for (i, b) in data.iter().enumerate() {
        if *b == b'\n' {
            let line = &data[line_start..i];
            if line.is_empty() || line == b"\r" {
                end = Some((line_start, i + 1));
                break;
            }
            line_start = i + 1;
        }
    }
    let (head_end, body_start) = end.ok_or(ParseError::Incomplete)?;
    let head = &data[..head_end];
    let rest = &data[body_start..];
    let (text, utf8_ok) = match std::str::from_utf8(head) {
        Ok(t) => (std::borrow::Cow::Borrowed(t), true),
        Err(_) => (String::from_utf8_lossy(head), false),
    };
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let start = lines.next().unwrap_or_default().to_owned();
    let mut headers: Vec<Header> = Vec::new();
    let mut header_problem = (!utf8_ok).then_some("header section is not valid UTF-8");
    for line in lines {
        if line.is_empty() {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            match headers.last_mut() {
                Some(h) => {
                    if !h.value.is_empty() {
                        h.value.push(' ');
                    }
                    h.value.push_str(line.trim());
                }
                None => {
                    header_problem.get_or_insert("continuation line before any header");
                }
            }
            continue;
        }
        let Some(colon) = line.find(':') else {
            header_problem.get_or_insert("header line without ':'");
            continue;
        };
        let name = line[..colon].trim_end_matches([' ', '\t']);
        if !is_token(name) {
            header_problem.get_or_insert("malformed header name");
            continue;
        }
        headers.push(Header {
            name: expand_compact(name).to_owned(),
            value: line[colon + 1..].trim().to_owned(),
        });
    }
    Ok(Framed {
        start,
        headers: Headers(headers),
        header_problem,
        rest,
    })
}

/// Parses and validates one datagram.
pub fn parse(data: &[u8]) -> Result<Message, ParseError> {
    let framed = frame(data)?;
    if framed.start.starts_with("SIP/") {
        parse_response(framed).map(|r| Message::Response(Box::new(r)))
    } else {
        parse_request(framed).map(|r| Message::Request(Box::new(r)))
    }
}

fn parse_response(f: Framed<'_>) -> Result<Response, ParseError> {
    let bad = ParseError::BadResponse;
    let mut parts = f.start.splitn(3, ' ');
    let (Some(version), Some(code), reason) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad("malformed status line"));
    };
    if version != "SIP/2.0" {
        return Err(bad("unsupported SIP version"));
    }
    if code.len() != 3 || !code.chars().all(|c| c.is_ascii_digit()) {
        return Err(bad("malformed status code"));
    }
    let status: u16 = code.parse().map_err(|_| bad("malformed status code"))?;
    if !(100..=699).contains(&status) {
        return Err(bad("status code out of range"));
    }
    if let Some(p) = f.header_problem {
        return Err(bad(p));
    }
    let body = cut_body(&f.headers, f.rest).map_err(bad)?;
    let vias = f.headers.list("Via");
    // RFC 3261 §18.1.2: a response with more than one Via is misrouted; discard it.
    let [via] = vias.as_slice() else {
        return Err(bad("response must carry exactly one Via"));
    };
    let via = Via::parse(via).map_err(bad)?;
    let call_id = single(&f.headers, "Call-ID").map_err(|_| bad("Call-ID"))?;
    let cseq = CSeq::parse(single(&f.headers, "CSeq").map_err(|_| bad("CSeq"))?).map_err(bad)?;
    for h in ["From", "To"] {
        NameAddr::parse(single(&f.headers, h).map_err(|_| bad("From/To"))?).map_err(bad)?;
    }
    Ok(Response {
        status,
        reason: reason.unwrap_or_default().to_owned(),
        call_id: call_id.to_owned(),
        headers: f.headers,
        body,
        via,
        cseq,
    })
}

fn parse_request(f: Framed<'_>) -> Result<Request, ParseError> {
    // An ACK is never answered (§17.2.3): a malformed one is simply dropped.
    let is_ack = f.start.split(' ').next() == Some("ACK");
    validate_request(f).map_err(|e| match e {
        ParseError::Reject { .. } if is_ack => ParseError::Unanswerable("malformed ACK"),
        other => other,
    })
}

fn validate_request(f: Framed<'_>) -> Result<Request, ParseError> {
    let headers = f.headers;
    let reject = |status: u16, reason: &str, headers: &Headers| ParseError::Reject {
        status,
        reason: reason.to_owned(),
        headers: headers.clone(),
    };
    // Without a Via there is nowhere a response could be matched by the client: drop.
    let Some(top_via) = headers.list("Via").first().copied() else {
        return Err(ParseError::Unanswerable("no Via header"));
    };
    let top_via = top_via.to_owned();

    let parts: Vec<&str> = f.start.split(' ').collect();
    let [method, uri_text, version] = parts.as_slice() else {
        return Err(reject(400, "Malformed Request-Line", &headers));
    };
    if method.is_empty() || uri_text.is_empty() || version.is_empty() {
        return Err(reject(400, "Malformed Request-Line", &headers));
    }
    let Some(method) = Method::parse(method) else {
        return Err(reject(400, "Malformed Method", &headers));
    };
    match sip_version(version) {
        Some((2, 0)) => {}
        Some(_) => return Err(reject(505, "Version Not Supported", &headers)),
        None => return Err(reject(400, "Malformed SIP-Version", &headers)),
    }
    if let Some(problem) = f.header_problem {
        return Err(reject(400, &capitalise(problem), &headers));
    }
    let body = match cut_body(&headers, f.rest) {
        Ok(b) => b,
        Err(why) => return Err(reject(400, &capitalise(why), &headers)),
    };
    for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
        if headers.count(name) == 0 {
            return Err(reject(400, &format!("Missing {name} header"), &headers));
        }
    }
    for name in [
        "From",
        "To",
        "Call-ID",
        "CSeq",
        "Max-Forwards",
        "Content-Type",
    ] {
        if headers.count(name) > 1 {
            return Err(reject(400, &format!("Multiple {name} headers"), &headers));
        }
    }
    let get = |name| headers.get(name).unwrap_or_default();
    let cseq = match CSeq::parse(get("CSeq")) {
        Ok(c) => c,
        Err(why) => return Err(reject(400, &capitalise(why), &headers)),
    };
    if cseq.method != method {
        return Err(reject(
            400,
            "CSeq method does not match Request-Line",
            &headers,
        ));
    }
    let call_id = get("Call-ID");
    if call_id.is_empty() || call_id.chars().any(char::is_whitespace) {
        return Err(reject(400, "Malformed Call-ID", &headers));
    }
    for element in headers.get_all("Via").flat_map(split_list) {
        if let Err(why) = Via::parse(element) {
            return Err(reject(400, &capitalise(why), &headers));
        }
    }
    let via = match Via::parse(&top_via) {
        Ok(v) => v,
        Err(why) => return Err(reject(400, &capitalise(why), &headers)),
    };
    let from = match NameAddr::parse(get("From")) {
        Ok(v) => v,
        Err(why) => return Err(reject(400, &format!("Malformed From: {why}"), &headers)),
    };
    let to = match NameAddr::parse(get("To")) {
        Ok(v) => v,
        Err(why) => return Err(reject(400, &format!("Malformed To: {why}"), &headers)),
    };
    let max_forwards = match headers.get("Max-Forwards") {
        None => None,
        Some(v) => match v.parse::<u8>() {
            Ok(n) if v.chars().all(|c| c.is_ascii_digit()) => Some(n),
            _ => return Err(reject(400, "Malformed Max-Forwards", &headers)),
        },
    };
    let uri = match Uri::parse(uri_text) {
        Ok(u) => u,
        Err(why) => {
            return Err(reject(
                400,
                &format!("Malformed Request-URI: {why}"),
                &headers,
            ));
        }
    };
    if let Uri::Sip(s) = &uri
        && s.has_headers
    {
        return Err(reject(
            400,
            "Request-URI must not contain headers",
            &headers,
        ));
    }
    let content_type = headers.get("Content-Type").map(|ct| {
        ct.split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    });
    Ok(Request {
        method,
        uri_text: (*uri_text).to_owned(),
        uri,
        call_id: call_id.to_owned(),
        body,
        via,
        from,
        to,
        cseq,
        max_forwards,
        content_type,
        headers,
    })
}

/// The body per Content-Length (RFC 3261 §18.3: extra octets in a datagram are discarded; a
/// shorter datagram than announced is an error). Without Content-Length, UDP takes the rest.
fn cut_body(headers: &Headers, rest: &[u8]) -> Result<Vec<u8>, &'static str> {
    let lengths: Vec<&str> = headers.get_all("Content-Length").collect();
    match lengths.as_slice() {
        [] => Ok(rest.to_vec()),
        [one] => {
            let one = one.trim();
            if one.is_empty() || one.len() > 10 || !one.chars().all(|c| c.is_ascii_digit()) {
                return Err("malformed Content-Length");
            }
            let n: usize = one.parse().map_err(|_| "malformed Content-Length")?;
            rest.get(..n)
                .map(<[u8]>::to_vec)
                .ok_or("Content-Length larger than the message body")
        }
        _ => Err("multiple Content-Length headers"),
    }
}

fn single<'a>(headers: &'a Headers, name: &str) -> Result<&'a str, ()> {
    let mut it = headers.get_all(name);
    match (it.next(), it.next()) {
        (Some(v), None) => Ok(v),
        _ => Err(()),
    }
}

fn sip_version(v: &str) -> Option<(u32, u32)> {
    if !v.get(..4)?.eq_ignore_ascii_case("SIP/") {
        return None;
    }
    let (major, minor) = v.get(4..)?.split_once('.')?;
    let digits = |s: &str| !s.is_empty() && s.len() < 6 && s.chars().all(|c| c.is_ascii_digit());
    if !digits(major) || !digits(minor) {
        return None;
    }
    Some((major.parse().ok()?, minor.parse().ok()?))
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(first) => first.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// The long form of a compact header name (`v` → `Via`); other names are returned unchanged.
pub(crate) fn expand_compact(name: &str) -> &str {
    match name {
        "i" | "I" => "Call-ID",
        "m" | "M" => "Contact",
        "e" | "E" => "Content-Encoding",
        "l" | "L" => "Content-Length",
        "c" | "C" => "Content-Type",
        "f" | "F" => "From",
        "s" | "S" => "Subject",
        "k" | "K" => "Supported",
        "t" | "T" => "To",
        "v" | "V" => "Via",
        "o" | "O" => "Event",
        "r" | "R" => "Refer-To",
        "b" | "B" => "Referred-By",
        "u" | "U" => "Allow-Events",
        "x" | "X" => "Session-Expires",
        "y" | "Y" => "Identity",
        other => other,
    }
}

/// RFC 3261 token characters.
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-.!%*_+`'~".contains(c))
}

/// Index of the closing quote of a quoted string whose opening quote was already consumed.
fn quoted_end(s: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match (escaped, c) {
            (true, _) => escaped = false,
            (false, '\\') => escaped = true,
            (false, '"') => return Some(i),
            _ => {}
        }
    }
    None
}

fn unescape_quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut escaped = false;
    for c in s.chars() {
        if !escaped && c == '\\' {
            escaped = true;
            continue;
        }
        escaped = false;
        out.push(c);
    }
    out
}

/// Parses `*(SEMI param)` with optional LWS around `;` and `=`; an empty parameter is an error.
fn parse_params(s: &str) -> Result<Vec<(String, Option<String>)>, &'static str> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let after_semi = rest
            .strip_prefix(';')
            .ok_or("unexpected text after value")?
            .trim_start();
        let name_end = after_semi
            .find(|c: char| c == '=' || c == ';' || c.is_whitespace())
            .unwrap_or(after_semi.len());
        let name = &after_semi[..name_end];
        if !is_token(name) {
            return Err("empty or malformed parameter");
        }
        let mut tail = after_semi[name_end..].trim_start();
        let value = if let Some(v) = tail.strip_prefix('=') {
            let v = v.trim_start();
            if let Some(q) = v.strip_prefix('"') {
                let end = quoted_end(q).ok_or("unbalanced quotes in parameter")?;
                tail = &q[end + 1..];
                Some(q[..end].to_owned())
            } else {
                let end = v
                    .find(|c: char| c == ';' || c.is_whitespace())
                    .unwrap_or(v.len());
                if end == 0 {
                    return Err("parameter value is empty");
                }
                tail = &v[end..];
                Some(v[..end].to_owned())
            }
        } else {
            None
        };
        out.push((name.to_ascii_lowercase(), value));
        rest = tail.trim_start();
    }
    Ok(out)
}

/// Splits a header value on commas outside quoted strings and angle brackets.
pub fn split_list(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut in_quotes, mut escaped, mut in_angle) = (false, false, false);
    let mut start = 0;
    for (i, c) in value.char_indices() {
        if in_quotes {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_quotes = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_quotes = true,
            '<' => in_angle = true,
            '>' => in_angle = false,
            ',' if !in_angle => {
                out.push(value[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(value[start..].trim());
    out
}

/// Decodes `%HH` escapes; invalid escapes are kept as written.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            // Two hex digits always fit in a byte.
            out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Removes RFC 3966 visual separators from a phone number.
fn strip_visual_separators(s: &str) -> String {
    s.chars().filter(|c| !"-.()".contains(*c)).collect()
}

/// Builds a response to a request from its headers (RFC 3261 §8.2.6).
///
/// Via, From, To, Call-ID and CSeq are copied; the top Via gets `received` and a filled-in `rport`
/// from the packet's real source (§18.2.1, RFC 3581) — the response itself is always sent to that
/// source address, never to an address read from Via.
pub(crate) struct ResponseBuilder<'a> {
    headers: &'a Headers,
    source: SocketAddr,
    status: u16,
    reason: &'a str,
    to_tag: Option<&'a str>,
    copy_record_route: bool,
    extra: Vec<(&'static str, String)>,
    body: Option<(&'a str, &'a [u8])>,
}

impl<'a> ResponseBuilder<'a> {
    /// Starts a response to a request whose headers are `headers`, received from `source`.
    pub fn new(headers: &'a Headers, source: SocketAddr, status: u16, reason: &'a str) -> Self {
        Self {
            headers,
            source,
            status,
            reason,
            to_tag: None,
            copy_record_route: false,
            extra: Vec::new(),
            body: None,
        }
    }

    /// Adds our To tag when the request's To has none (every response but 100, §8.2.6.2).
    pub fn local_tag(mut self, tag: Option<&'a str>) -> Self {
        self.to_tag = tag;
        self
    }

    /// Copies Record-Route (dialog-creating responses, §12.1.1).
    pub fn record_route(mut self) -> Self {
        self.copy_record_route = true;
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.extra.push((name, value.into()));
        self
    }

    /// Sets the body and its Content-Type.
    pub fn body(mut self, content_type: &'a str, body: &'a [u8]) -> Self {
        self.body = Some((content_type, body));
        self
    }

    /// Prints the response.
    pub fn build(self) -> Vec<u8> {
        let mut s = String::with_capacity(512);
        // Writing into a String cannot fail; results are ignored on purpose.
        let _ = write!(s, "SIP/2.0 {} {}\r\n", self.status, self.reason);
        let mut first_via = true;
        for via_line in self.headers.get_all("Via") {
            if first_via {
                first_via = false;
                let elements = split_list(via_line);
                let mut out: Vec<String> = Vec::with_capacity(elements.len());
                for (i, e) in elements.iter().enumerate() {
                    out.push(if i == 0 {
                        decorate_via(e, self.source)
                    } else {
                        (*e).to_owned()
                    });
                }
                let _ = write!(s, "Via: {}\r\n", out.join(", "));
            } else {
                let _ = write!(s, "Via: {via_line}\r\n");
            }
        }
        for name in ["From", "To", "Call-ID", "CSeq"] {
            for value in self.headers.get_all(name) {
                let _ = write!(s, "{name}: {value}");
                if name == "To"
                    && self.status > 100
                    && let Some(tag) = self.to_tag
                    && NameAddr::parse(value)
                        .ok()
                        .and_then(|n| n.tag().map(str::len))
                        .is_none()
                {
                    let _ = write!(s, ";tag={tag}");
                }
                s.push_str("\r\n");
            }
        }
        if self.copy_record_route {
            for rr in self.headers.get_all("Record-Route") {
                let _ = write!(s, "Record-Route: {rr}\r\n");
            }
        }
        for (name, value) in &self.extra {
            let _ = write!(s, "{name}: {value}\r\n");
        }
        let mut out = s.into_bytes();
        match self.body {
            Some((ct, body)) => {
                out.extend_from_slice(
                    format!(
                        "Content-Type: {ct}\r\nContent-Length: {}\r\n\r\n",
                        body.len()
                    )
                    .as_bytes(),
                );
                out.extend_from_slice(body);
            }
            None => out.extend_from_slice(b"Content-Length: 0\r\n\r\n"),
        }
        out
    }
}

/// Adds `received` and fills a valueless `rport` on a Via element (RFC 3261 §18.2.1, RFC 3581).
fn decorate_via(via: &str, source: SocketAddr) -> String {
    let Ok(parsed) = Via::parse(via) else {
        return via.to_owned();
    };
    let mut out = String::with_capacity(via.len() + 40);
    let mut pieces = via.split(';');
    out.push_str(pieces.next().unwrap_or_default().trim_end());
    let wants_rport = parsed
        .params
        .iter()
        .any(|(n, v)| n == "rport" && v.is_none());
    for p in pieces {
        let name = p.split('=').next().unwrap_or_default().trim();
        if name.eq_ignore_ascii_case("received") {
            continue;
        }
        if name.eq_ignore_ascii_case("rport") && wants_rport {
            let _ = write!(out, ";rport={}", source.port());
            continue;
        }
        out.push(';');
        out.push_str(p.trim());
    }
    let _ = write!(out, ";received={}", source.ip());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(text: &str) -> Result<Request, ParseError> {
        match parse(text.replace('\n', "\r\n").as_bytes())? {
            Message::Request(r) => Ok(*r),
            Message::Response(_) => panic!("not a request"),
        }
    }

    const OPTIONS: &str = "OPTIONS sip:100@127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bK1;rport\nFrom: <sip:a@b>;tag=1\nTo: <sip:100@127.0.0.1>\nCall-ID: x\nCSeq: 1 OPTIONS\nContent-Length: 0\n\n";

    #[test]
    fn parses_basic_request() {
        let r = req(OPTIONS).unwrap();
        assert_eq!(r.method, Method::Options);
        assert_eq!(r.via.branch(), Some("z9hG4bK1"));
        assert_eq!(r.from.tag(), Some("1"));
        assert_eq!(r.uri.user().as_deref(), Some("100"));
    }

    #[test]
    fn reject_reasons() {
        let cases = [
            (
                OPTIONS.replace("CSeq: 1 OPTIONS", "CSeq: 1 INVITE"),
                400,
                "CSeq method",
            ),
            (
                OPTIONS.replace("SIP/2.0\nVia", "SIP/3.0\nVia"),
                505,
                "Version",
            ),
            (OPTIONS.replace("Call-ID: x\n", ""), 400, "Missing Call-ID"),
            (
                OPTIONS.replace("Content-Length: 0", "Content-Length: 5"),
                400,
                "larger",
            ),
            (
                OPTIONS.replace("Content-Length: 0", "Content-Length: -1"),
                400,
                "Content-Length",
            ),
        ];
        for (text, status, needle) in cases {
            match req(&text) {
                Err(ParseError::Reject {
                    status: s, reason, ..
                }) => {
                    assert_eq!(s, status, "{reason}");
                    assert!(reason.contains(needle), "{reason}");
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn uris() {
        let u = Uri::parse("sip:+1-555@[2001:db8::1]:5070;user=phone;lr").unwrap();
        assert!(u.is_loose_route());
        assert_eq!(u.user().as_deref(), Some("+1-555"));
        let Uri::Sip(s) = &u else { panic!() };
        assert_eq!((s.host.as_str(), s.port), ("[2001:db8::1]", Some(5070)));
        assert_eq!(
            Uri::parse("tel:+1-201-555-0123;ext=1")
                .unwrap()
                .user()
                .as_deref(),
            Some("+12015550123")
        );
        assert!(Uri::parse("sip:2001:db8::10").is_err());
        assert!(Uri::parse("<sip:a@b>").is_err());
        assert_eq!(
            Uri::parse("sip:sips%3Auser%40example.com@example.net")
                .unwrap()
                .user()
                .as_deref(),
            Some("sips:user@example.com")
        );
    }

    #[test]
    fn name_addr_forms() {
        let n = NameAddr::parse("\"J \\\"R\\\"\" <sip:a@b;lr> ; tag = 12 ;x").unwrap();
        assert_eq!(n.display.as_deref(), Some("J \"R\""));
        assert_eq!(n.tag(), Some("12"));
        let n = NameAddr::parse("sip:a@b;tag=9").unwrap();
        assert_eq!(n.tag(), Some("9"));
        assert!(NameAddr::parse("\"unbalanced <sip:a@b>").is_err());
        assert!(NameAddr::parse("<sip:a@b>;;").is_err());
    }

    #[test]
    fn response_builder_decorates_via() {
        let r = req(OPTIONS).unwrap();
        let src: SocketAddr = "10.0.0.9:7000".parse().unwrap();
        let out = ResponseBuilder::new(&r.headers, src, 200, "OK")
            .local_tag(Some("abc"))
            .build();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("rport=7000;received=10.0.0.9"), "{text}");
        assert!(text.contains("To: <sip:100@127.0.0.1>;tag=abc"), "{text}");
    }
}
