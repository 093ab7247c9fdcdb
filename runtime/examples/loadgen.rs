//! Load benchmark: starts `wasm-ivr serve` on loopback with an IVR that plays a prompt in a
//! loop, places N concurrent calls, and prints what the callers see: call setup latency, RTP
//! inter-packet delta and RFC 3550 jitter (p50 / p99 / max), plus the server's CPU time per
//! call-second and RSS per call. A benchmark, not a test: it prints numbers.
//!
//! ```sh
//! bash scripts/bench.sh                # builds release, raises the fd limit, runs 1000 calls
//! cargo run --release -p wasm-ivr --example loadgen -- --calls 200 --hold 10
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use wasm_ivr::sip::message::{self, Message};

#[derive(Parser, Debug)]
#[command(about = "Concurrent-call load benchmark for wasm-ivr on loopback")]
struct Args {
    /// Concurrent calls.
    #[arg(long, default_value_t = 1000)]
    calls: usize,
    /// New calls per second while ramping up.
    #[arg(long, default_value_t = 100)]
    rate: u32,
    /// How long each call stays up once all are established, in seconds.
    #[arg(long, default_value_t = 20)]
    hold: u64,
    /// The wasm-ivr binary (default: the release build next to this example).
    #[arg(long)]
    bin: Option<PathBuf>,
}

const DID: &str = "+15550000";

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let bin = args
        .bin
        .clone()
        .unwrap_or_else(|| root.join("target/release/wasm-ivr"));
    let dir = tempfile::tempdir()?;
    prepare_folder(dir.path(), &root)?;
    let (mut server, sip_addr) = start_server(&bin, dir.path(), args.calls)?;
    let pid = server.id();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_rss = rss_kib(pid).unwrap_or(0);

    let sip = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
    let dialogs: Arc<Mutex<HashMap<String, mpsc::UnboundedSender<Message>>>> = Arc::default();
    tokio::spawn(sip_reader(sip.clone(), dialogs.clone()));

    let ramp_start = Instant::now();
    let established = Arc::new(tokio::sync::Barrier::new(args.calls + 1));
    let release = Arc::new(tokio::sync::Notify::new());
    let mut tasks = Vec::new();
    for n in 0..args.calls {
        let target = ramp_start + Duration::from_secs_f64(n as f64 / f64::from(args.rate.max(1)));
        tokio::time::sleep_until(target.into()).await;
        let (tx, rx) = mpsc::unbounded_channel();
        let call_id = format!("bench-{n}-{}", std::process::id());
        if let Ok(mut map) = dialogs.lock() {
            map.insert(call_id.clone(), tx);
        }
        tasks.push(tokio::spawn(caller(
            n,
            call_id,
            sip.clone(),
            sip_addr,
            rx,
            established.clone(),
            release.clone(),
        )));
    }
    established.wait().await;
    let ramp = ramp_start.elapsed();
    // Steady state: every call up and streaming. Measure the server over the hold.
    let cpu_before = cpu_ticks(pid).unwrap_or(0);
    let window_start = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.hold)).await;
    let window = window_start.elapsed();
    let cpu_after = cpu_ticks(pid).unwrap_or(0);
    let peak_rss = rss_kib(pid).unwrap_or(0);
    release.notify_waiters();

    let mut results = Vec::new();
    for task in tasks {
        if let Ok(Ok(result)) = task.await {
            results.push(result);
        }
    }
    let _ = server.kill();
    let _ = server.wait();

    report(
        &args,
        &results,
        ramp,
        window,
        cpu_after.saturating_sub(cpu_before),
        idle_rss,
        peak_rss,
    );
    Ok(())
}

fn prepare_folder(dir: &Path, root: &Path) -> Result<()> {
    std::fs::create_dir_all(dir.join("audio"))?;
    std::fs::copy(
        root.join("examples/plumber-qualifier/audio/welcome.wav"),
        dir.join("audio/prompt.wav"),
    )
    .context("copy the benchmark prompt")?;
    std::fs::write(
        dir.join("bench.json"),
        r#"{"name": "bench", "nodes": {"loop": {"audio": "prompt.wav", "next": "loop"}}}"#,
    )?;
    std::fs::write(dir.join("routes.toml"), format!("\"{DID}\" = \"bench\"\n"))?;
    Ok(())
}

