//! Virtual-time tests of the UAC side (REFER, NOTIFY, outbound INVITE, CANCEL): bytes in, bytes
//! and events out. The core is at `LOCAL`; inbound calls (the transferee) come from `CALLER`,
//! outbound calls go to `TARGET`.

use super::*;
use std::time::Duration;

const LOCAL: &str = "127.0.0.1:5080";
const CALLER: &str = "127.0.0.1:5099";
const TARGET: &str = "127.0.0.1:5070";

const OFFER: &str = "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\na=sendrecv\r\n";

fn caller() -> SocketAddr {
    CALLER.parse().unwrap()
}

fn target() -> SocketAddr {
    TARGET.parse().unwrap()
}

/// A core plus a virtual clock (`base` + milliseconds).
struct Harness {
    core: SipCore,
    base: Instant,
}

impl Harness {
    fn new() -> Self {
        Self::with(|_| {})
    }

    fn with(tweak: impl FnOnce(&mut Config)) -> Self {
        let mut config = Config::new(LOCAL.parse().unwrap());
        tweak(&mut config);
        Self {
            core: SipCore::new(config),
            base: Instant::now(),
        }
    }

    fn at(&self, ms: u64) -> Instant {
        self.base + Duration::from_millis(ms)
    }

    fn send(&mut self, ms: u64, from: SocketAddr, data: &[u8]) -> Vec<Output> {
        let now = self.at(ms);
        self.core.handle_input(Input::Datagram { now, from, data });
        self.drain()
    }

    fn drain(&mut self) -> Vec<Output> {
        let mut out = Vec::new();
        while let Some(o) = self.core.poll_output() {
            let is_timeout = matches!(o, Output::Timeout(_));
            out.push(o);
            assert!(out.len() < 10_000, "poll_output never ends");
            if is_timeout {
                assert!(self.core.poll_output().is_none(), "Timeout must be last");
                break;
            }
        }
        for o in &out {
            if let Output::Transmit(t) = o {
                assert!(
                    t.to == caller() || t.to == target(),
                    "datagram to an unexpected address {}",
                    t.to
                );
            }
        }
        out
    }

    /// Runs every timer up to `limit_ms`, returning all outputs with their time.
    fn run_timers(&mut self, limit_ms: u64) -> Vec<(u64, Output)> {
        let mut all = Vec::new();
        let mut deadline = self.next_deadline();
        while let Some(at) = deadline {
            let ms = u64::try_from(at.duration_since(self.base).as_millis()).unwrap();
            if ms > limit_ms {
                break;
            }
            self.core.handle_input(Input::Timeout(at));
            deadline = None;
            for o in self.drain() {
                match o {
                    Output::Timeout(next) => deadline = Some(next),
                    other => all.push((ms, other)),
                }
            }
        }
        all
    }

    fn next_deadline(&mut self) -> Option<Instant> {
        self.core.handle_input(Input::Timeout(self.base));
        self.drain().into_iter().find_map(|o| match o {
            Output::Timeout(t) => Some(t),
            _ => None,
        })
    }

    fn assert_empty(&mut self) {
        self.run_timers(u64::MAX);
        assert_eq!(self.core.transaction_count(), 0, "transactions left behind");
        assert_eq!(self.core.dialog_count(), 0, "dialogs left behind");
        assert!(self.next_deadline().is_none());
    }
}

/// (destination, text) of every datagram.
fn sent_to(out: &[Output]) -> Vec<(SocketAddr, String)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Transmit(t) => Some((t.to, String::from_utf8_lossy(&t.data).into_owned())),
            _ => None,
        })
        .collect()
}

fn sent(out: &[Output]) -> Vec<String> {
    sent_to(out).into_iter().map(|(_, m)| m).collect()
}

