//! Edge hardening, TCP framing (slow-loris, overflowing Content-Length) and the HTTP API's
//! hygiene (timeouts, limits, reserved ids, Host/Origin checks, CSV escaping).
//!
//! Every test runs the real binary on loopback, bounded in connections and time; waits are for
//! events (a close, an answer) with generous deadlines.

mod common;

use common::sipp::{self, CallDir, Server, ServerOptions};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

const SEED_DID: &str = "+14155559876";

// ---------------------------------------------------------------------------------------------
// SIP over TCP
// ---------------------------------------------------------------------------------------------

fn tcp_connect(port: u16) -> TcpStream {
    let stream = TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(5),
    )
    .expect("connect over TCP");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    stream
}

fn options_over_tcp(stream: &TcpStream, port: u16, n: u32) -> String {
    let local = stream.local_addr().expect("local addr");
    format!(
        "OPTIONS sip:{SEED_DID}@127.0.0.1:{port};transport=tcp SIP/2.0\r\n\
         Via: SIP/2.0/TCP {local};branch=z9hG4bK-edge-{n}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:probe@127.0.0.1>;tag=edge{n}\r\n\
         To: <sip:{SEED_DID}@127.0.0.1:{port}>\r\n\
         Call-ID: edge-tcp-{n}@127.0.0.1\r\n\
         CSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// Reads until a whole response head arrived, the server closed, or 5 s passed: the head, and
/// whether the connection was closed.
fn read_response(stream: &mut TcpStream) -> (String, bool) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match stream.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if got.windows(4).any(|w| w == b"\r\n\r\n") {
                    break false;
                }
            }
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break true,
            Err(_) => break false,
        }
    };
    (String::from_utf8_lossy(&got).into_owned(), closed)
}

/// A fresh connection gets `200` to an OPTIONS.
fn assert_fresh_connection_served(server: &Server, port: u16, n: u32, when: &str) {
    let mut stream = tcp_connect(port);
    stream
        .write_all(options_over_tcp(&stream, port, n).as_bytes())
        .expect("send OPTIONS");
    let (response, _) = read_response(&mut stream);
    assert!(
        response.starts_with("SIP/2.0 200"),
        "{when}: a fresh connection's OPTIONS got {response:?}\n{}",
        server.log()
    );
}

