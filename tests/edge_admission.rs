//! Edge hardening, admission: half-open floods, per-source caps, trusted trunks and the
//! P-Asserted-Identity trust rule.
//!
//! Every test starts its own `wasm-ivr serve` on a copy of the seed example (or the transfers
//! fixture), with a `wasm-ivr.toml` written for it, and talks to it from loopback only: raw UDP
//! sockets bound on 127.0.0.x for floods, SIPp for callers and for the trunk load
//! (`tests/sipp/uac_load_call.xml`, `-r RATE -m COUNT`). Each is bounded in count and time and
//! takes `sipp::serial()` first.

mod common;

use common::sipp::{header, status_of};

use common::sipp::{self, CallDir, SEED_DID, Server, ServerOptions, Sipp, Step};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The transfer fixture's number (`tests/fixtures/calls/transfers/routes.toml`): 9 suppresses.
const DESK_DID: &str = "+15005550150";

/// `dir/logs/wasm-ivr.toml` with these `[sip]` lines and a store in the logs folder; returns
/// (config, store).
fn write_config(dir: &CallDir, sip: &str) -> (PathBuf, PathBuf) {
    let store = dir.logs.join("wasm-ivr.db");
    let config = dir.logs.join("wasm-ivr.toml");
    let text = format!(
        "[sip]\n{sip}\n\n[store]\npath = \"{}\"\n\n[http]\nlisten = \"off\"\n",
        store.display()
    );
    std::fs::write(&config, text).expect("write wasm-ivr.toml");
    (config, store)
}

/// A UDP socket on `ip` (any port) with a short read timeout.
fn udp_from(ip: &str) -> UdpSocket {
    let socket = UdpSocket::bind((ip, 0)).expect("bind a loopback UDP socket");
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .expect("read timeout");
    socket
}

fn server_addr(server: &Server) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], server.sip_port))
}