fn start_server(bin: &Path, dir: &Path, calls: usize) -> Result<(Child, SocketAddr)> {
    use std::io::BufRead;
    let mut child = Command::new(bin)
        .args([
            "serve",
            "--sip-listen",
            "udp:127.0.0.1:0",
            "--rtp-ports",
            "40000-49999",
        ])
        .arg("--dir")
        .arg(dir)
        .arg("--max-calls")
        .arg((calls + 50).to_string())
        .arg("--cache-dir")
        .arg(dir.join("cache"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("start {}", bin.display()))?;
    let stdout = child.stdout.take().context("server stdout")?;
    let mut line = String::new();
    std::io::BufReader::new(stdout).read_line(&mut line)?;
    let addr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("sip=udp:"))
        .and_then(|a| a.split(',').next())
        .context("no ready line from the server")?
        .parse()?;
    Ok((child, addr))
}

/// Reads every SIP message for the load generator, hands responses and requests to their
/// call, and answers the server's own requests (BYE) with 200.
async fn sip_reader(
    socket: Arc<UdpSocket>,
    dialogs: Arc<Mutex<HashMap<String, mpsc::UnboundedSender<Message>>>>,
) {
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok((len, from)) = socket.recv_from(&mut buf).await else {
            return;
        };
        let Ok(parsed) = message::parse(&buf[..len]) else {
            continue;
        };
        let call_id = match &parsed {
            Message::Response(r) => r.call_id.clone(),
            Message::Request(r) => r.headers.get("Call-ID").unwrap_or_default().to_owned(),
        };
        if let Message::Request(request) = &parsed {
            let text = String::from_utf8_lossy(&buf[..len]).into_owned();
            let ok = ok_for(&text, request.method.as_str());
            let _ = socket.send_to(ok.as_bytes(), from).await;
        }
        let sender = dialogs.lock().ok().and_then(|m| m.get(&call_id).cloned());
        if let Some(sender) = sender {
            let _ = sender.send(parsed);
        }
    }
}