fn events(out: &[Output]) -> Vec<Event> {
    out.iter()
        .filter_map(|o| match o {
            Output::Event(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

fn timed_events(all: &[(u64, Output)]) -> Vec<(u64, Event)> {
    all.iter()
        .filter_map(|(ms, o)| match o {
            Output::Event(e) => Some((*ms, e.clone())),
            _ => None,
        })
        .collect()
}

fn status(msg: &str) -> u16 {
    msg.strip_prefix("SIP/2.0 ")
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn statuses(out: &[Output]) -> Vec<u16> {
    sent(out).iter().map(|m| status(m)).collect()
}

fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.split("\r\n")
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
}

fn headers<'a>(msg: &'a str, name: &str) -> Vec<&'a str> {
    msg.split("\r\n")
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
        .collect()
}

fn branch(msg: &str) -> String {
    let via = header(msg, "Via").unwrap();
    via.split(";branch=")
        .nth(1)
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned()
}

fn tag_of(value: &str) -> String {
    value.split(";tag=").nth(1).unwrap().to_owned()
}

/// Builds a message with CRLF line ends and a correct Content-Length.
fn message(start: &str, headers: &[&str], body: &str) -> Vec<u8> {
    let mut s = format!("{start}\r\n");
    for h in headers {
        s.push_str(h);
        s.push_str("\r\n");
    }
    s.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.into_bytes()
}

/// A response to one of our requests, echoing Via/From/To/Call-ID/CSeq, adding `to_tag` to To
/// when it has none.
fn reply(
    req: &str,
    code: u16,
    reason: &str,
    to_tag: Option<&str>,
    extra: &[&str],
    body: &str,
) -> Vec<u8> {
    let mut to = header(req, "To").unwrap().to_owned();
    if let Some(t) = to_tag
        && !to.contains(";tag=")
    {
        to.push_str(&format!(";tag={t}"));
    }
    let via = format!("Via: {}", header(req, "Via").unwrap());
    let from = format!("From: {}", header(req, "From").unwrap());
    let to = format!("To: {to}");
    let cid = format!("Call-ID: {}", header(req, "Call-ID").unwrap());
    let cseq = format!("CSeq: {}", header(req, "CSeq").unwrap());
    let mut hs = vec![
        via.as_str(),
        from.as_str(),
        to.as_str(),
        cid.as_str(),
        cseq.as_str(),
    ];
    hs.extend_from_slice(extra);
    if !body.is_empty() {
        hs.push("Content-Type: application/sdp");
    }
    message(&format!("SIP/2.0 {code} {reason}"), &hs, body)
}

// ----- inbound call helpers (the transferee side) ---------------------------------------------

fn inbound_invite(call_id: &str, extra: &[&str]) -> Vec<u8> {
    let cid = format!("Call-ID: {call_id}");
    let mut hs = vec![
        "Via: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bKin1;rport",
        "From: sipp <sip:sipp@127.0.0.1:5099>;tag=caller1",
        "To: <sip:+14155559876@127.0.0.1:5080>",
        cid.as_str(),
        "CSeq: 1 INVITE",
        "Contact: sip:sipp@127.0.0.1:5099",
        "Max-Forwards: 70",
        "Content-Type: application/sdp",
    ];
    hs.extend_from_slice(extra);
    message("INVITE sip:+14155559876@127.0.0.1:5080 SIP/2.0", &hs, OFFER)
}

/// An in-dialog request from the caller of an inbound call.
fn from_caller(
    method: &str,
    call_id: &str,
    tag: &str,
    cseq: u32,
    branch: &str,
    extra: &[&str],
    body: &str,
) -> Vec<u8> {
    let via = format!("Via: SIP/2.0/UDP 127.0.0.1:5099;branch={branch}");
    let to = format!("To: <sip:+14155559876@127.0.0.1:5080>;tag={tag}");
    let cid = format!("Call-ID: {call_id}");
    let cseq = format!("CSeq: {cseq} {method}");
    let mut hs = vec![
        via.as_str(),
        "From: sipp <sip:sipp@127.0.0.1:5099>;tag=caller1",
        to.as_str(),
        cid.as_str(),
        cseq.as_str(),
        "Max-Forwards: 70",
    ];
    hs.extend_from_slice(extra);
    message(&format!("{method} sip:127.0.0.1:5080 SIP/2.0"), &hs, body)
}

fn our_answer() -> Vec<u8> {
    let offer = sdp::parse(OFFER.as_bytes()).unwrap();
    sdp::answer(&offer, "127.0.0.1".parse().unwrap(), 20000)
        .unwrap()
        .sdp
}

/// Inbound INVITE → answer → ACK. Returns (call, our tag).
fn established(h: &mut Harness, call_id: &str, extra: &[&str]) -> (CallHandle, String) {
    let out = h.send(0, caller(), &inbound_invite(call_id, extra));
    let call = events(&out)
        .into_iter()
        .find_map(|e| match e {
            Event::IncomingCall(c) => Some(c.call),
            _ => None,
        })
        .unwrap();
    h.core.answer(h.at(10), call, our_answer()).unwrap();
    let ok = sent(&h.drain()).pop().unwrap();
    let tag = tag_of(header(&ok, "To").unwrap());
    let ack = from_caller("ACK", call_id, &tag, 1, "z9hG4bKinack", &[], "");
    assert_eq!(
        events(&h.send(20, caller(), &ack)),
        vec![Event::Ack { call, sdp: None }]
    );
    (call, tag)
}

/// A NOTIFY of the refer subscription from the caller.
fn notify(call_id: &str, tag: &str, cseq: u32, state: &str, frag: &str) -> Vec<u8> {
    let st = format!("Subscription-State: {state}");
    from_caller(
        "NOTIFY",
        call_id,
        tag,
        cseq,
        &format!("z9hG4bKn{cseq}"),
        &[
            "Event: refer",
            &st,
            "Content-Type: message/sipfrag;version=2.0",
        ],
        frag,
    )
}

// ----- outbound call helpers ------------------------------------------------------------------

fn outbound(extra: &[(&str, &str)]) -> OutboundCall {
    OutboundCall {
        request_uri: "sip:+15551234@127.0.0.1:5070".to_owned(),
        to: "<sip:+15551234@pbx.example.com>".to_owned(),
        from: "\"IVR\" <sip:ivr@127.0.0.1:5080>".to_owned(),
        destination: target(),
        sdp_offer: sdp::offer("127.0.0.1".parse().unwrap(), 30000),
        extra_headers: extra
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect(),
    }
}

/// Places an outbound call at `ms`; returns (call, INVITE text).
fn dial(h: &mut Harness, ms: u64) -> (CallHandle, String) {
    let call = h
        .core
        .invite(h.at(ms), outbound(&[("X-IVR-Path", "transfer")]))
        .unwrap();
    let out = sent_to(&h.drain());
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, target());
    (call, out[0].1.clone())
}

const CALLEE_CONTACT: &str = "Contact: <sip:callee@127.0.0.1:5070>";

/// An in-dialog request from the callee of an outbound call.
fn from_callee(
    method: &str,
    invite: &str,
    callee_tag: &str,
    cseq: u32,
    branch: &str,
    body: &str,
) -> Vec<u8> {
    let via = format!("Via: SIP/2.0/UDP 127.0.0.1:5070;branch={branch}");
    let from = format!("From: {};tag={callee_tag}", header(invite, "To").unwrap());
    let to = format!("To: {}", header(invite, "From").unwrap());
    let cid = format!("Call-ID: {}", header(invite, "Call-ID").unwrap());
    let cseq = format!("CSeq: {cseq} {method}");
    let mut hs = vec![
        via.as_str(),
        from.as_str(),
        to.as_str(),
        cid.as_str(),
        cseq.as_str(),
        CALLEE_CONTACT,
    ];
    if !body.is_empty() {
        hs.push(if method == "INFO" {
            "Content-Type: application/dtmf-relay"
        } else {
            "Content-Type: application/sdp"
        });
    }
    message(
        &format!("{method} sip:ivr@127.0.0.1:5080 SIP/2.0"),
        &hs,
        body,
    )
}

/// Answers the outbound INVITE with 200 (tag `callee1`); returns the ACK the core sent.
fn answer_outbound(
    h: &mut Harness,
    ms: u64,
    call: CallHandle,
    invite: &str,
    extra: &[&str],
) -> String {
    let mut hs = vec![CALLEE_CONTACT];
    hs.extend_from_slice(extra);
    let ok = reply(invite, 200, "OK", Some("callee1"), &hs, OFFER);
    let out = h.send(ms, target(), &ok);
    assert_eq!(
        events(&out),
        vec![Event::OutboundAnswered {
            call,
            sdp_answer: Some(OFFER.as_bytes().to_vec())
        }]
    );
    let msgs = sent_to(&out);
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].0, target());
    msgs[0].1.clone()
}