/// 30 connections trickle one byte a second of a message that never ends (the idle timer used
/// to be re-armed by every byte, so they stayed forever); 70 connections, more than one source
/// may hold at once (64), declare `Content-Length: 18446744073709551615` (it overflowed the
/// framer's size check, panicking the connection task in debug builds and leaking its slot).
/// Every one of them is closed without an answer, a message trickled slowly but completely in
/// time is answered, and fresh connections are served throughout.
#[test]
fn tcp_tricklers_and_overflowing_lengths_are_closed_while_fresh_connections_are_served() {
    let _serial = sipp::serial();
    let dir = CallDir::seed();
    let mut server = Server::start(
        &dir,
        &ServerOptions {
            tcp: true,
            ..ServerOptions::default()
        },
    );
    let port = server
        .tcp_port
        .expect("the ready line names the TCP listener");

    // The tricklers: a request line and a header that never ends.
    let trickle: Vec<u8> = {
        let mut t = format!("OPTIONS sip:{SEED_DID}@127.0.0.1 SIP/2.0\r\nX-Pad: ").into_bytes();
        t.extend(std::iter::repeat_n(b'a', 200));
        t
    };
    let mut tricklers: Vec<(TcpStream, Vec<u8>, Option<Instant>)> = (0..30)
        .map(|_| {
            let stream = tcp_connect(port);
            stream.set_nonblocking(true).expect("nonblocking");
            (stream, Vec::new(), None)
        })
        .collect();
    let started = Instant::now();
    let mut sent = 0usize;
    let mut next_byte = Instant::now();
    let mut overflow_done = 0u32;
    let mut slow_done = false;
    let deadline = started + Duration::from_secs(60);
    while tricklers.iter().any(|(_, _, closed)| closed.is_none()) {
        assert!(
            Instant::now() < deadline,
            "tricklers still open after 60 s: {} of 30\n{}",
            tricklers.iter().filter(|t| t.2.is_none()).count(),
            server.log()
        );
        if Instant::now() >= next_byte && sent < trickle.len() {
            for (stream, _, closed) in tricklers.iter_mut().filter(|t| t.2.is_none()) {
                // A write to a connection the server closed fails: closed too.
                if stream.write_all(&trickle[sent..sent + 1]).is_err() {
                    *closed = Some(Instant::now());
                }
            }
            sent += 1;
            next_byte += Duration::from_secs(1);
        }
        for (stream, got, closed) in tricklers.iter_mut().filter(|t| t.2.is_none()) {
            let mut buf = [0u8; 1024];
            match stream.read(&mut buf) {
                Ok(0) => *closed = Some(Instant::now()),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => *closed = Some(Instant::now()),
            }
        }
        // Meanwhile, one overflowing Content-Length after another, each closed unanswered.
        if overflow_done < 70 {
            let mut stream = tcp_connect(port);
            let message = options_over_tcp(&stream, port, 1000 + overflow_done)
                .replace("Content-Length: 0", "Content-Length: 18446744073709551615");
            stream.write_all(message.as_bytes()).expect("send overflow");
            let (response, closed) = read_response(&mut stream);
            assert!(
                closed && response.is_empty(),
                "overflowing Content-Length #{overflow_done}: closed {closed}, got {response:?}\n{}",
                server.log()
            );
            overflow_done += 1;
            if overflow_done.is_multiple_of(35) {
                assert_fresh_connection_served(
                    &server,
                    port,
                    2000 + overflow_done,
                    &format!("after {overflow_done} overflowing lengths"),
                );
            }
        } else if !slow_done {
            // Slow but complete within the deadline: ten pieces over about 2 s.
            let mut stream = tcp_connect(port);
            let message = options_over_tcp(&stream, port, 3000).into_bytes();
            for piece in message.chunks(message.len().div_ceil(10)) {
                stream.write_all(piece).expect("send a piece");
                std::thread::sleep(Duration::from_millis(200));
            }
            let (response, _) = read_response(&mut stream);
            assert!(
                response.starts_with("SIP/2.0 200"),
                "a message trickled over 2 s got {response:?}\n{}",
                server.log()
            );
            slow_done = true;
            assert_fresh_connection_served(&server, port, 3001, "while tricklers are open");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(overflow_done, 70);
    assert!(slow_done);
    for (_, got, _) in &tricklers {
        assert!(got.is_empty(), "a trickler was answered: {got:?}");
    }
    let log = server.log();
    assert!(
        log.contains("no complete message within"),
        "the server says why it closed the tricklers\n{log}"
    );
    server.assert_running();
    assert_fresh_connection_served(&server, port, 4000, "after the tricklers were closed");
    assert!(
        !server.log().contains("panicked"),
        "no connection task panicked\n{}",
        server.log()
    );
}

// ---------------------------------------------------------------------------------------------
// HTTP API
// ---------------------------------------------------------------------------------------------

/// An HTTP answer.
#[derive(Debug)]
struct Reply {
    status: u16,
    head: String,
    body: String,
}

/// Sends `request` as written (a whole HTTP/1.1 request; `Connection: close` is added to its
/// head) and reads the answer to the end. The request is written from another thread while
/// the answer is read, so an early answer (413 before the body was read) is not lost.
fn http_raw(port: u16, request: &[u8]) -> Reply {
    let mut stream = tcp_connect(port);
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("read timeout");
    stream
        .set_write_timeout(Some(Duration::from_secs(30)))
        .expect("write timeout");
    let head_end = request
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a request head");
    let mut bytes = request[..head_end].to_vec();
    bytes.extend_from_slice(b"\r\nConnection: close");
    bytes.extend_from_slice(&request[head_end..]);
    let mut writer = stream.try_clone().expect("clone stream");
    let sender = std::thread::spawn(move || {
        // The server may stop reading once it has answered: a failed write is fine here.
        let _ = writer.write_all(&bytes);
    });
    let mut got = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) if !got.is_empty() => break,
            Err(e) => panic!("reading the answer: {e}"),
        }
    }
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let _ = sender.join();
    let text = String::from_utf8_lossy(&got).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
    Reply {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

/// `METHOD PATH` with extra header lines (each ending in CRLF) and a body.
fn http(port: u16, method: &str, path: &str, headers: &str, body: &[u8]) -> Reply {
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\n{}{headers}Content-Length: {}\r\n\r\n",
        if headers
            .lines()
            .any(|l| l.to_ascii_lowercase().starts_with("host:"))
        {
            String::new()
        } else {
            format!("Host: 127.0.0.1:{port}\r\n")
        },
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    http_raw(port, &request)
}

fn json_headers() -> &'static str {
    "Content-Type: application/json\r\n"
}

