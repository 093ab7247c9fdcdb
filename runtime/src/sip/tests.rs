//! Virtual-time tests of the whole core: bytes in, bytes and events out.

use super::*;
use std::time::Duration;

const PEER: &str = "127.0.0.1:5099";
const LOCAL: &str = "127.0.0.1:5080";

const OFFER: &str = "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\na=sendrecv\r\n";

fn peer() -> SocketAddr {
    PEER.parse().unwrap()
}

/// A core plus a virtual clock (`base` + milliseconds).
struct Harness {
    core: SipCore,
    base: Instant,
}

impl Harness {
    fn new() -> Self {
        Self {
            core: SipCore::new(Config::new(LOCAL.parse().unwrap())),
            base: Instant::now(),
        }
    }

    /// A harness whose peer is a trusted trunk (its P-Asserted-Identity is believed).
    fn trusting_peer() -> Self {
        let mut config = Config::new(LOCAL.parse().unwrap());
        config.admission.trusted = vec![PEER.split(':').next().unwrap().parse().unwrap()];
        Self {
            core: SipCore::new(config),
            base: Instant::now(),
        }
    }

    fn at(&self, ms: u64) -> Instant {
        self.base + Duration::from_millis(ms)
    }

    fn send(&mut self, ms: u64, data: &[u8]) -> Vec<Output> {
        let now = self.at(ms);
        self.core.handle_input(Input::Datagram {
            now,
            from: peer(),
            data,
        });
        self.drain()
    }

    fn tick(&mut self, ms: u64) -> Vec<Output> {
        let now = self.at(ms);
        self.core.handle_input(Input::Timeout(now));
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
                assert_eq!(
                    t.to,
                    peer(),
                    "every datagram goes to the peer's source address"
                );
            }
        }
        out
    }

    /// Runs every timer until none is left (or `limit_ms`), returning all outputs with their time.
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
        // Any input resets the "timeout reported" latch; a no-op timeout at base is harmless.
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

fn sent(out: &[Output]) -> Vec<String> {
    out.iter()
        .filter_map(|o| match o {
            Output::Transmit(t) => Some(String::from_utf8_lossy(&t.data).into_owned()),
            _ => None,
        })
        .collect()
}

