//! End-to-end calls: the real `wasm-ivr serve` against SIPp callers on loopback.
//!
//! Each test starts its own server on a temporary copy of an IVR folder (the seed example or a
//! fixture of `tests/fixtures/calls/`), places one or more calls with SIPp (`-m 1`, bounded by
//! `-timeout`/`-timeout_error`, scenarios rendered from `tests/sipp/`), and checks SIPp's side
//! (exit status, the messages it logged) and the runtime's side (the call trace it writes for
//! every call with `--call-traces`). The tests run one at a time (`sipp::serial`) because
//! their timing is real time.
//!
//! Needs `sipp` (Debian `sip-tester`, for its RFC 4733 pcaps too), `tcpdump` and `tshark`, and
//! root for tcpdump and SIPp's raw-socket pcap play.

mod common;

use common::sipp::{
    self, CallDir, Capture, PIN_DID, SEED_DID, Server, ServerOptions, Sipp, Step, ToneBuilder,
    Trace,
};
use serde_json::{Value, json};
use std::time::Duration;
use wasm_ivr::media::codec::{Codec, FRAME_SAMPLES};
use wasm_ivr::media::prompt::EncodedPrompt;

/// The seed's welcome prompt, in ms (welcome.wav, 6.3 s).
const WELCOME_MS: u64 = 6_300;

fn seed_server() -> (CallDir, Server) {
    let dir = CallDir::seed();
    let server = Server::start(&dir, &ServerOptions::default());
    (dir, server)
}

fn assert_path(trace: &Trace, expected: &[&str], server: &Server) {
    assert_eq!(
        trace.path(),
        expected,
        "call path\n{}\n{}",
        trace.pretty(),
        server.log()
    );
}

fn assert_outcome(trace: &Trace, expected: &str, server: &Server) {
    assert_eq!(
        trace.outcome(),
        expected,
        "call outcome\n{}\n{}",
        trace.pretty(),
        server.log()
    );
}

/// The 1-then-2 call of the seed: welcome → has_license → unqualified, which plays
/// not_qualified.wav and hangs up, so the caller gets the runtime's BYE.
fn seed_one_two(name: &str, first: Step, second: Step) {
    let _serial = sipp::serial();
    let (dir, mut server) = seed_server();
    let steps = [
        Step::Pause(1000),
        first,
        Step::Pause(1500),
        second,
        Step::Pause(300),
        Step::AwaitBye(20_000),
    ];
    let run = Sipp::call(&dir, name, SEED_DID, &steps)
        .timeout(45)
        .run(&server);
    run.assert_success(&server);
    assert_eq!(run.requests("BYE").len(), 1, "one BYE\n{}", run.report());

    let trace = server.trace(&run.call_id);
    assert_eq!(trace.0["call_id"], json!(run.call_id), "{}", trace.pretty());
    assert_eq!(
        trace.0["ivr"],
        json!("plumber-qualifier"),
        "{}",
        trace.pretty()
    );
    assert!(
        trace.0["did"]
            .as_str()
            .is_some_and(|d| d.trim_start_matches('+') == "14155559876"),
        "did\n{}",
        trace.pretty()
    );
    assert_path(&trace, &["welcome", "has_license", "unqualified"], &server);
    assert_outcome(&trace, "hangup", &server);
    assert_eq!(
        trace.gather_results(),
        vec![json!({"digits": "1"}), json!({"digits": "2"})],
        "gathers\n{}",
        trace.pretty()
    );
    server.assert_running();
}

/// 1. RFC 4733 telephone-events (SIPp's shipped pcaps): `1 2` → unqualified, runtime BYE.
#[test]
fn rfc2833_digits_walk_the_seed_tree_and_the_ivr_hangs_up() {
    seed_one_two("rfc2833-1-2", Step::Rfc2833('1'), Step::Rfc2833('2'));
}

/// 2. The same call with SIP INFO `application/dtmf-relay` digits.
#[test]
fn sip_info_dtmf_relay_digits_walk_the_seed_tree() {
    seed_one_two("info-relay-1-2", Step::Info('1'), Step::Info('2'));
}

/// 2b. The same call with SIP INFO `application/dtmf` digits.
#[test]
fn sip_info_application_dtmf_digits_walk_the_seed_tree() {
    seed_one_two("info-dtmf-1-2", Step::InfoDtmf('1'), Step::InfoDtmf('2'));
}

/// 3. No input: after the prompt and the 5 s first-key timeout, `welcome` plays again; then
///    the caller hangs up.
#[test]
fn silence_replays_the_welcome_node_then_caller_hangs_up() {
    let _serial = sipp::serial();
    let (dir, mut server) = seed_server();
    let run = Sipp::call(
        &dir,
        "no-input",
        SEED_DID,
        &[Step::Pause(13_000), Step::Bye],
    )
    .timeout(40)
    .run(&server);
    run.assert_success(&server);

    let trace = server.trace(&run.call_id);
    let path = trace.path();
    assert!(
        path.len() >= 2 && path[0] == "welcome" && path[1] == "welcome",
        "path should start welcome, welcome\n{}",
        trace.pretty()
    );
    assert_outcome(&trace, "caller-hangup", &server);
    let gathers = trace.gather_results();
    assert_eq!(
        gathers.first(),
        Some(&json!("timeout")),
        "first gather\n{}",
        trace.pretty()
    );
    assert_eq!(
        gathers.last(),
        Some(&json!("hung-up")),
        "last gather (the caller's BYE)\n{}",
        trace.pretty()
    );
    // The replay comes after the whole prompt plus the 5 s timeout, not before.
    let welcomes = trace.steps_at_ms("welcome");
    assert!(
        welcomes.len() >= 2 && welcomes[1] >= 10_000,
        "second welcome should start ≥ 10 s into the call (6.3 s prompt + 5 s): {welcomes:?}\n{}",
        trace.pretty()
    );
    server.assert_running();
}

