//! Edge hardening, media: RTP, RFC 4733 events and in-band tones count only from the caller's
//! own media source; RTP timeout and maximum call duration.
//!
//! Real binary, real SIPp callers, attackers as plain UDP sockets on other loopback addresses
//! (127.0.0.2) or other ports; every call and every attack is bounded in count and time.

mod common;

use common::sipp::{
    self, CallDir, PCAP_SSRC, PcapRtp, SEED_DID, Server, ServerOptions, Sipp, SippRun, Step,
    ToneBuilder,
};
use serde_json::Value;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use wasm_ivr::media::codec::Codec;

/// The payload type SIPp's offer gives telephone-event.
const TE: u8 = 101;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Waits (bounded) for the call record of `call_id`.
fn call_record(store: &Path, call_id: &str, server: &Server) -> Value {
    let store = store.to_str().expect("UTF-8 path");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (code, out, err) =
            common::run_wasm_ivr(&["calls", "--store", store, "--json", "--limit", "1000"]);
        assert_eq!(code, Some(0), "wasm-ivr calls failed: {err}");
        let records: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
        if let Some(r) = records
            .as_array()
            .and_then(|a| a.iter().find(|r| r["call_id"] == call_id))
        {
            return r.clone();
        }
        if Instant::now() > deadline {
            panic!(
                "no call record for {call_id} within 15 s: {out}\n{}",
                server.log()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The do-not-call list.
fn dnc_list(store: &Path) -> String {
    let store = store.to_str().expect("UTF-8 path");
    let (code, out, err) = common::run_wasm_ivr(&["dnc", "--store", store, "list"]);
    assert_eq!(code, Some(0), "wasm-ivr dnc list failed: {err}");
    out
}

/// A seed server with its own store (and the HTTP API for `/metrics`), plus `settings` as its
/// `wasm-ivr.toml`.
fn start(dir: &CallDir, settings: &str) -> (Server, PathBuf) {
    let store = dir.logs.join("edge-media.db");
    let config = dir.logs.join("wasm-ivr.toml");
    std::fs::write(&config, settings).expect("write the settings");
    let server = Server::start(
        dir,
        &ServerOptions {
            rtp_ports: 40,
            store: Some(store.clone()),
            config: Some(config),
            http: true,
            ..ServerOptions::default()
        },
    );
    (server, store)
}

/// A counter's value in the server's `/metrics`.
fn metric(server: &Server, name: &str) -> u64 {
    let port = server
        .http_port
        .unwrap_or_else(|| panic!("no http= in the ready line\n{}", server.log()));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let text = agent
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .call()
        .expect("GET /metrics")
        .body_mut()
        .read_to_string()
        .expect("metrics text");
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
}

/// The eight packets of one RFC 4733 event (volume 10, 120 ms, last three with the E bit), all
/// with the event's start timestamp.
fn event_payloads(event: u8) -> Vec<Vec<u8>> {
    (1..=8u16)
        .map(|i| {
            let duration = i.min(6) * 160;
            let flags = if i >= 6 { 0x8a } else { 0x0a };
            let [hi, lo] = duration.to_be_bytes();
            vec![event, flags, hi, lo]
        })
        .collect()
}

/// The caller's own media: silence, one key (RFC 4733 event or in-band tone), more silence;
/// one SSRC, 20 ms apart, as a phone sends it.
fn caller_stream(path: &Path, key: char, rfc4733: bool) {
    let silence = |frames| ToneBuilder::new().silence(frames).frames(Codec::Pcmu);
    let mut packets = Vec::new();
    let mut timestamp = 8000u32;
    let audio = |packets: &mut Vec<PcapRtp>, frames: Vec<Vec<u8>>, ts: &mut u32| {
        for payload in frames {
            packets.push(PcapRtp {
                payload_type: 0,
                marker: packets.is_empty(),
                timestamp: *ts,
                payload,
            });
            *ts = ts.wrapping_add(160);
        }
    };
    audio(&mut packets, silence(25), &mut timestamp);
    if rfc4733 {
        let event = key.to_digit(10).expect("a digit key") as u8;
        for (i, payload) in event_payloads(event).into_iter().enumerate() {
            packets.push(PcapRtp {
                payload_type: TE,
                marker: i == 0,
                timestamp,
                payload,
            });
        }
        timestamp = timestamp.wrapping_add(8 * 160);
    } else {
        let tone = ToneBuilder::new().tone(key, 5).frames(Codec::Pcmu);
        audio(&mut packets, tone, &mut timestamp);
    }
    audio(&mut packets, silence(150), &mut timestamp);
    sipp::write_rtp_stream_pcap(path, &packets);
}

/// An attacker: a socket that sends its own RTP stream to the call's port.
struct Attacker {
    socket: UdpSocket,
    ssrc: u32,
    seq: u16,
    timestamp: u32,
}

impl Attacker {
    fn bind(ip: &str, ssrc: u32) -> Attacker {
        Attacker {
            socket: UdpSocket::bind((ip, 0)).expect("bind the attacker"),
            ssrc,
            seq: 100,
            timestamp: 1_000_000,
        }
    }

    fn send(&mut self, to: SocketAddr, payload_type: u8, marker: bool, payload: &[u8]) {
        let mut packet = vec![0x80, payload_type | if marker { 0x80 } else { 0 }];
        packet.extend_from_slice(&self.seq.to_be_bytes());
        packet.extend_from_slice(&self.timestamp.to_be_bytes());
        packet.extend_from_slice(&self.ssrc.to_be_bytes());
        packet.extend_from_slice(payload);
        let _ = self.socket.send_to(&packet, to);
        self.seq = self.seq.wrapping_add(1);
        std::thread::sleep(Duration::from_millis(20));
    }

    /// One key: an RFC 4733 event, or 100 ms of its tones in PCMU and 100 ms of silence.
    fn key(&mut self, to: SocketAddr, key: char, rfc4733: bool) {
        if rfc4733 {
            let event = key.to_digit(10).expect("a digit key") as u8;
            for (i, payload) in event_payloads(event).iter().enumerate() {
                self.send(to, TE, i == 0, payload);
            }
            self.timestamp = self.timestamp.wrapping_add(8 * 160);
        } else {
            let frames = ToneBuilder::new()
                .tone(key, 5)
                .silence(5)
                .frames(Codec::Pcmu);
            for (i, payload) in frames.iter().enumerate() {
                self.send(to, 0, i == 0, payload);
                self.timestamp = self.timestamp.wrapping_add(160);
            }
        }
    }
}

/// The injection test: the caller presses `1` (welcome → has_license) in its own stream while
/// an attacker on 127.0.0.2 keeps pressing `9` (welcome's do-not-call key) and one on the
/// caller's own IP, from another port and with the caller's own SSRC, presses `2` (has_license
/// → unqualified) while the caller's media runs.
fn off_path_digits_are_ignored(name: &str, rfc4733: bool) {
    let _serial = sipp::serial();
    let dir = CallDir::seed();
    let (server, store) = start(&dir, "");
    let stream = dir.logs.join(format!("{name}-caller.pcap"));
    caller_stream(&stream, '1', rfc4733);
    let offer: &[u8] = if rfc4733 { &[0, 8, 101] } else { &[0] };
    let caller = "+14155550142";
    let call = Sipp::call_offering(
        &dir,
        name,
        SEED_DID,
        offer,
        &[
            Step::Pause(500),
            Step::Pcap(stream),
            Step::Pause(5000),
            Step::Bye,
        ],
    )
    .caller(caller)
    .timeout(40)
    .spawn(&server);
    let port = call
        .server_rtp_port(Duration::from_secs(15))
        .unwrap_or_else(|| panic!("no 200 OK with SDP in SIPp's log\n{}", server.log()));
    let target: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut other_ip = Attacker::bind("127.0.0.2", 0x0bad_cafe);
    let mut other_port = Attacker::bind("127.0.0.1", PCAP_SSRC);
    // From the 200 OK on (before the caller's first packet too) for 4.5 s.
    let began = Instant::now();
    other_ip.key(target, '9', rfc4733);
    while began.elapsed() < Duration::from_millis(1500) {
        other_ip.key(target, '9', rfc4733);
    }
    // The caller's stream runs from 0.5 s to about 4.2 s after the ACK.
    while began.elapsed() < Duration::from_millis(3300) {
        other_port.key(target, '2', rfc4733);
        other_ip.key(target, '9', rfc4733);
    }
    let run = call.wait();
    run.assert_success(&server);

    let trace = server.trace(&run.call_id);
    assert_eq!(
        trace.path(),
        ["welcome", "has_license"],
        "only the caller's own `1` counts\n{}\n{}",
        trace.pretty(),
        server.log()
    );
    assert_eq!(trace.outcome(), "caller-hangup", "{}", trace.pretty());
    let record = call_record(&store, &run.call_id, &server);
    assert_eq!(record["outcome"], "caller-hangup", "{record}");
    assert_eq!(record["digits"], serde_json::json!(["1"]), "{record}");
    let listed = dnc_list(&store);
    assert!(
        !listed.contains(&caller[1..]),
        "an attacker's `9` put the caller on the do-not-call list: {listed}"
    );
    assert!(
        metric(&server, "wasm_ivr_rtp_foreign_dropped_total") >= 20,
        "the attackers' packets are counted\n{}",
        server.log()
    );
}

#[test]
fn off_path_rfc4733_digits_are_ignored_and_the_callers_count() {
    off_path_digits_are_ignored("inject-rfc4733", true);
}

#[test]
fn off_path_in_band_tones_are_ignored_and_the_callers_count() {
    off_path_digits_are_ignored("inject-inband", false);
}

/// Asserts the runtime ended the call (its BYE reached SIPp) with `outcome` in the trace and
/// the record.
fn assert_ended_by_runtime(run: &SippRun, server: &Server, store: &Path, outcome: &str) {
    run.assert_success(server);
    assert_eq!(
        run.requests("BYE").len(),
        1,
        "the runtime sends the BYE\n{}",
        run.report()
    );
    let trace = server.trace(&run.call_id);
    assert_eq!(
        trace.outcome(),
        outcome,
        "{}\n{}",
        trace.pretty(),
        server.log()
    );
    let record = call_record(store, &run.call_id, server);
    assert_eq!(record["outcome"], outcome, "{record}");
}

/// A caller that sends no RTP is hung up after `rtp_timeout_s`; one on hold is not, and its
/// own RTP after the resume keeps the call up until it stops.
#[test]
fn rtp_timeout_ends_a_silent_call_but_not_one_on_hold() {
    let _serial = sipp::serial();
    let dir = CallDir::seed();
    let (server, store) = start(&dir, "[calls]\nrtp_timeout_s = 2\n");
    let silent = Sipp::call(&dir, "rtp-timeout", SEED_DID, &[Step::AwaitBye(20_000)])
        .timeout(30)
        .run(&server);
    assert_ended_by_runtime(&silent, &server, &store, "media-timeout");
    assert!(
        silent.elapsed >= Duration::from_secs(2),
        "not before the timeout: {:?}",
        silent.elapsed
    );

    let stream = dir.logs.join("after-resume.pcap");
    sipp::write_rtp_pcap(
        &stream,
        0,
        &ToneBuilder::new().silence(200).frames(Codec::Pcmu),
    );
    let held = Sipp::call(
        &dir,
        "rtp-timeout-hold",
        SEED_DID,
        &[
            Step::Pause(300),
            Step::Hold,
            // On hold (a=sendonly, and SIPp sends nothing) for more than twice the timeout: a
            // BYE now fails the call.
            Step::Pause(5000),
            Step::Resume,
            Step::Pcap(stream),
            Step::AwaitBye(20_000),
        ],
    )
    .timeout(40);
    let held = held.run(&server);
    assert_ended_by_runtime(&held, &server, &store, "media-timeout");
    // 0.3 s + 5 s on hold + 4 s of RTP + the 2 s timeout after it.
    assert!(
        held.elapsed >= Duration::from_millis(11_000),
        "the caller's RTP after the resume kept the call: {:?}\n{}",
        held.elapsed,
        server.log()
    );
}

/// `max_duration_s` ends a call however busy it is.
#[test]
fn max_duration_ends_the_call() {
    let _serial = sipp::serial();
    let dir = CallDir::seed();
    let (server, store) = start(&dir, "[calls]\nmax_duration_s = 3\nrtp_timeout_s = 0\n");
    let run = Sipp::call(&dir, "max-duration", SEED_DID, &[Step::AwaitBye(25_000)])
        .timeout(40)
        .run(&server);
    assert_ended_by_runtime(&run, &server, &store, "max-duration");
    assert!(
        run.elapsed >= Duration::from_secs(3),
        "not before the limit: {:?}",
        run.elapsed
    );
}

/// Reflection: an INVITE from 127.0.0.1 whose SDP names 127.0.0.3 gets no RTP sent there
/// until RTP from 127.0.0.3 confirms it; then the prompt goes there.
#[test]
fn an_sdp_address_other_than_the_signalling_source_waits_for_its_own_rtp() {
    let _serial = sipp::serial();
    let dir = CallDir::seed();
    let (server, _store) = start(&dir, "");
    let victim = UdpSocket::bind(("127.0.0.3", sipp::free_ports(2))).expect("bind 127.0.0.3");
    let victim_port = victim.local_addr().expect("addr").port();
    let call = Sipp::call(
        &dir,
        "reflection",
        SEED_DID,
        &[Step::Pause(6000), Step::Bye],
    )
    .advertising_media_port(victim_port)
    .timeout(30);
    let xml = std::fs::read_to_string(&call.scenario).expect("read the scenario");
    let xml = xml.replacen("c=IN IP[media_ip_type] [media_ip]", "c=IN IP4 127.0.0.3", 1);
    std::fs::write(&call.scenario, xml).expect("write the scenario");
    let call = call.spawn(&server);
    let port = call
        .server_rtp_port(Duration::from_secs(15))
        .unwrap_or_else(|| panic!("no 200 OK with SDP in SIPp's log\n{}", server.log()));
    let reflected = sipp::count_rtp(&victim, Duration::from_millis(2000));
    // Now 127.0.0.3 sends its own RTP: it is the caller's media, and gets the prompt.
    let mut confirm = Attacker {
        socket: victim,
        ssrc: 0x5eed_0003,
        seq: 1,
        timestamp: 0,
    };
    let to: SocketAddr = ([127, 0, 0, 1], port).into();
    for payload in ToneBuilder::new().silence(10).frames(Codec::Pcmu) {
        confirm.send(to, 0, false, &payload);
        confirm.timestamp = confirm.timestamp.wrapping_add(160);
    }
    let confirmed = sipp::count_rtp(&confirm.socket, Duration::from_millis(1500));
    let run = call.wait();
    run.assert_success(&server);
    assert_eq!(
        reflected,
        0,
        "RTP went to an SDP address nobody vouched for\n{}",
        server.log()
    );
    assert!(
        confirmed >= 40,
        "after its own RTP, 127.0.0.3 gets the prompt: {confirmed} packets in 1.5 s\n{}",
        server.log()
    );
}
