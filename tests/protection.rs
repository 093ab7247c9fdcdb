//! Transfers, do-not-call, call records and protection against the network, with SIPp.
//!
//! Each test starts its own `wasm-ivr serve` (a `wasm-ivr.toml` written for it, its own SQLite
//! store) on a temporary copy of the seed example or of `tests/fixtures/calls/transfers`, places
//! calls with SIPp (scenarios rendered from `tests/sipp/uac_call.xml`; the caller takes the
//! runtime's REFER with `fragments/await_refer.xml` and reports the transfer with
//! `fragments/notify_refer.xml`), and checks SIPp's message log, the call trace and the call
//! record read back with `wasm-ivr calls --json`. In bridge mode (`[transfer] mode = "bridge"`)
//! the transfer target is a SIPp UAS of the test's own (`tests/sipp/uas_agent*.xml`) on the
//! configured port, its messages logged like a caller's and its media port captured.
//!
//! The network tests send raw datagrams from sockets bound on loopback (127.0.0.1 and other
//! 127.0.0.0/8 addresses): the RFC 4475 torture messages of
//! `/work/shared/sip-torture/loopback-rfc4475` (every address rewritten to 127.0.0.1), floods,
//! oversize messages. Nothing is ever sent anywhere but loopback.
//!
//! Like `tests/sip_calls.rs`, every test takes `sipp::serial()` first and is bounded in time.

mod common;

use common::sipp::{header, status_of};

use common::sipp::{
    self, CallDir, Capture, SEED_DID, Server, ServerOptions, Sipp, SippRun, Step, ToneBuilder,
};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use wasm_ivr::media::codec::Codec;

/// The transfer fixture's number (`tests/fixtures/calls/transfers/routes.toml`).
const DESK_DID: &str = "+15005550150";
/// A numeric caller, so the do-not-call list gets a phone number.
const CALLER: &str = "+14155550100";
/// The loopback torture messages: `../shared/sip-torture` beside the repository (as CI lays it
/// out), else `/work/shared/sip-torture`. Missing is a failure, not a skip.
fn torture_dir() -> PathBuf {
    let beside = common::root().join("../shared/sip-torture");
    let root = if beside.is_dir() {
        beside
    } else {
        PathBuf::from("/work/shared/sip-torture")
    };
    root.join("loopback-rfc4475")
}

// ---------------------------------------------------------------------------------------------
// Set-up
// ---------------------------------------------------------------------------------------------

/// One test's server: folder, settings, store and the transfer targets it was configured with.
struct Setup {
    dir: CallDir,
    store: PathBuf,
    config: PathBuf,
    /// `[transfer] default` = `sip:agent@127.0.0.1:AGENT`.
    agent: String,
    /// `[transfer] outbound_proxy` = `127.0.0.1:PROXY`.
    proxy: String,
    /// `[transfer.internal] "200"`.
    extension_200: String,
    /// The ports of `agent`, `proxy` and `extension_200` (where a bridge-mode test's SIPp
    /// agent listens).
    agent_port: u16,
    proxy_port: u16,
    pbx_port: u16,
}

impl Setup {
    /// `dir` with a `wasm-ivr.toml` holding the transfer settings and `sip` (more `[sip]` lines).
    /// The targets are free ports nobody listens on: in REFER mode the runtime never contacts
    /// them, the caller would.
    fn new(dir: CallDir, sip: &str) -> Setup {
        Setup::with_timeout(dir, sip, 10)
    }

    /// Like [`Setup::new`] with `[transfer] timeout_s`.
    fn with_timeout(dir: CallDir, sip: &str, timeout_s: u64) -> Setup {
        Setup::configured(dir, sip, timeout_s, "refer")
    }

    /// `[transfer] mode = "bridge"`: the runtime calls the targets itself (a test starts a SIPp
    /// [`Agent`] on the target's port first).
    fn bridge(dir: CallDir, timeout_s: u64) -> Setup {
        Setup::configured(dir, "", timeout_s, "bridge")
    }

    fn configured(dir: CallDir, sip: &str, timeout_s: u64, mode: &str) -> Setup {
        let agent_port = sipp::free_ports(1);
        let proxy_port = sipp::free_ports(1);
        let pbx_port = sipp::free_ports(1);
        let agent = format!("sip:agent@127.0.0.1:{agent_port}");
        let proxy = format!("127.0.0.1:{proxy_port}");
        let extension_200 = format!("sip:200@127.0.0.1:{pbx_port}");
        let store = dir.logs.join("wasm-ivr.db");
        let config = dir.logs.join("wasm-ivr.toml");
        let text = format!(
            "[sip]\n{sip}\n\n[store]\npath = \"{}\"\n\n[transfer]\nmode = \"{mode}\"\n\
             default = \"{agent}\"\nexternal_prefix = \"9\"\noutbound_proxy = \"{proxy}\"\n\
             timeout_s = {timeout_s}\n\n[transfer.internal]\n\"200\" = \"{extension_200}\"\n",
            store.display()
        );
        std::fs::write(&config, text).expect("write wasm-ivr.toml");
        Setup {
            dir,
            store,
            config,
            agent,
            proxy,
            extension_200,
            agent_port,
            proxy_port,
            pbx_port,
        }
    }

    fn options(&self) -> ServerOptions {
        ServerOptions {
            config: Some(self.config.clone()),
            // The store comes from the file ([store] path); the flag is left out on purpose.
            ..ServerOptions::default()
        }
    }

    fn start(&self) -> Server {
        Server::start(&self.dir, &self.options())
    }
}

// ---------------------------------------------------------------------------------------------
// The CLI: call records and the do-not-call list
// ---------------------------------------------------------------------------------------------

/// `wasm-ivr calls --store STORE --json --limit 1000`.
fn call_records(store: &Path) -> Vec<Value> {
    let store = store.to_str().expect("UTF-8 path");
    let (code, out, err) =
        common::run_wasm_ivr(&["calls", "--store", store, "--json", "--limit", "1000"]);
    assert_eq!(code, Some(0), "wasm-ivr calls failed: {err}");
    serde_json::from_str::<Value>(&out)
        .unwrap_or_else(|e| panic!("wasm-ivr calls --json printed no JSON ({e}): {out}"))
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("wasm-ivr calls --json printed no array: {out}"))
}