/// Every datagram `socket` receives during `window`.
fn collect(socket: &UdpSocket, window: Duration) -> Vec<String> {
    let deadline = Instant::now() + window;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 70_000];
    while Instant::now() < deadline {
        if let Ok((n, _)) = socket.recv_from(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    out
}

/// A new INVITE (PCMU offer) from `socket` to the seed's number, call `n`.
fn invite(socket: &UdpSocket, server_port: u16, n: u32) -> String {
    let local = socket.local_addr().expect("local addr");
    let ip = local.ip();
    let sdp = format!(
        "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
         m=audio 9 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    );
    format!(
        "INVITE sip:{SEED_DID}@127.0.0.1:{server_port} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bK-halfopen-{n}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:flood@{ip}>;tag=flood-{n}\r\n\
         To: <sip:{SEED_DID}@127.0.0.1:{server_port}>\r\n\
         Call-ID: halfopen-{n}@{ip}\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:flood@{local}>\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
}

/// An out-of-dialog OPTIONS from `socket`, request `n`.
fn options(socket: &UdpSocket, server_port: u16, n: u32) -> String {
    let local = socket.local_addr().expect("local addr");
    format!(
        "OPTIONS sip:{SEED_DID}@127.0.0.1:{server_port} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bK-opt-{n}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:probe@{ip}>;tag=probe{n}\r\n\
         To: <sip:{SEED_DID}@127.0.0.1:{server_port}>\r\n\
         Call-ID: options-{n}@{ip}\r\n\
         CSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n",
        ip = local.ip()
    )
}

/// Statuses answered to one OPTIONS from `ip` within `window`.
fn probe(ip: &str, server: &Server, n: u32, window: Duration) -> Vec<u16> {
    let socket = udp_from(ip);
    socket
        .send_to(
            options(&socket, server.sip_port, n).as_bytes(),
            server_addr(server),
        )
        .expect("send OPTIONS");
    collect(&socket, window)
        .iter()
        .filter_map(|m| status_of(m))
        .collect()
}

/// Waits (bounded) until the server log contains `text`.
fn wait_for_log(server: &Server, text: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if std::fs::read_to_string(&server.log_path)
            .unwrap_or_default()
            .contains(text)
        {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Lines of the server log with all of `parts`.
fn log_lines(server: &Server, parts: &[&str]) -> Vec<String> {
    std::fs::read_to_string(&server.log_path)
        .unwrap_or_default()
        .lines()
        .filter(|l| parts.iter().all(|p| l.contains(p)))
        .map(str::to_owned)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// 1. A half-open flood from one source
// ---------------------------------------------------------------------------------------------

/// 200 INVITEs from 127.0.0.3 that are never ACKed, with `max_calls = 40`: the source gets its
/// share of half-open calls (max_calls / 8 = 5), every other INVITE a stateless 503 with
/// Retry-After, and a caller from another source, placed while the flooder's calls are still
/// waiting for their ACK (timer H, 32 s), is answered and completes its call.
#[test]
fn a_half_open_flood_leaves_another_sources_caller_answered() {
    let _serial = sipp::serial();
    let dir = CallDir::seed();
    let (config, _) = write_config(&dir, "");
    let server = Server::start(
        &dir,
        &ServerOptions {
            max_calls: Some(40),
            rtp_ports: 100,
            config: Some(config),
            ..ServerOptions::default()
        },
    );
    let socket = udp_from("127.0.0.3");
    let started = Instant::now();
    // Answers are read while sending, so that none is lost to a full receive buffer.
    socket.set_nonblocking(true).expect("non-blocking");
    let mut replies = Vec::new();
    let mut buf = vec![0u8; 70_000];
    for n in 0..200u32 {
        socket
            .send_to(
                invite(&socket, server.sip_port, n).as_bytes(),
                server_addr(&server),
            )
            .expect("send INVITE");
        std::thread::sleep(Duration::from_millis(1));
        while let Ok((len, _)) = socket.recv_from(&mut buf) {
            replies.push(String::from_utf8_lossy(&buf[..len]).into_owned());
        }
    }
    socket.set_nonblocking(false).expect("blocking");
    // Then for a while: the admitted calls' 200s (retransmitted, never ACKed), late refusals.
    replies.extend(collect(&socket, Duration::from_millis(1500)));
    let calls_of = |status: u16| {
        let mut ids: Vec<&str> = replies
            .iter()
            .filter(|m| status_of(m) == Some(status))
            .filter_map(|m| header(m, "Call-ID"))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    };
    let (answered, refused, trying) = (calls_of(200), calls_of(503), calls_of(100));
    eprintln!(
        "half-open flood: 200 INVITEs in {:?}: {} answered, {} refused",
        started.elapsed(),
        answered.len(),
        refused.len()
    );
    assert_eq!(
        (answered.len(), refused.len()),
        (5, 195),
        "5 half-open calls admitted (40 / 8), the rest refused\n{}",
        server.log()
    );
    assert!(
        refused.iter().all(|id| !trying.contains(id)),
        "a refused INVITE got no 100 Trying: the refusal kept no state"
    );
    let refusal = replies
        .iter()
        .find(|m| status_of(m) == Some(503))
        .expect("a 503");
    assert!(
        header(refusal, "Retry-After").is_some_and(|v| v.parse::<u32>().is_ok_and(|s| s > 0)),
        "503 with Retry-After: {refusal}"
    );

    // Another source, during the flood's half-open window.
    let run = Sipp::call(
        &dir,
        "halfopen-legit",
        SEED_DID,
        &[Step::Pause(1000), Step::Bye],
    )
    .source_ip("127.0.0.2")
    .timeout(20)
    .run(&server);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the caller came after the flooder's calls timed out; the test proves nothing"
    );
    run.assert_success(&server);
    let trace = server.trace(&run.call_id);
    assert_eq!(trace.outcome(), "caller-hangup", "{}", trace.pretty());
    assert!(
        wait_for_log(&server, "admission cap reached", Duration::from_secs(5)),
        "the refusals are logged\n{}",
        server.log()
    );
    assert!(
        log_lines(&server, &["admission cap reached", "127.0.0.2"]).is_empty(),
        "the other source was never refused\n{}",
        server.log()
    );
}

// ---------------------------------------------------------------------------------------------
// 2. A trusted trunk at load, and an untrusted flood
// ---------------------------------------------------------------------------------------------

/// What a SIPp load run ended with (from its `-trace_stat` file).
#[derive(Debug)]
struct LoadResult {
    exit: Option<i32>,
    created: u64,
    successful: u64,
    failed: u64,
    elapsed: Duration,
    errors: String,
}

/// `sipp -r RATE -m COUNT` of `uac_load_call.xml` from `ip` against `server`, bounded.
fn sipp_load(dir: &CallDir, server: &Server, ip: &str, rate: u32, count: u32) -> LoadResult {
    let label = format!("load-{ip}-{rate}");
    let stats = dir.logs.join(format!("{label}.stats.csv"));
    let errors = dir.logs.join(format!("{label}.errors.log"));
    let bound = Duration::from_secs(u64::from(count / rate.max(1)) + 60);
    let started = Instant::now();
    let mut child = Command::new("sipp")
        .arg(format!("127.0.0.1:{}", server.sip_port))
        .arg("-sf")
        .arg(common::root().join("tests/sipp/uac_load_call.xml"))
        .args(["-s", SEED_DID, "-i", ip, "-mi", ip])
        .args(["-p", &sipp::free_ports(1).to_string()])
        .args(["-mp", &sipp::free_ports(4).to_string()])
        .args(["-cp", &sipp::free_ports(1).to_string()])
        .args(["-r", &rate.to_string(), "-m", &count.to_string()])
        .args(["-l", &(rate * 4).to_string()])
        .args(["-recv_timeout", "10000", "-nostdin"])
        .args([
            "-timeout",
            &format!("{}s", bound.as_secs()),
            "-timeout_error",
        ])
        .args(["-trace_stat", "-fd", "1", "-stf"])
        .arg(&stats)
        .args(["-trace_err", "-error_file"])
        .arg(&errors)
        .current_dir(&dir.logs)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start sipp (Debian package sip-tester)");
    let exit = loop {
        if let Some(status) = child.try_wait().expect("poll sipp") {
            break status.code();
        }
        if started.elapsed() > bound + Duration::from_secs(15) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let text = std::fs::read_to_string(&stats).unwrap_or_default();
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let names: Vec<&str> = lines.next().unwrap_or_default().split(';').collect();
    let last: Vec<&str> = lines.next_back().unwrap_or_default().split(';').collect();
    let field = |name: &str| {
        names
            .iter()
            .position(|n| *n == name)
            .and_then(|i| last.get(i))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {name} in SIPp's stats {}:\n{text}", stats.display()))
    };
    LoadResult {
        exit,
        created: field("TotalCallCreated"),
        successful: field("SuccessfulCall(C)"),
        failed: field("FailedCall(C)"),
        elapsed: started.elapsed(),
        errors: std::fs::read_to_string(&errors)
            .map(|e| e.chars().take(6000).collect())
            .unwrap_or_default(),
    }
}

/// The trunk rate the test runs at: `WASM_IVR_TRUNK_CPS`, else 200 calls/s. A debug build on
/// the shared 2-core machine (load average 8) sustained 500 calls/s for 5 s without a loss and
/// fell behind at 800 (its un-ACKed calls reached `max_half_open` and got 503s: CPU), so the
/// default leaves room; the 800 calls/s figure is for a release build
/// (`scripts/bench-trunk.sh`). Either way the rate is far above `rate_limit`, so an untrusted
/// source at that rate is banned within a second.
fn trunk_cps() -> u32 {
    std::env::var("WASM_IVR_TRUNK_CPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
}

/// `[sip] trusted = ["127.0.0.1/32"]`, `rate_limit = 20`: SIPp from 127.0.0.1 places calls at
/// [`trunk_cps`] for 5 s (INVITE, 200, ACK, BYE, 200 each) and every one succeeds, the trunk
/// never banned; meanwhile an OPTIONS flood from 127.0.0.3 (untrusted) is banned.
#[test]
fn a_trusted_trunk_at_load_loses_no_call_while_an_untrusted_flood_is_banned() {
    let _serial = sipp::serial();
    const RATE_LIMIT: u32 = 20;
    let cps = trunk_cps();
    let count = cps * 5;
    let dir = CallDir::seed();
    let (config, _) = write_config(
        &dir,
        &format!("trusted = [\"127.0.0.1/32\"]\nrate_limit = {RATE_LIMIT}\nban_s = 60"),
    );
    let mut server = Server::start(
        &dir,
        &ServerOptions {
            // Sized for the rate: a call holds its (even) RTP port until its task has ended,
            // about a second after the BYE, so 500 calls/s needed more than 1,000 ports. No
            // larger than that, so that a free block is found while other tests run.
            rtp_ports: u16::try_from((cps * 5).clamp(1000, 4000)).unwrap_or(4000),
            max_calls: Some(2000),
            config: Some(config),
            ..ServerOptions::default()
        },
    );

    // The untrusted flood runs alongside the load: 2,000 OPTIONS over about 4 s.
    let flood_port = server.sip_port;
    let flood = std::thread::spawn(move || {
        let socket = udp_from("127.0.0.3");
        socket.set_nonblocking(true).expect("non-blocking");
        let mut answered = 0usize;
        let mut buf = vec![0u8; 4096];
        let to = SocketAddr::from(([127, 0, 0, 1], flood_port));
        let started = Instant::now();
        for n in 0..2000u32 {
            socket
                .send_to(options(&socket, flood_port, n).as_bytes(), to)
                .expect("send OPTIONS");
            while let Ok((len, _)) = socket.recv_from(&mut buf) {
                if status_of(&String::from_utf8_lossy(&buf[..len])) == Some(200) {
                    answered += 1;
                }
            }
            std::thread::sleep(Duration::from_millis(2));
            if started.elapsed() > Duration::from_secs(30) {
                break;
            }
        }
        answered
    });

    let load = sipp_load(&dir, &server, "127.0.0.1", cps, count);
    let flood_answered = flood.join().expect("flood thread");
    eprintln!(
        "trusted trunk: {cps} calls/s × 5 s: {} created, {} successful, {} failed in {:?} (exit {:?}); \
         untrusted flood: {flood_answered} of 2000 OPTIONS answered",
        load.created, load.successful, load.failed, load.elapsed, load.exit
    );
    assert_eq!(
        (load.created, load.successful, load.failed),
        (u64::from(count), u64::from(count), 0),
        "every call of the trusted trunk succeeded (exit {:?}, {:?})\n{}\n{}",
        load.exit,
        load.elapsed,
        load.errors,
        server.log()
    );
    assert_eq!(load.exit, Some(0), "SIPp reports success\n{}", load.errors);
    assert!(
        log_lines(&server, &["source banned", "127.0.0.1"]).is_empty(),
        "the trunk was banned\n{}",
        server.log()
    );
    // The flood was banned: the burst and little more answered, and it is still banned.
    assert!(
        flood_answered <= 3 * RATE_LIMIT as usize + 10,
        "{flood_answered} flood requests answered at rate_limit {RATE_LIMIT}\n{}",
        server.log()
    );
    assert!(
        !log_lines(&server, &["source banned", "127.0.0.3"]).is_empty(),
        "the untrusted flood's ban is logged\n{}",
        server.log()
    );
    assert!(
        probe("127.0.0.3", &server, 9_001, Duration::from_millis(500)).is_empty(),
        "the flooder is still banned"
    );
    assert_eq!(
        probe("127.0.0.1", &server, 9_002, Duration::from_millis(500)),
        [200]
    );
    server.assert_running();
}

/// The same load from an untrusted source is banned: what `trusted` changes is the whole point.
#[test]
fn the_same_load_from_an_untrusted_source_is_banned() {
    let _serial = sipp::serial();
    let dir = CallDir::seed();
    let (config, _) = write_config(
        &dir,
        "trusted = [\"127.0.0.1/32\"]\nrate_limit = 20\nban_s = 60",
    );
    let mut server = Server::start(
        &dir,
        &ServerOptions {
            rtp_ports: 400,
            config: Some(config),
            ..ServerOptions::default()
        },
    );
    let load = sipp_load(&dir, &server, "127.0.0.4", 100, 200);
    eprintln!(
        "untrusted load: {} created, {} successful, {} failed",
        load.created, load.successful, load.failed
    );
    assert_eq!(load.created, 200);
    assert!(
        load.failed > 100,
        "most of an untrusted source's calls past the rate are dropped: {} of {} failed",
        load.failed,
        load.created
    );
    assert!(
        !log_lines(&server, &["source banned", "127.0.0.4"]).is_empty(),
        "the ban is logged\n{}",
        server.log()
    );
    server.assert_running();
}

// ---------------------------------------------------------------------------------------------
// 3. Who may assert the caller's identity
// ---------------------------------------------------------------------------------------------

/// `wasm-ivr dnc --store STORE list --csv`, bounded.
fn dnc_list(store: &Path) -> String {
    let out = Command::new(common::bin())
        .args(["dnc", "--store"])
        .arg(store)
        .args(["list", "--csv"])
        .stdin(Stdio::null())
        .output()
        .expect("run wasm-ivr dnc list");
    assert!(
        out.status.success(),
        "wasm-ivr dnc list failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The caller presses 9 (suppress) with `P-Asserted-Identity: +1-415-555-0199` from `ip`;
/// returns the do-not-call list afterwards and the trace's caller.
fn suppress_with_pai(sip: &str, ip: &str, name: &str) -> (String, String) {
    let dir = CallDir::fixture("transfers");
    let (config, store) = write_config(&dir, sip);
    let server = Server::start(
        &dir,
        &ServerOptions {
            config: Some(config),
            ..ServerOptions::default()
        },
    );
    let run = Sipp::call(
        &dir,
        name,
        DESK_DID,
        &[Step::Pause(700), Step::Info('9'), Step::AwaitBye(15_000)],
    )
    .caller("+14155550111")
    .invite_header("P-Asserted-Identity: <sip:+1-415-555-0199@127.0.0.1>")
    .source_ip(ip)
    .timeout(40)
    .run(&server);
    run.assert_success(&server);
    let trace = server.trace(&run.call_id);
    assert_eq!(trace.outcome(), "suppress", "{}", trace.pretty());
    (dnc_list(&store), record_caller(&store, &run.call_id))
}

/// The caller of the call record of `call_id` (`wasm-ivr calls --json`), waited for (bounded):
/// the record is written when the call task ends.
fn record_caller(store: &Path, call_id: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let out = Command::new(common::bin())
            .args(["calls", "--store"])
            .arg(store)
            .args(["--json", "--limit", "100"])
            .stdin(Stdio::null())
            .output()
            .expect("run wasm-ivr calls");
        let records: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        let caller = records.as_array().and_then(|all| {
            all.iter()
                .find(|r| r["call_id"] == call_id)
                .and_then(|r| r["caller"].as_str().map(str::to_owned))
        });
        if let Some(caller) = caller {
            return caller;
        }
        assert!(
            Instant::now() < deadline,
            "no call record for {call_id}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// From an untrusted source the assertion is ignored: the From number is listed, not the
/// asserted one (anyone could otherwise put any number on the list).
#[test]
fn an_untrusted_sources_asserted_identity_is_ignored() {
    let _serial = sipp::serial();
    let (listed, caller) =
        suppress_with_pai("trusted = [\"127.0.0.1/32\"]", "127.0.0.2", "pai-untrusted");
    assert!(
        !listed.contains("+14155550199"),
        "the asserted number was listed: {listed:?}"
    );
    assert!(
        listed.lines().any(|l| l.starts_with("+14155550111,")),
        "the From number is listed: {listed:?}"
    );
    assert_eq!(caller, "+14155550111");
}

/// From a trusted trunk the assertion wins over From.
#[test]
fn a_trusted_trunks_asserted_identity_is_honoured() {
    let _serial = sipp::serial();
    let (listed, caller) =
        suppress_with_pai("trusted = [\"127.0.0.2/32\"]", "127.0.0.2", "pai-trusted");
    assert!(
        listed.lines().any(|l| l.starts_with("+14155550199,")),
        "the asserted number is listed: {listed:?}"
    );
    assert!(!listed.contains("+14155550111"), "{listed:?}");
    assert_eq!(caller, "+14155550199");
}