// ----- REFER ------------------------------------------------------------------------------------

#[test]
fn refer_accepted_then_notify_progress_until_terminated() {
    let mut h = Harness::new();
    let (call, tag) = established(
        &mut h,
        "ref1",
        &["Record-Route: <sip:10.9.9.9;lr>, <sip:10.8.8.8;lr>"],
    );
    let extra = [("X-IVR-Path".to_owned(), "sales/queue-2".to_owned())];
    h.core
        .refer(h.at(100), call, "sip:+15551234@pbx.example.com", &extra)
        .unwrap();
    let out = sent_to(&h.drain());
    assert_eq!(out.len(), 1);
    let (to, refer) = &out[0];
    assert_eq!(*to, caller());
    assert!(
        refer.starts_with("REFER sip:sipp@127.0.0.1:5099 SIP/2.0\r\n"),
        "{refer}"
    );
    assert_eq!(
        header(refer, "Refer-To"),
        Some("<sip:+15551234@pbx.example.com>")
    );
    assert_eq!(header(refer, "Referred-By"), Some("<sip:127.0.0.1:5080>"));
    assert_eq!(header(refer, "Contact"), Some("<sip:127.0.0.1:5080>"));
    assert_eq!(header(refer, "X-IVR-Path"), Some("sales/queue-2"));
    assert_eq!(header(refer, "CSeq"), Some("1 REFER"));
    assert_eq!(
        headers(refer, "Route"),
        vec!["<sip:10.9.9.9;lr>", "<sip:10.8.8.8;lr>"]
    );
    assert_eq!(tag_of(header(refer, "From").unwrap()), tag);
    assert_eq!(tag_of(header(refer, "To").unwrap()), "caller1");
    assert_eq!(
        h.core.refer(h.at(101), call, "sip:x@y", &[]),
        Err(CommandError::InvalidState {
            call,
            why: "a REFER is already pending"
        })
    );

    // The transferee may NOTIFY before its 202 arrives.
    let out = h.send(
        150,
        caller(),
        &notify(
            "ref1",
            &tag,
            2,
            "active;expires=60",
            "SIP/2.0 100 Trying\r\n",
        ),
    );
    assert_eq!(statuses(&out), vec![200]);
    assert_eq!(
        events(&out),
        vec![Event::TransferProgress {
            call,
            status: 100,
            done: false
        }]
    );
    let out = h.send(200, caller(), &reply(refer, 202, "Accepted", None, &[], ""));
    assert_eq!(
        events(&out),
        vec![Event::ReferResponse { call, status: 202 }]
    );
    assert!(sent(&out).is_empty());

    let ringing = notify(
        "ref1",
        &tag,
        3,
        "active;expires=60",
        "SIP/2.0 180 Ringing\r\n",
    );
    let out = h.send(300, caller(), &ringing);
    assert_eq!(statuses(&out), vec![200]);
    assert_eq!(
        events(&out),
        vec![Event::TransferProgress {
            call,
            status: 180,
            done: false
        }]
    );
    // A retransmission is answered from cache and not reported again.
    let out = h.send(350, caller(), &ringing);
    assert_eq!(statuses(&out), vec![200]);
    assert!(events(&out).is_empty());

    // A body that is not a sipfrag: 200, no event. Bad or missing Event: refused.
    let out = h.send(400, caller(), &notify("ref1", &tag, 4, "active", "garbage"));
    assert_eq!(statuses(&out), vec![200]);
    assert!(events(&out).is_empty());
    let no_event = from_caller(
        "NOTIFY",
        "ref1",
        &tag,
        5,
        "z9hG4bKne",
        &["Subscription-State: active"],
        "",
    );
    assert_eq!(statuses(&h.send(410, caller(), &no_event)), vec![400]);
    let presence = from_caller(
        "NOTIFY",
        "ref1",
        &tag,
        6,
        "z9hG4bKnp",
        &["Event: presence", "Subscription-State: active"],
        "",
    );
    let out = h.send(420, caller(), &presence);
    assert_eq!(statuses(&out), vec![489]);
    assert_eq!(header(&sent(&out)[0], "Allow-Events"), Some("refer"));

    let out = h.send(
        500,
        caller(),
        &notify(
            "ref1",
            &tag,
            7,
            "terminated;reason=noresource",
            "SIP/2.0 200 OK\r\n",
        ),
    );
    assert_eq!(statuses(&out), vec![200]);
    assert_eq!(
        events(&out),
        vec![Event::TransferProgress {
            call,
            status: 200,
            done: true
        }]
    );
    // The subscription is over.
    let out = h.send(
        600,
        caller(),
        &notify("ref1", &tag, 8, "active", "SIP/2.0 200 OK\r\n"),
    );
    assert_eq!(statuses(&out), vec![481]);
    assert!(events(&out).is_empty());

    // The transferee hangs up, as it does after a successful transfer.
    let bye = from_caller("BYE", "ref1", &tag, 9, "z9hG4bKb", &[], "");
    let out = h.send(700, caller(), &bye);
    assert_eq!(statuses(&out), vec![200]);
    assert_eq!(
        events(&out),
        vec![
            Event::ByeReceived { call },
            Event::CallEnded {
                call,
                reason: EndReason::RemoteBye
            }
        ]
    );
    h.assert_empty();
}