/// 4. Barge-in: `1` one second into the 6.3 s welcome prompt stops it; has_license starts
///    long before the prompt would have ended.
#[test]
fn a_key_during_the_prompt_barges_in() {
    let _serial = sipp::serial();
    let (dir, mut server) = seed_server();
    let run = Sipp::call(
        &dir,
        "barge-in",
        SEED_DID,
        &[
            Step::Pause(1000),
            Step::Rfc2833('1'),
            Step::Pause(2000),
            Step::Bye,
        ],
    )
    .timeout(30)
    .run(&server);
    run.assert_success(&server);

    let trace = server.trace(&run.call_id);
    assert_eq!(
        trace.gather_results().first(),
        Some(&json!({"digits": "1"})),
        "{}",
        trace.pretty()
    );
    let at = trace.step_at_ms("has_license");
    // Barge-in: the key (at ~1 s) cut the prompt short, so has_license starts before the
    // welcome prompt would have ended; without barge-in it could not start before.
    assert!(
        at.is_some_and(|ms| ms < WELCOME_MS),
        "has_license should start before the {WELCOME_MS} ms prompt ends (the key came at \
         ~1000 ms), got {at:?}\n{}",
        trace.pretty()
    );
    assert_path(&trace, &["welcome", "has_license"], &server);
    assert_outcome(&trace, "caller-hangup", &server);
    server.assert_running();
}

/// 5. Multi-digit entry ended by `#` (fixture `pin-entry`: max_digits 4, `"123": "ok"`).
#[test]
fn multi_digit_entry_with_terminator() {
    let _serial = sipp::serial();
    let dir = CallDir::fixture("pin-entry");
    let mut server = Server::start(&dir, &ServerOptions::default());
    let run = Sipp::call(
        &dir,
        "pin-123-pound",
        PIN_DID,
        &[
            Step::Pause(1000),
            Step::Info('1'),
            Step::Pause(300),
            Step::Info('2'),
            Step::Pause(300),
            Step::Info('3'),
            Step::Pause(300),
            Step::Info('#'),
            Step::AwaitBye(20_000),
        ],
    )
    .timeout(40)
    .run(&server);
    run.assert_success(&server);

    let trace = server.trace(&run.call_id);
    assert_path(&trace, &["pin", "ok"], &server);
    assert_eq!(
        trace.gather_results(),
        vec![json!({"digits": "123"})],
        "{}",
        trace.pretty()
    );
    assert_outcome(&trace, "hangup", &server);
    server.assert_running();
}

/// 6. What the caller hears: the first prompt arrives as PCMU, byte for byte the encoded
///    welcome.wav, in 20 ms packets with no sequence gaps and timestamps stepping by 160.
#[test]
fn the_caller_receives_the_prompt_bytes_in_order() {
    prompt_arrives_intact("audio-pcmu", &[0, 8, 101], Codec::Pcmu);
}

/// 6b. The same with only PCMA offered: the runtime must send the A-law encoding.
#[test]
fn a_pcma_caller_receives_the_prompt_in_a_law() {
    prompt_arrives_intact("audio-pcma", &[8, 101], Codec::Pcma);
}

fn prompt_arrives_intact(name: &str, offer: &[u8], codec: Codec) {
    let _serial = sipp::serial();
    let (dir, mut server) = seed_server();
    let sipp = Sipp::call_offering(&dir, name, SEED_DID, offer, &[Step::Pause(8000), Step::Bye])
        .timeout(30);
    let capture = match Capture::start(&dir.logs.join(format!("{name}.pcap")), sipp.media_port) {
        Ok(c) => c,
        Err(e) => panic!("packet capture is impossible here: {e}"),
    };
    let run = sipp.run(&server);
    std::thread::sleep(Duration::from_millis(300));
    let pcap = capture.stop();
    run.assert_success(&server);
    let answer = run
        .responses_to("1 INVITE")
        .into_iter()
        .find(|m| m.start_line().starts_with("SIP/2.0 200"))
        .unwrap_or_else(|| panic!("no 200\n{}", run.report()));
    let m_line = answer
        .body()
        .lines()
        .find(|l| l.starts_with("m=audio"))
        .unwrap_or_default()
        .to_owned();
    let formats: Vec<&str> = m_line.split_whitespace().skip(3).collect();
    assert_eq!(
        formats.first().copied(),
        Some(codec.payload_type().to_string().as_str()),
        "the answer's first format is the codec used: {m_line}"
    );
    assert!(
        formats.contains(&"101") && answer.body().contains("telephone-event/8000"),
        "the answer keeps telephone-event:\n{}",
        answer.text
    );

    let packets = sipp::rtp_packets(&pcap, run.media_port).expect("tshark");
    let prompt = EncodedPrompt::load(&dir.audio("welcome.wav"), &Default::default())
        .expect("load welcome.wav");
    let frames = prompt.frames(codec);
    let n = frames.len();
    assert!(
        packets.len() >= n,
        "the caller got {} RTP packets, the prompt alone is {n} frames\n{}",
        packets.len(),
        server.log()
    );
    for p in &packets {
        assert_eq!(
            p.payload_type,
            codec.payload_type(),
            "the negotiated codec: {p:?}"
        );
        assert_eq!(p.payload.len(), FRAME_SAMPLES, "20 ms frames: {p:?}");
    }
    let ssrc = packets[0].ssrc;
    assert!(packets.iter().all(|p| p.ssrc == ssrc), "one SSRC per call");
    // Sequence numbers: consecutive over the whole call (no gap, no repeat).
    for w in packets.windows(2) {
        assert_eq!(
            w[1].seq,
            w[0].seq.wrapping_add(1),
            "sequence gap between {:?} and {:?}",
            (w[0].seq, w[0].timestamp),
            (w[1].seq, w[1].timestamp)
        );
        let step = w[1].timestamp.wrapping_sub(w[0].timestamp);
        assert!(
            step > 0 && step % 160 == 0,
            "timestamps must advance by whole 20 ms frames: {} → {}",
            w[0].timestamp,
            w[1].timestamp
        );
    }
    // Find the prompt in the stream: anything before it must be silence.
    let start = (0..=packets.len() - n).find(|&i| {
        packets[i..i + n]
            .iter()
            .zip(frames)
            .all(|(p, f)| p.payload == f[..])
    });
    let Some(start) = start else {
        let best = (0..=packets.len() - n)
            .map(|i| {
                let matching = packets[i..i + n]
                    .iter()
                    .zip(frames)
                    .take_while(|(p, f)| p.payload == f[..])
                    .count();
                (matching, i)
            })
            .max();
        panic!(
            "the {n} frames of welcome.wav never arrive in order; best run: {best:?} \
             (matching frames, first packet); first payload: {:02x?}",
            packets[0].payload.get(..16)
        );
    };
    let silence = codec.silence_byte();
    for p in &packets[..start] {
        assert!(
            p.payload.iter().all(|&b| b == silence),
            "before the prompt only silence may be sent: {p:?}"
        );
    }
    let in_prompt = &packets[start..start + n];
    for w in in_prompt.windows(2) {
        assert_eq!(
            w[1].timestamp.wrapping_sub(w[0].timestamp),
            160,
            "timestamps inside the prompt step by 160"
        );
    }
    assert_eq!(
        in_prompt
            .iter()
            .flat_map(|p| p.payload.iter().copied())
            .collect::<Vec<u8>>(),
        prompt.bytes(codec),
        "the concatenated payloads are the prompt's {} bytes",
        codec.name()
    );
    // Paced in real time, not sent in a burst (a broken pacer). Lateness is the benchmark's
    // business (docs/BENCHMARKS.md), so the upper bound only catches a stalled stream.
    let span_ms = (in_prompt[n - 1].time_us - in_prompt[0].time_us) / 1000;
    let expected_ms = (n as u64 - 1) * 20;
    assert!(
        span_ms * 10 >= expected_ms * 8 && span_ms <= expected_ms * 4,
        "the prompt's {n} packets took {span_ms} ms to arrive, {expected_ms} ms expected"
    );
    let trace = server.trace(&run.call_id);
    assert_outcome(&trace, "caller-hangup", &server);
    server.assert_running();
}