/// A server on the seed folder with the API on a free port, no API key, `http_settings` in its
/// `[http]` section.
fn api_server(dir: &CallDir, http_settings: &str) -> Server {
    let config = dir.logs.join("wasm-ivr.toml");
    std::fs::write(&config, format!("[http]\n{http_settings}\n")).expect("write config");
    Server::start(
        dir,
        &ServerOptions {
            http: true,
            config: Some(config),
            store: Some(dir.logs.join("store.db")),
            ..ServerOptions::default()
        },
    )
}

/// `DELETE /ivr/routes` used to delete `routes.toml` (every DID then answered 404): reserved
/// and path-like ids are refused before any file is touched, in any case and on every route.
#[test]
fn reserved_and_path_like_ivr_ids_are_refused() {
    let _serial = sipp::serial();
    let dir = CallDir::seed();
    let mut server = api_server(&dir, "");
    let port = server.http_port.expect("http port");
    let routes = dir.ivrs.join("routes.toml");
    let before = std::fs::read_to_string(&routes).expect("routes.toml");
    for (method, path) in [
        ("DELETE", "/ivr/routes"),
        ("DELETE", "/ivr/ROUTES"),
        ("DELETE", "/ivr/.routes"),
        ("DELETE", "/ivr/routes.toml"),
        ("DELETE", "/ivr/..%2Froutes"),
        ("GET", "/ivr/routes"),
        ("PATCH", "/ivr/routes"),
        ("PUT", "/components/routes"),
        ("PUT", "/components/.hidden"),
        ("PUT", "/components/a.b"),
    ] {
        let body: &[u8] = if method == "PATCH" { b"{}" } else { b"" };
        let headers = if method == "PATCH" {
            json_headers()
        } else {
            ""
        };
        let reply = http(port, method, path, headers, body);
        assert!(
            reply.status == 400 || reply.status == 404,
            "{method} {path}: {reply:?}"
        );
        assert_eq!(
            std::fs::read_to_string(&routes).ok().as_deref(),
            Some(before.as_str()),
            "{method} {path} left routes.toml alone"
        );
    }
    let reply = http(port, "DELETE", "/ivr/routes", "", b"");
    assert_eq!(reply.status, 400, "{reply:?}");
    assert!(reply.body.contains("reserved"), "{reply:?}");
    assert!(
        !dir.ivrs.join("routes.wasm").exists(),
        "no component named routes was written"
    );
    // The DID is still routed.
    let list = http(port, "GET", "/ivr", "", b"");
    assert_eq!(list.status, 200, "{list:?}");
    assert!(list.body.contains(SEED_DID), "{list:?}");
    sipp::assert_options_answered(&dir, &server);
    server.assert_running();
}

/// Without an API key (loopback only), what a web page in the operator's browser could send
/// is refused: a foreign `Host` (DNS rebinding), a foreign or `null` `Origin`, and a
/// form-encodable state change without `X-Requested-With` (CSRF); curl-style requests work.
#[test]
fn without_a_key_browser_requests_from_elsewhere_are_refused() {
    let _serial = sipp::serial();
    let dir = CallDir::seed();
    let mut server = api_server(&dir, "");
    let port = server.http_port.expect("http port");
    let get = |headers: &str| http(port, "GET", "/ivr", headers, b"");
    for headers in [
        "Host: 127.0.0.1\r\n".to_owned(),
        format!("Host: localhost:{port}\r\n"),
        format!("Host: [::1]:{port}\r\n"),
        format!("Host: 127.0.0.1:{port}\r\nOrigin: http://localhost:{port}\r\n"),
    ] {
        let reply = get(&headers);
        assert_eq!(reply.status, 200, "{headers:?}: {reply:?}");
    }
    for headers in [
        "Host: rebound.example\r\n".to_owned(),
        format!("Host: rebound.example:{port}\r\n"),
        "Host: 127.0.0.1.rebound.example\r\n".to_owned(),
        format!("Host: 10.0.0.1:{port}\r\n"),
        format!("Origin: http://evil.example:{port}\r\n"),
        "Origin: null\r\n".to_owned(),
        "Origin: http://127.0.0.1.evil.example\r\n".to_owned(),
    ] {
        let reply = get(&headers);
        assert_eq!(reply.status, 403, "{headers:?}: {reply:?}");
    }
    // PUT /components from a rebound page: refused before the body is looked at.
    let reply = http(
        port,
        "PUT",
        "/components/evil",
        "Host: rebound.example\r\nContent-Type: application/wasm\r\n",
        b"\0asm",
    );
    assert_eq!(reply.status, 403, "{reply:?}");

    // CSRF: an HTML form posting a prompt, a text/plain or urlencoded "JSON", a bare POST.
    let boundary = "edgeboundary";
    let pcm: Vec<u8> = (0..8000u32)
        .flat_map(|i| (((i % 40) as i16 - 20) * 500).to_le_bytes())
        .collect();
    let mut form = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"csrf.pcm\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    form.extend_from_slice(&pcm);
    form.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let multipart = format!("Content-Type: multipart/form-data; boundary={boundary}\r\n");
    let reply = http(port, "POST", "/audio", &multipart, &form);
    assert_eq!(reply.status, 403, "{reply:?}");
    assert!(!dir.audio("csrf.wav").exists(), "the form wrote nothing");
    for content_type in [
        "text/plain",
        "text/plain; charset=utf-8",
        "application/x-www-form-urlencoded",
    ] {
        let reply = http(
            port,
            "POST",
            "/dnc",
            &format!("Content-Type: {content_type}\r\n"),
            br#"{"number": "+14155550199"}"#,
        );
        assert_eq!(reply.status, 403, "{content_type}: {reply:?}");
    }
    let reply = http(port, "POST", "/ivr", "", b"");
    assert_eq!(reply.status, 403, "a bare POST: {reply:?}");
    let list = http(port, "GET", "/dnc", "", b"");
    assert!(!list.body.contains("14155550199"), "{list:?}");

    // curl: the same upload with X-Requested-With, and JSON (which a form cannot send).
    let reply = http(
        port,
        "POST",
        "/audio",
        &format!("{multipart}X-Requested-With: curl\r\n"),
        &form,
    );
    assert_eq!(reply.status, 201, "{reply:?}");
    assert!(dir.audio("csrf.wav").is_file());
    let reply = http(
        port,
        "POST",
        "/dnc",
        json_headers(),
        br#"{"number": "+14155550199"}"#,
    );
    assert_eq!(reply.status, 201, "{reply:?}");
    server.assert_running();
}