#[test]
fn refer_rejected_and_bad_arguments() {
    let mut h = Harness::new();
    let (call, tag) = established(&mut h, "ref2", &[]);
    let bad = [("X-Evil".to_owned(), "a\r\nVia: x".to_owned())];
    for (uri, extra, why) in [
        ("not a uri", &[][..], "Refer-To"),
        ("sip:a@b\r\nX: y", &[][..], "Refer-To"),
        ("sip:a@b", &bad[..], "CR or LF"),
        (
            "sip:a@b",
            &[("Refer-To".to_owned(), "<sip:c@d>".to_owned())][..],
            "written by the core",
        ),
        (
            "sip:a@b",
            &[("r".to_owned(), "<sip:c@d>".to_owned())][..],
            "written by the core",
        ),
        (
            "sip:a@b",
            &[("Bad Name".to_owned(), "x".to_owned())][..],
            "token",
        ),
    ] {
        match h.core.refer(h.at(50), call, uri, extra) {
            Err(CommandError::InvalidArgument(w)) => assert!(w.contains(why), "{w}"),
            other => panic!("{uri}: {other:?}"),
        }
    }
    assert_eq!(
        h.core.refer(h.at(50), CallHandle(999), "sip:a@b", &[]),
        Err(CommandError::UnknownCall(CallHandle(999)))
    );
    assert!(sent(&h.drain()).is_empty());

    h.core.refer(h.at(100), call, "sip:a@b", &[]).unwrap();
    let refer = sent(&h.drain()).pop().unwrap();
    let out = h.send(
        200,
        caller(),
        &reply(&refer, 403, "Forbidden", Some("caller1"), &[], ""),
    );
    assert_eq!(
        events(&out),
        vec![Event::ReferResponse { call, status: 403 }]
    );
    // No subscription after a refusal.
    let out = h.send(
        300,
        caller(),
        &notify("ref2", &tag, 2, "active", "SIP/2.0 100 Trying"),
    );
    assert_eq!(statuses(&out), vec![481]);
    // The call goes on; another REFER may be tried, with the next CSeq.
    h.core.refer(h.at(400), call, "sip:c@d", &[]).unwrap();
    let refer = sent(&h.drain()).pop().unwrap();
    assert_eq!(header(&refer, "CSeq"), Some("2 REFER"));
    let out = h.send(
        450,
        caller(),
        &reply(&refer, 202, "Accepted", None, &[], ""),
    );
    assert_eq!(
        events(&out),
        vec![Event::ReferResponse { call, status: 202 }]
    );
    h.core.hangup(h.at(500), call).unwrap();
    let bye = sent(&h.drain()).pop().unwrap();
    assert_eq!(header(&bye, "CSeq"), Some("3 BYE"));
    let out = h.send(600, caller(), &reply(&bye, 200, "OK", None, &[], ""));
    assert_eq!(events(&out).len(), 2);
    h.assert_empty();
}

#[test]
fn refer_times_out_as_408_and_call_survives() {
    let mut h = Harness::new();
    let (call, _) = established(&mut h, "ref3", &[]);
    h.core.refer(h.at(100), call, "sip:a@b", &[]).unwrap();
    h.drain();
    let all = h.run_timers(40_000);
    let retransmits: Vec<u64> = all
        .iter()
        .filter(|(_, o)| matches!(o, Output::Transmit(t) if t.data.starts_with(b"REFER ")))
        .map(|(ms, _)| ms - 100)
        .collect();
    assert_eq!(
        retransmits,
        vec![
            500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500
        ]
    );
    assert_eq!(
        timed_events(&all),
        vec![(32_100, Event::ReferResponse { call, status: 408 })]
    );
    assert_eq!(h.core.dialog_count(), 1);
    assert_eq!(h.core.transaction_count(), 0);
    // A new REFER is allowed once the old one is over.
    h.core.refer(h.at(40_000), call, "sip:a@b", &[]).unwrap();
    h.drain();
}

// ----- outbound INVITE ------------------------------------------------------------------------