fn events(out: &[Output]) -> Vec<Event> {
    out.iter()
        .filter_map(|o| match o {
            Output::Event(e) => Some(e.clone()),
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

fn to_tag(msg: &str) -> String {
    let to = header(msg, "To").unwrap();
    to.split(";tag=").nth(1).unwrap().to_owned()
}

/// Builds a request with CRLF line ends and a correct Content-Length.
fn request(start: &str, headers: &[&str], body: &str) -> Vec<u8> {
    let mut s = format!("{start}\r\n");
    for h in headers {
        s.push_str(h);
        s.push_str("\r\n");
    }
    s.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.into_bytes()
}

fn invite(call_id: &str, branch: &str, body: Option<&str>, extra: &[&str]) -> Vec<u8> {
    let via = format!("Via: SIP/2.0/UDP 127.0.0.1:5099;branch={branch};rport");
    let cid = format!("Call-ID: {call_id}");
    let mut headers = vec![
        via.as_str(),
        "From: sipp <sip:sipp@127.0.0.1:5099>;tag=caller1",
        "To: <sip:+14155559876@127.0.0.1:5080>",
        cid.as_str(),
        "CSeq: 1 INVITE",
        "Contact: sip:sipp@127.0.0.1:5099",
        "Max-Forwards: 70",
    ];
    headers.extend_from_slice(extra);
    if body.is_some() {
        headers.push("Content-Type: application/sdp");
    }
    request(
        "INVITE sip:+14155559876@127.0.0.1:5080 SIP/2.0",
        &headers,
        body.unwrap_or(""),
    )
}

/// An in-dialog request from the caller.
fn in_dialog(
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
    let mut headers = vec![
        via.as_str(),
        "From: sipp <sip:sipp@127.0.0.1:5099>;tag=caller1",
        to.as_str(),
        cid.as_str(),
        cseq.as_str(),
        "Max-Forwards: 70",
    ];
    headers.extend_from_slice(extra);
    request(
        &format!("{method} sip:127.0.0.1:5080 SIP/2.0"),
        &headers,
        body,
    )
}

fn incoming(out: &[Output]) -> IncomingCall {
    events(out)
        .into_iter()
        .find_map(|e| match e {
            Event::IncomingCall(c) => Some(c),
            _ => None,
        })
        .expect("IncomingCall")
}

fn our_answer() -> Vec<u8> {
    let offer = sdp::parse(OFFER.as_bytes()).unwrap();
    sdp::answer(&offer, "127.0.0.1".parse().unwrap(), 20000)
        .unwrap()
        .sdp
}

/// INVITE → 100 + IncomingCall → answer → 200 → ACK. Returns (call, our tag).
fn established(h: &mut Harness, call_id: &str, extra: &[&str]) -> (CallHandle, String) {
    let out = h.send(0, &invite(call_id, "z9hG4bKinv1", Some(OFFER), extra));
    let call = incoming(&out).call;
    h.core.answer(h.at(10), call, our_answer()).unwrap();
    let out = h.drain();
    let ok = sent(&out).pop().unwrap();
    let tag = to_tag(&ok);
    let out = h.send(
        20,
        &in_dialog("ACK", call_id, &tag, 1, "z9hG4bKack1", &[], ""),
    );
    assert_eq!(events(&out), vec![Event::Ack { call, sdp: None }]);
    (call, tag)
}

#[test]
fn full_uas_invite_flow_with_timer_h() {
    let mut h = Harness::trusting_peer();
    let out = h.send(
        0,
        &invite(
            "flow1",
            "z9hG4bKa1",
            Some(OFFER),
            &["P-Asserted-Identity: <tel:+1-415-555-0100>"],
        ),
    );
    assert_eq!(statuses(&out), vec![100]);
    let call = incoming(&out);
    assert_eq!(call.did, "+14155559876");
    assert_eq!(call.caller, "+14155550100");
    assert_eq!(call.call_id, "flow1");
    assert_eq!(call.source, peer());
    assert_eq!(call.sdp_offer.as_deref(), Some(OFFER.as_bytes()));
    assert!(call.headers.iter().any(|(n, _)| n == "P-Asserted-Identity"));
    // While the application decides, the only timer is the answer timeout.
    let deadlines: Vec<&Output> = out
        .iter()
        .filter(|o| matches!(o, Output::Timeout(_)))
        .collect();
    assert!(matches!(deadlines.as_slice(), [Output::Timeout(t)] if *t == h.at(180_000)));

    h.core.answer(h.at(100), call.call, our_answer()).unwrap();
    let out = h.drain();
    let ok = sent(&out).pop().unwrap();
    assert_eq!(status(&ok), 200);
    assert!(header(&ok, "Contact").unwrap().contains(LOCAL));
    assert_eq!(header(&ok, "Content-Type"), Some("application/sdp"));
    assert!(ok.contains("o=wasm-ivr ") && ok.contains("m=audio 20000 RTP/AVP 0 101"));
    assert!(
        header(&ok, "Via")
            .unwrap()
            .contains("rport=5099;received=127.0.0.1")
    );
    assert!(!to_tag(&ok).is_empty());

    // 2xx retransmissions at +0.5, +1.5, +3.5, +7.5 s, then every 4 s, giving up at +32 s.
    let all = h.run_timers(200_000);
    let retransmit_times: Vec<u64> = all
        .iter()
        .filter_map(|(ms, o)| match o {
            Output::Transmit(t) if status(&String::from_utf8_lossy(&t.data)) == 200 => {
                Some(ms - 100)
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        retransmit_times,
        vec![
            500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500
        ]
    );
    let ended: Vec<(u64, Event)> = all
        .iter()
        .filter_map(|(ms, o)| match o {
            Output::Event(e) => Some((*ms, e.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        ended,
        vec![(
            32_100,
            Event::CallEnded {
                call: call.call,
                reason: EndReason::AckTimeout
            }
        )]
    );
    // The session is ended with a BYE (§13.3.1.4), unreported to the application.
    assert!(
        all.iter().any(|(ms, o)| *ms == 32_100
            && matches!(o, Output::Transmit(t) if t.data.starts_with(b"BYE ")))
    );
    h.assert_empty();
}

#[test]
fn ack_stops_retransmission_and_bye_in_ends_call() {
    let mut h = Harness::new();
    let out = h.send(0, &invite("flow2", "z9hG4bKa2", Some(OFFER), &[]));
    let call = incoming(&out).call;
    h.core.answer(h.at(10), call, our_answer()).unwrap();
    let ok = sent(&h.drain()).pop().unwrap();
    let tag = to_tag(&ok);
    assert_eq!(statuses(&h.tick(510)), vec![200]);
    let out = h.send(
        700,
        &in_dialog("ACK", "flow2", &tag, 1, "z9hG4bKack2", &[], ""),
    );
    assert_eq!(events(&out), vec![Event::Ack { call, sdp: None }]);
    assert!(sent(&h.tick(1510)).is_empty());
    // A retransmitted ACK is harmless.
    let out = h.send(
        800,
        &in_dialog("ACK", "flow2", &tag, 1, "z9hG4bKack2", &[], ""),
    );
    assert!(events(&out).is_empty() && sent(&out).is_empty());

    let bye = in_dialog("BYE", "flow2", &tag, 2, "z9hG4bKbye2", &[], "");
    let out = h.send(5000, &bye);
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
    // Retransmitted BYE: answered from the transaction cache, no new events.
    let out = h.send(5400, &bye);
    assert_eq!(statuses(&out), vec![200]);
    assert!(events(&out).is_empty());
    assert_eq!(h.core.dialog_count(), 0);
    assert_eq!(
        h.core.hangup(h.at(5500), call),
        Err(CommandError::UnknownCall(call))
    );
    h.assert_empty();
}

#[test]
fn offerless_invite_gets_offer_in_200_and_answer_in_ack() {
    let mut h = Harness::new();
    let out = h.send(0, &invite("nooffer", "z9hG4bKn1", None, &[]));
    let call = incoming(&out);
    assert_eq!(call.sdp_offer, None);
    h.core
        .answer(h.at(5), call.call, OFFER.as_bytes().to_vec())
        .unwrap();
    let ok = sent(&h.drain()).pop().unwrap();
    assert!(ok.contains("m=audio 6000"));
    let tag = to_tag(&ok);
    let ack = in_dialog(
        "ACK",
        "nooffer",
        &tag,
        1,
        "z9hG4bKn2",
        &["Content-Type: application/sdp"],
        OFFER,
    );
    let out = h.send(50, &ack);
    assert_eq!(
        events(&out),
        vec![Event::Ack {
            call: call.call,
            sdp: Some(OFFER.as_bytes().to_vec())
        }]
    );
    h.core.hangup(h.at(60), call.call).unwrap();
    let bye = sent(&h.drain()).pop().unwrap();
    let resp = format!(
        "SIP/2.0 200 OK\r\nVia: {}\r\nFrom: {}\r\nTo: {}\r\nCall-ID: nooffer\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n",
        header(&bye, "Via").unwrap(),
        header(&bye, "From").unwrap(),
        header(&bye, "To").unwrap()
    );
    let out = h.send(70, resp.as_bytes());
    assert_eq!(events(&out).len(), 2);
    h.assert_empty();
}

#[test]
fn invite_retransmissions_are_absorbed() {
    let mut h = Harness::new();
    let inv = invite("retx", "z9hG4bKr1", Some(OFFER), &[]);
    let out = h.send(0, &inv);
    let call = incoming(&out).call;
    // Before the answer: the 100 is replayed, no second call.
    let out = h.send(500, &inv);
    assert_eq!(statuses(&out), vec![100]);
    assert!(events(&out).is_empty());
    h.core.ring(call).unwrap();
    assert_eq!(statuses(&h.drain()), vec![180]);
    let out = h.send(900, &inv);
    assert_eq!(statuses(&out), vec![180]);
    h.core.answer(h.at(1000), call, our_answer()).unwrap();
    let tag = to_tag(&sent(&h.drain()).pop().unwrap());
    // After the 2xx (RFC 6026 Accepted): absorbed silently, the core's 2xx timer does the work.
    let out = h.send(1200, &inv);
    assert!(sent(&out).is_empty() && events(&out).is_empty());
    assert_eq!(h.core.dialog_count(), 1);
    h.send(
        1300,
        &in_dialog("ACK", "retx", &tag, 1, "z9hG4bKr2", &[], ""),
    );
    h.core.hangup(h.at(2000), call).unwrap();
    h.drain();
    // No answer to our BYE: it times out and the call still ends.
    let all = h.run_timers(u64::MAX);
    let evs: Vec<Event> = all
        .into_iter()
        .filter_map(|(_, o)| match o {
            Output::Event(e) => Some(e),
            _ => None,
        })
        .collect();
    assert_eq!(
        evs,
        vec![
            Event::ByeResult {
                call,
                outcome: ByeOutcome::Timeout
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
fn cancel_sends_200_and_487_then_ack_is_absorbed() {
    let mut h = Harness::new();
    let out = h.send(0, &invite("cxl", "z9hG4bKc1", Some(OFFER), &[]));
    let call = incoming(&out).call;
    let cancel = request(
        "CANCEL sip:+14155559876@127.0.0.1:5080 SIP/2.0",
        &[
            "Via: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bKc1;rport",
            "From: sipp <sip:sipp@127.0.0.1:5099>;tag=caller1",
            "To: <sip:+14155559876@127.0.0.1:5080>",
            "Call-ID: cxl",
            "CSeq: 1 CANCEL",
            "Max-Forwards: 70",
        ],
        "",
    );
    let out = h.send(100, &cancel);
    assert_eq!(statuses(&out), vec![200, 487]);
    assert_eq!(
        events(&out),
        vec![
            Event::CallCancelled { call },
            Event::CallEnded {
                call,
                reason: EndReason::Cancelled
            }
        ]
    );
    let tag = to_tag(&sent(&out)[1]);
    assert_eq!(
        h.core.answer(h.at(110), call, our_answer()),
        Err(CommandError::UnknownCall(call))
    );
    // 487 is retransmitted (timer G) until the ACK.
    assert_eq!(statuses(&h.tick(600)), vec![487]);
    let ack = request(
        "ACK sip:+14155559876@127.0.0.1:5080 SIP/2.0",
        &[
            "Via: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bKc1;rport",
            "From: sipp <sip:sipp@127.0.0.1:5099>;tag=caller1",
            &format!("To: <sip:+14155559876@127.0.0.1:5080>;tag={tag}"),
            "Call-ID: cxl",
            "CSeq: 1 ACK",
            "Max-Forwards: 70",
        ],
        "",
    );
    let out = h.send(700, &ack);
    assert!(sent(&out).is_empty() && events(&out).is_empty());
    assert!(sent(&h.tick(1600)).is_empty());
    // A retransmitted CANCEL is answered from cache.
    assert_eq!(statuses(&h.send(800, &cancel)), vec![200]);
    h.assert_empty();

    // CANCEL without a matching INVITE.
    let out = h.send(100_000, &cancel);
    assert_eq!(statuses(&out), vec![481]);
}

#[test]
fn bye_out_uses_dialog_and_retransmits_on_timer_e() {
    let mut h = Harness::new();
    let (call, tag) = established(
        &mut h,
        "byeout",
        &["Record-Route: <sip:10.9.9.9;lr>, <sip:10.8.8.8;lr>"],
    );
    h.core.hangup(h.at(1000), call).unwrap();
    let bye = sent(&h.drain()).pop().unwrap();
    assert!(
        bye.starts_with("BYE sip:sipp@127.0.0.1:5099 SIP/2.0\r\n"),
        "{bye}"
    );
    assert_eq!(
        bye.matches("Route: ").collect::<Vec<_>>().len(),
        2,
        "route set from Record-Route: {bye}"
    );
    assert!(
        bye.find("Route: <sip:10.9.9.9;lr>").unwrap()
            < bye.find("Route: <sip:10.8.8.8;lr>").unwrap()
    );
    assert_eq!(header(&bye, "CSeq"), Some("1 BYE"));
    assert!(
        header(&bye, "From")
            .unwrap()
            .ends_with(&format!(";tag={tag}"))
    );
    assert!(header(&bye, "To").unwrap().ends_with(";tag=caller1"));
    assert_eq!(header(&bye, "Call-ID"), Some("byeout"));
    assert_eq!(
        h.core.hangup(h.at(1001), call).unwrap_err(),
        CommandError::InvalidState {
            call,
            why: "already hanging up"
        }
    );

    // Timer E: 500 ms, doubling to T2.
    let all = h.run_timers(9_000);
    let times: Vec<u64> = all.iter().map(|(ms, _)| ms - 1000).collect();
    assert_eq!(times, vec![500, 1500, 3500, 7500]);

    let resp = format!(
        "SIP/2.0 200 OK\r\nVia: {}\r\nFrom: {}\r\nTo: {}\r\nCall-ID: byeout\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n",
        header(&bye, "Via").unwrap(),
        header(&bye, "From").unwrap(),
        header(&bye, "To").unwrap()
    );
    let out = h.send(9000, resp.as_bytes());
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
    // A retransmitted response is absorbed (timer K).
    let out = h.send(9100, resp.as_bytes());
    assert!(events(&out).is_empty() && sent(&out).is_empty());
    h.assert_empty();
}

#[test]
fn bye_out_times_out_on_timer_f() {
    let mut h = Harness::new();
    let (call, _) = established(&mut h, "byef", &[]);
    h.core.hangup(h.at(100), call).unwrap();
    h.drain();
    let all = h.run_timers(u64::MAX);
    let byes = all
        .iter()
        .filter(|(_, o)| matches!(o, Output::Transmit(_)))
        .count();
    assert_eq!(byes, 10, "E: 0.5,1.5,3.5,7.5 then every 4 s until 32 s");
    let evs: Vec<(u64, Event)> = all
        .into_iter()
        .filter_map(|(ms, o)| match o {
            Output::Event(e) => Some((ms, e)),
            _ => None,
        })
        .collect();
    assert_eq!(
        evs,
        vec![
            (
                32_100,
                Event::ByeResult {
                    call,
                    outcome: ByeOutcome::Timeout
                }
            ),
            (
                32_100,
                Event::CallEnded {
                    call,
                    reason: EndReason::LocalBye
                }
            )
        ]
    );
    h.assert_empty();
}

#[test]
fn hangup_before_ack_waits_for_ack() {
    let mut h = Harness::new();
    let out = h.send(0, &invite("early", "z9hG4bKe1", Some(OFFER), &[]));
    let call = incoming(&out).call;
    assert!(matches!(
        h.core.hangup(h.at(1), call),
        Err(CommandError::InvalidState { .. })
    ));
    h.core.answer(h.at(5), call, our_answer()).unwrap();
    let tag = to_tag(&sent(&h.drain()).pop().unwrap());
    h.core.hangup(h.at(6), call).unwrap();
    assert!(sent(&h.drain()).is_empty());
    let out = h.send(
        50,
        &in_dialog("ACK", "early", &tag, 1, "z9hG4bKe2", &[], ""),
    );
    let msgs = sent(&out);
    assert_eq!(msgs.len(), 1);
    assert!(msgs[0].starts_with("BYE "));
}

#[test]
fn options_in_and_out_of_dialog() {
    let mut h = Harness::new();
    let out = h.send(
        0,
        &request(
            "OPTIONS sip:127.0.0.1:5080 SIP/2.0",
            &[
                "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKo1",
                "From: <sip:probe@kamailio>;tag=k1",
                "To: <sip:127.0.0.1:5080>",
                "Call-ID: opt1",
                "CSeq: 10 OPTIONS",
                "Max-Forwards: 0",
            ],
            "",
        ),
    );
    let msgs = sent(&out);
    assert_eq!(msgs.len(), 1);
    assert_eq!(status(&msgs[0]), 200);
    assert_eq!(header(&msgs[0], "Allow"), Some(ALLOW));
    assert_eq!(header(&msgs[0], "Accept"), Some("application/sdp"));
    // Via says 192.0.2.1; the response still went to the source (checked by the harness).
    assert!(
        header(&msgs[0], "Via")
            .unwrap()
            .contains("received=127.0.0.1")
    );
    let (_, tag) = established(&mut h, "optdlg", &[]);
    let out = h.send(
        100,
        &in_dialog("OPTIONS", "optdlg", &tag, 2, "z9hG4bKo2", &[], ""),
    );
    assert_eq!(statuses(&out), vec![200]);
}

#[test]
fn info_in_and_out_of_dialog() {
    let mut h = Harness::new();
    let (call, tag) = established(&mut h, "info", &[]);
    let body = "Signal=1\r\nDuration=160\r\n";
    let info = in_dialog(
        "INFO",
        "info",
        &tag,
        2,
        "z9hG4bKi1",
        &["Content-Type: application/dtmf-relay"],
        body,
    );
    let out = h.send(1000, &info);
    assert_eq!(statuses(&out), vec![200]);
    assert_eq!(
        events(&out),
        vec![Event::Info {
            call,
            content_type: Some("application/dtmf-relay".into()),
            body: body.as_bytes().to_vec()
        }]
    );
    // Retransmission: 200 again, no duplicate digit.
    let out = h.send(1500, &info);
    assert_eq!(statuses(&out), vec![200]);
    assert!(events(&out).is_empty());
    // Unknown dialog (wrong tag) and no dialog at all.
    let out = h.send(
        1600,
        &in_dialog("INFO", "info", "nope", 3, "z9hG4bKi2", &[], ""),
    );
    assert_eq!(statuses(&out), vec![481]);
    let out_of_dialog = request(
        "INFO sip:127.0.0.1:5080 SIP/2.0",
        &[
            "Via: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bKi3",
            "From: <sip:x@y>;tag=1",
            "To: <sip:127.0.0.1:5080>",
            "Call-ID: info-x",
            "CSeq: 1 INFO",
        ],
        "",
    );
    assert_eq!(statuses(&h.send(1700, &out_of_dialog)), vec![481]);
    let bye = request(
        "BYE sip:127.0.0.1:5080 SIP/2.0",
        &[
            "Via: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bKi4",
            "From: <sip:x@y>;tag=1",
            "To: <sip:127.0.0.1:5080>;tag=unknown",
            "Call-ID: bye-x",
            "CSeq: 1 BYE",
        ],
        "",
    );
    assert_eq!(statuses(&h.send(1800, &bye)), vec![481]);
}

fn origin_version(msg: &str) -> String {
    let o = msg.split("\r\n").find(|l| l.starts_with("o=")).unwrap();
    o.split(' ').nth(2).unwrap().to_owned()
}

#[test]
fn reinvite_hold_resume_and_refresh() {
    let mut h = Harness::new();
    let out = h.send(0, &invite("hold", "z9hG4bKh0", Some(OFFER), &[]));
    let call = incoming(&out).call;
    h.core.answer(h.at(1), call, our_answer()).unwrap();
    let ok = sent(&h.drain()).pop().unwrap();
    assert_eq!(origin_version(&ok), "1");
    let tag = to_tag(&ok);
    h.send(2, &in_dialog("ACK", "hold", &tag, 1, "z9hG4bKh1", &[], ""));

    let mut t = 1000;
    let mut cseq = 2;
    let mut reinvite = |h: &mut Harness, offer: &str| -> String {
        let msg = in_dialog(
            "INVITE",
            "hold",
            &tag,
            cseq,
            &format!("z9hG4bKre{cseq}"),
            &[
                "Contact: <sip:sipp@127.0.0.1:5099>",
                "Content-Type: application/sdp",
            ],
            offer,
        );
        let out = h.send(t, &msg);
        assert_eq!(statuses(&out), vec![100]);
        let Some(Event::ReInvite { call: c, sdp_offer }) = events(&out).pop() else {
            panic!()
        };
        assert_eq!(c, call);
        let parsed = sdp::parse(&sdp_offer.unwrap()).unwrap();
        let answer = sdp::answer(&parsed, "127.0.0.1".parse().unwrap(), 20000).unwrap();
        h.core
            .answer_reinvite(h.at(t + 5), call, answer.sdp)
            .unwrap();
        let ok = sent(&h.drain()).pop().unwrap();
        assert_eq!(status(&ok), 200);
        let ack = in_dialog(
            "ACK",
            "hold",
            &tag,
            cseq,
            &format!("z9hG4bKack{cseq}"),
            &[],
            "",
        );
        assert_eq!(
            events(&h.send(t + 10, &ack)),
            vec![Event::Ack { call, sdp: None }]
        );
        t += 1000;
        cseq += 1;
        ok
    };
    let held = reinvite(&mut h, &OFFER.replace("a=sendrecv", "a=sendonly"));
    assert!(held.contains("a=recvonly"));
    assert_eq!(origin_version(&held), "2");
    let resumed = reinvite(&mut h, OFFER);
    assert!(resumed.contains("a=sendrecv"));
    assert_eq!(origin_version(&resumed), "3");
    // Session refresh with the same offer: same SDP, same version (RFC 3264 §8).
    let refreshed = reinvite(&mut h, OFFER);
    assert_eq!(origin_version(&refreshed), "3");

    // An out-of-order CSeq is refused; a stale ACK changes nothing.
    let old = in_dialog("INVITE", "hold", &tag, 2, "z9hG4bKold", &[], "");
    assert_eq!(statuses(&h.send(9000, &old)), vec![500]);
    // Offer-less re-INVITE, refused by the application.
    let msg = in_dialog("INVITE", "hold", &tag, 10, "z9hG4bKre10", &[], "");
    let out = h.send(10_000, &msg);
    assert_eq!(
        events(&out),
        vec![Event::ReInvite {
            call,
            sdp_offer: None
        }]
    );
    h.core
        .reject_reinvite(h.at(10_001), call, 488, "Not Acceptable Here")
        .unwrap();
    assert_eq!(statuses(&h.drain()), vec![488]);
    assert_eq!(h.core.dialog_count(), 1);
}

#[test]
fn reinvite_with_no_common_codec_keeps_call() {
    let mut h = Harness::new();
    let (call, tag) = established(&mut h, "re488", &[]);
    let g729 = OFFER.replace("RTP/AVP 0 8 101", "RTP/AVP 18");
    let msg = in_dialog(
        "INVITE",
        "re488",
        &tag,
        2,
        "z9hG4bKx",
        &["Content-Type: application/sdp"],
        &g729,
    );
    assert_eq!(statuses(&h.send(100, &msg)), vec![488]);
    assert_eq!(h.core.dialog_count(), 1);
    assert!(h.core.answer_reinvite(h.at(101), call, vec![]).is_err());
}

#[test]
fn method_and_header_rejections() {
    let mut h = Harness::new();
    let base = |method: &str, extra: &[&str]| {
        let cseq = format!("CSeq: 1 {method}");
        let mut headers = vec![
            "Via: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bKm1",
            "From: <sip:a@b>;tag=1",
            "To: <sip:100@127.0.0.1>",
            "Call-ID: rej",
            cseq.as_str(),
        ];
        headers.extend_from_slice(extra);
        request(&format!("{method} sip:100@127.0.0.1 SIP/2.0"), &headers, "")
    };
    let out = h.send(0, &base("FOO", &[]));
    assert_eq!(statuses(&out), vec![501]);
    assert_eq!(header(&sent(&out)[0], "Allow"), Some(ALLOW));
    let out = h.send(0, &base("REGISTER", &[]));
    assert_eq!(statuses(&out), vec![405]);
    assert_eq!(header(&sent(&out)[0], "Allow"), Some(ALLOW));
    let out = h.send(0, &base("SUBSCRIBE", &[]));
    assert_eq!(statuses(&out), vec![405]);
    let out = h.send(0, &base("OPTIONS", &["Require: 100rel, timer"]));
    assert_eq!(statuses(&out), vec![420]);
    assert_eq!(header(&sent(&out)[0], "Unsupported"), Some("100rel, timer"));

    let out = h.send(
        0,
        &invite("r420", "z9hG4bKq1", Some(OFFER), &["Require: 100rel"]),
    );
    assert_eq!(statuses(&out), vec![420]);

    let text = request(
        "INVITE sip:100@127.0.0.1 SIP/2.0",
        &[
            "Via: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bKq2",
            "From: <sip:a@b>;tag=1",
            "To: <sip:100@127.0.0.1>",
            "Call-ID: r415",
            "CSeq: 1 INVITE",
            "Content-Type: text/plain",
        ],
        "hello",
    );
    let out = h.send(0, &text);
    assert_eq!(statuses(&out), vec![415]);
    assert_eq!(header(&sent(&out)[0], "Accept"), Some("application/sdp"));

    let g729 = OFFER.replace("RTP/AVP 0 8 101", "RTP/AVP 18");
    let out = h.send(0, &invite("r488", "z9hG4bKq3", Some(&g729), &[]));
    assert_eq!(statuses(&out), vec![488]);
    assert!(events(&out).is_empty());

    let out = h.send(0, &invite("r400", "z9hG4bKq4", Some("not sdp"), &[]));
    assert_eq!(statuses(&out), vec![400]);
    assert_eq!(h.core.dialog_count(), 0);
    h.assert_empty();
}

#[test]
fn app_reject_and_oversize() {
    let mut h = Harness::new();
    let out = h.send(0, &invite("rej", "z9hG4bKj1", Some(OFFER), &[]));
    let call = incoming(&out).call;
    assert_eq!(
        h.core.reject(h.at(1), call, 200, "OK"),
        Err(CommandError::InvalidStatus(200))
    );
    h.core.reject(h.at(1), call, 404, "Not Found").unwrap();
    let out = h.drain();
    assert_eq!(statuses(&out), vec![404]);
    assert_eq!(
        events(&out),
        vec![Event::CallEnded {
            call,
            reason: EndReason::Rejected
        }]
    );
    h.assert_empty();

    let mut cfg = Config::new(LOCAL.parse().unwrap());
    cfg.max_message_size = 300;
    h.core = SipCore::new(cfg);
    let out = h.send(0, &invite("big", "z9hG4bKj2", Some(OFFER), &[]));
    assert_eq!(statuses(&out), vec![513]);
    assert_eq!(h.core.transaction_count(), 0);
}

#[test]
fn unanswered_invite_and_reinvite_time_out() {
    let mut h = Harness::new();
    let out = h.send(0, &invite("slow", "z9hG4bKs1", Some(OFFER), &[]));
    let call = incoming(&out).call;
    let all = h.run_timers(180_000);
    let (ms, first) = &all[0];
    assert_eq!(*ms, 180_000);
    assert!(matches!(first, Output::Transmit(t) if t.data.starts_with(b"SIP/2.0 480 ")));
    assert!(all.iter().any(|(_, o)| matches!(o,
        Output::Event(Event::CallEnded { call: c, reason: EndReason::Unanswered }) if *c == call)));
    h.assert_empty();

    let mut h = Harness::new();
    let (call, tag) = established(&mut h, "slowre", &[]);
    let re = in_dialog("INVITE", "slowre", &tag, 2, "z9hG4bKs2", &[], "");
    h.send(1000, &re);
    let all = h.run_timers(181_000);
    assert!(all.iter().any(|(ms, o)| *ms == 181_000
        && matches!(o, Output::Transmit(t) if t.data.starts_with(b"SIP/2.0 500 "))));
    assert_eq!(
        h.core.dialog_count(),
        1,
        "the call survives an unanswered re-INVITE"
    );
    h.core.hangup(h.at(182_000), call).unwrap();
}

#[test]
fn malformed_ack_is_never_answered() {
    let mut h = Harness::new();
    let ack = request(
        "ACK sip:100@127.0.0.1 SIP/2.0",
        &[
            "Via: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bKak",
            "From: <sip:a@b>;tag=1",
            "To: <sip:100@127.0.0.1>;tag=2",
            "Call-ID: ack",
            "CSeq: 1 INVITE",
        ],
        "",
    );
    assert!(h.send(0, &ack).is_empty());
    let ack = String::from_utf8(ack)
        .unwrap()
        .replace("CSeq: 1 INVITE", "CSeq: 1 ACK");
    assert!(
        h.send(0, ack.as_bytes()).is_empty(),
        "ACK for nothing is dropped"
    );
}

#[test]
fn transaction_limit_answers_503_statelessly() {
    let mut cfg = Config::new(LOCAL.parse().unwrap());
    cfg.max_transactions = 2;
    let mut h = Harness::new();
    h.core = SipCore::new(cfg);
    let options = |branch: &str| {
        let via = format!("Via: SIP/2.0/UDP 127.0.0.1:5099;branch={branch}");
        request(
            "OPTIONS sip:127.0.0.1 SIP/2.0",
            &[
                &via,
                "From: <sip:a@b>;tag=1",
                "To: <sip:c@d>",
                "Call-ID: lim",
                "CSeq: 1 OPTIONS",
            ],
            "",
        )
    };
    for (i, expect) in [(1, 200), (2, 200), (3, 503), (4, 503)] {
        let out = h.send(0, &options(&format!("z9hG4bKl{i}")));
        assert_eq!(statuses(&out), vec![expect]);
    }
    assert_eq!(h.core.transaction_count(), 2);
    h.assert_empty();
}

#[test]
fn an_untrusted_sources_asserted_identity_is_ignored() {
    let mut h = Harness::new();
    let out = h.send(
        0,
        &invite(
            "pai-untrusted",
            "z9hG4bKpai1",
            Some(OFFER),
            &["P-Asserted-Identity: <tel:+1-415-555-0100>"],
        ),
    );
    let call = incoming(&out);
    assert_ne!(
        call.caller, "+14155550100",
        "the From user, not the assertion"
    );
    assert!(
        !call
            .headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("P-Asserted-Identity")),
        "the assertion is not passed on: {:?}",
        call.headers
    );
}

/// A raw INVITE from `from` (its own Call-ID and branch).
fn invite_from(from: SocketAddr, n: u32) -> Vec<u8> {
    let via = format!("Via: SIP/2.0/UDP {from};branch=z9hG4bKho{n}");
    let cid = format!("Call-ID: half-open-{n}");
    let contact = format!("Contact: <sip:caller@{from}>");
    request(
        "INVITE sip:+14155559876@127.0.0.1:5080 SIP/2.0",
        &[
            &via,
            "From: <sip:caller@example.com>;tag=ho",
            "To: <sip:+14155559876@127.0.0.1:5080>",
            &cid,
            "CSeq: 1 INVITE",
            &contact,
            "Content-Type: application/sdp",
        ],
        OFFER,
    )
}

fn drain_all(core: &mut SipCore) -> Vec<Output> {
    std::iter::from_fn(|| core.poll_output())
        .take(10_000)
        .collect()
}

#[test]
fn half_open_calls_per_source_are_capped_statelessly() {
    let mut config = Config::new(LOCAL.parse().unwrap());
    config.max_calls = 40;
    config.admission = admission::Limits::for_capacity(40, 100_000);
    let mut core = SipCore::new(config);
    let now = Instant::now();
    let flooder: SocketAddr = "127.0.0.3:5099".parse().unwrap();
    let mut calls = 0;
    let mut refused = 0;
    for n in 0..200 {
        core.handle_input(Input::Datagram {
            now,
            from: flooder,
            data: &invite_from(flooder, n),
        });
        let out = drain_all(&mut core);
        calls += events(&out)
            .iter()
            .filter(|e| matches!(e, Event::IncomingCall(_)))
            .count();
        if statuses(&out) == [503] {
            refused += 1;
            assert!(sent(&out)[0].contains("Retry-After: 5"));
        }
    }
    assert_eq!(
        (calls, refused),
        (5, 195),
        "an eighth of max_calls, then 503"
    );
    assert_eq!(core.half_open_count(), 5);
    assert_eq!(core.refused_count(), 195);
    assert_eq!(
        core.transaction_count(),
        5,
        "the refusals left no transaction behind"
    );
    // Another source still gets in.
    let other: SocketAddr = "127.0.0.2:5099".parse().unwrap();
    core.handle_input(Input::Datagram {
        now,
        from: other,
        data: &invite_from(other, 1_000),
    });
    let out = drain_all(&mut core);
    let call = incoming(&out);
    assert_eq!(call.source, other);
    // The flooder's calls time out (answer timeout) and its room comes back.
    core.handle_input(Input::Timeout(now + Duration::from_secs(181)));
    drain_all(&mut core);
    core.handle_input(Input::Timeout(now + Duration::from_secs(400)));
    drain_all(&mut core);
    assert_eq!(core.half_open_count(), 0);
    assert_eq!(core.dialog_count(), 0);
    core.handle_input(Input::Datagram {
        now: now + Duration::from_secs(400),
        from: flooder,
        data: &invite_from(flooder, 2_000),
    });
    let out = drain_all(&mut core);
    assert!(
        events(&out)
            .iter()
            .any(|e| matches!(e, Event::IncomingCall(_)))
    );
}

#[test]
fn transactions_per_source_are_capped() {
    let mut config = Config::new(LOCAL.parse().unwrap());
    config.admission.transactions_per_source = 3;
    let mut core = SipCore::new(config);
    let now = Instant::now();
    let options = |from: SocketAddr, n: u32| {
        let via = format!("Via: SIP/2.0/UDP {from};branch=z9hG4bKtx{n}");
        request(
            "OPTIONS sip:127.0.0.1 SIP/2.0",
            &[
                &via,
                "From: <sip:a@b>;tag=1",
                "To: <sip:c@d>",
                "Call-ID: txcap",
                "CSeq: 1 OPTIONS",
            ],
            "",
        )
    };
    let a: SocketAddr = "127.0.0.3:5099".parse().unwrap();
    let b: SocketAddr = "127.0.0.4:5099".parse().unwrap();
    let mut got = Vec::new();
    for n in 0..5 {
        core.handle_input(Input::Datagram {
            now,
            from: a,
            data: &options(a, n),
        });
        got.extend(statuses(&drain_all(&mut core)));
    }
    assert_eq!(got, [200, 200, 200, 503, 503]);
    core.handle_input(Input::Datagram {
        now,
        from: b,
        data: &options(b, 9),
    });
    assert_eq!(statuses(&drain_all(&mut core)), [200]);
    // Timer J ends them; the source gets room again.
    core.handle_input(Input::Timeout(now + Duration::from_secs(40)));
    drain_all(&mut core);
    assert_eq!(core.transaction_count(), 0);
    core.handle_input(Input::Datagram {
        now: now + Duration::from_secs(40),
        from: a,
        data: &options(a, 10),
    });
    assert_eq!(statuses(&drain_all(&mut core)), [200]);
}

// ----- torture messages -----------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum Verdict {
    /// Accepted as a new call (100 Trying + IncomingCall).
    Call,
    /// Answered with one of these statuses (final response), no call.
    Status(&'static [u16]),
    /// No output at all.
    Drop,
}

const TORTURE: &[(&str, Verdict)] = {
    use Verdict::*;
    &[
        // RFC 4475 §3.1.1 — valid.
        ("wsinv.dat", Status(&[481])), // valid INVITE carrying a To tag for a dialog we do not have
        ("intmeth.dat", Status(&[501])),
        ("esc01.dat", Call),
        ("escnull.dat", Status(&[405])),
        ("esc02.dat", Status(&[501])), // RE%47IST%45R is an extension method, not REGISTER
        ("lwsdisp.dat", Status(&[200])),
        ("longreq.dat", Call),
        ("dblreq.dat", Status(&[405])),
        ("semiuri.dat", Status(&[200])),
        ("transports.dat", Status(&[200])),
        ("mpart01.dat", Status(&[405])),
        ("unreason.dat", Drop), // a response matching no transaction of ours
        ("noreason.dat", Drop),
        // RFC 4475 §3.1.2 — invalid.
        ("badinv01.dat", Status(&[400])),
        ("clerr.dat", Status(&[400])),
        ("ncl.dat", Status(&[400])),
        ("scalar02.dat", Status(&[400])),
        ("scalarlg.dat", Drop),
        ("quotbal.dat", Status(&[400])),
        ("ltgtruri.dat", Status(&[400])),
        ("lwsruri.dat", Status(&[400])),
        ("lwsstart.dat", Status(&[400])),
        ("trws.dat", Status(&[400])),
        ("escruri.dat", Status(&[400])),
        ("baddate.dat", Call),
        ("regbadct.dat", Status(&[405])),
        ("badaspec.dat", Status(&[200])),
        ("baddn.dat", Status(&[200])),
        ("badvers.dat", Status(&[505])),
        ("mismatch01.dat", Status(&[400])),
        ("mismatch02.dat", Status(&[400, 501])),
        ("bigcode.dat", Drop),
        // RFC 4475 §3.2–3.4.
        ("badbranch.dat", Status(&[200])),
        ("insuf.dat", Status(&[400])),
        ("unkscm.dat", Status(&[416])),
        ("novelsc.dat", Status(&[416, 404])),
        ("unksm2.dat", Status(&[405])),
        ("bext01.dat", Status(&[420])),
        ("invut.dat", Status(&[415])),
        ("regaut01.dat", Status(&[405])),
        ("multi01.dat", Status(&[400])),
        ("mcl01.dat", Status(&[400])),
        ("bcast.dat", Drop),
        ("zeromf.dat", Status(&[200])),
        ("cparam01.dat", Status(&[405, 501])),
        ("cparam02.dat", Status(&[405, 501])),
        ("regescrt.dat", Status(&[405, 501])),
        ("sdp01.dat", Status(&[406, 400])),
        ("inv2543.dat", Call),
        // RFC 5118 — all valid except ipv6-bad.
        ("ipv4-mapped-ipv6", Status(&[488])), // valid; offers only G.726
        ("ipv6-bad", Status(&[400])),
        ("ipv6-bug-abnf-3-colons", Status(&[200])),
        ("ipv6-correct-abnf-2-colons", Status(&[200])),
        ("ipv6-good", Status(&[405])),
        ("ipv6-in-sdp", Status(&[488])), // valid; offers only G.726
        ("mult-ip-in-header", Status(&[481])), // valid BYE for a dialog we do not have
        ("mult-ip-in-sdp", Call),
        ("port-ambiguous", Status(&[405])),
        ("port-unambiguous", Status(&[405])),
        ("via-received-param-no-delim", Status(&[200])),
        ("via-received-param-with-delim", Status(&[481])),
    ]
};

/// The shared torture folder: `../shared` beside the repository (as CI lays it out), else the
/// workplace's copy. Its absence fails the test rather than skipping it.
fn torture_root() -> std::path::PathBuf {
    let beside = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/sip-torture");
    if beside.is_dir() {
        return beside;
    }
    std::path::PathBuf::from("/work/shared/sip-torture")
}

fn torture_files() -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    let root = torture_root();
    for dir in [root.join("rfc4475"), root.join("rfc5118")] {
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("torture folder {} is missing: {e}", dir.display()));
        for e in entries {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            files.push((name, std::fs::read(e.path()).unwrap()));
        }
    }
    files.sort();
    files
}

#[test]
fn torture_messages_get_their_verdicts() {
    let files = torture_files();
    let mut failures = Vec::new();
    for (name, data) in &files {
        let Some((_, verdict)) = TORTURE.iter().find(|(n, _)| n == name) else {
            failures.push(format!("{name}: no verdict in the table"));
            continue;
        };
        let mut h = Harness::new();
        let out = h.send(0, data);
        let codes = statuses(&out);
        let evs = events(&out);
        let ok = match verdict {
            Verdict::Call => codes == [100] && matches!(evs.as_slice(), [Event::IncomingCall(_)]),
            Verdict::Status(allowed) => {
                codes.len() == 1 && allowed.contains(&codes[0]) && evs.is_empty()
            }
            Verdict::Drop => codes.is_empty() && evs.is_empty(),
        };
        if !ok {
            let first = sent(&out)
                .first()
                .map(|m| m.lines().next().unwrap_or_default().to_owned());
            failures.push(format!(
                "{name}: expected {verdict:?}, got {codes:?} {first:?} events {evs:?}"
            ));
        }
        // Clean up and check nothing leaks.
        if let Some(Event::IncomingCall(c)) = evs.first() {
            h.core.reject(h.at(1), c.call, 486, "Busy Here").unwrap();
            h.drain();
        }
        h.assert_empty();
    }
    assert!(
        failures.is_empty(),
        "torture verdicts:\n{}",
        failures.join("\n")
    );
}

#[test]
fn no_input_panics() {
    let mut corpus: Vec<Vec<u8>> = torture_files().into_iter().map(|(_, d)| d).collect();
    corpus.push(invite("np", "z9hG4bKnp", Some(OFFER), &[]));
    corpus.push(in_dialog("INFO", "np", "t", 2, "z9hG4bKnp2", &[], "x"));
    let mut h = Harness::new();
    for data in &corpus {
        for cut in 0..=data.len() {
            h.send(0, &data[..cut]);
        }
    }
    // Pseudo-random bytes and random mutations of valid messages (xorshift, fixed seed).
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rnd = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for i in 0..3000 {
        let len = (rnd() % 600) as usize;
        let mut data: Vec<u8> = (0..len).map(|_| rnd() as u8).collect();
        if i % 2 == 0 {
            data = corpus[(rnd() as usize) % corpus.len()].clone();
            for _ in 0..(1 + rnd() % 8) {
                if data.is_empty() {
                    break;
                }
                let at = (rnd() as usize) % data.len();
                let alphabet = b"\r\n :;,<>\"%@[]=0";
                data[at] = alphabet[(rnd() as usize) % alphabet.len()];
            }
        }
        h.send(i, &data);
    }
    // Whatever calls the mutations created, clean them up and check the core drains.
    let calls: Vec<CallHandle> = h.core.calls.keys().copied().collect();
    for call in calls {
        let _ = h.core.reject(h.at(4000), call, 486, "Busy Here");
        let _ = h.core.hangup(h.at(4000), call);
    }
    h.drain();
    h.assert_empty();
}

#[test]
fn caller_and_did_normalisation() {
    let mut h = Harness::new();
    let inv = request(
        "INVITE sip:%2B1%20415@gw SIP/2.0",
        &[
            "Via: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bKd1",
            "From: \"Anon\" <tel:+1-202-555-0199>;tag=9",
            "To: <sip:other@gw>",
            "Call-ID: did",
            "CSeq: 1 INVITE",
        ],
        "",
    );
    let c = incoming(&h.send(0, &inv));
    assert_eq!(c.did, "+1415");
    assert_eq!(c.caller, "+12025550199");
    let inv = request(
        "INVITE sip:gw.example.com SIP/2.0",
        &[
            "Via: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bKd2",
            "From: <sip:alice@example.com>;tag=9",
            "To: <sip:8005551234@gw>",
            "Call-ID: did2",
            "CSeq: 1 INVITE",
        ],
        "",
    );
    let c = incoming(&h.send(0, &inv));
    assert_eq!(c.did, "8005551234");
    assert_eq!(c.caller, "alice");
}