/// With an API key the key is the defence: any Host and Origin are served once it is right.
#[test]
fn with_a_key_the_key_decides() {
    let _serial = sipp::serial();
    let dir = CallDir::seed();
    let config = dir.logs.join("wasm-ivr.toml");
    std::fs::write(&config, "[http]\napi_keys = [\"edge-key\"]\n").expect("write config");
    let mut server = Server::start(
        &dir,
        &ServerOptions {
            http: true,
            config: Some(config),
            store: Some(dir.logs.join("store.db")),
            ..ServerOptions::default()
        },
    );
    let port = server.http_port.expect("http port");
    let reply = http(
        port,
        "GET",
        "/ivr",
        "Host: api.example.net\r\nOrigin: https://console.example.net\r\n",
        b"",
    );
    assert_eq!(reply.status, 401, "{reply:?}");
    let reply = http(
        port,
        "GET",
        "/ivr",
        "Host: api.example.net\r\nOrigin: https://console.example.net\r\nAuthorization: Bearer edge-key\r\n",
        b"",
    );
    assert_eq!(reply.status, 200, "{reply:?}");
    server.assert_running();
}

/// Bodies are limited per route: a JSON route refuses 2 MiB with 413 (and writes nothing),
/// the upload route takes it.
#[test]
fn body_limits_are_per_route() {
    let _serial = sipp::serial();
    let dir = CallDir::seed();
    let mut server = api_server(&dir, "");
    let port = server.http_port.expect("http port");
    let padding = "x".repeat(2 << 20);
    let big_tree = format!(
        r#"{{"name": "big", "description": "{padding}", "nodes": {{"a": {{"say": "hi"}}}}}}"#
    );
    let before = std::fs::read_dir(&dir.ivrs).expect("ivrs").count();
    let reply = http(port, "POST", "/ivr", json_headers(), big_tree.as_bytes());
    assert_eq!(reply.status, 413, "{}", reply.head);
    assert_eq!(
        std::fs::read_dir(&dir.ivrs).expect("ivrs").count(),
        before,
        "nothing was written"
    );
    // 2 MiB of audio (about 65 s at 16 kHz 16-bit raw PCM) is a fine prompt.
    let pcm: Vec<u8> = (0..(1u32 << 20))
        .flat_map(|i| (((i % 40) as i16 - 20) * 500).to_le_bytes())
        .collect();
    let boundary = "bigboundary";
    let mut form = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.pcm\"\r\n\r\n"
    )
    .into_bytes();
    form.extend_from_slice(&pcm);
    form.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let reply = http(
        port,
        "POST",
        "/audio",
        &format!(
            "Content-Type: multipart/form-data; boundary={boundary}\r\nX-Requested-With: test\r\n"
        ),
        &form,
    );
    assert_eq!(reply.status, 201, "{reply:?}");
    server.assert_running();
}