#[test]
fn outbound_answered_acked_reacked_then_in_dialog_requests_and_bye() {
    let mut h = Harness::new();
    let (call, invite) = dial(&mut h, 0);
    assert!(
        invite.starts_with("INVITE sip:+15551234@127.0.0.1:5070 SIP/2.0\r\n"),
        "{invite}"
    );
    assert_eq!(header(&invite, "CSeq"), Some("1 INVITE"));
    assert_eq!(
        header(&invite, "To"),
        Some("<sip:+15551234@pbx.example.com>")
    );
    assert!(
        header(&invite, "From")
            .unwrap()
            .starts_with("\"IVR\" <sip:ivr@127.0.0.1:5080>;tag=")
    );
    assert_eq!(header(&invite, "Contact"), Some("<sip:127.0.0.1:5080>"));
    assert_eq!(header(&invite, "X-IVR-Path"), Some("transfer"));
    assert_eq!(header(&invite, "Content-Type"), Some("application/sdp"));
    assert!(header(&invite, "Allow").unwrap().contains("NOTIFY"));
    assert!(
        header(&invite, "Via")
            .unwrap()
            .starts_with("SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK")
    );
    assert!(invite.contains("m=audio 30000 RTP/AVP 0 8 101"));
    let inv_branch = branch(&invite);

    let out = h.send(50, target(), &reply(&invite, 100, "Trying", None, &[], ""));
    assert_eq!(
        events(&out),
        vec![Event::OutboundProgress { call, status: 100 }]
    );
    // Proceeding: timer A stops.
    assert!(h.run_timers(20_000).is_empty());
    let out = h.send(
        20_000,
        target(),
        &reply(
            &invite,
            180,
            "Ringing",
            Some("callee1"),
            &[CALLEE_CONTACT],
            "",
        ),
    );
    assert_eq!(
        events(&out),
        vec![Event::OutboundProgress { call, status: 180 }]
    );

    let ack = answer_outbound(&mut h, 21_000, call, &invite, &[]);
    assert!(
        ack.starts_with("ACK sip:callee@127.0.0.1:5070 SIP/2.0\r\n"),
        "{ack}"
    );
    assert_eq!(header(&ack, "CSeq"), Some("1 ACK"));
    assert_ne!(
        branch(&ack),
        inv_branch,
        "the ACK for a 2xx is a transaction of its own"
    );
    assert_eq!(tag_of(header(&ack, "To").unwrap()), "callee1");
    assert_eq!(header(&ack, "From"), header(&invite, "From"));
    assert_eq!(header(&ack, "Call-ID"), header(&invite, "Call-ID"));
    assert!(headers(&ack, "Route").is_empty());
    // A retransmitted 2xx gets the same ACK again, and no event.
    let ok = reply(
        &invite,
        200,
        "OK",
        Some("callee1"),
        &[CALLEE_CONTACT],
        OFFER,
    );
    let out = h.send(21_500, target(), &ok);
    assert!(events(&out).is_empty());
    assert_eq!(sent_to(&out), vec![(target(), ack.clone())]);
    assert!(matches!(
        h.core.cancel(h.at(21_600), call),
        Err(CommandError::InvalidState {
            why: "already answered: use hangup",
            ..
        })
    ));

    // In-dialog requests from the callee.
    let info = from_callee(
        "INFO",
        &invite,
        "callee1",
        1,
        "z9hG4bKci",
        "Signal=5\r\nDuration=160\r\n",
    );
    let out = h.send(22_000, target(), &info);
    assert_eq!(statuses(&out), vec![200]);
    assert!(matches!(events(&out).as_slice(), [Event::Info { call: c, .. }] if *c == call));
    let reinvite = from_callee("INVITE", &invite, "callee1", 2, "z9hG4bKcr", OFFER);
    let out = h.send(23_000, target(), &reinvite);
    assert_eq!(statuses(&out), vec![100]);
    assert_eq!(
        events(&out),
        vec![Event::ReInvite {
            call,
            sdp_offer: Some(OFFER.as_bytes().to_vec())
        }]
    );
    h.core
        .answer_reinvite(h.at(23_010), call, our_answer())
        .unwrap();
    let ok = sent(&h.drain()).pop().unwrap();
    assert_eq!(status(&ok), 200);
    let re_ack = from_callee("ACK", &invite, "callee1", 2, "z9hG4bKcra", "");
    assert_eq!(
        events(&h.send(23_050, target(), &re_ack)),
        vec![Event::Ack { call, sdp: None }]
    );

    h.core.hangup(h.at(24_000), call).unwrap();
    let out = sent_to(&h.drain());
    assert_eq!(out.len(), 1);
    let (to, bye) = &out[0];
    assert_eq!(*to, target());
    assert!(
        bye.starts_with("BYE sip:callee@127.0.0.1:5070 SIP/2.0\r\n"),
        "{bye}"
    );
    assert_eq!(header(bye, "CSeq"), Some("2 BYE"));
    assert_eq!(header(bye, "From"), header(&invite, "From"));
    assert_eq!(tag_of(header(bye, "To").unwrap()), "callee1");
    let out = h.send(24_100, target(), &reply(bye, 200, "OK", None, &[], ""));
    assert_eq!(
        events(&out),
        vec![
            Event::ByeResult {
                call,
                outcome: ByeOutcome::Response(200)
            },
            Event::CallEnded {
                call,
                reason: EndReason::LocalBye
            }
        ]
    );
    h.assert_empty();
}

#[test]
fn outbound_busy_is_acked_in_the_transaction() {
    let mut h = Harness::new();
    let (call, invite) = dial(&mut h, 0);
    h.send(10, target(), &reply(&invite, 100, "Trying", None, &[], ""));
    let busy = reply(&invite, 486, "Busy Here", Some("callee9"), &[], "");
    let out = h.send(100, target(), &busy);
    assert_eq!(
        events(&out),
        vec![
            Event::OutboundFailed { call, status: 486 },
            Event::CallEnded {
                call,
                reason: EndReason::Failed
            }
        ]
    );
    let msgs = sent_to(&out);
    assert_eq!(msgs.len(), 1);
    let (to, ack) = &msgs[0];
    assert_eq!(*to, target());
    assert!(
        ack.starts_with("ACK sip:+15551234@127.0.0.1:5070 SIP/2.0\r\n"),
        "{ack}"
    );
    assert_eq!(branch(ack), branch(&invite), "same branch as the INVITE");
    assert_eq!(header(ack, "CSeq"), Some("1 ACK"));
    assert_eq!(tag_of(header(ack, "To").unwrap()), "callee9");
    assert_eq!(header(ack, "Via"), header(&invite, "Via"));
    assert_eq!(h.core.dialog_count(), 0);
    // A retransmitted 486 is acknowledged again (timer D keeps the transaction for 32 s).
    let out = h.send(600, target(), &busy);
    assert!(events(&out).is_empty());
    assert_eq!(sent(&out), vec![ack.clone()]);
    assert_eq!(h.core.transaction_count(), 1);
    assert_eq!(h.next_deadline(), Some(h.at(32_100)));
    h.assert_empty();
}