/// 7. In-band DTMF in the caller's PCMU: a 20 ms burst of `9` is too short to count; a
///    100 ms `1` is a key press.
#[test]
fn in_band_dtmf_is_detected_and_a_20ms_blip_is_not() {
    let _serial = sipp::serial();
    let (dir, mut server) = seed_server();
    let signal = ToneBuilder::new()
        .silence(10)
        .tone('9', 1)
        .silence(15)
        .tone('1', 5)
        .silence(10);
    let pcap = dir.logs.join("inband-9short-1.pcap");
    sipp::write_rtp_pcap(&pcap, 0, &signal.frames(Codec::Pcmu));
    let run = Sipp::call(
        &dir,
        "inband",
        SEED_DID,
        &[
            Step::Pause(1000),
            Step::Pcap(pcap.clone()),
            Step::Pause(2500),
            Step::Bye,
        ],
    )
    .timeout(30)
    .run(&server);
    run.assert_success(&server);

    let trace = server.trace(&run.call_id);
    assert_eq!(
        trace.gather_results().first(),
        Some(&json!({"digits": "1"})),
        "the 100 ms `1` is the first key (a detected 20 ms `9` would lead to dnc)\n{}",
        trace.pretty()
    );
    assert_path(&trace, &["welcome", "has_license"], &server);
    assert!(
        !trace.0["digits"].to_string().contains('9'),
        "the 20 ms `9` must not be detected\n{}",
        trace.pretty()
    );
    server.assert_running();
}

/// 8. CANCEL while ringing: 200 for the CANCEL, 487 for the INVITE, ACK matched.
#[test]
fn cancel_before_answer_gets_200_and_487() {
    let _serial = sipp::serial();
    let dir = CallDir::seed();
    let mut server = Server::start(
        &dir,
        &ServerOptions {
            answer_delay_ms: Some(3000),
            ..ServerOptions::default()
        },
    );
    let sipp = Sipp::file(&dir, "uac_cancel.xml", SEED_DID).timeout(20);
    let capture = Capture::start(&dir.logs.join("cancel.pcap"), sipp.media_port)
        .unwrap_or_else(|e| panic!("packet capture is impossible here: {e}"));
    let run = sipp.run(&server);
    let pcap = capture.stop();
    run.assert_success(&server);
    let rtp = sipp::rtp_packets(&pcap, run.media_port).expect("tshark");
    assert!(
        rtp.is_empty(),
        "a call cancelled before the answer must get no media, got {} RTP packets",
        rtp.len()
    );
    let finals = run.responses_to("1 INVITE");
    let codes: Vec<&str> = finals.iter().map(|m| m.start_line()).collect();
    assert!(
        !codes.iter().any(|c| c.starts_with("SIP/2.0 200")),
        "the INVITE must not be answered after the CANCEL: {codes:?}"
    );
    assert_eq!(
        codes
            .iter()
            .filter(|c| c.starts_with("SIP/2.0 487"))
            .count(),
        1,
        "exactly one 487 (a retransmitted 487 means the ACK did not match): {codes:?}\n{}",
        run.report()
    );
    // No trace, or one that says the caller hung up.
    std::thread::sleep(Duration::from_millis(1000));
    for file in sipp::trace_files(&server.traces) {
        let trace: Value =
            serde_json::from_str(&sipp::read_to_string_lossy(&file)).expect("trace is JSON");
        assert_eq!(
            trace["outcome"]["action"],
            json!("caller-hangup"),
            "a cancelled call's trace\n{trace:#}"
        );
    }
    sipp::assert_options_answered(&dir, &server);
    server.assert_running();
}

/// 9. The caller hangs up in the middle of the prompt: 200, and the call ends at once.
#[test]
fn caller_bye_mid_prompt_is_answered_and_ends_the_call() {
    let _serial = sipp::serial();
    let (dir, mut server) = seed_server();
    let run = Sipp::call(
        &dir,
        "bye-mid-prompt",
        SEED_DID,
        &[Step::Pause(2000), Step::Bye],
    )
    .timeout(20)
    .run(&server);
    run.assert_success(&server);
    let ok = run.responses_to("2 BYE");
    assert!(
        ok.iter().any(|m| m.start_line().starts_with("SIP/2.0 200")),
        "BYE answered 200\n{}",
        run.report()
    );
    let trace = server.trace(&run.call_id);
    assert_path(&trace, &["welcome"], &server);
    assert_outcome(&trace, "caller-hangup", &server);
    assert_eq!(
        trace.gather_results(),
        vec![json!("hung-up")],
        "{}",
        trace.pretty()
    );
    let duration = trace.0["duration_ms"].as_u64();
    // Played on, the call would last the whole prompt and its 5 s timeout at least.
    assert!(
        duration.is_some_and(|d| d < WELCOME_MS),
        "the call should end with the BYE at ~2 s, not play on: duration_ms {duration:?}"
    );
    server.assert_running();
}