/// Slow clients cannot hold the API's connections: at most `max_connections` are served at
/// once (the rest wait in the backlog, holding no descriptor of the server's), a client that
/// trickles its headers is cut off after `header_timeout_s`, one that trickles its body gets
/// 408 after `request_timeout_s`, and a normal request is served once the slow ones are gone.
#[test]
fn slow_http_clients_are_bounded_in_number_and_time() {
    let _serial = sipp::serial();
    let dir = CallDir::seed();
    let mut server = api_server(
        &dir,
        "max_connections = 4\nheader_timeout_s = 3\nrequest_timeout_s = 4",
    );
    let port = server.http_port.expect("http port");
    // A request works, and the connection it used is gone again.
    assert_eq!(http(port, "GET", "/healthz", "", b"").status, 200);
    let baseline = server.open_sockets();

    // 12 clients that send half a request head and then nothing.
    let mut slow: Vec<TcpStream> = (0..12)
        .map(|_| {
            let mut s = tcp_connect(port);
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                .expect("half a head");
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1000));
    let held = server.open_sockets().saturating_sub(baseline);
    assert!(
        held <= 4,
        "{held} connections accepted at once with max_connections = 4\n{}",
        server.log()
    );
    // Every one is closed without an answer, the first four by the header timeout, the rest
    // in turn as slots free up.
    let deadline = Instant::now() + Duration::from_secs(60);
    for (i, stream) in slow.iter_mut().enumerate() {
        let mut got = Vec::new();
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .expect("read timeout");
        let _ = stream.read_to_end(&mut got);
        assert!(
            Instant::now() < deadline,
            "slow client {i} not closed within 60 s"
        );
        let text = String::from_utf8_lossy(&got);
        assert!(
            !text.starts_with("HTTP/1.1 200"),
            "slow client {i} was answered: {text:?}"
        );
    }

    // A body that trickles: 408 (or closed) within the request timeout.
    let mut body_trickler = tcp_connect(port);
    body_trickler
        .write_all(
            b"POST /dnc HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\n\r\n{",
        )
        .expect("send head");
    body_trickler
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("read timeout");
    let started = Instant::now();
    let mut got = Vec::new();
    let closed_or_answered = loop {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "a trickled body held its request for 60 s\n{}",
            server.log()
        );
        let _ = body_trickler.write_all(b" ");
        let mut buf = [0u8; 1024];
        match body_trickler.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if got.windows(4).any(|w| w == b"\r\n\r\n") {
                    break true;
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {}
            Err(_) => break true,
        }
    };
    assert!(closed_or_answered);
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "a trickled body: {text:?}"
    );
    let list = http(port, "GET", "/dnc", "", b"");
    assert_eq!(list.status, 200, "served after the slow clients: {list:?}");
    assert_eq!(list.body.trim(), "[]", "the trickled request added nothing");
    server.assert_running();
}

/// The CSV export neutralises formulas (a leading `=`, `+`, `-`, `@`) and quotes cells with
/// commas, quotes or line breaks; a plain number such as `+14155550100` stays as it is.
#[test]
fn csv_export_is_escaped() {
    let _serial = sipp::serial();
    let dir = CallDir::seed();
    let mut server = api_server(&dir, "");
    let port = server.http_port.expect("http port");
    for number in [
        "+14155550100",
        "=HYPERLINK(\"http://evil.example\",\"x\")",
        "@SUM(A1)",
        "-cmd",
        "+cmd",
    ] {
        let body = serde_json::json!({ "number": number }).to_string();
        let reply = http(port, "POST", "/dnc", json_headers(), body.as_bytes());
        assert_eq!(reply.status, 201, "{number}: {reply:?}");
    }
    let csv = http(port, "GET", "/dnc?format=csv", "", b"");
    assert_eq!(csv.status, 200, "{csv:?}");
    let lines: Vec<&str> = csv.body.lines().collect();
    assert!(
        lines.iter().any(|l| l.starts_with("+14155550100,")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("\"'=hyperlink(\"\"http://evil.example\"\",\"\"x\"\")\",")),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("'@sum(a1),")),
        "{lines:?}"
    );
    assert!(lines.iter().any(|l| l.starts_with("'-cmd,")), "{lines:?}");
    assert!(lines.iter().any(|l| l.starts_with("'+cmd,")), "{lines:?}");
    for line in &lines[1..] {
        assert!(
            !line.starts_with(['=', '@', '-']) && !line.starts_with("+c"),
            "a cell a spreadsheet would evaluate: {line}"
        );
    }
    server.assert_running();
}