#[test]
fn outbound_timer_a_then_timer_b() {
    let mut h = Harness::new();
    let (call, invite) = dial(&mut h, 0);
    let all = h.run_timers(u64::MAX);
    let retransmits: Vec<u64> = all
        .iter()
        .filter_map(|(ms, o)| match o {
            Output::Transmit(t) => {
                assert_eq!(t.data, invite.as_bytes());
                Some(*ms)
            }
            _ => None,
        })
        .collect();
    assert_eq!(retransmits, vec![500, 1500, 3500, 7500, 15500, 31500]);
    assert_eq!(
        timed_events(&all),
        vec![
            (32_000, Event::OutboundFailed { call, status: 408 }),
            (
                32_000,
                Event::CallEnded {
                    call,
                    reason: EndReason::Failed
                }
            )
        ]
    );
    h.assert_empty();
}

#[test]
fn cancel_while_ringing() {
    let mut h = Harness::new();
    let (call, invite) = dial(&mut h, 0);
    assert!(matches!(
        h.core.hangup(h.at(1), call),
        Err(CommandError::InvalidState {
            why: "not answered yet: use cancel",
            ..
        })
    ));
    h.send(
        100,
        target(),
        &reply(&invite, 180, "Ringing", Some("callee1"), &[], ""),
    );
    h.core.cancel(h.at(5_000), call).unwrap();
    let msgs = sent_to(&h.drain());
    assert_eq!(msgs.len(), 1);
    let (to, cancel) = &msgs[0];
    assert_eq!(*to, target());
    assert!(
        cancel.starts_with("CANCEL sip:+15551234@127.0.0.1:5070 SIP/2.0\r\n"),
        "{cancel}"
    );
    assert_eq!(header(cancel, "Via"), header(&invite, "Via"));
    assert_eq!(header(cancel, "CSeq"), Some("1 CANCEL"));
    assert_eq!(
        header(cancel, "To"),
        header(&invite, "To"),
        "no tag on CANCEL's To"
    );
    assert_eq!(header(cancel, "From"), header(&invite, "From"));
    assert_eq!(
        h.core.cancel(h.at(5_001), call),
        Err(CommandError::InvalidState {
            call,
            why: "already cancelling"
        })
    );

    let out = h.send(
        5_100,
        target(),
        &reply(cancel, 200, "OK", Some("callee1"), &[], ""),
    );
    assert!(events(&out).is_empty() && sent(&out).is_empty());
    let terminated = reply(&invite, 487, "Request Terminated", Some("callee1"), &[], "");
    let out = h.send(5_200, target(), &terminated);
    let ack = sent(&out).pop().unwrap();
    assert!(ack.starts_with("ACK sip:+15551234@127.0.0.1:5070 SIP/2.0\r\n"));
    assert_eq!(branch(&ack), branch(&invite));
    assert_eq!(
        events(&out),
        vec![
            Event::OutboundFailed { call, status: 487 },
            Event::CallEnded {
                call,
                reason: EndReason::Cancelled
            }
        ]
    );
    h.assert_empty();
}

#[test]
fn cancel_before_any_response_waits_for_a_provisional() {
    let mut h = Harness::new();
    let (call, invite) = dial(&mut h, 0);
    h.core.cancel(h.at(100), call).unwrap();
    assert!(
        sent(&h.drain()).is_empty(),
        "§9.1: no CANCEL before a provisional"
    );
    let out = h.send(300, target(), &reply(&invite, 100, "Trying", None, &[], ""));
    let msgs = sent(&out);
    assert_eq!(
        events(&out),
        vec![Event::OutboundProgress { call, status: 100 }]
    );
    assert_eq!(msgs.len(), 1);
    assert!(msgs[0].starts_with("CANCEL "));
    h.send(
        400,
        target(),
        &reply(&msgs[0], 200, "OK", Some("x"), &[], ""),
    );
    // The UAS never sends its 487: 64·T1 after the CANCEL the INVITE is given up.
    let all = h.run_timers(u64::MAX);
    assert_eq!(
        timed_events(&all),
        vec![
            (32_300, Event::OutboundFailed { call, status: 408 }),
            (
                32_300,
                Event::CallEnded {
                    call,
                    reason: EndReason::Cancelled
                }
            )
        ]
    );
    h.assert_empty();
}

#[test]
fn unanswered_outbound_is_cancelled_by_the_core() {
    let mut h = Harness::with(|c| c.answer_timeout = Duration::from_secs(60));
    let (call, invite) = dial(&mut h, 0);
    h.send(
        100,
        target(),
        &reply(&invite, 180, "Ringing", Some("callee1"), &[], ""),
    );
    let all = h.run_timers(60_000);
    let cancels: Vec<u64> = all
        .iter()
        .filter(|(_, o)| matches!(o, Output::Transmit(t) if t.data.starts_with(b"CANCEL ")))
        .map(|(ms, _)| *ms)
        .collect();
    assert_eq!(cancels, vec![60_000]);
    let cancel = all
        .iter()
        .find_map(|(_, o)| match o {
            Output::Transmit(t) => Some(String::from_utf8_lossy(&t.data).into_owned()),
            _ => None,
        })
        .unwrap();
    h.send(
        60_050,
        target(),
        &reply(&cancel, 200, "OK", Some("callee1"), &[], ""),
    );
    let out = h.send(
        60_100,
        target(),
        &reply(&invite, 487, "Request Terminated", Some("callee1"), &[], ""),
    );
    assert_eq!(
        events(&out),
        vec![
            Event::OutboundFailed { call, status: 487 },
            Event::CallEnded {
                call,
                reason: EndReason::Unanswered
            }
        ]
    );
    h.assert_empty();
}