/// 10. Hold (re-INVITE a=sendonly → a=recvonly) and resume mid-call; digits still work.
#[test]
fn reinvite_hold_and_resume_then_digits_still_work() {
    let _serial = sipp::serial();
    let (dir, mut server) = seed_server();
    let run = Sipp::call(
        &dir,
        "hold-resume",
        SEED_DID,
        &[
            Step::Pause(1000),
            Step::Hold,
            Step::Pause(1000),
            Step::Resume,
            Step::Pause(500),
            Step::Info('1'),
            Step::Pause(1500),
            Step::Info('2'),
            Step::AwaitBye(20_000),
        ],
    )
    .timeout(45)
    .run(&server);
    run.assert_success(&server);

    let ok = |cseq: &str| {
        run.responses_to(cseq)
            .into_iter()
            .find(|m| m.start_line().starts_with("SIP/2.0 200"))
            .unwrap_or_else(|| panic!("no 200 for {cseq}\n{}", run.report()))
    };
    let hold = ok("2 INVITE");
    assert!(
        hold.header("Content-Type")
            .is_some_and(|t| t.starts_with("application/sdp")),
        "hold answer carries SDP:\n{}",
        hold.text
    );
    assert!(
        hold.body().contains("a=recvonly"),
        "the answer to a=sendonly must be a=recvonly:\n{}",
        hold.text
    );
    let resume = ok("3 INVITE");
    assert!(
        resume.body().contains("m=audio"),
        "resume answer carries SDP:\n{}",
        resume.text
    );
    assert!(
        !resume.body().contains("a=recvonly")
            && !resume.body().contains("a=inactive")
            && !resume.body().contains("a=sendonly"),
        "the answer to a=sendrecv must be sendrecv again:\n{}",
        resume.text
    );

    let trace = server.trace(&run.call_id);
    assert_path(&trace, &["welcome", "has_license", "unqualified"], &server);
    assert_outcome(&trace, "hangup", &server);
    server.assert_running();
}

/// 11. A number with no IVR: 404.
#[test]
fn unknown_did_is_rejected_with_404() {
    let _serial = sipp::serial();
    let (dir, mut server) = seed_server();
    let run = Sipp::file(&dir, "uac_unknown_did.xml", "+19995550000")
        .timeout(15)
        .run(&server);
    run.assert_success(&server);
    let codes: Vec<String> = run
        .responses_to("1 INVITE")
        .iter()
        .map(|m| m.start_line().to_owned())
        .collect();
    assert_eq!(
        codes
            .iter()
            .filter(|c| c.starts_with("SIP/2.0 404"))
            .count(),
        1,
        "one 404 (a retransmitted 404 means the ACK did not match): {codes:?}"
    );
    server.assert_running();
    sipp::assert_options_answered(&dir, &server);
}

/// 12. Hot reload mid-call: call A started on the old tree keeps it; call B after the edit
///     gets the new one.
#[test]
fn editing_the_tree_mid_call_changes_new_calls_only() {
    let _serial = sipp::serial();
    let (dir, mut server) = seed_server();
    // A: waits in welcome (which repeats on timeout) until B is done, then presses 1.
    let a = Sipp::call(
        &dir,
        "reload-a",
        SEED_DID,
        &[
            Step::Pause(24_000),
            Step::Info('1'),
            Step::Pause(1500),
            Step::Bye,
        ],
    )
    .timeout(60)
    .spawn(&server);
    std::thread::sleep(Duration::from_millis(2000));

    let tree_path = dir.ivrs.join("plumber-qualifier.json");
    let old = std::fs::read_to_string(&tree_path).expect("read tree");
    let mut tree: Value = serde_json::from_str(&old).expect("tree JSON");
    tree["nodes"]["welcome"]["gather"]["1"] = json!("unqualified");
    dir.replace(
        "plumber-qualifier.json",
        &serde_json::to_string_pretty(&tree).expect("tree JSON"),
    );
    std::thread::sleep(Duration::from_millis(1500));

    let b_started = std::time::Instant::now();
    let b = Sipp::call(
        &dir,
        "reload-b",
        SEED_DID,
        &[Step::Pause(1000), Step::Info('1'), Step::AwaitBye(20_000)],
    )
    .timeout(30)
    .run(&server);
    b.assert_success(&server);
    let b_trace = server.trace(&b.call_id);
    assert_path(&b_trace, &["welcome", "unqualified"], &server);
    assert_outcome(&b_trace, "hangup", &server);
    // The test's own precondition (A presses 1 at ~24 s, B starts at ~3.5 s), with room for
    // a loaded machine.
    assert!(
        b_started.elapsed() < Duration::from_millis(20_000),
        "call B took {:?}; call A presses 1 at ~24 s and must do so after B ended",
        b_started.elapsed()
    );

    let a = a.wait();
    a.assert_success(&server);
    let a_trace = server.trace(&a.call_id);
    assert_eq!(
        a_trace.path().iter().find(|n| *n != "welcome"),
        Some(&"has_license".to_owned()),
        "call A started on the old tree and must keep it\n{}",
        a_trace.pretty()
    );
    assert_outcome(&a_trace, "caller-hangup", &server);
    assert_ne!(
        a_trace.0["version"], b_trace.0["version"],
        "A and B ran different versions"
    );
    server.assert_running();
}