/// Waits (bounded) for the call record of `call_id` (written when the call task ends).
fn call_record(store: &Path, call_id: &str, server: &Server) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let records = call_records(store);
        if let Some(r) = records.iter().find(|r| r["call_id"] == call_id) {
            return r.clone();
        }
        if Instant::now() > deadline {
            panic!(
                "no call record for {call_id} within 15 s; records: {}\n{}",
                serde_json::to_string_pretty(&records).unwrap_or_default(),
                server.log()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The strings of a JSON array field.
fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .map(|v| v.as_str().unwrap_or("<not a string>").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Checks the fields every record of an answered call has.
fn assert_record(
    record: &Value,
    caller: &str,
    did: &str,
    ivr: &str,
    path: &[&str],
    digits: &[&str],
    outcome: &str,
) {
    let pretty = serde_json::to_string_pretty(record).unwrap_or_default();
    assert_eq!(record["caller"], caller, "caller\n{pretty}");
    assert_eq!(record["did"], did, "did\n{pretty}");
    assert_eq!(record["ivr"], ivr, "ivr\n{pretty}");
    assert!(
        record["version"].as_str().is_some_and(|v| !v.is_empty()),
        "version\n{pretty}"
    );
    assert_eq!(strings(&record["path"]), path, "path\n{pretty}");
    assert_eq!(strings(&record["digits"]), digits, "digits\n{pretty}");
    assert_eq!(record["outcome"], outcome, "outcome\n{pretty}");
    let started = record["started_at_ms"].as_i64().expect("started_at_ms");
    let answered = record["answered_at_ms"]
        .as_i64()
        .unwrap_or_else(|| panic!("an answered call has answered_at_ms\n{pretty}"));
    let ended = record["ended_at_ms"].as_i64().expect("ended_at_ms");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    assert!(
        now - 600_000 < started && started <= answered && answered <= ended && ended <= now,
        "timestamps out of order (started {started}, answered {answered}, ended {ended}, now {now})\n{pretty}"
    );
}

/// `wasm-ivr dnc --store STORE list [--csv]`.
fn dnc_list(store: &Path, csv: bool) -> String {
    let store = store.to_str().expect("UTF-8 path");
    let mut args = vec!["dnc", "--store", store, "list"];
    if csv {
        args.push("--csv");
    }
    let (code, out, err) = common::run_wasm_ivr(&args);
    assert_eq!(code, Some(0), "wasm-ivr dnc list failed: {err}");
    out
}

// ---------------------------------------------------------------------------------------------
// Calls
// ---------------------------------------------------------------------------------------------

/// Digits as SIP INFO, a pause before each (barge-in cuts the prompt short).
fn keys(keys: &str) -> Vec<Step> {
    keys.chars()
        .flat_map(|k| [Step::Pause(700), Step::Info(k)])
        .collect()
}

/// The caller accepts the REFER, reports the destination answering, and takes the BYE.
fn accept_transfer() -> Vec<Step> {
    vec![
        Step::AwaitRefer {
            status: 202,
            ms: 10_000,
        },
        Step::Notify {
            sipfrag: "SIP/2.0 100 Trying".into(),
            terminated: false,
        },
        Step::Notify {
            sipfrag: "SIP/2.0 200 OK".into(),
            terminated: true,
        },
        Step::AwaitBye(10_000),
    ]
}

fn steps(parts: &[Vec<Step>]) -> Vec<Step> {
    parts.concat()
}

/// Runs one SIPp call to success (or panics with both sides' logs).
fn call_ok(setup: &Setup, server: &Server, name: &str, did: &str, steps: &[Step]) -> SippRun {
    let run = Sipp::call(&setup.dir, name, did, steps)
        .caller(CALLER)
        .timeout(45)
        .run(server);
    run.assert_success(server);
    run
}

/// The one REFER the caller got.
fn the_refer(run: &SippRun) -> common::sipp::LoggedMessage {
    let refers = run.requests("REFER");
    assert_eq!(refers.len(), 1, "one REFER\n{}", run.report());
    refers.into_iter().next().expect("one")
}

fn assert_notifies_answered(run: &SippRun, count: usize) {
    let answered: Vec<_> = run
        .logged()
        .into_iter()
        .filter(|m| m.received && m.start_line().starts_with("SIP/2.0 "))
        .filter(|m| m.header("CSeq").is_some_and(|c| c.ends_with(" NOTIFY")))
        .collect();
    assert_eq!(
        answered.len(),
        count,
        "every NOTIFY answered once\n{}",
        run.report()
    );
    for m in answered {
        assert!(
            m.start_line().starts_with("SIP/2.0 200"),
            "NOTIFY answered {}\n{}",
            m.start_line(),
            run.report()
        );
    }
}

/// 1. The seed tree, `1 1 1`: REFER to the default agent with the path and digits, the caller
///    reports 200, the runtime leaves with BYE; the record says transfer.
#[test]
fn seed_one_one_one_is_referred_to_the_default_agent() {
    let _serial = sipp::serial();
    let setup = Setup::new(CallDir::seed(), "");
    let server = setup.start();
    let run = call_ok(
        &setup,
        &server,
        "seed-refer",
        SEED_DID,
        &steps(&[keys("111"), accept_transfer()]),
    );
    let refer = the_refer(&run);
    assert_eq!(
        refer.header("Refer-To").map(refer_target).as_deref(),
        Some(format!("<{}>", setup.agent).as_str()),
        "Refer-To is the default agent\n{}",
        refer.text
    );
    // The transferee copies Refer-To's URI headers into its INVITE: that is how the agent
    // sees the context.
    assert!(
        refer.header("Refer-To").is_some_and(|to| to
            .contains("?X-IVR-Path=welcome%2Chas_license%2Cservice_area%2Ctransfer_ai")
            && to.contains("&X-IVR-Digits=1%2C1%2C1")),
        "{}",
        refer.text
    );
    assert_eq!(
        refer.header("X-IVR-Path"),
        Some("welcome,has_license,service_area,transfer_ai"),
        "{}",
        refer.text
    );
    assert_eq!(
        refer.header("X-IVR-Digits"),
        Some("1,1,1"),
        "{}",
        refer.text
    );
    assert!(
        refer.header("Referred-By").is_some(),
        "Referred-By\n{}",
        refer.text
    );
    assert_eq!(
        refer.header("Call-ID"),
        Some(run.call_id.as_str()),
        "the REFER is in the caller's dialog\n{}",
        refer.text
    );
    assert!(
        refer.start_line().starts_with("REFER sip:sipp@127.0.0.1:"),
        "the REFER goes to the caller's Contact: {}",
        refer.start_line()
    );
    assert_notifies_answered(&run, 2);
    assert_eq!(run.requests("BYE").len(), 1, "one BYE\n{}", run.report());

    let trace = server.trace(&run.call_id);
    assert_eq!(
        trace.path(),
        ["welcome", "has_license", "service_area", "transfer_ai"],
        "{}",
        trace.pretty()
    );
    assert_eq!(trace.outcome(), "transfer", "{}", trace.pretty());
    let transfers = trace.events("transfer");
    assert_eq!(transfers.len(), 1, "{}", trace.pretty());
    assert_eq!(transfers[0]["result"], "ok", "{}", trace.pretty());

    let record = call_record(&setup.store, &run.call_id, &server);
    assert_record(
        &record,
        CALLER,
        SEED_DID,
        "plumber-qualifier",
        &["welcome", "has_license", "service_area", "transfer_ai"],
        &["1", "1", "1"],
        "transfer",
    );
    assert!(
        record["destination"].as_str().is_some(),
        "a transfer's record says where it went: {record}"
    );
}

/// 1b. The same transfer with the caller on TCP: REFER and BYE come back on its connection.
#[test]
fn a_transfer_over_tcp_uses_the_callers_connection() {
    let _serial = sipp::serial();
    let setup = Setup::new(CallDir::seed(), "");
    let server = Server::start(
        &setup.dir,
        &ServerOptions {
            tcp: true,
            ..setup.options()
        },
    );
    let run = Sipp::call(
        &setup.dir,
        "seed-refer-tcp",
        SEED_DID,
        &steps(&[keys("111"), accept_transfer()]),
    )
    .caller(CALLER)
    .over_tcp()
    .timeout(45)
    .run(&server);
    run.assert_success(&server);
    let refer = the_refer(&run);
    assert_eq!(
        refer.header("Refer-To").map(refer_target).as_deref(),
        Some(format!("<{}>", setup.agent).as_str()),
        "{}",
        refer.text
    );
    assert!(
        refer
            .header("Via")
            .is_some_and(|v| v.starts_with("SIP/2.0/TCP")),
        "{}",
        refer.text
    );
    assert_notifies_answered(&run, 2);
    assert_eq!(run.requests("BYE").len(), 1, "{}", run.report());
    let record = call_record(&setup.store, &run.call_id, &server);
    assert_record(
        &record,
        CALLER,
        SEED_DID,
        "plumber-qualifier",
        &["welcome", "has_license", "service_area", "transfer_ai"],
        &["1", "1", "1"],
        "transfer",
    );
}

/// 2a. The destination is busy: 202, then NOTIFY `486 Busy Here` → the tree's failed_node.
#[test]
fn busy_notify_takes_the_failed_node() {
    let _serial = sipp::serial();
    let setup = Setup::new(CallDir::fixture("transfers"), "");
    let server = setup.start();
    let run = call_ok(
        &setup,
        &server,
        "refer-busy",
        DESK_DID,
        &steps(&[
            keys("1"),
            vec![
                Step::AwaitRefer {
                    status: 202,
                    ms: 10_000,
                },
                Step::Notify {
                    sipfrag: "SIP/2.0 100 Trying".into(),
                    terminated: false,
                },
                Step::Notify {
                    sipfrag: "SIP/2.0 486 Busy Here".into(),
                    terminated: true,
                },
                // sorry: not_qualified.wav (4.2 s), then BYE
                Step::AwaitBye(15_000),
            ],
        ]),
    );
    let refer = the_refer(&run);
    assert_eq!(
        refer.header("Refer-To").map(refer_target).as_deref(),
        Some(format!("<{}>", setup.agent).as_str()),
        "{}",
        refer.text
    );
    assert_eq!(
        refer.header("X-IVR-campaign"),
        Some("spring"),
        "the node's context travels as X-IVR-<key>\n{}",
        refer.text
    );
    assert_eq!(refer.header("X-IVR-Path"), Some("menu,to_default"));
    assert_eq!(refer.header("X-IVR-Digits"), Some("1"));
    assert_notifies_answered(&run, 2);
    assert_eq!(run.requests("BYE").len(), 1, "one BYE\n{}", run.report());

    let trace = server.trace(&run.call_id);
    assert_eq!(
        trace.path(),
        ["menu", "to_default", "sorry"],
        "{}",
        trace.pretty()
    );
    assert_eq!(trace.outcome(), "hangup", "{}", trace.pretty());
    let transfers = trace.events("transfer");
    assert_eq!(transfers.len(), 1, "{}", trace.pretty());
    assert!(
        transfers[0]["result"]
            .as_str()
            .is_some_and(|r| r.to_ascii_lowercase().contains("busy")),
        "the transfer failed busy: {}",
        trace.pretty()
    );
    let record = call_record(&setup.store, &run.call_id, &server);
    assert_record(
        &record,
        CALLER,
        DESK_DID,
        "transfer-desk",
        &["menu", "to_default", "sorry"],
        &["1"],
        "hangup",
    );
}

/// 2b. The caller refuses the REFER with 403 → rejected(403) → failed_node.
#[test]
fn refer_refused_403_takes_the_failed_node() {
    let _serial = sipp::serial();
    let setup = Setup::new(CallDir::fixture("transfers"), "");
    let server = setup.start();
    let run = call_ok(
        &setup,
        &server,
        "refer-403",
        DESK_DID,
        &steps(&[
            keys("1"),
            vec![
                Step::AwaitRefer {
                    status: 403,
                    ms: 10_000,
                },
                Step::AwaitBye(15_000),
            ],
        ]),
    );
    the_refer(&run);
    assert_eq!(run.requests("BYE").len(), 1, "one BYE\n{}", run.report());
    let trace = server.trace(&run.call_id);
    assert_eq!(
        trace.path(),
        ["menu", "to_default", "sorry"],
        "{}",
        trace.pretty()
    );
    assert_eq!(trace.outcome(), "hangup", "{}", trace.pretty());
    let transfers = trace.events("transfer");
    assert!(
        transfers.len() == 1
            && transfers[0]["result"]
                .as_str()
                .is_some_and(|r| r.to_ascii_lowercase().contains("rejected") && r.contains("403")),
        "the transfer failed rejected(403): {}",
        trace.pretty()
    );
    let record = call_record(&setup.store, &run.call_id, &server);
    assert_record(
        &record,
        CALLER,
        DESK_DID,
        "transfer-desk",
        &["menu", "to_default", "sorry"],
        &["1"],
        "hangup",
    );
}

/// 2d. The caller accepts the REFER and leaves (BYE) before any NOTIFY: it went to the
///     destination, so the transfer counts; the runtime sends no BYE of its own.
#[test]
fn a_caller_leaving_after_202_counts_as_transferred() {
    let _serial = sipp::serial();
    let setup = Setup::new(CallDir::fixture("transfers"), "");
    let server = setup.start();
    let run = call_ok(
        &setup,
        &server,
        "refer-leave",
        DESK_DID,
        &steps(&[
            keys("3"),
            vec![
                Step::AwaitRefer {
                    status: 202,
                    ms: 10_000,
                },
                Step::Pause(300),
                Step::Bye,
            ],
        ]),
    );
    assert_eq!(
        the_refer(&run)
            .header("Refer-To")
            .map(refer_target)
            .as_deref(),
        Some(format!("<{}>", setup.extension_200).as_str())
    );
    assert!(run.requests("BYE").is_empty(), "{}", run.report());
    let trace = server.trace(&run.call_id);
    assert_eq!(trace.outcome(), "transfer", "{}", trace.pretty());
    let record = call_record(&setup.store, &run.call_id, &server);
    assert_record(
        &record,
        CALLER,
        DESK_DID,
        "transfer-desk",
        &["menu", "to_internal"],
        &["3"],
        "transfer",
    );
}

/// 3. An extension that is not configured: unreachable at once, no REFER, failed_node.
#[test]
fn unconfigured_extension_is_unreachable_without_a_refer() {
    let _serial = sipp::serial();
    let setup = Setup::new(CallDir::fixture("transfers"), "");
    let server = setup.start();
    // Any REFER would be an unexpected message while SIPp waits for the BYE: the run fails.
    let run = call_ok(
        &setup,
        &server,
        "refer-unreachable",
        DESK_DID,
        &steps(&[keys("4"), vec![Step::AwaitBye(15_000)]]),
    );
    assert!(
        run.requests("REFER").is_empty(),
        "no REFER\n{}",
        run.report()
    );
    let trace = server.trace(&run.call_id);
    assert_eq!(
        trace.path(),
        ["menu", "to_missing", "sorry"],
        "{}",
        trace.pretty()
    );
    let transfers = trace.events("transfer");
    assert!(
        transfers.len() == 1
            && transfers[0]["result"]
                .as_str()
                .is_some_and(|r| r.to_ascii_lowercase().contains("unreachable")),
        "the transfer failed unreachable: {}",
        trace.pretty()
    );
    // Immediately: the failed_node's prompt starts without waiting for any answer (the
    // transfer timeout is 10 s; half of it is a margin no loaded machine needs).
    let key_at = trace.step_at_ms("to_missing").expect("to_missing step");
    let sorry_at = trace.step_at_ms("sorry").expect("sorry step");
    assert!(
        sorry_at - key_at < 5_000,
        "unreachable took {} ms\n{}",
        sorry_at - key_at,
        trace.pretty()
    );
    let record = call_record(&setup.store, &run.call_id, &server);
    assert_record(
        &record,
        CALLER,
        DESK_DID,
        "transfer-desk",
        &["menu", "to_missing", "sorry"],
        &["4"],
        "hangup",
    );
}

/// 2c. The caller accepts the REFER and reports ringing, then nothing: after `timeout_s` the
///     transfer is no-answer and the tree takes its failed_node.
#[test]
fn a_transfer_without_outcome_times_out_as_no_answer() {
    let _serial = sipp::serial();
    let setup = Setup::with_timeout(CallDir::fixture("transfers"), "", 2);
    let server = setup.start();
    let run = call_ok(
        &setup,
        &server,
        "refer-timeout",
        DESK_DID,
        &steps(&[
            keys("1"),
            vec![
                Step::AwaitRefer {
                    status: 202,
                    ms: 10_000,
                },
                Step::Notify {
                    sipfrag: "SIP/2.0 180 Ringing".into(),
                    terminated: false,
                },
                Step::AwaitBye(15_000),
            ],
        ]),
    );
    the_refer(&run);
    assert_notifies_answered(&run, 1);
    let trace = server.trace(&run.call_id);
    assert_eq!(
        trace.path(),
        ["menu", "to_default", "sorry"],
        "{}",
        trace.pretty()
    );
    let transfers = trace.events("transfer");
    assert!(
        transfers.len() == 1
            && transfers[0]["result"]
                .as_str()
                .is_some_and(|r| r.to_ascii_lowercase().contains("noanswer")
                    || r.to_ascii_lowercase().contains("no-answer")),
        "the transfer failed no-answer: {}",
        trace.pretty()
    );
    let waited = trace.step_at_ms("sorry").expect("sorry")
        - trace.step_at_ms("to_default").expect("to_default");
    assert!(
        // Not before the timeout; after it, as soon as a loaded machine gets to it.
        (1_900..12_000).contains(&waited),
        "timeout_s = 2, waited {waited} ms\n{}",
        trace.pretty()
    );
    let record = call_record(&setup.store, &run.call_id, &server);
    assert_record(
        &record,
        CALLER,
        DESK_DID,
        "transfer-desk",
        &["menu", "to_default", "sorry"],
        &["1"],
        "hangup",
    );
}

/// 4. An external number goes to `sip:9<digits>@<outbound proxy>`, extension 200 to its
///    configured URI; both transfers complete.
#[test]
fn external_number_and_internal_extension_refer_to_their_uris() {
    let _serial = sipp::serial();
    let setup = Setup::new(CallDir::fixture("transfers"), "");
    let server = setup.start();
    let cases = [
        (
            '2',
            "to_external",
            format!("<sip:914155550123@{}>", setup.proxy),
        ),
        ('3', "to_internal", format!("<{}>", setup.extension_200)),
    ];
    for (key, node, refer_to) in cases {
        let key_text = key.to_string();
        let run = call_ok(
            &setup,
            &server,
            &format!("refer-{node}"),
            DESK_DID,
            &steps(&[keys(&key_text), accept_transfer()]),
        );
        let refer = the_refer(&run);
        assert_eq!(
            refer.header("Refer-To").map(refer_target).as_deref(),
            Some(refer_to.as_str()),
            "key {key}\n{}",
            refer.text
        );
        assert_eq!(
            refer.header("X-IVR-Path"),
            Some(format!("menu,{node}").as_str())
        );
        let trace = server.trace(&run.call_id);
        assert_eq!(trace.outcome(), "transfer", "{}", trace.pretty());
        let record = call_record(&setup.store, &run.call_id, &server);
        assert_record(
            &record,
            CALLER,
            DESK_DID,
            "transfer-desk",
            &["menu", node],
            &[key_text.as_str()],
            "transfer",
        );
    }
}

/// 5. `9` on the seed: the caller is on the do-not-call list before the BYE, still after the
///    server is killed with SIGKILL and restarted; the CSV export has it; the records say
///    suppress.
#[test]
fn suppress_lists_the_caller_durably() {
    let _serial = sipp::serial();
    let setup = Setup::new(CallDir::seed(), "");
    let server = setup.start();
    let run = call_ok(
        &setup,
        &server,
        "suppress",
        SEED_DID,
        &steps(&[keys("9"), vec![Step::AwaitBye(10_000)]]),
    );
    assert_eq!(run.requests("BYE").len(), 1, "one BYE\n{}", run.report());
    // Listed while the server still runs, right after the BYE.
    let listed = dnc_list(&setup.store, false);
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with(&format!("{CALLER} ")) && l.contains("ivr:plumber-qualifier")),
        "the caller is listed: {listed:?}\n{}",
        server.log()
    );
    let trace = server.trace(&run.call_id);
    assert_eq!(trace.path(), ["welcome", "dnc"], "{}", trace.pretty());
    assert_eq!(trace.outcome(), "suppress", "{}", trace.pretty());
    let record = call_record(&setup.store, &run.call_id, &server);
    assert_record(
        &record,
        CALLER,
        SEED_DID,
        "plumber-qualifier",
        &["welcome", "dnc"],
        &["9"],
        "suppress",
    );

    // SIGKILL: no shutdown path runs.
    let pid = server.pid();
    let killed = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    drop(server);
    let listed = dnc_list(&setup.store, false);
    assert_eq!(
        listed.lines().filter(|l| l.starts_with(CALLER)).count(),
        1,
        "still listed once after SIGKILL: {listed:?}"
    );
    let csv = dnc_list(&setup.store, true);
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("number,added_at_ms,source"), "{csv:?}");
    let row: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    assert!(
        row.len() == 3
            && row[0] == CALLER
            && row[1].parse::<i64>().is_ok()
            && row[2] == "ivr:plumber-qualifier",
        "CSV row: {csv:?}"
    );

    // Restarted on the same store: the caller calls again and opts out again.
    let server = setup.start();
    let again = call_ok(
        &setup,
        &server,
        "suppress-again",
        SEED_DID,
        &steps(&[keys("9"), vec![Step::AwaitBye(10_000)]]),
    );
    let record = call_record(&setup.store, &again.call_id, &server);
    assert_record(
        &record,
        CALLER,
        SEED_DID,
        "plumber-qualifier",
        &["welcome", "dnc"],
        &["9"],
        "suppress",
    );
    let listed = dnc_list(&setup.store, false);
    assert_eq!(
        listed.lines().filter(|l| l.starts_with(CALLER)).count(),
        1,
        "listed once: {listed:?}"
    );
    // Both calls are on record.
    let records = call_records(&setup.store);
    for id in [&run.call_id, &again.call_id] {
        assert!(
            records
                .iter()
                .any(|r| r["call_id"] == id.as_str() && r["outcome"] == "suppress"),
            "record of {id}: {records:?}"
        );
    }
}