#[test]
fn answer_crossing_cancel_is_acked_and_ended_with_bye() {
    let mut h = Harness::new();
    let (call, invite) = dial(&mut h, 0);
    h.send(
        100,
        target(),
        &reply(&invite, 180, "Ringing", Some("callee1"), &[], ""),
    );
    h.core.cancel(h.at(200), call).unwrap();
    h.drain();
    let ok = reply(
        &invite,
        200,
        "OK",
        Some("callee1"),
        &[CALLEE_CONTACT],
        OFFER,
    );
    let out = h.send(250, target(), &ok);
    let msgs = sent(&out);
    assert_eq!(msgs.len(), 2);
    assert!(msgs[0].starts_with("ACK sip:callee@127.0.0.1:5070 "));
    assert!(msgs[1].starts_with("BYE sip:callee@127.0.0.1:5070 "));
    assert_eq!(header(&msgs[1], "CSeq"), Some("2 BYE"));
    assert_eq!(
        events(&out),
        vec![
            Event::OutboundFailed { call, status: 487 },
            Event::CallEnded {
                call,
                reason: EndReason::Cancelled
            }
        ]
    );
    // The BYE's response is not reported; a 2xx retransmission is still acknowledged.
    let out = h.send(300, target(), &reply(&msgs[1], 200, "OK", None, &[], ""));
    assert!(events(&out).is_empty());
    let out = h.send(700, target(), &ok);
    assert_eq!(sent(&out), vec![msgs[0].clone()]);
    h.assert_empty();
}

#[test]
fn outbound_record_route_applies_to_ack_and_bye() {
    let mut h = Harness::new();
    let (call, invite) = dial(&mut h, 0);
    let ack = answer_outbound(
        &mut h,
        100,
        call,
        &invite,
        &[
            "Record-Route: <sip:10.0.0.1;lr>",
            "Record-Route: <sip:10.0.0.2;lr;ftag=x>, <sip:10.0.0.3;lr>",
        ],
    );
    // UAC route set: Record-Route reversed (§12.1.2); every request still goes to TARGET.
    let expected = vec![
        "<sip:10.0.0.3;lr>",
        "<sip:10.0.0.2;lr;ftag=x>",
        "<sip:10.0.0.1;lr>",
    ];
    assert!(
        ack.starts_with("ACK sip:callee@127.0.0.1:5070 SIP/2.0\r\n"),
        "{ack}"
    );
    assert_eq!(headers(&ack, "Route"), expected);
    h.core.hangup(h.at(200), call).unwrap();
    let msgs = sent_to(&h.drain());
    assert_eq!(msgs[0].0, target());
    let bye = &msgs[0].1;
    assert!(bye.starts_with("BYE sip:callee@127.0.0.1:5070 SIP/2.0\r\n"));
    assert_eq!(headers(bye, "Route"), expected);
    h.send(300, target(), &reply(bye, 200, "OK", None, &[], ""));
    h.assert_empty();
}

#[test]
fn outbound_remote_bye_and_forked_answer() {
    let mut h = Harness::new();
    let (call, invite) = dial(&mut h, 0);
    answer_outbound(&mut h, 100, call, &invite, &[]);
    // A second fork answers too: ACK it and end it with BYE, once.
    let fork = reply(
        &invite,
        200,
        "OK",
        Some("fork2"),
        &["Contact: <sip:fork@127.0.0.1:5070>"],
        OFFER,
    );
    let out = h.send(150, target(), &fork);
    let msgs = sent(&out);
    assert!(events(&out).is_empty());
    assert_eq!(msgs.len(), 2);
    assert!(msgs[0].starts_with("ACK sip:fork@127.0.0.1:5070 "));
    assert_eq!(tag_of(header(&msgs[0], "To").unwrap()), "fork2");
    assert!(msgs[1].starts_with("BYE sip:fork@127.0.0.1:5070 "));
    let again = sent(&h.send(160, target(), &fork));
    assert_eq!(again.len(), 1);
    assert!(again[0].starts_with("ACK "));
    h.send(170, target(), &reply(&msgs[1], 200, "OK", None, &[], ""));

    let bye = from_callee("BYE", &invite, "callee1", 1, "z9hG4bKcb", "");
    let out = h.send(200, target(), &bye);
    assert_eq!(statuses(&out), vec![200]);
    assert_eq!(
        events(&out),
        vec![
            Event::ByeReceived { call },
            Event::CallEnded {
                call,
                reason: EndReason::RemoteBye
            }
        ]
    );
    h.assert_empty();
}

#[test]
fn outbound_argument_checks() {
    let mut h = Harness::new();
    let mut bad_uri = outbound(&[]);
    bad_uri.request_uri = "http://example.com".to_owned();
    let mut tagged = outbound(&[]);
    tagged.to.push_str(";tag=1");
    let mut no_sdp = outbound(&[]);
    no_sdp.sdp_offer.clear();
    let mut crlf_from = outbound(&[]);
    crlf_from.from = "\"a\r\nVia: x\" <sip:a@b>".to_owned();
    for (call, why) in [
        (bad_uri, "request_uri"),
        (tagged, "to must"),
        (no_sdp, "SDP offer"),
        (crlf_from, "from must"),
        (
            outbound(&[("Via", "SIP/2.0/UDP evil")]),
            "written by the core",
        ),
        (outbound(&[("X-A", "1\r\n")]), "CR or LF"),
    ] {
        match h.core.invite(h.at(0), call) {
            Err(CommandError::InvalidArgument(w)) => assert!(w.contains(why), "{w}"),
            other => panic!("{why}: {other:?}"),
        }
    }
    assert!(sent(&h.drain()).is_empty());
    h.assert_empty();
    let mut h = Harness::with(|c| c.max_calls = 0);
    assert_eq!(
        h.core.invite(h.at(0), outbound(&[])),
        Err(CommandError::TooManyCalls)
    );
}