/// Nothing leaks: with an RTP range of two ports, three calls in a row all succeed; afterwards
/// OPTIONS is answered, the server holds as many sockets as before the calls, and every RTP
/// port of its range can be bound again.
#[test]
fn calls_leave_no_port_or_socket_behind() {
    let _serial = sipp::serial();
    let dir = CallDir::seed();
    let mut server = Server::start(
        &dir,
        &ServerOptions {
            rtp_ports: 2,
            ..ServerOptions::default()
        },
    );
    sipp::assert_options_answered(&dir, &server);
    let sockets_before = server.open_sockets();
    let mut call_ids = Vec::new();
    for i in 0..3 {
        let run = Sipp::call(
            &dir,
            &format!("sequential-{i}"),
            SEED_DID,
            &[
                Step::Pause(1000),
                Step::Info('1'),
                Step::Pause(500),
                Step::Bye,
            ],
        )
        .timeout(20)
        .run(&server);
        run.assert_success(&server);
        call_ids.push(run.call_id);
    }
    for id in &call_ids {
        let trace = server.trace(id);
        assert_path(&trace, &["welcome", "has_license"], &server);
        assert_outcome(&trace, "caller-hangup", &server);
    }
    sipp::assert_options_answered(&dir, &server);
    // Give the runtime a moment to drop the last call's media socket.
    let mut sockets_after = server.open_sockets();
    for _ in 0..20 {
        if sockets_after <= sockets_before {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        sockets_after = server.open_sockets();
    }
    assert!(
        sockets_after <= sockets_before,
        "the server held {sockets_before} sockets before the calls and {sockets_after} after\n{}",
        server.log()
    );
    let (lo, hi) = server.rtp;
    if let Err(e) = sipp::ports_bindable(lo, hi) {
        panic!("{e}\n{}", server.log());
    }
    server.assert_running();
}

/// Type-ahead: `2` right behind `1` (no pause) lands while has_license is being entered and
/// must still count for has_license.
#[test]
fn keys_typed_ahead_are_kept_for_the_next_menu() {
    let _serial = sipp::serial();
    let (dir, mut server) = seed_server();
    let run = Sipp::call(
        &dir,
        "type-ahead",
        SEED_DID,
        &[
            Step::Pause(1000),
            Step::Info('1'),
            Step::Info('2'),
            Step::AwaitBye(20_000),
        ],
    )
    .timeout(40)
    .run(&server);
    run.assert_success(&server);
    let trace = server.trace(&run.call_id);
    assert_path(&trace, &["welcome", "has_license", "unqualified"], &server);
    assert_outcome(&trace, "hangup", &server);
    server.assert_running();
}

/// The caller hangs up during the goodbye prompt: the runtime answers the BYE and does not
/// send one of its own afterwards.
#[test]
fn caller_bye_during_the_goodbye_prompt_wins_the_race() {
    let _serial = sipp::serial();
    let (dir, mut server) = seed_server();
    let run = Sipp::call(
        &dir,
        "bye-during-goodbye",
        SEED_DID,
        &[
            Step::Pause(1000),
            Step::Info('1'),
            Step::Pause(1000),
            Step::Info('2'),
            // not_qualified.wav (4.2 s) is playing now
            Step::Pause(1500),
            Step::Bye,
            Step::Pause(2000),
        ],
    )
    .timeout(30)
    .run(&server);
    run.assert_success(&server);
    assert!(
        run.requests("BYE").is_empty(),
        "no BYE from the runtime after the caller's\n{}",
        run.report()
    );
    let trace = server.trace(&run.call_id);
    assert_path(&trace, &["welcome", "has_license", "unqualified"], &server);
    let outcome = trace.outcome();
    assert!(
        outcome == "hangup" || outcome == "caller-hangup",
        "outcome {outcome}\n{}",
        trace.pretty()
    );
    server.assert_running();
    sipp::assert_options_answered(&dir, &server);
}

/// Late offer: an INVITE without SDP gets the runtime's offer in the 200, the ACK carries the
/// answer, and the call works (prompt RTP to the ACK's address, digits, BYE from the IVR).
#[test]
fn an_invite_without_sdp_gets_an_offer_and_the_ack_answers() {
    let _serial = sipp::serial();
    let (dir, mut server) = seed_server();
    let sipp = Sipp::call_late_offer(
        &dir,
        "late-offer",
        SEED_DID,
        &[
            Step::Pause(1500),
            Step::Info('1'),
            Step::Pause(1000),
            Step::Info('2'),
            Step::AwaitBye(20_000),
        ],
    )
    .timeout(40);
    let capture = Capture::start(&dir.logs.join("late-offer.pcap"), sipp.media_port)
        .unwrap_or_else(|e| panic!("packet capture is impossible here: {e}"));
    let run = sipp.run(&server);
    let pcap = capture.stop();
    run.assert_success(&server);
    let offer = run
        .responses_to("1 INVITE")
        .into_iter()
        .find(|m| m.start_line().starts_with("SIP/2.0 200"))
        .unwrap_or_else(|| panic!("no 200\n{}", run.report()));
    let m_line = offer
        .body()
        .lines()
        .find(|l| l.starts_with("m=audio"))
        .unwrap_or_default()
        .to_owned();
    let formats: Vec<&str> = m_line.split_whitespace().skip(3).collect();
    assert!(
        formats.contains(&"0") && offer.body().contains("telephone-event/8000"),
        "the offer in the 200 must include PCMU and telephone-event:\n{}",
        offer.text
    );
    let rtp = sipp::rtp_packets(&pcap, run.media_port).expect("tshark");
    assert!(
        rtp.len() > 50 && rtp.iter().all(|p| p.payload_type == 0),
        "the prompt must be sent as PCMU to the address in the ACK: {} packets, types {:?}",
        rtp.len(),
        rtp.iter()
            .map(|p| p.payload_type)
            .collect::<std::collections::BTreeSet<_>>()
    );
    let trace = server.trace(&run.call_id);
    assert_path(&trace, &["welcome", "has_license", "unqualified"], &server);
    assert_outcome(&trace, "hangup", &server);
    server.assert_running();
}

/// Symmetric RTP: the SDP advertises one port, the caller's RTP comes from another; once the
/// caller's RTP arrives the prompt must follow it there.
#[test]
fn prompts_follow_the_callers_rtp_source() {
    let _serial = sipp::serial();
    let dir = CallDir::seed();
    let mut server = Server::start(
        &dir,
        &ServerOptions {
            rtp_ports: 2,
            ..ServerOptions::default()
        },
    );
    // The advertised port is held (so nothing bounces) but is not where the caller sends from.
    let advertised = std::net::UdpSocket::bind(("127.0.0.1", sipp::free_ports(2))).expect("bind");
    let advertised_port = advertised.local_addr().expect("addr").port();
    let caller = std::net::UdpSocket::bind(("127.0.0.1", sipp::free_ports(2))).expect("bind");
    let call = Sipp::call(
        &dir,
        "symmetric-rtp",
        SEED_DID,
        &[Step::Pause(5000), Step::Bye],
    )
    .advertising_media_port(advertised_port)
    .timeout(30)
    .spawn(&server);
    std::thread::sleep(Duration::from_millis(1000));
    let before = sipp::count_rtp(&advertised, Duration::from_millis(300));
    let (lo, hi) = server.rtp;
    sipp::spray_rtp(
        &caller,
        lo,
        hi,
        &ToneBuilder::new().silence(5).frames(Codec::Pcmu),
    );
    let followed = sipp::count_rtp(&caller, Duration::from_millis(2000));
    let run = call.wait();
    run.assert_success(&server);
    assert!(
        before >= 10,
        "before any caller RTP the prompt goes to the SDP address: {before} packets in 300 ms"
    );
    assert!(
        followed >= 80,
        "after the caller's RTP came from port {}, the prompt should go there: {followed} \
         packets in 2 s\n{}",
        caller.local_addr().expect("addr").port(),
        server.log()
    );
    server.assert_running();
}

/// A packet from UDP source port 0 cannot be answered: it must not become the call's media
/// destination. (SIPp's pcap play sends from port 0 when its SDP has no `[media_port]`, which
/// is how this test makes one.)
#[test]
fn rtp_from_source_port_zero_does_not_hijack_the_media() {
    let _serial = sipp::serial();
    let (dir, mut server) = seed_server();
    let silence = dir.logs.join("silence.pcap");
    sipp::write_rtp_pcap(
        &silence,
        0,
        &ToneBuilder::new().silence(10).frames(Codec::Pcmu),
    );
    let advertised = std::net::UdpSocket::bind(("127.0.0.1", sipp::free_ports(2))).expect("bind");
    let advertised_port = advertised.local_addr().expect("addr").port();
    let call = Sipp::call(
        &dir,
        "rtp-from-port-0",
        SEED_DID,
        &[
            Step::Pause(500),
            Step::Pcap(silence),
            Step::Pause(3500),
            Step::Bye,
        ],
    )
    .advertising_media_port(advertised_port)
    .timeout(30)
    .spawn(&server);
    // Until 1.5 s into the call (the port-0 packets come at ~0.5 s); then 2 s more.
    let early = sipp::count_rtp(&advertised, Duration::from_millis(1500));
    let after = sipp::count_rtp(&advertised, Duration::from_millis(2000));
    let run = call.wait();
    run.assert_success(&server);
    assert!(
        early >= 10,
        "the prompt goes to the SDP address from the start: {early} packets in 1.5 s\n{}",
        server.log()
    );
    assert!(
        after >= 80,
        "the prompt must keep going to the SDP address after RTP from port 0 arrived: \
         {early} packets in the first 1.5 s, {after} in the 2 s after\n{}",
        server.log()
    );
    server.assert_running();
}

/// Three calls at once, each with its own keys: every trace has its own path (no digit or
/// media crosses between calls).
#[test]
fn concurrent_calls_keep_their_own_digits() {
    let _serial = sipp::serial();
    let (dir, mut server) = seed_server();
    let a = Sipp::call(
        &dir,
        "concurrent-a",
        SEED_DID,
        &[
            Step::Pause(1000),
            Step::Info('1'),
            Step::Pause(1000),
            Step::Info('2'),
            Step::AwaitBye(20_000),
        ],
    )
    .timeout(40)
    .spawn(&server);
    let b = Sipp::call(
        &dir,
        "concurrent-b",
        SEED_DID,
        &[
            Step::Pause(1200),
            Step::Rfc2833('1'),
            Step::Pause(1000),
            // Not the same pcap again: SIPp replays it byte for byte (same SSRC, sequence
            // numbers and timestamp), which a receiver rightly drops as a duplicate.
            Step::Info('1'),
            Step::Pause(1000),
            Step::Rfc2833('2'),
            Step::Pause(300),
            Step::AwaitBye(20_000),
        ],
    )
    .timeout(40)
    .spawn(&server);
    let c = Sipp::call(
        &dir,
        "concurrent-c",
        SEED_DID,
        &[Step::Pause(4000), Step::Bye],
    )
    .timeout(40)
    .spawn(&server);
    let (a, b, c) = (a.wait(), b.wait(), c.wait());
    for run in [&a, &b, &c] {
        run.assert_success(&server);
    }
    assert_path(
        &server.trace(&a.call_id),
        &["welcome", "has_license", "unqualified"],
        &server,
    );
    assert_path(
        &server.trace(&b.call_id),
        &["welcome", "has_license", "service_area", "out_of_area"],
        &server,
    );
    let c_trace = server.trace(&c.call_id);
    assert_path(&c_trace, &["welcome"], &server);
    assert_outcome(&c_trace, "caller-hangup", &server);
    server.assert_running();
}

/// The in-band signal of test 7 is what the runtime's detector (fed directly, no call) reports
/// as exactly one `1`: a failure of the call test is then the call path's, not the signal's.
#[test]
fn the_in_band_test_signal_holds_one_key() {
    let signal = ToneBuilder::new()
        .silence(10)
        .tone('9', 1)
        .silence(15)
        .tone('1', 5)
        .silence(10);
    let mut detector = wasm_ivr::media::dtmf::InbandDetector::new();
    let mut keys = String::new();
    for frame in signal.frames(Codec::Pcmu) {
        detector.feed_g711(Codec::Pcmu, &frame, |d| keys.push(d.as_char()));
    }
    assert_eq!(keys, "1");
}

/// The pcap writer's output reads back (tshark) as the RTP stream it was given.
#[test]
fn the_pcap_writer_writes_rtp_that_tshark_reads_back() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pcap = dir.path().join("x.pcap");
    let frames = ToneBuilder::new().tone('5', 3).frames(Codec::Pcmu);
    sipp::write_rtp_pcap(&pcap, 0, &frames);
    let packets = match sipp::rtp_packets(&pcap, 10_000) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(packets.len(), 3, "{packets:?}");
    for (i, p) in packets.iter().enumerate() {
        assert_eq!(p.seq, 1000 + i as u16);
        assert_eq!(p.timestamp, 8000 + 160 * i as u32);
        assert_eq!(p.payload_type, 0);
        assert_eq!(p.marker, i == 0);
        assert_eq!(p.ssrc, 0x1234_5678);
        assert_eq!(p.payload, frames[i]);
        assert_eq!(p.time_us, 20_000 * i as u64);
    }
}

