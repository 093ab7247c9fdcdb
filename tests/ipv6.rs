//! IPv6 end to end: the real `wasm-ivr serve` listening on `[::1]`, SIPp callers over UDP and
//! TCP walking the seed tree (keys by RFC 4733 and SIP INFO, the prompt's RTP captured on the
//! caller's IPv6 media port), and the RFC 5118 torture messages sent over a real IPv6 socket.
//!
//! The RFC 5118 originals name hosts off this machine (2001:db8::/32, 192.0.2.0/24), so they
//! are never sent as they are: every address in them (headers and SDP) is rewritten to
//! `::1` / `127.0.0.1` first, and Call-ID and branch are made unique per message. The parser's
//! handling of the original spellings is checked in-process by the SIP core's own torture test
//! (`runtime/src/sip/tests.rs`); this suite checks the IPv6 transport with the same messages.
//!
//! Like the other SIPp suites, every test takes `sipp::serial()` first and is bounded in time.

mod common;

use common::sipp::{self, CallDir, Capture, SEED_DID, Server, ServerOptions, Sipp, Step};
use serde_json::json;
use std::net::UdpSocket;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use wasm_ivr::media::codec::{Codec, FRAME_SAMPLES};
use wasm_ivr::media::prompt::EncodedPrompt;

fn ipv6_server(tcp: bool) -> (CallDir, Server) {
    let dir = CallDir::seed();
    let server = Server::start(
        &dir,
        &ServerOptions {
            ipv6: true,
            tcp,
            ..Default::default()
        },
    );
    assert!(server.ip.is_ipv6(), "the server listens on ::1");
    (dir, server)
}

/// The seed's `1 2` walk over IPv6: welcome → has_license → unqualified, then the runtime's BYE.
fn one_two_over_ipv6(name: &str, tcp: bool, first: Step, second: Step) {
    let _serial = sipp::serial();
    let (dir, mut server) = ipv6_server(tcp);
    let steps = [
        Step::Pause(1000),
        first,
        Step::Pause(1500),
        second,
        Step::Pause(300),
        Step::AwaitBye(20_000),
    ];
    let mut sipp = Sipp::call(&dir, name, SEED_DID, &steps)
        .timeout(45)
        .over_ipv6();
    if tcp {
        sipp = sipp.over_tcp();
    }
    let capture = Capture::start_to(
        &dir.logs.join(format!("{name}.pcap")),
        server.ip,
        sipp.media_port,
    )
    .unwrap_or_else(|e| panic!("packet capture is impossible here: {e}"));
    let run = sipp.run(&server);
    std::thread::sleep(Duration::from_millis(300));
    let pcap = capture.stop();
    run.assert_success(&server);
    assert_eq!(run.requests("BYE").len(), 1, "one BYE\n{}", run.report());

    // Signalling went over IPv6 on both sides: the runtime's answer offers media on ::1.
    let answer = run
        .responses_to("1 INVITE")
        .into_iter()
        .find(|m| m.start_line().starts_with("SIP/2.0 200"))
        .unwrap_or_else(|| panic!("no 200\n{}", run.report()));
    assert!(
        answer.body().lines().any(|l| l.trim() == "c=IN IP6 ::1"),
        "the answer's connection address is ::1:\n{}",
        answer.text
    );
    let via = answer.header("Via").unwrap_or_default().to_owned();
    assert!(
        via.contains(if tcp {
            "SIP/2.0/TCP [::1]"
        } else {
            "SIP/2.0/UDP [::1]"
        }),
        "the 200 answers the IPv6 caller's own Via: {via}"
    );

    let trace = server.trace(&run.call_id);
    assert_eq!(
        trace.path(),
        ["welcome", "has_license", "unqualified"],
        "call path\n{}\n{}",
        trace.pretty(),
        server.log()
    );
    assert_eq!(trace.outcome(), "hangup", "{}", trace.pretty());
    assert_eq!(
        trace.gather_results(),
        vec![json!({"digits": "1"}), json!({"digits": "2"})],
        "gathers\n{}",
        trace.pretty()
    );

    // The caller heard the welcome prompt over IPv6 RTP: its frames, in order.
    let packets = sipp::rtp_packets(&pcap, run.media_port).expect("tshark");
    let prompt = EncodedPrompt::load(&dir.audio("welcome.wav"), &Default::default())
        .expect("load welcome.wav");
    let frames = prompt.frames(Codec::Pcmu);
    assert!(
        packets.len() >= 50,
        "the caller got {} RTP packets over IPv6\n{}",
        packets.len(),
        server.log()
    );
    let first_frame = frames
        .iter()
        .position(|f| f.iter().any(|&b| b != 0xFF))
        .expect("welcome.wav is not silence");
    let heard = packets
        .iter()
        .position(|p| p.payload.as_slice() == frames[first_frame].as_ref())
        .unwrap_or_else(|| panic!("the prompt's first sound frame never arrived over IPv6"));
    for (offset, p) in packets[heard..].iter().take(40).enumerate() {
        assert_eq!(p.payload.len(), FRAME_SAMPLES, "20 ms frames: {p:?}");
        assert_eq!(
            p.payload.as_slice(),
            frames[first_frame + offset].as_ref(),
            "frame {} of the prompt arrived changed",
            first_frame + offset
        );
    }
    server.assert_running();
}

