//! Real calls on loopback: the `wasm-ivr serve` process, SIPp callers rendered from the scenario
//! files in `tests/sipp/`, packet capture (tcpdump + tshark), a pcap writer for in-band DTMF, and
//! readers for the runtime's call traces.
//!
//! Every test that uses these takes [`serial`] first: calls are timed in real time, and two
//! machines' worth of calls on two cores would make the timing assertions flaky. Every process
//! started here is bounded in time and killed (by its own id) when its handle is dropped.
//!
//! Nothing here sends a packet anywhere but 127.0.0.1.

use serde_json::Value;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read};
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, mpsc};
use std::time::{Duration, Instant};
use wasm_ivr::media::codec::{Codec, FRAME_SAMPLES};

/// The seed tree's number (`examples/plumber-qualifier/routes.toml`).
pub const SEED_DID: &str = "+14155559876";
/// The PIN-entry fixture's number (`tests/fixtures/calls/pin-entry/routes.toml`).
pub const PIN_DID: &str = "+15005550123";
/// The RFC 4733 pcaps shipped with Debian's `sip-tester`.
pub const SIPP_PCAPS: &str = "/usr/share/sip-tester";

/// One call test at a time (see the module documentation). A failed test poisons nothing.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------------------------
// Ports
// ---------------------------------------------------------------------------------------------

/// First port handed out: below Linux's ephemeral range (32768+), so a port checked free here is
/// not taken a moment later by some process's outgoing socket.
const PORT_FLOOR: u32 = 20_000;
const PORT_CEILING: u32 = 32_000;

/// `n` consecutive UDP ports on 127.0.0.1, all free when checked, starting at an even port, and
/// never handed out twice by this process. Each test binary starts at its own offset.
pub fn free_ports(n: u16) -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let span = u32::from(n).next_multiple_of(2);
    let offset = (std::process::id() % 200) * 50;
    for _ in 0..2000 {
        let cursor = NEXT.fetch_add(span, Ordering::Relaxed);
        let base = PORT_FLOOR + (offset + cursor) % (PORT_CEILING - PORT_FLOOR - span);
        let base = base - base % 2;
        let all_free = (base..base + u32::from(n)).all(|p| {
            u16::try_from(p)
                .ok()
                .is_some_and(|p| UdpSocket::bind(("127.0.0.1", p)).is_ok())
        });
        if all_free {
            return u16::try_from(base).expect("below 32000");
        }
    }
    panic!("no block of {n} free UDP ports between {PORT_FLOOR} and {PORT_CEILING}");
}

/// Whether every UDP port in `lo..=hi` can be bound on 127.0.0.1 right now (each socket is
/// closed again at once).
pub fn ports_bindable(lo: u16, hi: u16) -> Result<(), String> {
    for p in lo..=hi {
        if let Err(e) = UdpSocket::bind(("127.0.0.1", p)) {
            return Err(format!("UDP port {p} is still in use: {e}"));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The IVR folder of one test
// ---------------------------------------------------------------------------------------------

/// A temporary IVR folder (`ivrs/` with the trees, `routes.toml` and `audio/`), the trace folder
/// and a folder for logs, rendered scenarios and captures.
pub struct CallDir {
    /// Owns everything below; removed when the test ends.
    pub tmp: tempfile::TempDir,
    /// The `--dir` folder.
    pub ivrs: PathBuf,
    /// The `--call-traces` folder.
    pub traces: PathBuf,
    /// Server log, SIPp logs, rendered scenarios, captures.
    pub logs: PathBuf,
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}

impl CallDir {
    /// An IVR folder with nothing in it but an empty `audio/` (what the HTTP API fills).
    pub fn empty_with_audio() -> CallDir {
        let dir = CallDir::empty();
        std::fs::create_dir_all(dir.ivrs.join("audio")).expect("create audio dir");
        dir
    }

    fn empty() -> CallDir {
        let mut tmp = tempfile::Builder::new()
            .prefix("wasm-ivr-call-")
            .tempdir()
            .expect("temp dir");
        // WASM_IVR_KEEP_CALL_DIRS=1 keeps every test's folder (logs, rendered scenarios,
        // captures, traces) for a look afterwards.
        if std::env::var_os("WASM_IVR_KEEP_CALL_DIRS").is_some_and(|v| v != "0") {
            tmp.disable_cleanup(true);
            eprintln!("keeping {}", tmp.path().display());
        }
        let ivrs = tmp.path().join("ivrs");
        let traces = tmp.path().join("traces");
        let logs = tmp.path().join("logs");
        for d in [&ivrs, &traces, &logs] {
            std::fs::create_dir_all(d).expect("create dir");
        }
        CallDir {
            tmp,
            ivrs,
            traces,
            logs,
        }
    }

    /// The seed example (`examples/plumber-qualifier`: tree, routes, WAV prompts).
    pub fn seed() -> CallDir {
        let dir = CallDir::empty();
        copy_dir(&super::root().join("examples/plumber-qualifier"), &dir.ivrs);
        // Not an IVR file; keep the folder to what the runtime reads.
        let _ = std::fs::remove_file(dir.ivrs.join("make-prompts.sh"));
        dir
    }

    /// A fixture of `tests/fixtures/calls/NAME` (trees and routes), with the seed's prompts as
    /// `audio/` unless the fixture has its own.
    pub fn fixture(name: &str) -> CallDir {
        let dir = CallDir::empty();
        copy_dir(
            &super::root().join("tests/fixtures/calls").join(name),
            &dir.ivrs,
        );
        if !dir.ivrs.join("audio").exists() {
            copy_dir(
                &super::root().join("examples/plumber-qualifier/audio"),
                &dir.ivrs.join("audio"),
            );
        }
        dir
    }

    /// A prompt of the folder.
    pub fn audio(&self, name: &str) -> PathBuf {
        self.ivrs.join("audio").join(name)
    }

    /// Replaces (or adds) a file of the IVR folder in one step: written beside the folder, then
    /// renamed into it, so the watcher never sees half a file.
    pub fn replace(&self, name: &str, contents: &str) {
        let staging = self.tmp.path().join(format!(".{name}.staging"));
        std::fs::write(&staging, contents).expect("write staging file");
        std::fs::rename(&staging, self.ivrs.join(name)).expect("rename into the IVR folder");
    }
}

// ---------------------------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------------------------

/// How to start `wasm-ivr serve`.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Size of the `--rtp-ports` range (a free block is picked).
    pub rtp_ports: u16,
    /// `--answer-delay-ms`.
    pub answer_delay_ms: Option<u32>,
    /// `--max-calls`.
    pub max_calls: Option<u32>,
    /// `--config`: a `wasm-ivr.toml`.
    pub config: Option<PathBuf>,
    /// `--store`: the SQLite database. Without it the server uses `wasm-ivr.db` in its working
    /// directory, which is the test's logs folder.
    pub store: Option<PathBuf>,
    /// Also listen on TCP (`tcp:127.0.0.1:0`); its port is [`Server::tcp_port`].
    pub tcp: bool,
    /// `--http-listen 127.0.0.1:0`: the operator API on a free port ([`Server::http_port`]).
    /// Without it the server uses its default (`[http] listen` or 127.0.0.1:8080, if free).
    pub http: bool,
    /// Extra environment variables, e.g. `WASM_IVR_API_KEYS`.
    pub env: Vec<(String, String)>,
    /// Listen on `[::1]` instead of 127.0.0.1 (SIP over UDP, and TCP with [`Self::tcp`]; RTP
    /// follows the listener's address). Callers then need [`Sipp::over_ipv6`].
    pub ipv6: bool,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            rtp_ports: 20,
            answer_delay_ms: None,
            max_calls: None,
            config: None,
            store: None,
            tcp: false,
            http: false,
            env: Vec::new(),
            ipv6: false,
        }
    }
}