// ---------------------------------------------------------------------------------------------
// In-band tolerances carried in a call's audio: frequency deviation and twist
// ---------------------------------------------------------------------------------------------

/// The level of the louder tone of the tolerance signals (as [`ToneBuilder`]: about -15 dBm0).
const TOLERANCE_AMP: f64 = 6000.0;

/// An in-band signal whose tones may be off frequency and unequal in level, built 20 ms frame
/// by 20 ms frame (what [`ToneBuilder`] cannot: its tones are exact and equal).
#[derive(Debug, Default, Clone)]
struct SkewedTones {
    pcm: Vec<i16>,
}

/// How one key's two tones are bent.
#[derive(Debug, Clone, Copy)]
struct Skew {
    /// Frequency factors of the row (low) and column (high) tone.
    row_scale: f64,
    col_scale: f64,
    /// Attenuation in dB of the row and column tone below [`TOLERANCE_AMP`].
    row_db: f64,
    col_db: f64,
}

impl Skew {
    /// Both tones shifted by `percent`, equal levels.
    fn shifted(percent: f64) -> Skew {
        let s = 1.0 + percent / 100.0;
        Skew {
            row_scale: s,
            col_scale: s,
            row_db: 0.0,
            col_db: 0.0,
        }
    }

    /// Normal twist: the row tone `db` below the column tone.
    fn row_below(db: f64) -> Skew {
        Skew {
            row_db: db,
            ..Skew::shifted(0.0)
        }
    }