#[test]
fn call_handles_are_never_shared_between_directions() {
    let mut h = Harness::new();
    let (inbound, _) = established(&mut h, "mix1", &[]);
    let (out1, _) = dial(&mut h, 100);
    let (out2, _) = dial(&mut h, 200);
    let mut inv = String::from_utf8(inbound_invite("mix2", &[])).unwrap();
    inv = inv.replace("z9hG4bKin1", "z9hG4bKin2");
    let second = events(&h.send(300, caller(), inv.as_bytes()))
        .into_iter()
        .find_map(|e| match e {
            Event::IncomingCall(c) => Some(c.call),
            _ => None,
        })
        .unwrap();
    let mut all = vec![inbound, out1, out2, second];
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 4, "{all:?}");
    assert!(matches!(
        h.core.cancel(h.at(400), inbound),
        Err(CommandError::InvalidState { .. })
    ));
    assert!(matches!(
        h.core.answer(h.at(400), out1, our_answer()),
        Err(CommandError::InvalidState { .. })
    ));
    assert!(matches!(
        h.core.refer(h.at(400), out1, "sip:a@b", &[]),
        Err(CommandError::InvalidState {
            why: "not answered yet",
            ..
        })
    ));
}

// ----- TCP --------------------------------------------------------------------------------------

#[test]
fn tcp_client_transactions_never_retransmit() {
    let mut h = Harness::with(|c| c.transport = Transport::Tcp);
    // Outbound INVITE: no timer A, timer B still fires at 32 s.
    let (call, invite) = dial(&mut h, 0);
    assert!(
        header(&invite, "Via")
            .unwrap()
            .starts_with("SIP/2.0/TCP 127.0.0.1:5080;")
    );
    assert_eq!(
        header(&invite, "Contact"),
        Some("<sip:127.0.0.1:5080;transport=tcp>")
    );
    let all = h.run_timers(u64::MAX);
    assert!(!all.iter().any(|(_, o)| matches!(o, Output::Transmit(_))));
    assert_eq!(
        timed_events(&all),
        vec![
            (32_000, Event::OutboundFailed { call, status: 408 }),
            (
                32_000,
                Event::CallEnded {
                    call,
                    reason: EndReason::Failed
                }
            )
        ]
    );
    h.assert_empty();

    // A failure: timer D is zero, the transaction goes at once.
    let (_, invite) = dial(&mut h, 40_000);
    h.send(
        40_100,
        target(),
        &reply(&invite, 404, "Not Found", Some("t"), &[], ""),
    );
    assert_eq!(h.next_deadline(), Some(h.at(40_100)));
    h.assert_empty();

    // REFER and BYE (inbound call): no timer E, timer F reports at 32 s, timer K is zero.
    let mut h = Harness::with(|c| c.transport = Transport::Tcp);
    let (call, _) = established(&mut h, "tcp1", &[]);
    h.core.refer(h.at(100), call, "sip:a@b", &[]).unwrap();
    h.drain();
    let all = h.run_timers(40_000);
    assert!(!all.iter().any(|(_, o)| matches!(o, Output::Transmit(_))));
    assert_eq!(
        timed_events(&all),
        vec![(32_100, Event::ReferResponse { call, status: 408 })]
    );
    h.core.hangup(h.at(40_000), call).unwrap();
    let bye = sent(&h.drain()).pop().unwrap();
    assert!(header(&bye, "Via").unwrap().starts_with("SIP/2.0/TCP "));
    assert!(h.run_timers(50_000).is_empty());
    h.send(50_000, caller(), &reply(&bye, 200, "OK", None, &[], ""));
    assert_eq!(
        h.next_deadline(),
        Some(h.at(50_000)),
        "timer K is zero on TCP"
    );
    h.assert_empty();
}

#[test]
fn mutated_responses_never_panic_and_everything_drains() {
    let mut h = Harness::new();
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut rnd = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut invite = String::new();
    for i in 0..3000u64 {
        if i % 50 == 0 {
            invite = dial(&mut h, i).1;
        }
        let rr = ["Record-Route: <sip:10.0.0.1;lr>", CALLEE_CONTACT];
        let mut data = match rnd() % 5 {
            0 => reply(&invite, 180, "Ringing", Some("t1"), &[], ""),
            1 => reply(&invite, 200, "OK", Some("t1"), &rr, OFFER),
            2 => reply(&invite, 486, "Busy Here", Some("t2"), &[], ""),
            3 => reply(&invite, 200, "OK", Some("t3"), &[], ""),
            _ => from_callee("BYE", &invite, "t1", 5, "z9hG4bKfz", ""),
        };
        for _ in 0..(rnd() % 6) {
            let at = (rnd() as usize) % data.len();
            let alphabet = b"\r\n :;,<>\"%@[]=0";
            data[at] = alphabet[(rnd() as usize) % alphabet.len()];
        }
        h.send(i, target(), &data);
    }
    let calls: Vec<CallHandle> = h.core.calls.keys().copied().collect();
    for call in calls {
        let _ = h.core.hangup(h.at(4000), call);
        let _ = h.core.cancel(h.at(4000), call);
    }
    h.drain();
    h.assert_empty();
}