/// A proxy-asserted caller (P-Asserted-Identity, with visual separators) wins over From and is
/// listed normalised; the fixture's suppress plays its goodbye before the BYE. The proxy is a
/// trusted trunk: only those may assert an identity (tests/edge_admission.rs has the rest).
#[test]
fn suppress_lists_the_asserted_identity_normalised() {
    let _serial = sipp::serial();
    let setup = Setup::new(
        CallDir::fixture("transfers"),
        "trusted = [\"127.0.0.1/32\"]",
    );
    let server = setup.start();
    let run = Sipp::call(
        &setup.dir,
        "suppress-pai",
        DESK_DID,
        &steps(&[keys("9"), vec![Step::AwaitBye(15_000)]]),
    )
    .caller("anonymous")
    .invite_header("P-Asserted-Identity: <sip:+1-415-555-0199@127.0.0.1>")
    .timeout(40)
    .run(&server);
    run.assert_success(&server);
    let listed = dnc_list(&setup.store, true);
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("+14155550199,") && l.ends_with(",ivr:transfer-desk")),
        "{listed:?}\n{}",
        server.log()
    );
    assert!(!listed.contains("anonymous"), "{listed:?}");
    let trace = server.trace(&run.call_id);
    assert_eq!(trace.path(), ["menu", "opt_out"], "{}", trace.pretty());
    assert_eq!(trace.outcome(), "suppress", "{}", trace.pretty());
    // The goodbye (wrong_area.wav, 4.6 s) played before the BYE.
    assert!(
        trace.0["duration_ms"]
            .as_u64()
            .is_some_and(|ms| ms >= 4_000),
        "{}",
        trace.pretty()
    );
    let record = call_record(&setup.store, &run.call_id, &server);
    assert_record(
        &record,
        "+14155550199",
        DESK_DID,
        "transfer-desk",
        &["menu", "opt_out"],
        &["9"],
        "suppress",
    );
}

/// The caller presses 9 and hangs up during the goodbye: already listed (the write comes
/// before the goodbye), and the record still says suppress.
#[test]
fn suppress_holds_when_the_caller_leaves_during_the_goodbye() {
    let _serial = sipp::serial();
    let setup = Setup::new(CallDir::fixture("transfers"), "");
    let server = setup.start();
    let run = call_ok(
        &setup,
        &server,
        "suppress-leave",
        DESK_DID,
        &steps(&[keys("9"), vec![Step::Pause(600), Step::Bye]]),
    );
    assert!(run.requests("BYE").is_empty(), "{}", run.report());
    let listed = dnc_list(&setup.store, false);
    assert!(
        listed.lines().any(|l| l.starts_with(&format!("{CALLER} "))),
        "{listed:?}\n{}",
        server.log()
    );
    let record = call_record(&setup.store, &run.call_id, &server);
    assert_record(
        &record,
        CALLER,
        DESK_DID,
        "transfer-desk",
        &["menu", "opt_out"],
        &["9"],
        "suppress",
    );
}

/// A call cancelled while it rings has a record: cancelled, never answered.
#[test]
fn a_cancelled_call_is_recorded_as_cancelled() {
    let _serial = sipp::serial();
    let setup = Setup::new(CallDir::seed(), "");
    let server = Server::start(
        &setup.dir,
        &ServerOptions {
            answer_delay_ms: Some(3000),
            ..setup.options()
        },
    );
    let run = Sipp::file(&setup.dir, "uac_cancel.xml", SEED_DID)
        .timeout(20)
        .run(&server);
    run.assert_success(&server);
    let record = call_record(&setup.store, &run.call_id, &server);
    let pretty = serde_json::to_string_pretty(&record).unwrap_or_default();
    assert_eq!(record["outcome"], "cancelled", "{pretty}");
    assert_eq!(record["caller"], "sipp", "{pretty}");
    assert_eq!(record["did"], SEED_DID, "{pretty}");
    assert_eq!(record["ivr"], "plumber-qualifier", "{pretty}");
    assert!(record["answered_at_ms"].is_null(), "{pretty}");
    assert!(strings(&record["path"]).is_empty(), "{pretty}");
    let started = record["started_at_ms"].as_i64();
    let ended = record["ended_at_ms"].as_i64();
    assert!(
        started.is_some() && ended.is_some() && started <= ended,
        "a cancelled call has both times, in order: {pretty}"
    );
}