    /// Reverse twist: the column tone `db` below the row tone.
    fn col_below(db: f64) -> Skew {
        Skew {
            col_db: db,
            ..Skew::shifted(0.0)
        }
    }
}

impl SkewedTones {
    fn new() -> SkewedTones {
        SkewedTones::default()
    }

    /// Appends `frames` × 20 ms of silence.
    fn silence(mut self, frames: usize) -> SkewedTones {
        self.pcm
            .extend(std::iter::repeat_n(0, frames * FRAME_SAMPLES));
        self
    }

    /// Appends `frames` × 20 ms of the key's tones, bent by `skew`.
    fn tone(mut self, key: char, skew: Skew, frames: usize) -> SkewedTones {
        let (row, col) = sipp::dtmf_frequencies(key);
        let (fr, fc) = (row * skew.row_scale, col * skew.col_scale);
        let ar = TOLERANCE_AMP / 10f64.powf(skew.row_db / 20.0);
        let ac = TOLERANCE_AMP / 10f64.powf(skew.col_db / 20.0);
        for i in 0..frames * FRAME_SAMPLES {
            let t = i as f64 / 8000.0;
            let v = ar * (std::f64::consts::TAU * fr * t).sin()
                + ac * (std::f64::consts::TAU * fc * t).sin();
            self.pcm.push(v.round() as i16);
        }
        self
    }

    /// The signal in PCMU, one payload per 20 ms.
    fn pcmu_frames(&self) -> Vec<Vec<u8>> {
        self.pcm
            .chunks(FRAME_SAMPLES)
            .map(|chunk| {
                let mut pcm = [0i16; FRAME_SAMPLES];
                pcm[..chunk.len()].copy_from_slice(chunk);
                let mut out = vec![0u8; FRAME_SAMPLES];
                let n = Codec::Pcmu.encode(&pcm, &mut out).expect("encode a frame");
                out.truncate(n);
                out
            })
            .collect()
    }
}

/// One key of `skew`, 100 ms, between 200 ms silences.
fn one_skewed_key(key: char, skew: Skew) -> SkewedTones {
    SkewedTones::new()
        .silence(10)
        .tone(key, skew, 5)
        .silence(10)
}

/// `1` shifted +3.5 % and then `1` shifted −3.5 % (both tones), 100 ms each, 200 ms apart.
fn one_shifted_both_ways_by_3_5_percent() -> SkewedTones {
    SkewedTones::new()
        .silence(10)
        .tone('1', Skew::shifted(3.5), 5)
        .silence(10)
        .tone('1', Skew::shifted(-3.5), 5)
        .silence(10)
}

/// `9` bent by `reject` (must not be detected: it would lead to `dnc`), then `1` bent by
/// `accept` (must be detected: `has_license`), 100 ms each, 300 ms apart.
fn nine_rejected_then_one_accepted(reject: Skew, accept: Skew) -> SkewedTones {
    SkewedTones::new()
        .silence(10)
        .tone('9', reject, 5)
        .silence(15)
        .tone('1', accept, 5)
        .silence(10)
}

/// What the runtime's detector, fed directly (no call), reports for a signal.
fn detected_keys(signal: &SkewedTones) -> String {
    let mut detector = wasm_ivr::media::dtmf::InbandDetector::new();
    let mut keys = String::new();
    for frame in signal.pcmu_frames() {
        detector.feed_g711(Codec::Pcmu, &frame, |d| keys.push(d.as_char()));
    }
    keys
}