/// A 200 OK for a request, copying its dialog headers.
fn ok_for(request: &str, _method: &str) -> String {
    let mut out = String::from("SIP/2.0 200 OK\r\n");
    for line in request.lines() {
        let lower = line.to_ascii_lowercase();
        if ["via:", "from:", "to:", "call-id:", "cseq:"]
            .iter()
            .any(|h| lower.starts_with(h))
        {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    out
}

struct CallResult {
    setup: Option<Duration>,
    deltas_us: Vec<u32>,
    jitter_ms: f64,
    packets: usize,
}

#[allow(clippy::too_many_arguments)]
async fn caller(
    n: usize,
    call_id: String,
    sip: Arc<UdpSocket>,
    server: SocketAddr,
    mut responses: mpsc::UnboundedReceiver<Message>,
    established: Arc<tokio::sync::Barrier>,
    release: Arc<tokio::sync::Notify>,
) -> Result<CallResult> {
    let local = sip.local_addr()?;
    let rtp = UdpSocket::bind("127.0.0.1:0").await?;
    let rtp_port = rtp.local_addr()?.port();
    let tag = format!("lg{n}");
    let sdp = format!(
        "v=0\r\no=lg {n} 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {rtp_port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n\
         a=fmtp:101 0-15\r\na=sendrecv\r\n"
    );
    let invite = format!(
        "INVITE sip:{DID}@{server} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-{call_id}-1;rport\r\n\
         From: <sip:loadgen@{local}>;tag={tag}\r\nTo: <sip:{DID}@{server}>\r\nCall-ID: {call_id}\r\n\
         CSeq: 1 INVITE\r\nContact: <sip:loadgen@{local}>\r\nMax-Forwards: 70\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    );
    let sent = Instant::now();
    sip.send_to(invite.as_bytes(), server).await?;
    let mut to_header = None;
    let mut setup = None;
    let deadline = sent + Duration::from_secs(10);
    while to_header.is_none() && Instant::now() < deadline {
        let wait = tokio::time::timeout(Duration::from_millis(500), responses.recv()).await;
        match wait {
            Ok(Some(Message::Response(r))) if r.status == 200 => {
                setup = Some(sent.elapsed());
                to_header = r.headers.get("To").map(str::to_owned);
            }
            Ok(Some(Message::Response(r))) if r.status >= 300 => {
                established.wait().await;
                bail!("call {n} refused: {} {}", r.status, r.reason);
            }
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(_) => {
                sip.send_to(invite.as_bytes(), server).await?;
            }
        }
    }
    let Some(to) = to_header else {
        established.wait().await;
        bail!("call {n}: no 200");
    };
    let ack = format!(
        "ACK sip:{DID}@{server} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-{call_id}-2;rport\r\n\
         From: <sip:loadgen@{local}>;tag={tag}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: 1 ACK\r\n\
         Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    sip.send_to(ack.as_bytes(), server).await?;
    established.wait().await;

    // Receive RTP until released: inter-arrival deltas and RFC 3550 jitter.
    let mut buf = [0u8; 2048];
    let mut deltas_us = Vec::with_capacity(2048);
    let mut last: Option<(Instant, u32)> = None;
    let mut jitter = 0.0f64;
    let mut packets = 0usize;
    let released = release.notified();
    tokio::pin!(released);
    loop {
        tokio::select! {
            _ = &mut released => break,
            received = rtp.recv_from(&mut buf) => {
                let Ok((len, _)) = received else { break };
                if len < 12 { continue; }
                let now = Instant::now();
                let timestamp = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
                packets += 1;
                if let Some((then, ts)) = last {
                    let arrival_us = now.duration_since(then).as_micros() as f64;
                    deltas_us.push(arrival_us as u32);
                    let rtp_us = f64::from(timestamp.wrapping_sub(ts)) * 125.0;
                    jitter += ((arrival_us - rtp_us).abs() - jitter) / 16.0;
                }
                last = Some((now, timestamp));
            }
        }
    }
    let bye = format!(
        "BYE sip:{DID}@{server} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-{call_id}-3;rport\r\n\
         From: <sip:loadgen@{local}>;tag={tag}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: 2 BYE\r\n\
         Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    sip.send_to(bye.as_bytes(), server).await?;
    Ok(CallResult {
        setup,
        deltas_us,
        jitter_ms: jitter / 1000.0,
        packets,
    })
}

fn percentiles(mut values: Vec<f64>) -> (f64, f64, f64) {
    if values.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    values.sort_by(f64::total_cmp);
    let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99), values[values.len() - 1])
}

#[allow(clippy::too_many_arguments)]
fn report(
    args: &Args,
    results: &[CallResult],
    ramp: Duration,
    window: Duration,
    cpu_ticks: u64,
    idle_rss_kib: u64,
    peak_rss_kib: u64,
) {
    let ok = results
        .iter()
        .filter(|r| r.setup.is_some() && r.packets > 0)
        .count();
    let setup = percentiles(
        results
            .iter()
            .filter_map(|r| r.setup)
            .map(|d| d.as_secs_f64() * 1e3)
            .collect(),
    );
    let deltas = percentiles(
        results
            .iter()
            .flat_map(|r| r.deltas_us.iter().map(|&d| f64::from(d) / 1e3))
            .collect(),
    );
    let jitter = percentiles(results.iter().map(|r| r.jitter_ms).collect());
    let packets: usize = results.iter().map(|r| r.packets).sum();
    let ticks_per_second = 100.0; // Linux USER_HZ
    let cpu_ms = cpu_ticks as f64 / ticks_per_second * 1e3;
    let call_seconds = ok as f64 * window.as_secs_f64();
    println!(
        "wasm-ivr load benchmark: {} calls requested, {ok} streamed, ramp {:.1} s at {} calls/s, hold {:.1} s",
        args.calls,
        ramp.as_secs_f64(),
        args.rate,
        window.as_secs_f64()
    );
    println!(
        "setup latency (INVITE -> 200)   p50 {:7.2} ms  p99 {:7.2} ms  max {:7.2} ms",
        setup.0, setup.1, setup.2
    );
    println!(
        "RTP inter-packet delta          p50 {:7.2} ms  p99 {:7.2} ms  max {:7.2} ms",
        deltas.0, deltas.1, deltas.2
    );
    println!(
        "RTP jitter (RFC 3550, per call) p50 {:7.2} ms  p99 {:7.2} ms  max {:7.2} ms",
        jitter.0, jitter.1, jitter.2
    );
    println!("RTP packets received            {packets}");
    println!(
        "server CPU per call-second      {:.3} ms  ({:.0} ms CPU over {:.0} call-seconds)",
        if call_seconds > 0.0 {
            cpu_ms / call_seconds
        } else {
            0.0
        },
        cpu_ms,
        call_seconds
    );
    println!(
        "server RSS                      idle {:.1} MiB, loaded {:.1} MiB, {:.1} KiB per call",
        idle_rss_kib as f64 / 1024.0,
        peak_rss_kib as f64 / 1024.0,
        if ok > 0 {
            peak_rss_kib.saturating_sub(idle_rss_kib) as f64 / ok as f64
        } else {
            0.0
        }
    );
}

fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