/// The do-not-call CLI as the issue writes it: `wasm-ivr dnc list --store FILE [--csv]`.
#[test]
fn dnc_list_takes_the_store_after_the_action() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = dir.path().join("dnc.db");
    let store = store.to_str().expect("UTF-8");
    let (code, out, err) =
        common::run_wasm_ivr(&["dnc", "--store", store, "add", "+1 (415) 555-0100"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let (code, out, err) = common::run_wasm_ivr(&["dnc", "list", "--store", store, "--csv"]);
    assert_eq!(
        code,
        Some(0),
        "`wasm-ivr dnc list --store FILE --csv` failed: {err}"
    );
    assert!(out.contains("+14155550100,"), "{out}");
}

// ---------------------------------------------------------------------------------------------
// Bridged transfers: the runtime calls a SIPp agent itself and relays the media
// ---------------------------------------------------------------------------------------------

/// The telephone-event payload type the agents answer with: not the runtime's 101, so the
/// relay has to rewrite it on each leg.
const AGENT_TE: u8 = 96;

/// What a SIPp agent does after the ACK of its 200 (the steps of `tests/sipp/uas_agent.xml`).
enum AgentStep {
    /// Waits this many ms.
    Pause(u32),
    /// `play_pcap_audio` of this pcap (asynchronous: follow it with a pause).
    Pcap(PathBuf),
    /// Waits up to this many ms for the runtime's BYE and answers 200 (`fragments/await_bye.xml`).
    AwaitBye(u32),
    /// The agent hangs up and wants the runtime's 200 (`fragments/uas_bye.xml`).
    Bye,
}

/// The transfer target of a bridge-mode test: a SIPp UAS on 127.0.0.1:`port` taking one call,
/// its messages logged (`-trace_msg`) like a caller's.
struct Agent {
    child: std::process::Child,
    label: String,
    logs: PathBuf,
    scenario: PathBuf,
    /// SIPp's media port (`-mp`): the port of the agent's SDP answer.
    media_port: u16,
    started: Instant,
    timeout_s: u32,
}

impl Agent {
    /// An agent that rings, answers 200 (PCMU and telephone-event [`AGENT_TE`]) and then does
    /// `steps`.
    fn answering(dir: &CallDir, name: &str, port: u16, steps: &[AgentStep]) -> Agent {
        let sipp_dir = common::root().join("tests/sipp");
        let read = |file: &str| {
            let path = sipp_dir.join(file);
            std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        };
        let mut rendered = String::new();
        for step in steps {
            match step {
                AgentStep::Pause(ms) => {
                    rendered.push_str(&format!("  <pause milliseconds=\"{ms}\"/>\n"));
                }
                AgentStep::Pcap(path) => rendered.push_str(&format!(
                    "  <nop><action><exec play_pcap_audio=\"{}\"/></action></nop>\n",
                    path.display()
                )),
                AgentStep::AwaitBye(ms) => rendered
                    .push_str(&read("fragments/await_bye.xml").replace("{{MS}}", &ms.to_string())),
                AgentStep::Bye => rendered.push_str(&read("fragments/uas_bye.xml")),
            }
        }
        let xml = read("uas_agent.xml")
            .replace("{{NAME}}", name)
            .replace("{{TE}}", &AGENT_TE.to_string())
            .replace("{{STEPS}}", &rendered);
        let label = Agent::label(name);
        let scenario = dir.logs.join(format!("{label}.xml"));
        std::fs::write(&scenario, xml).expect("write the agent's scenario");
        Agent::spawn(dir, label, scenario, port)
    }

    /// An agent running `tests/sipp/FILE` as it is.
    fn file(dir: &CallDir, file: &str, port: u16) -> Agent {
        let label = Agent::label(file.trim_end_matches(".xml"));
        Agent::spawn(
            dir,
            label,
            common::root().join("tests/sipp").join(file),
            port,
        )
    }

    fn label(name: &str) -> String {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Not a caller's label (`NAME-PID-N`): the two write their logs side by side.
        format!("agent-{name}-{}-{n}", std::process::id())
    }

    fn log(logs: &Path, label: &str, what: &str) -> PathBuf {
        logs.join(format!("{label}.{what}"))
    }

    /// Starts SIPp as a UAS on 127.0.0.1:`port` and waits (bounded) until the port is taken.
    fn spawn(dir: &CallDir, label: String, scenario: PathBuf, port: u16) -> Agent {
        let logs = dir.logs.clone();
        // SIPp binds the media port and the port two above it.
        let media_port = sipp::free_ports(4);
        let control_port = sipp::free_ports(1);
        let timeout_s = 40;
        let file = |what: &str| {
            std::fs::File::create(Agent::log(&logs, &label, what)).expect("agent log file")
        };
        let child = Command::new("sipp")
            .arg("-sf")
            .arg(&scenario)
            .args(["-i", "127.0.0.1", "-mi", "127.0.0.1"])
            .args(["-p", &port.to_string()])
            .args(["-mp", &media_port.to_string()])
            .args(["-cp", &control_port.to_string()])
            .args(["-m", "1", "-nostdin"])
            .args(["-timeout", &format!("{timeout_s}s"), "-timeout_error"])
            .arg("-trace_msg")
            .arg("-message_file")
            .arg(Agent::log(&logs, &label, "messages.log"))
            .arg("-trace_err")
            .arg("-error_file")
            .arg(Agent::log(&logs, &label, "errors.log"))
            .arg("-trace_screen")
            .arg("-screen_file")
            .arg(Agent::log(&logs, &label, "screen.log"))
            .current_dir(&logs)
            .stdin(Stdio::null())
            .stdout(file("stdout"))
            .stderr(file("stderr"))
            .spawn()
            .expect("start sipp (Debian package sip-tester)");
        let mut agent = Agent {
            child,
            label,
            logs,
            scenario,
            media_port,
            started: Instant::now(),
            timeout_s,
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            if let Ok(Some(status)) = agent.child.try_wait() {
                panic!(
                    "the SIPp agent exited before listening ({status})\n{}",
                    agent.finish(Some(status)).report()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the SIPp agent did not bind 127.0.0.1:{port} within 5 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        agent
    }

    /// Waits for the agent's SIPp to exit (killed 15 s after its own global timeout).
    fn wait(mut self) -> SippRun {
        let limit = Duration::from_secs(u64::from(self.timeout_s) + 15);
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("poll sipp") {
                break Some(status);
            }
            if self.started.elapsed() > limit {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        self.finish(status)
    }

    fn finish(&self, status: Option<std::process::ExitStatus>) -> SippRun {
        let read = |what: &str| {
            std::fs::read_to_string(Agent::log(&self.logs, &self.label, what)).unwrap_or_default()
        };
        SippRun {
            status,
            call_id: String::new(),
            scenario: self.scenario.clone(),
            media_port: self.media_port,
            messages: read("messages.log"),
            errors: read("errors.log"),
            screen: read("screen.log"),
            stderr: read("stderr"),
            elapsed: self.started.elapsed(),
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The one INVITE the agent got (the runtime's outbound leg).
fn the_invite(agent: &SippRun) -> common::sipp::LoggedMessage {
    let invites = agent.requests("INVITE");
    assert_eq!(invites.len(), 1, "one INVITE\n{}", agent.report());
    invites.into_iter().next().expect("one")
}

/// Checks the outbound INVITE: Request-URI, To, the caller as From, and an offer of the
/// caller's codec (PCMU, as the bridge tests' callers offer only it) plus telephone-event 101.
fn assert_outbound_invite(invite: &common::sipp::LoggedMessage, uri: &str) {
    assert_eq!(
        invite.start_line(),
        format!("INVITE {uri} SIP/2.0"),
        "the Request-URI\n{}",
        invite.text
    );
    assert!(
        invite.header("To").is_some_and(|to| to.contains(uri)),
        "To is the destination\n{}",
        invite.text
    );
    assert!(
        invite.header("From").is_some_and(|f| f.contains(CALLER)),
        "From carries the caller\n{}",
        invite.text
    );
    let body = invite.body();
    let m_line = body
        .lines()
        .find(|l| l.starts_with("m=audio "))
        .unwrap_or_else(|| panic!("an SDP offer\n{}", invite.text));
    assert!(
        m_line.trim_end().ends_with(" RTP/AVP 0 101"),
        "the offer is the caller's codec and telephone-event 101: {m_line}\n{}",
        invite.text
    );
    assert!(
        body.contains("a=rtpmap:101 telephone-event/8000"),
        "{}",
        invite.text
    );
}

/// The RTP port of the runtime's offer in the outbound INVITE.
fn offered_port(invite: &common::sipp::LoggedMessage) -> u16 {
    invite
        .body()
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no m=audio port\n{}", invite.text))
}

/// A caller offering only PCMU and telephone-event 101 (the codec the agents answer with).
fn bridge_caller(setup: &Setup, name: &str, did: &str, steps: &[Step]) -> Sipp {
    Sipp::call_offering(&setup.dir, name, did, &[0, 101], steps)
        .caller(CALLER)
        .timeout(45)
}

/// One RFC 4733 event (`event`, volume 10), 8 packets of 20 ms, the last three with the E bit.
fn rfc4733_event(event: u8) -> Vec<Vec<u8>> {
    (1..=8u16)
        .map(|i| {
            let duration = i.min(6) * 160;
            let flags = if i >= 6 { 0x8a } else { 0x0a };
            let [hi, lo] = duration.to_be_bytes();
            vec![event, flags, hi, lo]
        })
        .collect()
}

/// The SSRC of [`sipp::write_rtp_pcap`]'s packets.
const PCAP_SSRC: u32 = 0x1234_5678;

/// 1. The seed tree, `1 1 1`, in bridge mode: the runtime INVITEs the default agent with the
///    path and digits; once it answers, the caller's audio and RFC 2833 `5` reach the agent
///    (the event with the agent's payload type) and the agent's reach the caller (with the
///    caller's); the caller hangs up, the agent gets BYE; the record says transfer.
#[test]
fn bridge_seed_one_one_one_calls_the_agent_and_relays_media() {
    let _serial = sipp::serial();
    let setup = Setup::bridge(CallDir::seed(), 10);
    let server = setup.start();
    // A second of PCMU tone each way, an RFC 4733 event each way.
    let tone = setup.dir.logs.join("bridge-tone.pcap");
    sipp::write_rtp_pcap(
        &tone,
        0,
        &ToneBuilder::new().tone('1', 50).frames(Codec::Pcmu),
    );
    let agent_event = setup.dir.logs.join("bridge-agent-event-7.pcap");
    sipp::write_rtp_pcap(&agent_event, AGENT_TE, &rfc4733_event(7));
    let agent = Agent::answering(
        &setup.dir,
        "bridge-agent",
        setup.agent_port,
        &[
            AgentStep::Pause(1500),
            AgentStep::Pcap(tone.clone()),
            AgentStep::Pause(1300),
            AgentStep::Pcap(agent_event),
            AgentStep::Pause(400),
            AgentStep::AwaitBye(20_000),
        ],
    );
    let caller = bridge_caller(
        &setup,
        "bridge-seed",
        SEED_DID,
        &steps(&[
            keys("111"),
            vec![
                Step::Pause(1000),
                Step::Pcap(tone),
                // The event pcap has another SSRC than the tone's: a new SSRC from the caller
                // is taken only after the latched one has been quiet for 2 s.
                Step::Pause(4000),
                Step::Rfc2833('5'),
                Step::Pause(2500),
                Step::Bye,
            ],
        ]),
    );
    let at_agent = Capture::start(&setup.dir.logs.join("agent-media.pcap"), agent.media_port)
        .expect("tcpdump on the agent's media port");
    let at_caller = Capture::start(&setup.dir.logs.join("caller-media.pcap"), caller.media_port)
        .expect("tcpdump on the caller's media port");
    let run = caller.run(&server);
    let agent_run = agent.wait();
    let agent_pcap = at_agent.stop();
    let caller_pcap = at_caller.stop();
    run.assert_success(&server);
    agent_run.assert_success(&server);

    let invite = the_invite(&agent_run);
    assert_outbound_invite(&invite, &setup.agent);
    assert_eq!(
        invite.header("X-IVR-Path"),
        Some("welcome,has_license,service_area,transfer_ai"),
        "{}",
        invite.text
    );
    assert_eq!(
        invite.header("X-IVR-Digits"),
        Some("1,1,1"),
        "{}",
        invite.text
    );
    assert!(
        run.requests("BYE").is_empty(),
        "the caller hung up\n{}",
        run.report()
    );
    assert_eq!(
        agent_run.requests("BYE").len(),
        1,
        "the agent gets the runtime's BYE\n{}",
        agent_run.report()
    );

    // At the agent: the caller's tone (PCMU) and its `5` with the agent's payload type, both
    // from the port the runtime offered.
    let leg_port = offered_port(&invite);
    let packets = sipp::rtp_packets(&agent_pcap, agent_run.media_port).expect("tshark");
    let summary = |packets: &[sipp::RtpPacket]| {
        packets
            .iter()
            .map(|p| format!("{}:pt{}:ssrc{:x}", p.src_port, p.payload_type, p.ssrc))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let audio = packets
        .iter()
        .filter(|p| p.payload_type == 0 && p.ssrc == PCAP_SSRC)
        .count();
    let events: Vec<_> = packets
        .iter()
        .filter(|p| p.payload_type == AGENT_TE)
        .collect();
    assert!(
        audio >= 45,
        "the agent gets the caller's 50 tone packets ({audio}): {}",
        summary(&packets)
    );
    assert!(
        !events.is_empty() && events.iter().all(|p| p.payload.first() == Some(&5)),
        "the agent gets the caller's `5` as telephone-event {AGENT_TE}: {}",
        summary(&packets)
    );
    assert!(
        packets.iter().all(|p| p.payload_type != 101),
        "no telephone-event 101 reaches the agent (it answered {AGENT_TE}): {}",
        summary(&packets)
    );
    assert!(
        packets.iter().all(|p| p.src_port == leg_port),
        "the agent's media comes from the offered port {leg_port}: {}",
        summary(&packets)
    );

    // At the caller: the agent's tone and its `7` with the caller's payload type (101).
    let packets = sipp::rtp_packets(&caller_pcap, run.media_port).expect("tshark");
    let relayed: Vec<_> = packets
        .iter()
        .filter(|p| p.ssrc == PCAP_SSRC)
        .cloned()
        .collect();
    let audio = relayed.iter().filter(|p| p.payload_type == 0).count();
    let events: Vec<_> = relayed.iter().filter(|p| p.payload_type == 101).collect();
    assert!(
        audio >= 45,
        "the caller gets the agent's 50 tone packets ({audio}): {}",
        summary(&relayed)
    );
    assert!(
        !events.is_empty() && events.iter().all(|p| p.payload.first() == Some(&7)),
        "the caller gets the agent's `7` as telephone-event 101: {}",
        summary(&relayed)
    );
    assert!(
        relayed.iter().all(|p| p.payload_type != AGENT_TE),
        "telephone-event {AGENT_TE} is rewritten for the caller: {}",
        summary(&relayed)
    );

    let trace = server.trace(&run.call_id);
    assert_eq!(
        trace.path(),
        ["welcome", "has_license", "service_area", "transfer_ai"],
        "{}",
        trace.pretty()
    );
    assert_eq!(trace.outcome(), "transfer", "{}", trace.pretty());
    let transfers = trace.events("transfer");
    assert!(
        transfers.len() == 1 && transfers[0]["result"] == "ok",
        "{}",
        trace.pretty()
    );
    let record = call_record(&setup.store, &run.call_id, &server);
    assert_record(
        &record,
        CALLER,
        SEED_DID,
        "plumber-qualifier",
        &["welcome", "has_license", "service_area", "transfer_ai"],
        &["1", "1", "1"],
        "transfer",
    );
    assert!(
        record["destination"].as_str().is_some(),
        "a transfer's record says where it went: {record}"
    );
}

/// The transfer event's result, lower case, of a trace with exactly one transfer.
fn transfer_result(trace: &sipp::Trace) -> String {
    let transfers = trace.events("transfer");
    assert_eq!(transfers.len(), 1, "one transfer\n{}", trace.pretty());
    transfers[0]["result"]
        .as_str()
        .unwrap_or_else(|| panic!("a transfer result\n{}", trace.pretty()))
        .to_ascii_lowercase()
}

/// 2a. Bridge mode, the agent answers 486: busy → the tree's failed_node; the record says
///     hangup (how `sorry` ends the call).
#[test]
fn bridge_busy_agent_takes_the_failed_node() {
    let _serial = sipp::serial();
    let setup = Setup::bridge(CallDir::fixture("transfers"), 10);
    let server = setup.start();
    let agent = Agent::file(&setup.dir, "uas_agent_busy.xml", setup.agent_port);
    // sorry: not_qualified.wav (4.2 s), then BYE
    let run = bridge_caller(
        &setup,
        "bridge-busy",
        DESK_DID,
        &steps(&[keys("1"), vec![Step::AwaitBye(15_000)]]),
    )
    .run(&server);
    let agent_run = agent.wait();
    run.assert_success(&server);
    agent_run.assert_success(&server);
    let invite = the_invite(&agent_run);
    assert_outbound_invite(&invite, &setup.agent);
    assert_eq!(
        invite.header("X-IVR-campaign"),
        Some("spring"),
        "{}",
        invite.text
    );
    assert_eq!(invite.header("X-IVR-Path"), Some("menu,to_default"));
    assert_eq!(invite.header("X-IVR-Digits"), Some("1"));
    assert_eq!(run.requests("BYE").len(), 1, "{}", run.report());

    let trace = server.trace(&run.call_id);
    assert_eq!(
        trace.path(),
        ["menu", "to_default", "sorry"],
        "{}",
        trace.pretty()
    );
    assert_eq!(trace.outcome(), "hangup", "{}", trace.pretty());
    let result = transfer_result(&trace);
    assert!(result.contains("busy"), "busy: {}", trace.pretty());
    let record = call_record(&setup.store, &run.call_id, &server);
    assert_record(
        &record,
        CALLER,
        DESK_DID,
        "transfer-desk",
        &["menu", "to_default", "sorry"],
        &["1"],
        "hangup",
    );
}

/// 2b. Bridge mode, the agent rings and never answers: after `timeout_s = 3` the runtime
///     CANCELs it (and ACKs the 487), no-answer → failed_node.
#[test]
fn bridge_unanswered_agent_is_cancelled_as_no_answer() {
    let _serial = sipp::serial();
    let setup = Setup::bridge(CallDir::fixture("transfers"), 3);
    let server = setup.start();
    let agent = Agent::file(&setup.dir, "uas_agent_ringing.xml", setup.agent_port);
    let run = bridge_caller(
        &setup,
        "bridge-ringing",
        DESK_DID,
        &steps(&[keys("1"), vec![Step::AwaitBye(20_000)]]),
    )
    .run(&server);
    let agent_run = agent.wait();
    run.assert_success(&server);
    agent_run.assert_success(&server);
    let invite = the_invite(&agent_run);
    assert_outbound_invite(&invite, &setup.agent);
    let cancels = agent_run.requests("CANCEL");
    assert_eq!(cancels.len(), 1, "one CANCEL\n{}", agent_run.report());
    assert_eq!(
        cancels[0].start_line(),
        format!("CANCEL {} SIP/2.0", setup.agent),
        "{}",
        cancels[0].text
    );
    assert_eq!(cancels[0].header("Call-ID"), invite.header("Call-ID"));

    let trace = server.trace(&run.call_id);
    assert_eq!(
        trace.path(),
        ["menu", "to_default", "sorry"],
        "{}",
        trace.pretty()
    );
    let result = transfer_result(&trace);
    assert!(
        result.contains("noanswer") || result.contains("no-answer"),
        "no-answer: {}",
        trace.pretty()
    );
    let waited = trace.step_at_ms("sorry").expect("sorry")
        - trace.step_at_ms("to_default").expect("to_default");
    assert!(
        // Not before the timeout; after it, as soon as a loaded machine gets to it.
        (2_900..13_000).contains(&waited),
        "timeout_s = 3, waited {waited} ms\n{}",
        trace.pretty()
    );
    let record = call_record(&setup.store, &run.call_id, &server);
    assert_record(
        &record,
        CALLER,
        DESK_DID,
        "transfer-desk",
        &["menu", "to_default", "sorry"],
        &["1"],
        "hangup",
    );
}

/// 3. Bridge mode, the agent hangs up first: the runtime answers its BYE and sends the caller
///    a BYE; the record says transfer.
#[test]
fn bridge_agent_hanging_up_hangs_up_the_caller() {
    let _serial = sipp::serial();
    let setup = Setup::bridge(CallDir::fixture("transfers"), 10);
    let server = setup.start();
    let agent = Agent::answering(
        &setup.dir,
        "bridge-agent-bye",
        setup.agent_port,
        &[AgentStep::Pause(1500), AgentStep::Bye],
    );
    let run = bridge_caller(
        &setup,
        "bridge-agent-bye",
        DESK_DID,
        &steps(&[keys("1"), vec![Step::AwaitBye(15_000)]]),
    )
    .run(&server);
    let agent_run = agent.wait();
    run.assert_success(&server);
    agent_run.assert_success(&server);
    assert_outbound_invite(&the_invite(&agent_run), &setup.agent);
    assert_eq!(
        run.requests("BYE").len(),
        1,
        "the caller gets the runtime's BYE\n{}",
        run.report()
    );
    assert!(
        agent_run.requests("BYE").is_empty(),
        "the agent hung up itself\n{}",
        agent_run.report()
    );
    let trace = server.trace(&run.call_id);
    assert_eq!(trace.path(), ["menu", "to_default"], "{}", trace.pretty());
    assert_eq!(trace.outcome(), "transfer", "{}", trace.pretty());
    let record = call_record(&setup.store, &run.call_id, &server);
    assert_record(
        &record,
        CALLER,
        DESK_DID,
        "transfer-desk",
        &["menu", "to_default"],
        &["1"],
        "transfer",
    );
}

/// 4. Bridge mode: the external number is INVITEd as `sip:9<digits>@<outbound proxy>` at the
///    proxy's address, extension 200 as its `[transfer.internal]` URI at its own address.
#[test]
fn bridge_external_number_and_internal_extension_invite_their_uris() {
    let _serial = sipp::serial();
    let setup = Setup::bridge(CallDir::fixture("transfers"), 10);
    let server = setup.start();
    let cases = [
        (
            '2',
            "to_external",
            setup.proxy_port,
            format!("sip:914155550123@{}", setup.proxy),
        ),
        (
            '3',
            "to_internal",
            setup.pbx_port,
            setup.extension_200.clone(),
        ),
    ];
    for (key, node, port, uri) in cases {
        let key_text = key.to_string();
        let agent = Agent::answering(
            &setup.dir,
            &format!("bridge-{node}"),
            port,
            &[AgentStep::AwaitBye(20_000)],
        );
        let run = bridge_caller(
            &setup,
            &format!("bridge-{node}"),
            DESK_DID,
            &steps(&[keys(&key_text), vec![Step::Pause(1500), Step::Bye]]),
        )
        .run(&server);
        let agent_run = agent.wait();
        run.assert_success(&server);
        agent_run.assert_success(&server);
        let invite = the_invite(&agent_run);
        assert_outbound_invite(&invite, &uri);
        assert_eq!(
            invite.header("X-IVR-Path"),
            Some(format!("menu,{node}").as_str()),
            "{}",
            invite.text
        );
        assert_eq!(agent_run.requests("BYE").len(), 1, "{}", agent_run.report());
        let trace = server.trace(&run.call_id);
        assert_eq!(trace.outcome(), "transfer", "{}", trace.pretty());
        let record = call_record(&setup.store, &run.call_id, &server);
        assert_record(
            &record,
            CALLER,
            DESK_DID,
            "transfer-desk",
            &["menu", node],
            &[key_text.as_str()],
            "transfer",
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Raw SIP over loopback
// ---------------------------------------------------------------------------------------------

/// A UDP socket on `ip` (any port) with a short read timeout.
fn udp_from(ip: &str) -> UdpSocket {
    let socket = UdpSocket::bind((ip, 0)).expect("bind a loopback UDP socket");
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .expect("read timeout");
    socket
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

/// An out-of-dialog OPTIONS from `socket` to the server.
fn options_request(socket: &UdpSocket, server_port: u16, n: u32) -> String {
    let local = socket.local_addr().expect("local addr");
    format!(
        "OPTIONS sip:{SEED_DID}@127.0.0.1:{server_port} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bK-opt-{n}-{}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:probe@{}>;tag=probe{n}\r\n\
         To: <sip:{SEED_DID}@127.0.0.1:{server_port}>\r\n\
         Call-ID: options-{n}-{}@{}\r\n\
         CSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n",
        local.port(),
        local.ip(),
        local.port(),
        local.ip()
    )
}

/// An INVITE (PCMU offer, media on `rtp_port` of the socket's address) to `did`, with extra
/// header lines.
fn invite_request(
    socket: &UdpSocket,
    server_port: u16,
    did: &str,
    call_id: &str,
    branch: &str,
    rtp_port: u16,
    extra: &str,
) -> String {
    let local = socket.local_addr().expect("local addr");
    let sdp = format!(
        "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
         m=audio {rtp_port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n",
        ip = local.ip()
    );
    format!(
        "INVITE sip:{did}@127.0.0.1:{server_port} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch={branch}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:{CALLER}@{ip}>;tag=raw-{branch}\r\n\
         To: <sip:{did}@127.0.0.1:{server_port}>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:{CALLER}@{local}>\r\n\
         {extra}\
         Content-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{sdp}",
        sdp.len(),
        ip = local.ip()
    )
}

/// The ACK for a non-2xx final response to [`invite_request`] (same branch, the response's
/// To tag), so the server stops retransmitting it.
fn ack_for(
    socket: &UdpSocket,
    server_port: u16,
    did: &str,
    call_id: &str,
    branch: &str,
    response: &str,
) -> String {
    let local = socket.local_addr().expect("local addr");
    format!(
        "ACK sip:{did}@127.0.0.1:{server_port} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch={branch}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:{CALLER}@{ip}>;tag=raw-{branch}\r\n\
         To: {to}\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 ACK\r\n\
         Content-Length: 0\r\n\r\n",
        ip = local.ip(),
        to = header(response, "To").unwrap_or_default()
    )
}

fn server_addr(server: &Server) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], server.sip_port))
}

/// OPTIONS from a raw socket on `ip`: the statuses received within `window`.
fn probe(ip: &str, server: &Server, n: u32, window: Duration) -> Vec<u16> {
    let socket = udp_from(ip);
    socket
        .send_to(
            options_request(&socket, server.sip_port, n).as_bytes(),
            server_addr(server),
        )
        .expect("send OPTIONS");
    collect(&socket, window)
        .iter()
        .filter_map(|m| status_of(m))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// 6. RFC 4475 torture over UDP and over TCP (every message)
// ---------------------------------------------------------------------------------------------

/// What a torture message must get from this server: a UAS routing DIDs to IVRs (no
/// registrar, no proxy), for which no torture URI is a routed number. From the tables of
/// `/work/shared/sip-torture/README.md`, made precise per message.
#[derive(Debug, Clone, Copy)]
enum Verdict {
    /// Final responses, every one with one of these codes (where the RFC leaves a choice, the
    /// alternatives are listed; the first is what this server sends). Provisional responses
    /// may precede them (100 Trying for an INVITE).
    Final(&'static [u16]),
    /// No answer at all (a response, which a UAS never answers, or one to drop).
    NoAnswer,
}

fn torture_verdict(name: &str) -> Option<Verdict> {
    use Verdict::*;
    Some(match name {
        // §3.1.1, valid. An OPTIONS is answered 200; an INVITE to a number no IVR serves 404;
        // REGISTER 405 (no registrar; 501 would do); an unknown method 501.
        "lwsdisp" | "semiuri" | "transports" => Final(&[200]),
        "esc01" | "longreq" => Final(&[404]),
        // Its To carries a tag: a request inside a dialog that does not exist (§12.2.2).
        "wsinv" => Final(&[481]),
        // `!interesting-Method…` and `RE%47IST%45R` (escapes are not decoded in a method) are
        // methods nobody implements.
        "intmeth" | "esc02" => Final(&[501]),
        "escnull" | "dblreq" => Final(&[405, 501]),
        // MESSAGE (RFC 3428), whose multipart body must parse: not a method an IVR takes.
        "mpart01" => Final(&[405, 501]),
        // Responses no request of ours asked for (§18.1.2).
        "unreason" | "noreason" => NoAnswer,
        // §3.1.2, invalid.
        "badinv01" | "clerr" | "ncl" | "scalar02" | "quotbal" | "mismatch01" => Final(&[400]),
        "scalarlg" | "bigcode" => NoAnswer,
        // "May be tolerated, never propagated": refused here, or handled as the INVITE (404)
        // or OPTIONS (200) it would be.
        "ltgtruri" | "lwsruri" | "lwsstart" | "escruri" => Final(&[400, 404]),
        "trws" => Final(&[400, 200]),
        "baddate" => Final(&[404, 400]),
        "regbadct" => Final(&[405, 501, 400]),
        "badaspec" | "baddn" => Final(&[200, 400]),
        "badvers" => Final(&[505]),
        "mismatch02" => Final(&[400, 501]),
        // §3.2–3.4: parse fine, the problem is above the parser.
        "badbranch" => Final(&[200, 400]),
        "insuf" | "multi01" | "mcl01" => Final(&[400]),
        "unkscm" => Final(&[416]),
        "novelsc" => Final(&[416, 404]),
        "unksm2" | "regaut01" | "cparam01" | "cparam02" | "regescrt" => Final(&[405, 501]),
        "bext01" => Final(&[420]),
        "invut" => Final(&[415]),
        // A UAS processes it (483 is a proxy's answer).
        "zeromf" => Final(&[200, 483]),
        "sdp01" => Final(&[406, 400]),
        // RFC 2543 syntax: an INVITE to an unrouted number.
        "inv2543" => Final(&[404]),
        // Its broadcast Via is gone in the loopback copy: checked in-process only.
        "bcast" => return None,
        _ => panic!("{name}: no verdict in the README's tables"),
    })
}

/// What a torture message must get over TCP, where framing comes first (RFC 3261 §18.3).
#[derive(Debug, Clone, Copy)]
enum TcpVerdict {
    /// Framed as over UDP; the same verdict.
    AsOverUdp(Verdict),
    /// The stream cannot be framed (no Content-Length, a negative or several differing ones):
    /// no answer, and the server closes the connection by itself.
    Unframeable,
    /// Content-Length promises more than was sent: on a stream the rest may still come, so no
    /// answer (and no close) until the sender gives up.
    Incomplete,
    /// `dblreq`: on a stream its trailing octets are a second, complete request (an INVITE
    /// whose Content-Length ends its SDP early) and five octets more that frame nothing: both
    /// requests answered in turn, then the connection closed.
    Two(Verdict, Verdict),
}

fn tcp_verdict(name: &str, verdict: Verdict) -> TcpVerdict {
    match name {
        "inv2543" | "ncl" | "mcl01" => TcpVerdict::Unframeable,
        "clerr" => TcpVerdict::Incomplete,
        // The second request is cut at its Content-Length, inside its SDP: 400.
        "dblreq" => TcpVerdict::Two(verdict, Verdict::Final(&[400])),
        _ => TcpVerdict::AsOverUdp(verdict),
    }
}

/// Messages of the set that RFC 3261 §17.2.3 matches to the transaction of an earlier one
/// (same top-Via branch and sent-by, same method): a server answers them as retransmissions,
/// replaying the earlier response to the earlier request's source.
const SAME_TRANSACTION: &[(&str, &str)] = &[
    ("cparam02", "cparam01"),
    ("regescrt", "escnull"),
    ("unkscm", "novelsc"),
    ("unksm2", "regbadct"),
];

fn check_verdict(name: &str, verdict: Verdict, statuses: &[u16]) -> Result<(), String> {
    let finals: Vec<u16> = statuses.iter().copied().filter(|s| *s >= 200).collect();
    let ok = match verdict {
        Verdict::Final(allowed) => {
            !finals.is_empty()
                && finals.iter().all(|s| allowed.contains(s))
                && statuses.iter().all(|s| *s >= 200 || *s == 100)
        }
        Verdict::NoAnswer => statuses.is_empty(),
    };
    if ok {
        Ok(())
    } else {
        Err(format!("{name}: expected {verdict:?}, got {statuses:?}"))
    }
}

/// The responses read from a TCP connection until `finals` final responses arrived, the server
/// closed it, or `wait` passed: their statuses, and whether it was closed.
fn tcp_responses(stream: &mut TcpStream, finals: usize, wait: Duration) -> (Vec<u16>, bool) {
    let deadline = Instant::now() + wait;
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    let mut statuses = Vec::new();
    let closed = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break false;
        }
        stream
            .set_read_timeout(Some(left.min(Duration::from_millis(200))))
            .expect("read timeout");
        match stream.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(_) => {}
        }
        // Responses on the stream, each framed by its Content-Length.
        statuses.clear();
        let text = String::from_utf8_lossy(&got).into_owned();
        let mut rest = text.as_str();
        while let Some(head_end) = rest.find("\r\n\r\n") {
            let head = &rest[..head_end];
            if let Some(status) = status_of(head) {
                statuses.push(status);
            }
            let length: usize = header(head, "content-length")
                .or_else(|| header(head, "l"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            rest = rest.get(head_end + 4 + length..).unwrap_or("");
        }
        if statuses.iter().filter(|s| **s >= 200).count() >= finals {
            break false;
        }
    };
    (statuses, closed)
}

#[test]
fn rfc4475_torture_over_udp_and_tcp() {
    let _serial = sipp::serial();
    let setup = Setup::new(CallDir::seed(), "");
    let mut server = Server::start(
        &setup.dir,
        &ServerOptions {
            tcp: true,
            ..setup.options()
        },
    );
    let torture = torture_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&torture)
        .unwrap_or_else(|e| panic!("torture folder {}: {e}", torture.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "dat"))
        .collect();
    files.sort();
    assert!(files.len() >= 40, "torture files: {files:?}");
    let mut failures = Vec::new();
    let mut table = String::new();
    // Every file's socket stays open: a retransmission's answer goes to the first sender.
    let mut sockets: Vec<(String, UdpSocket, Vec<u16>)> = Vec::new();
    for file in &files {
        let name = file
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("file name")
            .to_owned();
        let Some(verdict) = torture_verdict(&name) else {
            continue;
        };
        let data = std::fs::read(file).expect("read torture file");
        let socket = udp_from("127.0.0.1");
        socket
            .send_to(&data, server_addr(&server))
            .unwrap_or_else(|e| panic!("send {name}: {e}"));
        let replies = collect(&socket, Duration::from_millis(300));
        let statuses: Vec<u16> = replies.iter().filter_map(|m| status_of(m)).collect();
        table.push_str(&format!("{name}: {statuses:?}"));
        if replies.len() != statuses.len() {
            failures.push(format!(
                "{name}: a reply that is not a response: {replies:?}"
            ));
        }
        let is_response = data.starts_with(b"SIP/2.0 ");
        let earlier = SAME_TRANSACTION
            .iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, first)| sockets.iter().find(|(n, _, _)| n == first));
        if let Some((first, first_socket, first_statuses)) = earlier {
            // A retransmission: nothing to the new source, the first answer replayed to the
            // first source; the verdict applies to that answer.
            let replayed: Vec<u16> = collect(first_socket, Duration::from_millis(50))
                .iter()
                .filter_map(|m| status_of(m))
                .collect();
            table.push_str(&format!(
                " (same transaction as {first}: replayed {replayed:?})"
            ));
            let finals: Vec<u16> = first_statuses
                .iter()
                .copied()
                .filter(|s| *s >= 200)
                .collect();
            if !statuses.is_empty() || !replayed.iter().any(|s| finals.contains(s)) {
                failures.push(format!(
                    "{name}: a retransmission of {first}'s transaction: expected {first}'s {finals:?} replayed to {first}'s source, got {statuses:?} here and {replayed:?} there"
                ));
            }
            if let Err(e) = check_verdict(&name, verdict, &replayed) {
                failures.push(e);
            }
        } else if is_response {
            // A response no transaction of ours sent a request for: parsed, then dropped
            // silently (RFC 3261 §18.1.2; a UAS answers no response).
            if !statuses.is_empty() {
                failures.push(format!(
                    "{name}: a stray response must get no reply, got {statuses:?}"
                ));
            }
            if let Err(e) = check_verdict(&name, verdict, &statuses) {
                failures.push(e);
            }
        } else if let Err(e) = check_verdict(&name, verdict, &statuses) {
            failures.push(e);
        }
        table.push('\n');
        sockets.push((name.clone(), socket, statuses));
        server.assert_running();
    }
    eprintln!("torture responses over UDP:\n{table}");

    // Every message again, each on its own TCP connection. Its transactions are new to the
    // server (TCP transactions are keyed apart from the UDP ones above, and the connection of
    // an earlier message of the same transaction is closed by then); only one that repeats an
    // earlier TCP message's transaction is absorbed as a retransmission.
    let tcp_port = server
        .tcp_port
        .expect("the ready line names the TCP listener");
    let mut tcp_table = String::new();
    let mut sent_over_tcp = 0;
    for file in &files {
        let name = file
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("file name")
            .to_owned();
        let Some(verdict) = torture_verdict(&name) else {
            continue;
        };
        let tcp = tcp_verdict(&name, verdict);
        let retransmission = SAME_TRANSACTION.iter().any(|(n, _)| *n == name);
        let mut stream = TcpStream::connect(("127.0.0.1", tcp_port)).expect("connect over TCP");
        stream
            .write_all(&std::fs::read(file).expect("read torture file"))
            .unwrap_or_else(|e| panic!("send {name} over TCP: {e}"));
        sent_over_tcp += 1;
        let finals = match tcp {
            TcpVerdict::Two(..) => 2,
            TcpVerdict::AsOverUdp(Verdict::Final(_)) if !retransmission => 1,
            _ => usize::MAX,
        };
        let wait = if finals == usize::MAX {
            Duration::from_millis(700)
        } else {
            Duration::from_secs(5)
        };
        let (statuses, closed) = tcp_responses(&mut stream, finals, wait);
        tcp_table.push_str(&format!(
            "{name}: {statuses:?}{}\n",
            if closed { " closed" } else { "" }
        ));
        if name == "badinv01" && !closed {
            // Over TCP a non-2xx final goes out once: timer G is for unreliable transports
            // (RFC 3261 §17.2.1).
            let (again, _) = tcp_responses(&mut stream, usize::MAX, Duration::from_millis(1500));
            if !again.is_empty() {
                failures.push(format!(
                    "badinv01 over TCP: its final was sent again: {again:?}"
                ));
            }
        }
        let result = match tcp {
            TcpVerdict::AsOverUdp(_) if retransmission => {
                // Absorbed, or answered as the new transaction it is on this connection.
                if statuses.is_empty() {
                    Ok(())
                } else {
                    check_verdict(&name, verdict, &statuses)
                }
            }
            TcpVerdict::AsOverUdp(v) => check_verdict(&name, v, &statuses),
            TcpVerdict::Two(first, second) => {
                let finals: Vec<u16> = statuses.iter().copied().filter(|s| *s >= 200).collect();
                match finals.as_slice() {
                    [a, b] => check_verdict(&name, first, &[*a]).and_then(|()| {
                        check_verdict(&format!("{name} (second request)"), second, &[*b])
                    }),
                    _ => Err(format!(
                        "{name}: two requests on the stream, two answers expected, got {statuses:?}"
                    )),
                }
                .and_then(|()| {
                    let (more, closed) =
                        tcp_responses(&mut stream, usize::MAX, Duration::from_secs(5));
                    if more.is_empty() && closed {
                        Ok(())
                    } else {
                        Err(format!("{name}: after the two answers, the octets that frame nothing close the connection; got {more:?}, closed {closed}"))
                    }
                })
            }
            TcpVerdict::Unframeable => {
                if statuses.is_empty() && closed {
                    Ok(())
                } else {
                    Err(format!(
                        "{name}: cannot be framed on a stream: no answer and the connection closed expected, got {statuses:?}, closed {closed}"
                    ))
                }
            }
            TcpVerdict::Incomplete => {
                if statuses.is_empty() && !closed {
                    Ok(())
                } else {
                    Err(format!(
                        "{name}: an incomplete body on a stream: no answer yet and the connection open, got {statuses:?}, closed {closed}"
                    ))
                }
            }
        };
        if let Err(e) = result {
            failures.push(format!("over TCP: {e}"));
        }
        // We are done: the server closes its end once ours is closed.
        let _ = stream.shutdown(std::net::Shutdown::Write);
        if !closed {
            let (_, closed) = tcp_responses(&mut stream, usize::MAX, Duration::from_secs(5));
            if !closed {
                failures.push(format!(
                    "{name} over TCP: the connection is still open 5 s after ours closed"
                ));
            }
        }
        server.assert_running();
    }
    eprintln!("torture responses over TCP:\n{tcp_table}");
    assert!(sent_over_tcp >= 40, "every message went over TCP too");

    server.assert_running();
    sipp::assert_options_answered(&setup.dir, &server);
    assert!(
        failures.is_empty(),
        "torture verdicts:\n{}\nall responses over UDP:\n{table}\nover TCP:\n{tcp_table}\n{}",
        failures.join("\n"),
        server.log()
    );
}

// ---------------------------------------------------------------------------------------------
// 7. Protection
// ---------------------------------------------------------------------------------------------

/// A source outside `[sip] allow` gets 403 (`reject`, INVITE and OPTIONS alike) or nothing
/// (`drop`); an allowed source is served either way.
#[test]
fn acl_rejects_or_drops_outsiders() {
    let _serial = sipp::serial();
    for action in ["reject", "drop"] {
        let setup = Setup::new(
            CallDir::seed(),
            &format!("allow = [\"127.0.0.2/32\"]\nacl_action = \"{action}\""),
        );
        let mut server = setup.start();
        let options = probe("127.0.0.1", &server, 1, Duration::from_millis(700));
        let socket = udp_from("127.0.0.1");
        let call_id = format!("acl-{action}@127.0.0.1");
        socket
            .send_to(
                invite_request(
                    &socket,
                    server.sip_port,
                    SEED_DID,
                    &call_id,
                    "z9hG4bK-acl-1",
                    sipp::free_ports(2),
                    "",
                )
                .as_bytes(),
                server_addr(&server),
            )
            .expect("send INVITE");
        let invite_replies = collect(&socket, Duration::from_millis(700));
        let invite: Vec<u16> = invite_replies.iter().filter_map(|m| status_of(m)).collect();
        match action {
            "reject" => {
                assert_eq!(options, [403], "OPTIONS from outside\n{}", server.log());
                assert_eq!(
                    invite,
                    [403],
                    "INVITE from outside, answered once (stateless, no retransmission): {invite_replies:?}\n{}",
                    server.log()
                );
            }
            _ => {
                assert!(options.is_empty(), "dropped: {options:?}");
                assert!(invite.is_empty(), "dropped: {invite:?}");
            }
        }
        // The allowed source: OPTIONS 200 and a whole call.
        assert_eq!(
            probe("127.0.0.2", &server, 2, Duration::from_millis(500)),
            [200],
            "allowed source\n{}",
            server.log()
        );
        let run = Sipp::call(
            &setup.dir,
            &format!("acl-{action}-allowed"),
            SEED_DID,
            &steps(&[keys("12"), vec![Step::AwaitBye(15_000)]]),
        )
        .source_ip("127.0.0.2")
        .timeout(40)
        .run(&server);
        run.assert_success(&server);
        let record = call_record(&setup.store, &run.call_id, &server);
        assert_record(
            &record,
            "sipp",
            SEED_DID,
            "plumber-qualifier",
            &["welcome", "has_license", "unqualified"],
            &["1", "2"],
            "hangup",
        );
        // The refused INVITE left no call behind.
        assert!(
            call_records(&setup.store)
                .iter()
                .all(|r| r["call_id"] != call_id.as_str()),
            "a refused INVITE has no call record"
        );
        server.assert_running();
    }
}

/// A TCP connection to `127.0.0.1:port` from the loopback address `ip` (bound before connecting,
/// which `std` cannot do), as a blocking std stream with a read timeout.
fn tcp_from(ip: &str, port: u16) -> std::io::Result<TcpStream> {
    let local: SocketAddr = format!("{ip}:0").parse().expect("address");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    let stream = runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(local)?;
        tokio::time::timeout(
            Duration::from_secs(5),
            socket.connect(SocketAddr::from(([127, 0, 0, 1], port))),
        )
        .await
        .map_err(|_| std::io::Error::other("connect timed out"))?
    })?;
    let stream = stream.into_std()?;
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    Ok(stream)
}

/// What a TCP peer got back within its read timeout: the bytes, and whether the server
/// closed the connection.
fn tcp_read(stream: &mut TcpStream) -> (String, bool) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match stream.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if got.windows(4).any(|w| w == b"\r\n\r\n") || got == b"\r\n" {
                    break false;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(_) => break false,
        }
    };
    (String::from_utf8_lossy(&got).into_owned(), closed)
}

/// An OPTIONS over TCP from `stream`.
fn tcp_options(stream: &TcpStream, server_port: u16, n: u32) -> String {
    let local = stream.local_addr().expect("local addr");
    format!(
        "OPTIONS sip:{SEED_DID}@127.0.0.1:{server_port};transport=tcp SIP/2.0\r\n\
         Via: SIP/2.0/TCP {local};branch=z9hG4bK-tcp-{n}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:probe@{ip}>;tag=tcp{n}\r\n\
         To: <sip:{SEED_DID}@127.0.0.1:{server_port}>\r\n\
         Call-ID: tcp-options-{n}@{ip}\r\n\
         CSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n",
        ip = local.ip()
    )
}

/// Over TCP the ACL must hold too: a source outside `[sip] allow` (acl_action = drop) gets no
/// answer, cannot keep a connection open (no keep-alive pong, closed), and so cannot take the
/// listener's connection slots away from the allowed source.
#[test]
fn outsiders_cannot_hold_tcp_connections() {
    let _serial = sipp::serial();
    let setup = Setup::new(
        CallDir::seed(),
        "allow = [\"127.0.0.2/32\"]\nacl_action = \"drop\"",
    );
    let mut server = Server::start(
        &setup.dir,
        &ServerOptions {
            tcp: true,
            ..setup.options()
        },
    );
    let port = server.tcp_port.expect("TCP listener");
    let mut problems = Vec::new();

    // The allowed source is served over TCP.
    let mut allowed = tcp_from("127.0.0.2", port).expect("connect from 127.0.0.2");
    allowed
        .write_all(tcp_options(&allowed, port, 1).as_bytes())
        .expect("send");
    let (reply, _) = tcp_read(&mut allowed);
    assert!(
        reply.starts_with("SIP/2.0 200"),
        "allowed source over TCP: {reply:?}\n{}",
        server.log()
    );
    drop(allowed);

    // The outsider: its OPTIONS is dropped; a keep-alive ping must not keep it connected.
    let mut outsider = tcp_from("127.0.0.1", port).expect("connect from 127.0.0.1");
    outsider
        .write_all(tcp_options(&outsider, port, 2).as_bytes())
        .expect("send");
    let (reply, closed_after_request) = tcp_read(&mut outsider);
    assert!(
        !reply.starts_with("SIP/2.0"),
        "outsider over TCP got {reply:?}"
    );
    let _ = outsider.write_all(b"\r\n\r\n");
    let (pong, closed) = tcp_read(&mut outsider);
    if !(closed_after_request || closed) || !pong.is_empty() {
        problems.push(format!(
            "a TCP connection from 127.0.0.1 (outside allow = 127.0.0.2/32, acl_action = drop) \
             stays open: after its OPTIONS (not answered, right) it sent a CRLFCRLF keep-alive \
             and got {pong:?} back; closed: {closed}"
        ));
    }
    drop(outsider);

    // The consequence: the outsider fills every connection slot (4096 per listener) ...
    let mut held = Vec::new();
    for _ in 0..4096 {
        match tcp_from("127.0.0.1", port) {
            Ok(s) => held.push(s),
            Err(e) => {
                problems.push(format!("connection {} from 127.0.0.1: {e}", held.len()));
                break;
            }
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let still_open = held
        .iter()
        .filter(|s| {
            s.set_nonblocking(true).ok();
            let mut b = [0u8; 16];
            let open = !matches!((&**s).read(&mut b), Ok(0));
            s.set_nonblocking(false).ok();
            open
        })
        .count();
    // ... and the allowed source is locked out.
    let mut allowed = tcp_from("127.0.0.2", port).expect("connect from 127.0.0.2");
    allowed
        .write_all(tcp_options(&allowed, port, 3).as_bytes())
        .expect("send");
    let (reply, closed) = tcp_read(&mut allowed);
    if !reply.starts_with("SIP/2.0 200") {
        problems.push(format!(
            "with {still_open} connections from the outsider 127.0.0.1 held open, the allowed \
             source 127.0.0.2 gets {reply:?} over TCP (closed: {closed})"
        ));
    }
    drop(held);
    server.assert_running();
    assert!(
        problems.is_empty(),
        "{}\n{}",
        problems.join("\n"),
        server.log()
    );
}

/// 2,000 OPTIONS from 127.0.0.1 as fast as a loop sends them: past the burst the source is
/// banned (no more answers, still banned after the flood), while a caller on 127.0.0.2
/// completes a whole call during the flood.
#[test]
fn a_flood_is_banned_while_another_source_calls() {
    let _serial = sipp::serial();
    const RATE: u32 = 50;
    let setup = Setup::new(CallDir::seed(), &format!("rate_limit = {RATE}\nban_s = 30"));
    let mut server = setup.start();

    let legit = Sipp::call(
        &setup.dir,
        "flood-legit",
        SEED_DID,
        &steps(&[keys("12"), vec![Step::AwaitBye(15_000)]]),
    )
    .source_ip("127.0.0.2")
    .timeout(40)
    .spawn(&server);
    std::thread::sleep(Duration::from_millis(300));

    // The flood: 2,000 OPTIONS over about a second, answers counted as they come.
    let socket = udp_from("127.0.0.1");
    socket.set_nonblocking(true).expect("non-blocking");
    let started = Instant::now();
    let mut answered = 0usize;
    let mut last_answer: Option<Duration> = None;
    let mut buf = vec![0u8; 4096];
    for n in 0..2000u32 {
        socket
            .send_to(
                options_request(&socket, server.sip_port, n).as_bytes(),
                server_addr(&server),
            )
            .expect("send OPTIONS");
        while let Ok((len, _)) = socket.recv_from(&mut buf) {
            if status_of(&String::from_utf8_lossy(&buf[..len])) == Some(200) {
                answered += 1;
                last_answer = Some(started.elapsed());
            }
        }
        if n % 2 == 1 {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the flood loop is bounded"
        );
    }
    socket.set_nonblocking(false).expect("blocking");
    for m in collect(&socket, Duration::from_millis(300)) {
        if status_of(&m) == Some(200) {
            answered += 1;
            last_answer = Some(started.elapsed());
        }
    }
    let flood_time = started.elapsed();
    let run = legit.wait();
    eprintln!(
        "flood: 2000 OPTIONS in {flood_time:?}, {answered} answered, last answer at {last_answer:?}"
    );
    assert!(
        flood_time < Duration::from_secs(8),
        "the flood was not a flood: {flood_time:?}"
    );
    // The burst (2 × rate) plus what refilled before the ban; nothing like 2,000.
    assert!(
        answered >= RATE as usize && answered <= 3 * RATE as usize + 10,
        "{answered} of 2000 flood requests answered (rate {RATE}/s)\n{}",
        server.log()
    );
    assert!(
        last_answer.is_some_and(|t| t < Duration::from_millis(1500)),
        "answers stopped early in the flood: last at {last_answer:?}"
    );
    // Still banned after the flood; the other source is not.
    assert!(
        probe("127.0.0.1", &server, 9_001, Duration::from_millis(500)).is_empty(),
        "the flooder is banned"
    );
    assert_eq!(
        probe("127.0.0.2", &server, 9_002, Duration::from_millis(500)),
        [200]
    );
    assert!(
        std::fs::read_to_string(&server.log_path)
            .unwrap_or_default()
            .contains("source banned"),
        "the ban is logged\n{}",
        server.log()
    );
    run.assert_success(&server);
    let record = call_record(&setup.store, &run.call_id, &server);
    assert_record(
        &record,
        "sipp",
        SEED_DID,
        "plumber-qualifier",
        &["welcome", "has_license", "unqualified"],
        &["1", "2"],
        "hangup",
    );
    server.assert_running();
}

/// A ban ends after `ban_s`: the flooder is answered again.
#[test]
fn a_ban_expires() {
    let _serial = sipp::serial();
    let setup = Setup::new(CallDir::seed(), "rate_limit = 20\nban_s = 2");
    let mut server = setup.start();
    let socket = udp_from("127.0.0.1");
    for n in 0..200u32 {
        socket
            .send_to(
                options_request(&socket, server.sip_port, n).as_bytes(),
                server_addr(&server),
            )
            .expect("send OPTIONS");
    }
    let answered = collect(&socket, Duration::from_millis(500))
        .iter()
        .filter(|m| status_of(m) == Some(200))
        .count();
    assert!(
        (20..=60).contains(&answered),
        "{answered} of 200 answered at 20/s (burst 40)\n{}",
        server.log()
    );
    assert!(
        probe("127.0.0.1", &server, 1_000, Duration::from_millis(500)).is_empty(),
        "banned"
    );
    std::thread::sleep(Duration::from_millis(2_500));
    assert_eq!(
        probe("127.0.0.1", &server, 1_001, Duration::from_millis(500)),
        [200],
        "the ban is over after ban_s = 2\n{}",
        server.log()
    );
    server.assert_running();
}

/// `--max-calls 1`: an INVITE while a call is up gets 503 with Retry-After; the call up is not
/// disturbed, and once it ends a new call gets in.
#[test]
fn max_calls_turns_the_next_call_away_with_retry_after() {
    let _serial = sipp::serial();
    let setup = Setup::new(CallDir::seed(), "");
    let mut server = Server::start(
        &setup.dir,
        &ServerOptions {
            max_calls: Some(1),
            ..setup.options()
        },
    );
    let first = Sipp::call(
        &setup.dir,
        "max-calls-first",
        SEED_DID,
        &[Step::Pause(4000), Step::Bye],
    )
    .caller(CALLER)
    .timeout(30)
    .spawn(&server);
    // Wait for the first call's trace-less "call answered" log line (bounded).
    let deadline = Instant::now() + Duration::from_secs(15);
    while !std::fs::read_to_string(&server.log_path)
        .unwrap_or_default()
        .contains("call answered")
    {
        assert!(
            Instant::now() < deadline,
            "the first call was not answered\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let socket = udp_from("127.0.0.1");
    let (call_id, branch) = ("max-calls-second@127.0.0.1", "z9hG4bK-max-2");
    socket
        .send_to(
            invite_request(
                &socket,
                server.sip_port,
                SEED_DID,
                call_id,
                branch,
                sipp::free_ports(2),
                "",
            )
            .as_bytes(),
            server_addr(&server),
        )
        .expect("send INVITE");
    let replies = collect(&socket, Duration::from_millis(600));
    let last = replies
        .iter()
        .rfind(|m| status_of(m).is_some_and(|s| s >= 200))
        .unwrap_or_else(|| panic!("no final response: {replies:?}\n{}", server.log()))
        .clone();
    socket
        .send_to(
            ack_for(&socket, server.sip_port, SEED_DID, call_id, branch, &last).as_bytes(),
            server_addr(&server),
        )
        .expect("send ACK");
    assert_eq!(status_of(&last), Some(503), "{last}\n{}", server.log());
    assert!(
        header(&last, "Retry-After").is_some_and(|v| v.parse::<u32>().is_ok_and(|s| s > 0)),
        "503 with Retry-After: {last}"
    );
    // The ACK stops the 503's retransmissions.
    std::thread::sleep(Duration::from_millis(200));
    let after_ack = collect(&socket, Duration::from_millis(1200));
    assert!(
        after_ack.is_empty(),
        "retransmissions after the ACK: {after_ack:?}"
    );

    let run = first.wait();
    run.assert_success(&server);
    let record = call_record(&setup.store, &run.call_id, &server);
    assert_record(
        &record,
        CALLER,
        SEED_DID,
        "plumber-qualifier",
        &["welcome"],
        &[],
        "caller-hangup",
    );
    // The slot is free again.
    let next = Sipp::call(
        &setup.dir,
        "max-calls-next",
        SEED_DID,
        &[Step::Pause(500), Step::Bye],
    )
    .timeout(20)
    .run(&server);
    next.assert_success(&server);
    server.assert_running();
}

/// Oversize messages: a 70 KB INVITE cannot be one UDP datagram (the kernel refuses it) and
/// over TCP gets 513 or a closed connection; the largest possible datagram (65,507 bytes) is
/// answered or dropped. The server lives and answers OPTIONS.
#[test]
fn oversize_invites_do_not_hurt() {
    let _serial = sipp::serial();
    let setup = Setup::new(CallDir::seed(), "");
    let mut server = Server::start(
        &setup.dir,
        &ServerOptions {
            tcp: true,
            ..setup.options()
        },
    );
    let socket = udp_from("127.0.0.1");
    let padded = |size: usize, call_id: &str, branch: &str| {
        // An unknown number: no call is set up even if the message gets through.
        let base = invite_request(
            &socket,
            server.sip_port,
            "+19999999999",
            call_id,
            branch,
            40_000,
            "X-Padding: \r\n",
        );
        let pad = size.saturating_sub(base.len());
        base.replacen("X-Padding: ", &format!("X-Padding: {}", "a".repeat(pad)), 1)
    };
    let big = padded(70_000, "oversize-udp@127.0.0.1", "z9hG4bK-big-1");
    assert!(big.len() >= 70_000);
    let refused = socket.send_to(big.as_bytes(), server_addr(&server));
    assert!(
        refused.is_err(),
        "a 70 KB UDP datagram cannot be sent on IPv4"
    );

    let max = padded(65_507, "max-udp@127.0.0.1", "z9hG4bK-big-2");
    assert_eq!(max.len(), 65_507);
    socket
        .send_to(max.as_bytes(), server_addr(&server))
        .expect("send a 65,507-byte datagram");
    let replies = collect(&socket, Duration::from_millis(700));
    let statuses: Vec<u16> = replies.iter().filter_map(|m| status_of(m)).collect();
    eprintln!("65,507-byte INVITE over UDP: {statuses:?}");
    assert!(
        statuses.iter().all(|s| matches!(s, 100 | 404 | 513)),
        "{statuses:?}\n{}",
        server.log()
    );
    server.assert_running();

    let tcp_port = server.tcp_port.expect("TCP listener");
    let mut stream = TcpStream::connect(("127.0.0.1", tcp_port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let big_tcp = big.replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    // The server may close while we still write: that is an answer too.
    let _ = stream.write_all(big_tcp.as_bytes());
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match stream.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(_) => break false,
        }
    };
    let text = String::from_utf8_lossy(&got).into_owned();
    assert!(
        text.starts_with("SIP/2.0 513") || (text.is_empty() && closed),
        "70 KB INVITE over TCP: got {text:?}, closed {closed}\n{}",
        server.log()
    );
    server.assert_running();
    sipp::assert_options_answered(&setup.dir, &server);
    assert!(call_records(&setup.store).is_empty(), "no call came of it");
}

/// A Refer-To value without its URI headers (the context the runtime embeds), as sent:
/// `<sip:agent@host?X-IVR-Path=...>` becomes `<sip:agent@host>`.
fn refer_target(value: &str) -> String {
    match value.split_once('?') {
        Some((target, _)) => format!("{target}>"),
        None => value.to_owned(),
    }
}