/// The tolerance signals of tests 7b-7e, checked against the runtime's detector directly: a
/// failure of a call test is then the call path's, not the signal's.
#[test]
fn the_in_band_tolerance_signals_hold_the_expected_keys() {
    let cases: [(&str, SkewedTones, &str); 10] = [
        ("1 +1.5 %", one_skewed_key('1', Skew::shifted(1.5)), "1"),
        ("1 -1.5 %", one_skewed_key('1', Skew::shifted(-1.5)), "1"),
        ("1 +3.5 %", one_skewed_key('1', Skew::shifted(3.5)), ""),
        ("1 -3.5 %", one_skewed_key('1', Skew::shifted(-3.5)), ""),
        ("1 ±3.5 %", one_shifted_both_ways_by_3_5_percent(), ""),
        (
            "1 row -7.5 dB",
            one_skewed_key('1', Skew::row_below(7.5)),
            "1",
        ),
        (
            "9 row -8.5 dB",
            one_skewed_key('9', Skew::row_below(8.5)),
            "",
        ),
        (
            "1 col -3.5 dB",
            one_skewed_key('1', Skew::col_below(3.5)),
            "1",
        ),
        (
            "9 col -4.5 dB",
            one_skewed_key('9', Skew::col_below(4.5)),
            "",
        ),
        (
            "9 row -8.5 dB, 1 row -7.5 dB",
            nine_rejected_then_one_accepted(Skew::row_below(8.5), Skew::row_below(7.5)),
            "1",
        ),
    ];
    for (name, signal, expected) in &cases {
        assert_eq!(detected_keys(signal), *expected, "{name}");
    }
    let reverse = nine_rejected_then_one_accepted(Skew::col_below(4.5), Skew::col_below(3.5));
    assert_eq!(detected_keys(&reverse), "1", "9 col -4.5 dB, 1 col -3.5 dB");
    // The rejected signals are rejected for the bend, not for the key or the level: the same
    // tones unbent are detected.
    for key in ['1', '9'] {
        assert_eq!(
            detected_keys(&one_skewed_key(key, Skew::shifted(0.0))),
            key.to_string(),
            "{key} unbent"
        );
    }
}

/// A seed call that plays `signal` one second in and hangs up 2.5 s after; the detected key
/// must be exactly `1` (welcome → has_license) and no `9` may have been seen.
fn in_band_call_detects_one(name: &str, signal: &SkewedTones) {
    let _serial = sipp::serial();
    let (dir, mut server) = seed_server();
    let pcap = dir.logs.join(format!("{name}.pcap"));
    sipp::write_rtp_pcap(&pcap, 0, &signal.pcmu_frames());
    let run = Sipp::call(
        &dir,
        name,
        SEED_DID,
        &[
            Step::Pause(1000),
            Step::Pcap(pcap),
            Step::Pause(2500),
            Step::Bye,
        ],
    )
    .timeout(30)
    .run(&server);

    // The path first: a wrongly detected `9` shows as dnc (whose hang-up also fails SIPp's BYE).
    let trace = server.trace(&run.call_id);
    assert_eq!(
        trace.gather_results().first(),
        Some(&json!({"digits": "1"})),
        "{name}: the `1` is the first key (a detected `9` would lead to dnc)\n{}",
        trace.pretty()
    );
    assert_path(&trace, &["welcome", "has_license"], &server);
    assert!(
        !trace.0["digits"].to_string().contains('9'),
        "{name}: no `9` may be detected\n{}",
        trace.pretty()
    );
    run.assert_success(&server);
    assert_outcome(&trace, "caller-hangup", &server);
    server.assert_running();
}

/// 7b. In-band `1` with both tones 1.5 % high is a key press.
#[test]
fn in_band_dtmf_1_5_percent_high_is_detected() {
    in_band_call_detects_one(
        "inband-1-plus-1.5pct",
        &one_skewed_key('1', Skew::shifted(1.5)),
    );
}

/// 7c. In-band `1` with both tones 1.5 % low is a key press.
#[test]
fn in_band_dtmf_1_5_percent_low_is_detected() {
    in_band_call_detects_one(
        "inband-1-minus-1.5pct",
        &one_skewed_key('1', Skew::shifted(-1.5)),
    );
}

/// 7d. In-band `1` with both tones 3.5 % high, then 3.5 % low, is no key at all: the call stays
///     in `welcome` until the caller hangs up after the prompt.
#[test]
fn in_band_dtmf_3_5_percent_off_is_not_detected() {
    let _serial = sipp::serial();
    let (dir, mut server) = seed_server();
    let pcap = dir.logs.join("inband-1-pm-3.5pct.pcap");
    sipp::write_rtp_pcap(
        &pcap,
        0,
        &one_shifted_both_ways_by_3_5_percent().pcmu_frames(),
    );
    let run = Sipp::call(
        &dir,
        "inband-1-pm-3.5pct",
        SEED_DID,
        // The signal ends ~1.7 s in; BYE ~8 s in: after the 6.3 s prompt, before the 5 s
        // first-key timeout would replay welcome.
        &[
            Step::Pause(1000),
            Step::Pcap(pcap),
            Step::Pause(7000),
            Step::Bye,
        ],
    )
    .timeout(30)
    .run(&server);

    // The path first: a detected `1` shows as has_license.
    let trace = server.trace(&run.call_id);
    assert!(
        trace.path().iter().all(|node| node == "welcome"),
        "the call must never leave welcome\n{}\n{}",
        trace.pretty(),
        server.log()
    );
    let gathers = trace.gather_results();
    assert!(
        matches!(gathers.first(), Some(g) if *g == json!("timeout") || *g == json!("hung-up")),
        "the first gather times out or ends with the caller's BYE, no digits: {gathers:?}\n{}",
        trace.pretty()
    );
    assert!(
        !trace.0["digits"].to_string().contains('1'),
        "no `1` may be detected\n{}",
        trace.pretty()
    );
    run.assert_success(&server);
    assert_outcome(&trace, "caller-hangup", &server);
    server.assert_running();
}

/// 7e. Normal twist: a `9` whose row tone is 8.5 dB below its column is no key (it would lead
///     to dnc); the `1` after it with the row 7.5 dB below is.
#[test]
fn in_band_dtmf_normal_twist_limit_is_8_db() {
    in_band_call_detects_one(
        "inband-twist-row",
        &nine_rejected_then_one_accepted(Skew::row_below(8.5), Skew::row_below(7.5)),
    );
}

/// 7f. Reverse twist: a `9` whose column tone is 4.5 dB below its row is no key; the `1`
///     after it with the column 3.5 dB below is.
#[test]
fn in_band_dtmf_reverse_twist_limit_is_4_db() {
    in_band_call_detects_one(
        "inband-twist-col",
        &nine_rejected_then_one_accepted(Skew::col_below(4.5), Skew::col_below(3.5)),
    );
}