/// A running `wasm-ivr serve`, killed when dropped.
pub struct Server {
    child: Child,
    /// The SIP port it printed in its ready line.
    pub sip_port: u16,
    /// The TCP listener's port (with [`ServerOptions::tcp`]).
    pub tcp_port: Option<u16>,
    /// The HTTP API's port (`http=127.0.0.1:PORT` in the ready line), if it started.
    pub http_port: Option<u16>,
    /// The `--rtp-ports` range.
    pub rtp: (u16, u16),
    /// The SIP listeners' address: 127.0.0.1, or ::1 with [`ServerOptions::ipv6`].
    pub ip: std::net::IpAddr,
    /// `--call-traces`.
    pub traces: PathBuf,
    /// Its stderr.
    pub log_path: PathBuf,
}

impl Server {
    /// Starts the server on `dir` and waits (bounded) for its `ready` line.
    pub fn start(dir: &CallDir, options: &ServerOptions) -> Server {
        let lo = free_ports(options.rtp_ports);
        let hi = lo + options.rtp_ports - 1;
        // A restarted server in the same folder gets its own log.
        let log_path = (1..)
            .map(|n| match n {
                1 => dir.logs.join("server.log"),
                n => dir.logs.join(format!("server-{n}.log")),
            })
            .find(|p| !p.exists())
            .expect("a free log name");
        let log = std::fs::File::create(&log_path).expect("server log");
        let mut command = Command::new(super::bin());
        command
            .arg("serve")
            .arg("--dir")
            .arg(&dir.ivrs)
            .args([
                "--sip-listen",
                match (options.ipv6, options.tcp) {
                    (false, true) => "udp:127.0.0.1:0,tcp:127.0.0.1:0",
                    (false, false) => "udp:127.0.0.1:0",
                    (true, true) => "udp:[::1]:0,tcp:[::1]:0",
                    (true, false) => "udp:[::1]:0",
                },
            ])
            .arg("--rtp-ports")
            .arg(format!("{lo}-{hi}"))
            .arg("--call-traces")
            .arg(&dir.traces);
        if let Some(ms) = options.answer_delay_ms {
            command.arg("--answer-delay-ms").arg(ms.to_string());
        }
        if let Some(n) = options.max_calls {
            command.arg("--max-calls").arg(n.to_string());
        }
        if let Some(config) = &options.config {
            command.arg("--config").arg(config);
        }
        if let Some(store) = &options.store {
            command.arg("--store").arg(store);
        }
        if options.http {
            command.args(["--http-listen", "127.0.0.1:0"]);
        }
        for (key, value) in &options.env {
            command.env(key, value);
        }
        command
            .env(
                "WASM_IVR_CACHE_DIR",
                super::root().join("target/test-cache"),
            )
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info,wasm_ivr=debug".to_owned()),
            )
            .current_dir(&dir.logs)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        let mut child = command.spawn().expect("start wasm-ivr serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    // Nobody listens any more; keep draining so the server never blocks.
                    continue;
                }
            }
        });
        let mut server = Server {
            child,
            sip_port: 0,
            tcp_port: None,
            http_port: None,
            rtp: (lo, hi),
            ip: if options.ipv6 {
                std::net::Ipv6Addr::LOCALHOST.into()
            } else {
                std::net::Ipv4Addr::LOCALHOST.into()
            },
            traces: dir.traces.clone(),
            log_path,
        };
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => {
                    if let Some(port) = parse_ready(&line) {
                        server.sip_port = port;
                        server.tcp_port = parse_ready_tcp(&line);
                        server.http_port = parse_ready_http(&line);
                        let expected = format!("rtp={lo}-{hi}");
                        assert!(
                            line.contains(&expected),
                            "ready line {line:?} does not say {expected}"
                        );
                        return server;
                    }
                    panic!(
                        "unexpected stdout line before `ready`: {line:?}\n{}",
                        server.log()
                    );
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = server.child.wait();
                    panic!(
                        "wasm-ivr serve exited before `ready` ({status:?})\n{}",
                        server.log()
                    );
                }
            }
            if Instant::now() > deadline {
                panic!("no `ready` line within 90 s\n{}", server.log());
            }
        }
    }

    /// The server's stderr so far (for failure messages), at most the last 30 000 characters.
    pub fn log(&self) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let tail = tail_chars(&text, 30_000);
        format!("--- wasm-ivr serve stderr ---\n{tail}\n--- end ---")
    }

    /// The server process's id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Panics when the server has exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("wasm-ivr serve exited: {status}\n{}", self.log());
        }
    }

    /// Open sockets of the server process (from `/proc/PID/fd`).
    ///
    /// Panics when the count cannot be read: a leak check must not pass on a zero it never saw.
    pub fn open_sockets(&self) -> usize {
        let entries = std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .unwrap_or_else(|e| panic!("cannot list the server's file descriptors: {e}"));
        let mut sockets = 0;
        for entry in entries {
            let entry = entry.unwrap_or_else(|e| panic!("cannot read a descriptor entry: {e}"));
            // A descriptor closed between the listing and the read is simply gone.
            if let Ok(target) = std::fs::read_link(entry.path())
                && target.to_string_lossy().starts_with("socket:")
            {
                sockets += 1;
            }
        }
        sockets
    }

    /// Waits (bounded) for the trace of `call_id`.
    pub fn trace(&self, call_id: &str) -> Trace {
        match wait_trace(&self.traces, call_id, Duration::from_secs(20)) {
            Ok(trace) => trace,
            Err(e) => panic!("{e}\n{}", self.log()),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn parse_ready(line: &str) -> Option<u16> {
    ready_listener_port(line, "udp")
}

/// The port of the `tcp:ADDRESS:PORT` listener in a ready line.
fn parse_ready_tcp(line: &str) -> Option<u16> {
    ready_listener_port(line, "tcp")
}

/// The port of the first loopback (`127.0.0.1` or `[::1]`) listener of `transport` in a ready
/// line (`ready sip=udp:127.0.0.1:PORT,tcp:[::1]:PORT rtp=...`).
fn ready_listener_port(line: &str, transport: &str) -> Option<u16> {
    let listeners = line.strip_prefix("ready sip=")?.split(' ').next()?;
    listeners.split(',').find_map(|listener| {
        let addr = listener.strip_prefix(transport)?.strip_prefix(':')?;
        let (host, port) = addr.rsplit_once(':')?;
        matches!(host, "127.0.0.1" | "[::1]")
            .then(|| port.parse().ok())
            .flatten()
    })
}

/// The port of `http=127.0.0.1:PORT` in a ready line.
fn parse_ready_http(line: &str) -> Option<u16> {
    line.split(' ')
        .find_map(|field| field.strip_prefix("http=127.0.0.1:"))?
        .parse()
        .ok()
}

fn tail_chars(text: &str, n: usize) -> &str {
    if text.len() <= n {
        return text;
    }
    let mut start = text.len() - n;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

// ---------------------------------------------------------------------------------------------
// Call traces
// ---------------------------------------------------------------------------------------------

/// The trace file name the runtime uses for a Call-ID.
pub fn trace_file_name(call_id: &str) -> String {
    let safe: String = call_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{safe}.json")
}

/// Polls for `TRACEDIR/<call id>.json` until it parses or `timeout` passes.
pub fn wait_trace(traces: &Path, call_id: &str, timeout: Duration) -> Result<Trace, String> {
    let path = traces.join(trace_file_name(call_id));
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(text) = std::fs::read_to_string(&path)
            && let Ok(value) = serde_json::from_str::<Value>(&text)
        {
            return Ok(Trace(value));
        }
        if Instant::now() > deadline {
            let present: Vec<String> = std::fs::read_dir(traces)
                .map(|d| {
                    d.filter_map(|e| e.ok())
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            return Err(format!(
                "no call trace {} within {timeout:?}; the trace folder holds {present:?}",
                path.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The files in the trace folder now.
pub fn trace_files(traces: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(traces)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// One call's trace as the runtime wrote it.
#[derive(Debug, Clone)]
pub struct Trace(pub Value);

impl Trace {
    /// The node names in order.
    pub fn path(&self) -> Vec<String> {
        self.0["path"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|v| v.as_str().unwrap_or("<not a string>").to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `outcome.action`.
    pub fn outcome(&self) -> String {
        self.0["outcome"]["action"]
            .as_str()
            .unwrap_or("<none>")
            .to_owned()
    }

    /// The events of one `type`, in order.
    pub fn events(&self, kind: &str) -> Vec<Value> {
        self.0["events"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|e| e["type"] == kind)
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    }

    /// The `result` of every gather event, in order.
    pub fn gather_results(&self) -> Vec<Value> {
        self.events("gather")
            .iter()
            .map(|e| e["result"].clone())
            .collect()
    }

    /// `at_ms` of the first `step` event named `name`.
    pub fn step_at_ms(&self, name: &str) -> Option<u64> {
        self.events("step")
            .iter()
            .find(|e| e["name"] == name)
            .and_then(|e| e["at_ms"].as_u64())
    }

    /// `at_ms` of every `step` event named `name`.
    pub fn steps_at_ms(&self, name: &str) -> Vec<u64> {
        self.events("step")
            .iter()
            .filter(|e| e["name"] == name)
            .filter_map(|e| e["at_ms"].as_u64())
            .collect()
    }

    /// The trace, pretty-printed (for failure messages).
    pub fn pretty(&self) -> String {
        serde_json::to_string_pretty(&self.0).unwrap_or_default()
    }
}

// ---------------------------------------------------------------------------------------------
// SIPp
// ---------------------------------------------------------------------------------------------

/// What the caller does after the ACK (rendered into `tests/sipp/uac_call.xml`).
#[derive(Debug, Clone)]
pub enum Step {
    /// Waits this many ms.
    Pause(u32),
    /// Plays `/usr/share/sip-tester/dtmf_2833_<key>.pcap` (one RFC 4733 event, 140 ms;
    /// asynchronous: follow it with a pause of at least 200 ms).
    Rfc2833(char),
    /// Plays a pcap of RTP packets from the media port (asynchronous like `Rfc2833`).
    Pcap(PathBuf),
    /// A SIP INFO `application/dtmf-relay` digit (waits for its 200).
    Info(char),
    /// A SIP INFO `application/dtmf` digit (waits for its 200).
    InfoDtmf(char),
    /// re-INVITE with `a=sendonly` (hold); waits for the 200, ACKs it.
    Hold,
    /// re-INVITE with `a=sendrecv` (resume); waits for the 200, ACKs it.
    Resume,
    /// The caller hangs up (waits for the 200).
    Bye,
    /// Waits up to this many ms for the IVR's BYE and answers 200; the call fails without it.
    AwaitBye(u32),
    /// Waits up to `ms` for the runtime's REFER (a blind transfer) and answers it `status`
    /// (202 accepts it; 4xx-6xx refuse it).
    AwaitRefer {
        /// The REFER's final response.
        status: u16,
        /// How long to wait for the REFER.
        ms: u32,
    },
    /// A NOTIFY of the REFER's implicit subscription (`Event: refer`, a `message/sipfrag` body
    /// such as `SIP/2.0 200 OK`); waits for its 200.
    Notify {
        /// The sipfrag's status line.
        sipfrag: String,
        /// `Subscription-State: terminated` (the last NOTIFY) instead of `active`.
        terminated: bool,
    },
}

/// The reason phrase SIPp's responses carry for `status`.
fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        480 => "Temporarily Unavailable",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        603 => "Decline",
        _ => "Whatever",
    }
}

fn sipp_dir() -> PathBuf {
    super::root().join("tests/sipp")
}

fn fragment(name: &str, vars: &[(&str, String)]) -> String {
    let path = sipp_dir().join("fragments").join(name);
    let mut text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    for (k, v) in vars {
        text = text.replace(&format!("{{{{{k}}}}}"), v);
    }
    text
}

fn pcap_name(key: char) -> String {
    match key {
        '0'..='9' => key.to_string(),
        '*' => "star".to_owned(),
        '#' => "pound".to_owned(),
        _ => panic!("no RFC 2833 pcap for {key:?}"),
    }
}

/// Renders the steps into the body of `uac_call.xml`.
pub fn render_steps(steps: &[Step]) -> String {
    let mut out = String::new();
    let mut cseq = 1u32;
    let mut sdp_version = 2_353_687_637u64;
    for step in steps {
        match step {
            Step::Pause(ms) => {
                let _ = writeln!(out, "  <pause milliseconds=\"{ms}\"/>");
            }
            Step::Rfc2833(key) => {
                let _ = writeln!(
                    out,
                    "  <nop><action><exec play_pcap_audio=\"{SIPP_PCAPS}/dtmf_2833_{}.pcap\"/></action></nop>",
                    pcap_name(*key)
                );
            }
            Step::Pcap(path) => {
                let _ = writeln!(
                    out,
                    "  <nop><action><exec play_pcap_audio=\"{}\"/></action></nop>",
                    path.display()
                );
            }
            Step::Info(key) | Step::InfoDtmf(key) => {
                cseq += 1;
                let file = if matches!(step, Step::Info(_)) {
                    "info_dtmf_relay.xml"
                } else {
                    "info_dtmf.xml"
                };
                out.push_str(&fragment(
                    file,
                    &[("CSEQ", cseq.to_string()), ("DIGIT", key.to_string())],
                ));
            }
            Step::Hold | Step::Resume => {
                cseq += 1;
                sdp_version += 1;
                let direction = if matches!(step, Step::Hold) {
                    "sendonly"
                } else {
                    "sendrecv"
                };
                out.push_str(&fragment(
                    "reinvite.xml",
                    &[
                        ("CSEQ", cseq.to_string()),
                        ("SDP_VERSION", sdp_version.to_string()),
                        ("DIRECTION", direction.to_owned()),
                    ],
                ));
            }
            Step::Bye => {
                cseq += 1;
                out.push_str(&fragment("send_bye.xml", &[("CSEQ", cseq.to_string())]));
            }
            Step::AwaitBye(ms) => {
                out.push_str(&fragment("await_bye.xml", &[("MS", ms.to_string())]));
            }
            Step::AwaitRefer { status, ms } => {
                out.push_str(&fragment(
                    "await_refer.xml",
                    &[
                        ("MS", ms.to_string()),
                        ("STATUS", status.to_string()),
                        ("REASON", reason_phrase(*status).to_owned()),
                    ],
                ));
            }
            Step::Notify {
                sipfrag,
                terminated,
            } => {
                cseq += 1;
                let state = if *terminated {
                    "terminated;reason=noresource"
                } else {
                    "active;expires=60"
                };
                out.push_str(&fragment(
                    "notify_refer.xml",
                    &[
                        ("CSEQ", cseq.to_string()),
                        ("STATE", state.to_owned()),
                        ("SIPFRAG", sipfrag.clone()),
                    ],
                ));
            }
        }
    }
    out
}

/// One SIPp caller (one call, `-m 1`), ready to run against a [`Server`].
#[derive(Debug, Clone)]
pub struct Sipp {
    /// The scenario file SIPp runs (rendered into the logs folder, or one of `tests/sipp/`).
    pub scenario: PathBuf,
    /// `-s`: the Request-URI user part, the DID.
    pub did: String,
    /// SIPp's SIP port (`-p`).
    pub sip_port: u16,
    /// SIPp's media port (`-mp`): where the runtime sends RTP.
    pub media_port: u16,
    control_port: u16,
    /// The Call-ID SIPp will use.
    pub call_id: String,
    /// Global timeout (`-timeout`, failing with `-timeout_error`), in seconds.
    pub timeout_s: u32,
    /// `-i` and `-mi`: the loopback address SIPp sends from (127.0.0.1 unless changed).
    pub local_ip: String,
    /// `-t t1`: SIP over one TCP connection to the server's TCP listener.
    pub tcp: bool,
    label: String,
    logs: PathBuf,
}

fn unique_label(name: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

impl Sipp {
    /// A caller rendered from `tests/sipp/uac_call.xml` with `steps` after the ACK.
    pub fn call(dir: &CallDir, name: &str, did: &str, steps: &[Step]) -> Sipp {
        Sipp::call_offering(dir, name, did, &[0, 8, 101], steps)
    }

    /// Like [`Sipp::call`], with the INVITE's offer cut down to `payload_types` (of PCMU 0,
    /// PCMA 8 and telephone-event 101, in the template's order).
    pub fn call_offering(
        dir: &CallDir,
        name: &str,
        did: &str,
        payload_types: &[u8],
        steps: &[Step],
    ) -> Sipp {
        Sipp::render(dir, "uac_call.xml", name, did, payload_types, steps)
    }

    /// Like [`Sipp::call`], with a late offer (`tests/sipp/uac_call_late_offer.xml`): the INVITE
    /// has no SDP, the runtime's 200 carries the offer and the ACK the answer (PCMU and
    /// telephone-event).
    pub fn call_late_offer(dir: &CallDir, name: &str, did: &str, steps: &[Step]) -> Sipp {
        Sipp::render(
            dir,
            "uac_call_late_offer.xml",
            name,
            did,
            &[0, 8, 101],
            steps,
        )
    }

    fn render(
        dir: &CallDir,
        template: &str,
        name: &str,
        did: &str,
        payload_types: &[u8],
        steps: &[Step],
    ) -> Sipp {
        let label = unique_label(name);
        let template = std::fs::read_to_string(sipp_dir().join(template))
            .unwrap_or_else(|e| panic!("read tests/sipp/{template}: {e}"));
        let formats: Vec<String> = payload_types.iter().map(u8::to_string).collect();
        let mut xml =
            template.replace("RTP/AVP 0 8 101", &format!("RTP/AVP {}", formats.join(" ")));
        for pt in [0u8, 8, 101] {
            if !payload_types.contains(&pt) {
                xml = xml
                    .lines()
                    .filter(|line| {
                        let line = line.trim_start();
                        !line.starts_with(&format!("a=rtpmap:{pt} "))
                            && !line.starts_with(&format!("a=fmtp:{pt} "))
                    })
                    .map(|line| format!("{line}\n"))
                    .collect();
            }
        }
        let xml = xml
            .replace("{{NAME}}", name)
            .replace("{{STEPS}}", &render_steps(steps));
        let scenario = dir.logs.join(format!("{label}.xml"));
        std::fs::write(&scenario, xml).expect("write rendered scenario");
        Sipp::with_scenario(dir, label, scenario, did)
    }

    /// A caller running `tests/sipp/FILE` as it is.
    pub fn file(dir: &CallDir, file: &str, did: &str) -> Sipp {
        let label = unique_label(file.trim_end_matches(".xml"));
        Sipp::with_scenario(dir, label, sipp_dir().join(file), did)
    }

    fn with_scenario(dir: &CallDir, label: String, scenario: PathBuf, did: &str) -> Sipp {
        let sip_port = free_ports(1);
        // SIPp binds the media port and the port two above it (video).
        let media_port = free_ports(4);
        let control_port = free_ports(1);
        Sipp {
            scenario,
            did: did.to_owned(),
            sip_port,
            media_port,
            control_port,
            call_id: format!("{label}-1@127.0.0.1"),
            timeout_s: 60,
            local_ip: "127.0.0.1".to_owned(),
            tcp: false,
            label,
            logs: dir.logs.clone(),
        }
    }

    /// Makes the INVITE's SDP advertise `port` for media instead of SIPp's media port.
    ///
    /// SIPp takes the source port of `play_pcap_audio` from the `[media_port]` keyword of the
    /// SDP it sent (an `m=` line): without it, the pcap's packets leave from UDP port 0.
    pub fn advertising_media_port(self, port: u16) -> Sipp {
        let xml = std::fs::read_to_string(&self.scenario).expect("read rendered scenario");
        let xml = xml.replacen("m=audio [media_port] ", &format!("m=audio {port} "), 1);
        std::fs::write(&self.scenario, xml).expect("write rendered scenario");
        self
    }

    /// Sets the global timeout.
    pub fn timeout(mut self, seconds: u32) -> Sipp {
        self.timeout_s = seconds;
        self
    }

    /// Adds a header line to the scenario's first request (the INVITE), e.g.
    /// `P-Asserted-Identity: <sip:+14155550199@127.0.0.1>`.
    pub fn invite_header(self, line: &str) -> Sipp {
        assert!(
            self.scenario.starts_with(&self.logs),
            "only rendered scenarios can change their INVITE"
        );
        let xml = std::fs::read_to_string(&self.scenario).expect("read rendered scenario");
        let anchor = "      Max-Forwards: 70\n";
        assert!(xml.contains(anchor), "no Max-Forwards line to add after");
        let xml = xml.replacen(anchor, &format!("{anchor}      {line}\n"), 1);
        std::fs::write(&self.scenario, xml).expect("write rendered scenario");
        self
    }

    /// Calls over TCP (`-t t1`) to the server's TCP listener ([`ServerOptions::tcp`]).
    pub fn over_tcp(mut self) -> Sipp {
        self.tcp = true;
        self
    }

    /// Sends from another loopback address (`-i`/`-mi`; all of 127.0.0.0/8 is loopback on
    /// Linux), e.g. a caller that is not the source a test floods from.
    pub fn source_ip(mut self, ip: &str) -> Sipp {
        assert!(
            ip.parse::<std::net::Ipv4Addr>()
                .is_ok_and(|a| a.is_loopback()),
            "{ip} is not a loopback address"
        );
        self.local_ip = ip.to_owned();
        self.call_id = self.call_id.replace("@127.0.0.1", &format!("@{ip}"));
        self
    }

    /// Calls from `::1` (`-i ::1`, SDP `c=IN IP6 ::1`) to a server started with
    /// [`ServerOptions::ipv6`].
    pub fn over_ipv6(mut self) -> Sipp {
        self.local_ip = "::1".to_owned();
        // SIPp's `%s` in -cid_str is the local address as it prints it, without brackets.
        self.call_id = self.call_id.replace("@127.0.0.1", "@::1");
        self
    }

    /// Makes the caller's From user `user` (e.g. `+14155550100`) instead of `sipp`, in every
    /// request of the rendered scenario.
    pub fn caller(self, user: &str) -> Sipp {
        let xml = std::fs::read_to_string(&self.scenario).expect("read rendered scenario");
        assert!(
            self.scenario.starts_with(&self.logs),
            "only rendered scenarios can change their caller"
        );
        let xml = xml.replace("From: sipp <sip:sipp@", &format!("From: <sip:{user}@"));
        std::fs::write(&self.scenario, xml).expect("write rendered scenario");
        self
    }

    fn log(&self, what: &str) -> PathBuf {
        self.logs.join(format!("{}.{what}", self.label))
    }

    /// Starts SIPp in the foreground (its own process, no `-bg`) against `server`.
    pub fn spawn(&self, server: &Server) -> RunningSipp {
        let stdout = std::fs::File::create(self.log("stdout")).expect("sipp stdout file");
        let stderr = std::fs::File::create(self.log("stderr")).expect("sipp stderr file");
        let port = if self.tcp {
            server
                .tcp_port
                .expect("a TCP caller needs a server with a TCP listener")
        } else {
            server.sip_port
        };
        let transport: &[&str] = if self.tcp { &["-t", "t1"] } else { &[] };
        let target = std::net::SocketAddr::new(server.ip, port);
        assert_eq!(
            target.is_ipv6(),
            self.local_ip.contains(':'),
            "an IPv6 server needs an IPv6 caller (Sipp::over_ipv6) and the other way round"
        );
        let child = Command::new("sipp")
            .arg(target.to_string())
            .args(transport)
            .arg("-sf")
            .arg(&self.scenario)
            .args(["-s", &self.did])
            .args(["-i", &self.local_ip, "-mi", &self.local_ip])
            .args(["-p", &self.sip_port.to_string()])
            .args(["-mp", &self.media_port.to_string()])
            .args(["-cp", &self.control_port.to_string()])
            .args(["-m", "1", "-nostdin"])
            .args([
                "-timeout",
                &format!("{}s", self.timeout_s),
                "-timeout_error",
            ])
            .args(["-cid_str", &format!("{}-%u@%s", self.label)])
            .arg("-trace_msg")
            .arg("-message_file")
            .arg(self.log("messages.log"))
            .arg("-trace_err")
            .arg("-error_file")
            .arg(self.log("errors.log"))
            .arg("-trace_screen")
            .arg("-screen_file")
            .arg(self.log("screen.log"))
            .current_dir(&self.logs)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("start sipp (Debian package sip-tester)");
        RunningSipp {
            child,
            sipp: self.clone(),
            started: Instant::now(),
        }
    }

    /// Runs SIPp to the end.
    pub fn run(&self, server: &Server) -> SippRun {
        self.spawn(server).wait()
    }
}

/// A SIPp process running one call.
pub struct RunningSipp {
    child: Child,
    /// What runs.
    pub sipp: Sipp,
    started: Instant,
}

impl RunningSipp {
    /// Waits for SIPp to exit (killing it 15 s after its own global timeout).
    pub fn wait(mut self) -> SippRun {
        let limit = Duration::from_secs(u64::from(self.sipp.timeout_s) + 15);
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
        let read = |what: &str| std::fs::read_to_string(self.sipp.log(what)).unwrap_or_default();
        SippRun {
            status,
            call_id: self.sipp.call_id.clone(),
            scenario: self.sipp.scenario.clone(),
            media_port: self.sipp.media_port,
            messages: read("messages.log"),
            errors: read("errors.log"),
            screen: read("screen.log"),
            stderr: read("stderr"),
            elapsed: self.started.elapsed(),
        }
    }
}

impl RunningSipp {
    /// The runtime's RTP port, from the SDP of the 200 OK in SIPp's message log, read while
    /// the call runs (polled, bounded by `timeout`).
    pub fn server_rtp_port(&self, timeout: Duration) -> Option<u16> {
        let deadline = Instant::now() + timeout;
        loop {
            let messages =
                std::fs::read_to_string(self.sipp.log("messages.log")).unwrap_or_default();
            let port = messages.split("SIP/2.0 200 OK").skip(1).find_map(|answer| {
                answer
                    .lines()
                    .find_map(|l| l.trim().strip_prefix("m=audio "))
                    .and_then(|rest| rest.split(' ').next())
                    .and_then(|p| p.parse().ok())
            });
            if port.is_some() || Instant::now() > deadline {
                return port;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for RunningSipp {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A finished SIPp run.
#[derive(Debug)]
pub struct SippRun {
    /// SIPp's exit status; `None` when it had to be killed.
    pub status: Option<ExitStatus>,
    /// The call's Call-ID.
    pub call_id: String,
    /// The scenario that ran.
    pub scenario: PathBuf,
    /// SIPp's media port.
    pub media_port: u16,
    /// `-trace_msg`: every SIP message sent and received.
    pub messages: String,
    /// `-trace_err`: unexpected messages.
    pub errors: String,
    /// `-trace_screen`: the final statistics screen.
    pub screen: String,
    /// SIPp's stderr.
    pub stderr: String,
    /// Wall time of the run.
    pub elapsed: Duration,
}

/// One SIP message from SIPp's message log.
#[derive(Debug, Clone)]
pub struct LoggedMessage {
    /// `true` for a message SIPp received (from the runtime).
    pub received: bool,
    /// The message text (start line, headers, body).
    pub text: String,
}

impl LoggedMessage {
    /// The start line.
    pub fn start_line(&self) -> &str {
        self.text.lines().next().unwrap_or("")
    }

    /// The first header `name` (case-insensitive), value trimmed.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.text.lines().find_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    /// The body (after the first empty line).
    pub fn body(&self) -> &str {
        let text = self.text.as_str();
        text.find("\r\n\r\n")
            .map(|i| &text[i + 4..])
            .or_else(|| text.find("\n\n").map(|i| &text[i + 2..]))
            .unwrap_or("")
    }
}

impl SippRun {
    /// Whether SIPp exited 0 (its call succeeded).
    pub fn succeeded(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// Everything SIPp said, for failure messages.
    pub fn report(&self) -> String {
        format!(
            "SIPp run {} ({}) exit {:?} after {:?} (WASM_IVR_KEEP_CALL_DIRS=1 keeps the logs)\n--- scenario: {}\n--- errors ---\n{}\n--- stderr ---\n{}\n--- screen ---\n{}\n--- messages ---\n{}",
            self.call_id,
            self.scenario.display(),
            self.status.map(|s| s.code()),
            self.elapsed,
            self.scenario.display(),
            tail_chars(&self.errors, 8000),
            tail_chars(&self.stderr, 4000),
            tail_chars(&self.screen, 6000),
            tail_chars(&self.messages, 20_000),
        )
    }

    /// Panics with SIPp's logs and the server's log unless SIPp succeeded.
    pub fn assert_success(&self, server: &Server) {
        assert!(
            self.succeeded(),
            "SIPp failed\n{}\n{}",
            self.report(),
            server.log()
        );
    }

    /// The SIP messages in SIPp's message log, in order.
    pub fn logged(&self) -> Vec<LoggedMessage> {
        let mut out = Vec::new();
        for section in self
            .messages
            .split("----------------------------------------------- ")
        {
            let mut lines = section.splitn(2, '\n');
            let _timestamp = lines.next();
            let Some(rest) = lines.next() else { continue };
            let mut rest_lines = rest.splitn(2, '\n');
            let header = rest_lines.next().unwrap_or("");
            let received = header.contains("received");
            if !(received || header.contains("sent")) {
                continue;
            }
            let text = rest_lines
                .next()
                .unwrap_or("")
                .trim_start_matches(['\r', '\n']);
            out.push(LoggedMessage {
                received,
                text: text.trim_end().to_owned(),
            });
        }
        out
    }

    /// The responses SIPp received whose CSeq is `cseq` (e.g. `"2 INVITE"`).
    pub fn responses_to(&self, cseq: &str) -> Vec<LoggedMessage> {
        self.logged()
            .into_iter()
            .filter(|m| m.received && m.start_line().starts_with("SIP/2.0 "))
            .filter(|m| m.header("CSeq").is_some_and(|c| c == cseq))
            .collect()
    }

    /// The requests SIPp received with this method.
    pub fn requests(&self, method: &str) -> Vec<LoggedMessage> {
        self.logged()
            .into_iter()
            .filter(|m| m.received && m.start_line().starts_with(&format!("{method} ")))
            .collect()
    }
}

/// An OPTIONS probe (`tests/sipp/uac_options.xml`) that must get 200.
pub fn assert_options_answered(dir: &CallDir, server: &Server) {
    let run = Sipp::file(dir, "uac_options.xml", SEED_DID)
        .timeout(10)
        .run(server);
    run.assert_success(server);
}

// ---------------------------------------------------------------------------------------------
// Capture (tcpdump) and RTP extraction (tshark)
// ---------------------------------------------------------------------------------------------

/// A tcpdump process writing what loopback carries to one UDP port.
pub struct Capture {
    child: Child,
    /// The pcap file.
    pub path: PathBuf,
    /// The captured port.
    pub port: u16,
}

impl Capture {
    /// Starts `tcpdump -i lo -U -w PATH udp and dst port PORT` and waits (bounded) until it
    /// listens.
    pub fn start(path: &Path, port: u16) -> Result<Capture, String> {
        Capture::start_to(path, "127.0.0.1".parse().expect("an address"), port)
    }

    /// Like [`Capture::start`], for datagrams to `host` (127.0.0.1 or ::1) port `port`.
    pub fn start_to(path: &Path, host: std::net::IpAddr, port: u16) -> Result<Capture, String> {
        assert!(host.is_loopback(), "captures stay on loopback: {host}");
        let mut child = Command::new("tcpdump")
            .args(["-i", "lo", "-U", "-n", "-s", "0", "-w"])
            .arg(path)
            .arg(format!("udp and dst host {host} and dst port {port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run tcpdump: {e}"))?;
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stderr);
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 {
                let _ = tx.send(line.clone());
                line.clear();
            }
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut said = String::new();
        while Instant::now() < deadline {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(line) if line.contains("listening on") => {
                    return Ok(Capture {
                        child,
                        path: path.to_owned(),
                        port,
                    });
                }
                Ok(line) => said.push_str(&line),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        Err(format!("tcpdump did not start listening: {said}"))
    }

    /// Stops tcpdump (SIGINT, so it flushes and closes the file) and returns the pcap's path.
    pub fn stop(mut self) -> PathBuf {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return self.path.clone();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.path.clone()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One RTP packet as tshark decoded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpPacket {
    /// Capture time, µs since the first packet of the file.
    pub time_us: u64,
    /// Source UDP port.
    pub src_port: u16,
    /// Sequence number.
    pub seq: u16,
    /// RTP timestamp.
    pub timestamp: u32,
    /// Payload type.
    pub payload_type: u8,
    /// Marker bit.
    pub marker: bool,
    /// SSRC.
    pub ssrc: u32,
    /// Payload bytes.
    pub payload: Vec<u8>,
}

fn parse_hex(text: &str) -> Vec<u8> {
    let clean: String = text.chars().filter(|c| c.is_ascii_hexdigit()).collect();
    (0..clean.len() / 2)
        .map(|i| u8::from_str_radix(&clean[2 * i..2 * i + 2], 16).unwrap_or(0))
        .collect()
}

fn parse_num(text: &str) -> u64 {
    let t = text.trim();
    if let Some(hex) = t.strip_prefix("0x") {
        u64::from_str_radix(hex, 16).unwrap_or(0)
    } else if t.eq_ignore_ascii_case("true") {
        1
    } else if t.eq_ignore_ascii_case("false") {
        0
    } else {
        t.parse().unwrap_or(0)
    }
}

/// The RTP packets to UDP port `port` in a capture, decoded by tshark.
pub fn rtp_packets(pcap: &Path, port: u16) -> Result<Vec<RtpPacket>, String> {
    let output = Command::new("tshark")
        .arg("-r")
        .arg(pcap)
        .args(["-d", &format!("udp.port=={port},rtp")])
        .args(["-Y", &format!("rtp && udp.dstport=={port}")])
        .args(["-T", "fields", "-E", "separator=/t"])
        .args([
            "-e",
            "frame.time_relative",
            "-e",
            "udp.srcport",
            "-e",
            "rtp.seq",
            "-e",
            "rtp.timestamp",
            "-e",
            "rtp.p_type",
            "-e",
            "rtp.marker",
            "-e",
            "rtp.ssrc",
            "-e",
            "rtp.payload",
        ])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run tshark: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "tshark failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let mut packets = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() < 8 {
            continue;
        }
        let seconds: f64 = f[0].trim().parse().unwrap_or(0.0);
        packets.push(RtpPacket {
            time_us: (seconds * 1e6) as u64,
            src_port: parse_num(f[1]) as u16,
            seq: parse_num(f[2]) as u16,
            timestamp: parse_num(f[3]) as u32,
            payload_type: parse_num(f[4]) as u8,
            marker: parse_num(f[5]) != 0,
            ssrc: parse_num(f[6]) as u32,
            payload: parse_hex(f[7]),
        });
    }
    Ok(packets)
}

// ---------------------------------------------------------------------------------------------
// In-band DTMF: tones and a pcap writer
// ---------------------------------------------------------------------------------------------

/// The (row, column) frequencies of a key.
pub fn dtmf_frequencies(key: char) -> (f64, f64) {
    const ROWS: [f64; 4] = [697.0, 770.0, 852.0, 941.0];
    const COLS: [f64; 4] = [1209.0, 1336.0, 1477.0, 1633.0];
    let (r, c) = match key {
        '1' => (0, 0),
        '2' => (0, 1),
        '3' => (0, 2),
        'A' => (0, 3),
        '4' => (1, 0),
        '5' => (1, 1),
        '6' => (1, 2),
        'B' => (1, 3),
        '7' => (2, 0),
        '8' => (2, 1),
        '9' => (2, 2),
        'C' => (2, 3),
        '*' => (3, 0),
        '0' => (3, 1),
        '#' => (3, 2),
        'D' => (3, 3),
        _ => panic!("not a DTMF key: {key:?}"),
    };
    (ROWS[r], COLS[c])
}

/// An in-band signal, built 20 ms frame by 20 ms frame.
#[derive(Debug, Default, Clone)]
pub struct ToneBuilder {
    pcm: Vec<i16>,
}

impl ToneBuilder {
    /// An empty signal.
    pub fn new() -> ToneBuilder {
        ToneBuilder::default()
    }

    /// Appends `frames` × 20 ms of silence.
    pub fn silence(mut self, frames: usize) -> ToneBuilder {
        self.pcm
            .extend(std::iter::repeat_n(0, frames * FRAME_SAMPLES));
        self
    }

    /// Appends `frames` × 20 ms of the key's two tones (each at amplitude 6000 of 32767, about
    /// -15 dBm0, no twist).
    pub fn tone(mut self, key: char, frames: usize) -> ToneBuilder {
        let (low, high) = dtmf_frequencies(key);
        let n = frames * FRAME_SAMPLES;
        for i in 0..n {
            let t = i as f64 / 8000.0;
            let v = 6000.0 * (std::f64::consts::TAU * low * t).sin()
                + 6000.0 * (std::f64::consts::TAU * high * t).sin();
            self.pcm.push(v.round() as i16);
        }
        self
    }

    /// The signal encoded with `codec`, one payload per 20 ms.
    pub fn frames(&self, codec: Codec) -> Vec<Vec<u8>> {
        self.pcm
            .chunks(FRAME_SAMPLES)
            .map(|chunk| {
                let mut pcm = [0i16; FRAME_SAMPLES];
                pcm[..chunk.len()].copy_from_slice(chunk);
                let mut out = vec![0u8; FRAME_SAMPLES];
                let n = codec.encode(&pcm, &mut out).expect("encode a frame");
                out.truncate(n);
                out
            })
            .collect()
    }
}

/// The SSRC of the packets [`write_rtp_pcap`] and [`write_rtp_stream_pcap`] write.
pub const PCAP_SSRC: u32 = 0x1234_5678;

/// Writes an Ethernet/IPv4/UDP/RTP pcap of `payloads`, one packet per 20 ms (RTP timestamps
/// step 160, sequence numbers step 1, marker on the first packet), 127.0.0.1:49176 →
/// 127.0.0.1:10000 (SIPp's `play_pcap_audio` replaces the addresses and ports with the call's).
pub fn write_rtp_pcap(path: &Path, payload_type: u8, payloads: &[Vec<u8>]) {
    let packets: Vec<PcapRtp> = payloads
        .iter()
        .enumerate()
        .map(|(i, payload)| PcapRtp {
            payload_type,
            marker: i == 0,
            timestamp: 8000u32.wrapping_add(u32::try_from(i).expect("few packets") * 160),
            payload: payload.clone(),
        })
        .collect();
    write_rtp_stream_pcap(path, &packets);
}

/// One packet of [`write_rtp_stream_pcap`]'s stream.
#[derive(Debug, Clone)]
pub struct PcapRtp {
    /// Payload type.
    pub payload_type: u8,
    /// Marker bit.
    pub marker: bool,
    /// RTP timestamp (an RFC 4733 event keeps its start's in every packet).
    pub timestamp: u32,
    /// Payload bytes.
    pub payload: Vec<u8>,
}

/// One RTP stream from one source: audio frames and RFC 4733 events mixed, as a real caller
/// sends them (one SSRC, [`PCAP_SSRC`]; sequence numbers from 1000). Packets 20 ms apart,
/// framed like [`write_rtp_pcap`].
pub fn write_rtp_stream_pcap(path: &Path, packets: &[PcapRtp]) {
    let mut out = Vec::new();
    // Global header: magic, v2.4, GMT offset 0, accuracy 0, snaplen, LINKTYPE_ETHERNET.
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&65_535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    let ssrc: u32 = PCAP_SSRC;
    for (i, packet) in packets.iter().enumerate() {
        let i_u32 = u32::try_from(i).expect("few packets");
        let seq = 1000u16.wrapping_add(i as u16);
        let (timestamp, payload) = (packet.timestamp, &packet.payload);
        let mut rtp = Vec::with_capacity(12 + payload.len());
        rtp.push(0x80);
        rtp.push(if packet.marker { 0x80 } else { 0 } | (packet.payload_type & 0x7f));
        rtp.extend_from_slice(&seq.to_be_bytes());
        rtp.extend_from_slice(&timestamp.to_be_bytes());
        rtp.extend_from_slice(&ssrc.to_be_bytes());
        rtp.extend_from_slice(payload);

        let udp_len = u16::try_from(8 + rtp.len()).expect("small packet");
        let mut udp = Vec::new();
        udp.extend_from_slice(&49_176u16.to_be_bytes());
        udp.extend_from_slice(&10_000u16.to_be_bytes());
        udp.extend_from_slice(&udp_len.to_be_bytes());
        udp.extend_from_slice(&0u16.to_be_bytes()); // no checksum (allowed on IPv4)
        udp.extend_from_slice(&rtp);

        let ip_len = 20 + udp_len;
        let mut ip = vec![
            0x45,
            0,
            (ip_len >> 8) as u8,
            ip_len as u8,
            (i >> 8) as u8,
            i as u8,
            0x40,
            0,
            64,
            17,
            0,
            0,
            127,
            0,
            0,
            1,
            127,
            0,
            0,
            1,
        ];
        let checksum = ipv4_checksum(&ip);
        ip[10..12].copy_from_slice(&checksum.to_be_bytes());
        ip.extend_from_slice(&udp);

        let mut frame = Vec::new();
        frame.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x08, 0x00]);
        frame.extend_from_slice(&ip);

        let at_us = u64::from(i_u32) * 20_000;
        let len = u32::try_from(frame.len()).expect("small frame");
        out.extend_from_slice(&(1_700_000_000 + (at_us / 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&((at_us % 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&frame);
    }
    std::fs::write(path, out).expect("write pcap");
}

fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Reads a whole file, for failure messages.
pub fn read_to_string_lossy(path: &Path) -> String {
    let mut bytes = Vec::new();
    let _ = std::fs::File::open(path).and_then(|mut f| f.read_to_end(&mut bytes));
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Counts the RTP packets (version 2) arriving on `socket` during `window`.
pub fn count_rtp(socket: &UdpSocket, window: Duration) -> usize {
    let deadline = Instant::now() + window;
    let mut buf = [0u8; 2048];
    let mut n = 0;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        if left.is_zero() {
            break;
        }
        let _ = socket.set_read_timeout(Some(left.min(Duration::from_millis(100))));
        if let Ok((len, _)) = socket.recv_from(&mut buf)
            && len >= 12
            && buf[0] >> 6 == 2
        {
            n += 1;
        }
    }
    n
}

/// Sends `frames` as an RTP stream (PCMU, 20 ms apart) from `socket` to every port of
/// 127.0.0.1:`lo..=hi` (the runtime's RTP range, so the call's port gets it whichever it is).
pub fn spray_rtp(socket: &UdpSocket, lo: u16, hi: u16, frames: &[Vec<u8>]) {
    for (i, payload) in frames.iter().enumerate() {
        let mut packet = vec![0x80, 0];
        packet.extend_from_slice(&(500u16.wrapping_add(i as u16)).to_be_bytes());
        packet.extend_from_slice(&(u32::try_from(i).unwrap_or(0) * 160).to_be_bytes());
        packet.extend_from_slice(&0x0bad_cafeu32.to_be_bytes());
        packet.extend_from_slice(payload);
        for port in lo..=hi {
            let _ = socket.send_to(&packet, ("127.0.0.1", port));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The status code of a response.
pub fn status_of(message: &str) -> Option<u16> {
    message.strip_prefix("SIP/2.0 ")?.get(..3)?.parse().ok()
}

/// The first header `name` of a message.
pub fn header<'a>(message: &'a str, name: &str) -> Option<&'a str> {
    message
        .split("\r\n\r\n")
        .next()?
        .lines()
        .skip(1)
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
}