/// A UDP caller on `::1` with RFC 4733 keys (SIPp's pcaps, replayed over IPv6).
#[test]
fn an_ipv6_udp_caller_walks_the_seed_tree_with_rfc4733_keys() {
    one_two_over_ipv6("v6-udp-2833", false, Step::Rfc2833('1'), Step::Rfc2833('2'));
}

/// A TCP caller on `::1` with SIP INFO keys.
#[test]
fn an_ipv6_tcp_caller_walks_the_seed_tree_with_sip_info_keys() {
    one_two_over_ipv6("v6-tcp-info", true, Step::Info('1'), Step::Info('2'));
}

// ---------------------------------------------------------------------------------------------
// RFC 5118 over a real IPv6 socket
// ---------------------------------------------------------------------------------------------

/// The RFC 5118 folder: `../shared` beside the repository (as CI lays it out), else the
/// workplace's copy. Missing is a failure, not a skip.
fn rfc5118_dir() -> PathBuf {
    let beside = common::root().join("../shared/sip-torture/rfc5118");
    if beside.is_dir() {
        beside
    } else {
        PathBuf::from("/work/shared/sip-torture/rfc5118")
    }
}

/// Rewrites every IP address of a message to loopback (`::1` for IPv6 literals, `127.0.0.1` for
/// IPv4 ones), makes its Call-ID and Via branch unique with `tag`, and fixes Content-Length for
/// the rewritten body. What is left is safe to send: nothing in it names another host.
fn to_loopback(message: &str, tag: &str) -> String {
    let (head, body) = message.split_once("\r\n\r\n").unwrap_or((message, ""));
    let head = rewrite_addresses(head);
    let body = rewrite_addresses(body);
    let mut lines = Vec::new();
    for line in head.split("\r\n") {
        let lower = line.to_ascii_lowercase();
        if lower.starts_with("content-length:") || lower.starts_with("l:") {
            lines.push(format!("Content-Length: {}", body.len()));
        } else if lower.starts_with("call-id:") || lower.starts_with("i:") {
            lines.push(format!("{line}-{tag}"));
        } else if let Some(at) = line.find("branch=z9hG4bK") {
            let end = line[at..]
                .find([';', ',', ' '])
                .map_or(line.len(), |n| at + n);
            lines.push(format!("{}-{tag}{}", &line[..end], &line[end..]));
        } else {
            lines.push(line.to_owned());
        }
    }
    format!("{}\r\n\r\n{body}", lines.join("\r\n"))
}

/// Replaces each IPv6 literal (a run of hex digits, colons and dots with two colons or more) by
/// `::1` and each dotted IPv4 quad by `127.0.0.1`.
fn rewrite_addresses(text: &str) -> String {
    let is_addr_char = |c: char| c.is_ascii_hexdigit() || c == ':' || c == '.';
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(is_addr_char) {
        out.push_str(&rest[..start]);
        let run_len = rest[start..]
            .find(|c: char| !is_addr_char(c))
            .unwrap_or(rest.len() - start);
        let mut run = &rest[start..start + run_len];
        // A scheme's colon before an address (`sip:2001:db8::10`) is not part of it.
        if run.starts_with(':') && !run.starts_with("::") {
            out.push(':');
            run = &run[1..];
        }
        // Part of a word (`...ad` + `:`) is not an address; nor is a time of day (`13:02:03`).
        let preceded_by_word = out
            .chars()
            .last()
            .is_some_and(|c| c.is_ascii_alphanumeric());
        let colons = run.matches(':').count();
        let dots: Vec<&str> = run.split('.').collect();
        let ipv6_like = run.contains("::")
            || colons == 7
            || (colons >= 2 && run.chars().any(|c| c.is_ascii_alphabetic()));
        if ipv6_like && !preceded_by_word {
            out.push_str("::1");
        } else if colons == 0
            && dots.len() == 4
            && dots
                .iter()
                .all(|d| !d.is_empty() && d.len() <= 3 && d.chars().all(|c| c.is_ascii_digit()))
        {
            out.push_str("127.0.0.1");
        } else {
            out.push_str(run);
        }
        rest = &rest[start + run_len..];
    }
    out.push_str(rest);
    out
}

#[test]
fn rewriting_leaves_no_foreign_address() {
    let original =
        std::fs::read_to_string(rfc5118_dir().join("mult-ip-in-sdp")).expect("read mult-ip-in-sdp");
    let safe = to_loopback(&original, "t");
    for foreign in ["2001:db8", "192.0.2"] {
        assert!(original.contains(foreign), "the original names {foreign}");
        assert!(!safe.contains(foreign), "{foreign} left in:\n{safe}");
    }
    assert!(safe.contains("c=IN IP4 127.0.0.1") && safe.contains("c=IN IP6 ::1"));
    assert!(
        safe.starts_with("INVITE sip:user@[::1] SIP/2.0\r\n"),
        "{safe}"
    );
    let body = safe.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    assert!(safe.contains(&format!("Content-Length: {}\r\n", body.len())));
    assert_eq!(
        rewrite_addresses("REGISTER sip:2001:db8::10 SIP/2.0"),
        "REGISTER sip:::1 SIP/2.0"
    );
    assert_eq!(
        rewrite_addresses("Via: SIP/2.0/UDP [::ffff:192.0.2.10]:5060;received=192.0.2.128"),
        "Via: SIP/2.0/UDP [::1]:5060;received=127.0.0.1"
    );
    assert_eq!(
        rewrite_addresses("Date: Thu, 21 Feb 2002 13:02:03 GMT"),
        "Date: Thu, 21 Feb 2002 13:02:03 GMT"
    );
}

/// Each RFC 5118 message (made loopback-safe) as one datagram from `[::1]`: every one is
/// answered, on the socket it came from, with the status its content calls for. The seed
/// folder has no DID `user`, so the INVITEs are refused by routing (404) or, where the offer
/// has no codec in common, by negotiation (488) — never as malformed.
#[test]
fn rfc5118_messages_over_a_real_ipv6_socket_get_their_verdicts() {
    let _serial = sipp::serial();
    let (_dir, server) = ipv6_server(false);
    let expected: &[(&str, &[u16])] = &[
        ("ipv4-mapped-ipv6", &[404, 488]),
        ("ipv6-bad", &[400]),
        ("ipv6-bug-abnf-3-colons", &[200]),
        ("ipv6-correct-abnf-2-colons", &[200]),
        ("ipv6-good", &[405]),
        ("ipv6-in-sdp", &[404, 488]),
        ("mult-ip-in-header", &[481]),
        ("mult-ip-in-sdp", &[404]),
        ("port-ambiguous", &[405]),
        ("port-unambiguous", &[405]),
        ("via-received-param-no-delim", &[200]),
        ("via-received-param-with-delim", &[481]),
    ];
    let files: Vec<String> = std::fs::read_dir(rfc5118_dir())
        .expect("the RFC 5118 folder")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        files.len(),
        expected.len(),
        "a verdict for every file: {files:?}"
    );

    let socket = UdpSocket::bind("[::1]:0").expect("bind [::1]");
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let target = std::net::SocketAddr::new(server.ip, server.sip_port);
    let mut failures = Vec::new();
    for (n, (name, statuses)) in expected.iter().enumerate() {
        assert!(files.iter().any(|f| f == name), "{name} is in the folder");
        let original =
            std::fs::read_to_string(rfc5118_dir().join(name)).expect("read torture message");
        let message = to_loopback(&original, &format!("v6-{n}"));
        let call_id = message
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("call-id:"))
            .map(|l| l[8..].trim().to_owned())
            .expect("a Call-ID");
        socket.send_to(message.as_bytes(), target).expect("send");
        // Wait (bounded) for this message's final response; provisional ones are skipped.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut got = None;
        let mut buf = [0u8; 65_535];
        while got.is_none() && Instant::now() < deadline {
            let Ok((len, from)) = socket.recv_from(&mut buf) else {
                continue;
            };
            assert_eq!(from, target, "answers come from the listener");
            let text = String::from_utf8_lossy(&buf[..len]).into_owned();
            let status: Option<u16> = text
                .strip_prefix("SIP/2.0 ")
                .and_then(|r| r.get(..3))
                .and_then(|c| c.parse().ok());
            if text.contains(&call_id) && status.is_some_and(|s| s >= 200) {
                got = status;
            }
        }
        match got {
            Some(status) if statuses.contains(&status) => {}
            other => failures.push(format!("{name}: expected {statuses:?}, got {other:?}")),
        }
    }
    assert!(
        failures.is_empty(),
        "RFC 5118 verdicts over IPv6:\n{}\n{}",
        failures.join("\n"),
        server.log()
    );
    // Nothing it was sent took the server down: a fresh OPTIONS is answered.
    let probe = format!(
        "OPTIONS sip:probe@[::1] SIP/2.0\r\nVia: SIP/2.0/UDP [::1]:{};branch=z9hG4bK-v6-probe\r\n\
         From: <sip:probe@[::1]>;tag=p\r\nTo: <sip:probe@[::1]>\r\nCall-ID: v6-probe\r\n\
         CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        socket.local_addr().expect("local").port()
    );
    socket.send_to(probe.as_bytes(), target).expect("send");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut answered = false;
    let mut buf = [0u8; 65_535];
    while !answered && Instant::now() < deadline {
        if let Ok((len, _)) = socket.recv_from(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..len]);
            answered = text.starts_with("SIP/2.0 200") && text.contains("v6-probe");
        }
    }
    assert!(answered, "the server still answers\n{}", server.log());
}
