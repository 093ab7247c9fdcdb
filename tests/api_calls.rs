//! The operator HTTP API end to end: the real `wasm-ivr serve` binary with `--http-listen
//! 127.0.0.1:0` and `WASM_IVR_API_KEYS`, curl-like requests over HTTP (the hosted IVR API's
//! sequence from the seed document, unchanged but for the base URL and the key), and SIPp
//! callers dialling the DID the API assigned (digits as SIP INFO).
//!
//! Every test takes [`sipp::serial`] (calls are timed in real time), bounds every wait, and talks
//! to 127.0.0.1 only.

mod common;

use common::sipp::{self, CallDir, SEED_DID, Server, ServerOptions, Sipp, SippRun, Step, Trace};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The API key the servers accept (`WASM_IVR_API_KEYS`).
const KEY: &str = "k1";
/// A numeric From user, so the do-not-call list gets a phone number.
const CALLER: &str = "+14155550100";

// ---------------------------------------------------------------------------------------------
// The seed document's request bodies, verbatim
// ---------------------------------------------------------------------------------------------

/// `curl -X POST https://api.trunx.io/ivr -d '...'`.
const SEED_CREATE: &str = r#"{
"name": "Plumber Qualifier",
"nodes": {
"welcome": {
"audio": "welcome.wav",
"gather": { "1": "has_license", "9": "dnc" },
"timeout_node": "welcome"
},
"has_license": {
"audio": "license_check.wav",
"gather": { "1": "service_area", "2": "unqualified" }
},
"service_area": {
"audio": "area_check.wav",
"gather": { "1": "transfer_ai", "2": "out_of_area" }
},
"transfer_ai": { "action": "transfer" },
"unqualified": { "action": "hangup", "audio": "not_qualified.wav" },
"out_of_area": { "action": "hangup", "audio": "wrong_area.wav" },
"dnc": { "action": "suppress" }
}
}"#;

/// `curl -X POST https://api.trunx.io/ivr/ivr_abc123/audio -d '...'` for each node with audio:
/// the seed gives the texts of `welcome` and `has_license` ("Repeat for each node").
const SEED_AUDIO: [(&str, &str); 5] = [
    (
        "welcome",
        "Thanks for calling. Press 1 if you are a licensed plumber, or press 9 to be removed from our list.",
    ),
    (
        "has_license",
        "Great. Press 1 if you serve the Phoenix metro area, or press 2 if you do not.",
    ),
    (
        "service_area",
        "Press 1 to talk to our assistant, or press 2 if you are outside the area.",
    ),
    (
        "unqualified",
        "Sorry, we only work with licensed plumbers. Goodbye.",
    ),
    ("out_of_area", "Sorry, we do not serve your area. Goodbye."),
];

/// `curl -X PATCH https://api.trunx.io/ivr/ivr_abc123 -d '...'`.
const SEED_PATCH: &str = r#"{
"nodes": {
"welcome": {
"audio": "welcome.wav",
"gather": { "1": "has_license", "2": "hours", "9": "dnc" },
"timeout_node": "welcome"
}
}
}"#;

// ---------------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------------

/// An HTTP response: status, content type, body text.
#[derive(Debug)]
struct Reply {
    status: u16,
    content_type: String,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }
}

/// A client of one server's API.
struct Api {
    base: String,
    agent: ureq::Agent,
}

/// Which `Authorization` header a request carries.
#[derive(Clone, Copy)]
enum Auth<'a> {
    Key,
    None,
    Bearer(&'a str),
}

impl Api {
    fn new(server: &Server) -> Api {
        let port = server
            .http_port
            .unwrap_or_else(|| panic!("no http= in the ready line\n{}", server.log()));
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        Api {
            base: format!("http://127.0.0.1:{port}"),
            agent,
        }
    }

    /// Sends `METHOD PATH` with an optional body (`content_type`, bytes).
    fn send(
        &self,
        method: &str,
        path: &str,
        auth: Auth<'_>,
        body: Option<(&str, Vec<u8>)>,
    ) -> Reply {
        let url = format!("{}{path}", self.base);
        let authorization = match auth {
            Auth::Key => Some(format!("Bearer {KEY}")),
            Auth::None => None,
            Auth::Bearer(token) => Some(format!("Bearer {token}")),
        };
        let result = match method {
            "GET" | "DELETE" => {
                let mut request = if method == "GET" {
                    self.agent.get(&url)
                } else {
                    self.agent.delete(&url)
                };
                if let Some(a) = &authorization {
                    request = request.header("Authorization", a);
                }
                request.call()
            }
            "POST" | "PATCH" | "PUT" => {
                let mut request = match method {
                    "POST" => self.agent.post(&url),
                    "PATCH" => self.agent.patch(&url),
                    _ => self.agent.put(&url),
                };
                if let Some(a) = &authorization {
                    request = request.header("Authorization", a);
                }
                match body {
                    Some((content_type, bytes)) => {
                        request.header("Content-Type", content_type).send(bytes)
                    }
                    None => request.send_empty(),
                }
            }
            _ => panic!("method {method}"),
        };
        let mut response = result.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let body = response
            .body_mut()
            .read_to_string()
            .unwrap_or_else(|e| panic!("{method} {url}: reading the body: {e}"));
        Reply {
            status,
            content_type,
            body,
        }
    }

    fn get(&self, path: &str) -> Reply {
        self.send("GET", path, Auth::Key, None)
    }

    /// `curl -X METHOD -H "Authorization: Bearer k1" -H "Content-Type: application/json"
    /// -d 'TEXT'`: the body goes out exactly as written.
    fn raw_json(&self, method: &str, path: &str, text: &str) -> Reply {
        self.send(
            method,
            path,
            Auth::Key,
            Some(("application/json", text.as_bytes().to_vec())),
        )
    }

    fn json(&self, method: &str, path: &str, value: &Value) -> Reply {
        self.raw_json(method, path, &value.to_string())
    }

    /// A multipart upload with one field `file`.
    fn upload(&self, path: &str, file_name: &str, bytes: &[u8]) -> Reply {
        let boundary = "wasmivrtestboundary7d1e";
        let mut body = Vec::new();
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; \
                 filename=\"{file_name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        self.send(
            "POST",
            path,
            Auth::Key,
            Some((&format!("multipart/form-data; boundary={boundary}"), body)),
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Set-up
// ---------------------------------------------------------------------------------------------

/// One test's folder (empty IVR folder with `audio/`), store and settings.
struct Setup {
    dir: CallDir,
    store: PathBuf,
    config: PathBuf,
    /// `[transfer] default`.
    agent: String,
}

impl Setup {
    fn new() -> Setup {
        let dir = CallDir::empty_with_audio();
        let agent = format!("sip:agent@127.0.0.1:{}", sipp::free_ports(1));
        let store = dir.logs.join("api.db");
        let config = dir.logs.join("wasm-ivr.toml");
        std::fs::write(
            &config,
            format!("[transfer]\nmode = \"refer\"\ndefault = \"{agent}\"\n"),
        )
        .expect("write wasm-ivr.toml");
        Setup {
            dir,
            store,
            config,
            agent,
        }
    }

    /// Starts (or restarts) the server on the folder, store and settings.
    fn start(&self) -> (Server, Api) {
        let server = Server::start(
            &self.dir,
            &ServerOptions {
                config: Some(self.config.clone()),
                store: Some(self.store.clone()),
                http: true,
                env: vec![("WASM_IVR_API_KEYS".to_owned(), KEY.to_owned())],
                ..ServerOptions::default()
            },
        );
        let api = Api::new(&server);
        (server, api)
    }
}

/// The seed's sequence: create, render every prompt, assign the DID. Returns the IVR's id.
fn seed_sequence(api: &Api, server: &Server) -> String {
    let created = api.raw_json("POST", "/ivr", SEED_CREATE);
    assert_eq!(created.status, 201, "{created:?}\n{}", server.log());
    let body = created.json();
    let id = body["id"].as_str().expect("id").to_owned();
    assert!(
        id.starts_with("ivr_") && id.len() > 4,
        "id {id:?} is not ivr_…"
    );
    assert_eq!(body["name"], "Plumber Qualifier", "{body}");
    assert_eq!(body["status"], "draft", "{body}");
    let created_at = body["created_at"].as_str().expect("created_at");
    assert!(
        created_at.len() >= 20 && created_at.as_bytes()[10] == b'T' && created_at.ends_with('Z'),
        "created_at {created_at:?} is not RFC 3339 UTC"
    );
    for key in ["id", "name", "status", "created_at"] {
        assert!(body.get(key).is_some(), "{key} missing: {body}");
    }

    for (node, text) in SEED_AUDIO {
        let request =
            format!("{{\n\"node\": \"{node}\",\n\"text\": \"{text}\",\n\"voice\": \"rachel\"\n}}");
        let audio = api.raw_json("POST", &format!("/ivr/{id}/audio"), &request);
        assert_eq!(audio.status, 200, "audio for {node}: {audio:?}");
        let audio = audio.json();
        assert_eq!(audio["node"], node, "{audio}");
        assert!(
            audio["duration_seconds"].as_f64().unwrap_or(0.0) > 0.5,
            "{audio}"
        );
    }

    let assigned = api.raw_json(
        "POST",
        &format!("/ivr/{id}/assign"),
        "{\n\"did\": \"+14155559876\"\n}",
    );
    assert_eq!(assigned.status, 200, "{assigned:?}\n{}", server.log());
    let assigned = assigned.json();
    assert_eq!(
        assigned,
        json!({"id": id, "did": SEED_DID, "status": "live"}),
        "the IVR is now live"
    );
    let detail = api.get(&format!("/ivr/{id}")).json();
    assert_eq!(detail["status"], "live", "{detail}");
    assert_eq!(detail["dids"], json!([SEED_DID]), "{detail}");
    assert_eq!(detail["missing_prompts"], json!([]), "{detail}");
    id
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

/// The caller accepts the REFER, reports the destination answering, and takes the BYE
/// (as in `tests/protection.rs`).
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

fn call_ok(setup: &Setup, server: &Server, name: &str, steps: &[Step]) -> SippRun {
    let run = Sipp::call(&setup.dir, name, SEED_DID, steps)
        .caller(CALLER)
        .timeout(45)
        .run(server);
    run.assert_success(server);
    run
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

/// Polls `check` every 100 ms until it gives a value or `limit` passes.
fn poll<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------------------------
// Prometheus text
// ---------------------------------------------------------------------------------------------

/// Parses Prometheus text exposition: every non-comment, non-empty line is
/// `name{labels} value` or `name value` with a numeric value. Returns (name, labels, value).
fn parse_prometheus(text: &str) -> Vec<(String, String, f64)> {
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value in {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("not a number in {line:?}"));
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let labels = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels in {line:?}"));
                // Each label: key="value" (quotes escaped inside), comma separated.
                let mut chars = labels.chars().peekable();
                while chars.peek().is_some() {
                    let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
                    assert!(
                        !key.is_empty()
                            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                        "bad label name {key:?} in {line:?}"
                    );
                    assert_eq!(chars.next(), Some('"'), "unquoted label in {line:?}");
                    let mut escaped = false;
                    loop {
                        match chars.next() {
                            Some('\\') if !escaped => escaped = true,
                            Some('"') if !escaped => break,
                            Some(_) => escaped = false,
                            None => panic!("unterminated label value in {line:?}"),
                        }
                    }
                    match chars.next() {
                        Some(',') | None => {}
                        Some(c) => panic!("unexpected {c:?} after a label in {line:?}"),
                    }
                }
                (name, labels.to_owned())
            }
            None => (series, String::new()),
        };
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
                && !name.starts_with(|c: char| c.is_ascii_digit()),
            "bad metric name {name:?} in {line:?}"
        );
        samples.push((name.to_owned(), labels, value));
    }
    samples
}

fn metric_sum(samples: &[(String, String, f64)], name: &str) -> f64 {
    samples
        .iter()
        .filter(|(n, _, _)| n == name)
        .map(|(_, _, v)| v)
        .sum()
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// 1. The seed's curl sequence (create, TTS for every prompt with voice `rachel`, assign the
///    DID) against the real server; then a SIPp call to the DID pressing `1 1 1` walks to
///    `transfer_ai` and is referred to the configured agent.
#[test]
fn the_seed_sequence_makes_a_live_ivr_that_answers_calls() {
    let _serial = sipp::serial();
    let setup = Setup::new();
    let (mut server, api) = setup.start();
    let id = seed_sequence(&api, &server);

    let mut steps = keys("111");
    steps.extend(accept_transfer());
    let run = call_ok(&setup, &server, "api-seed-111", &steps);
    let refers = run.requests("REFER");
    assert_eq!(refers.len(), 1, "one REFER\n{}", run.report());
    // The target, with the transfer context riding in its URI headers for the agent.
    let refer_to = refers[0].header("Refer-To").unwrap_or_default();
    assert!(
        refer_to.starts_with(&format!("<{}?", setup.agent))
            && refer_to.contains("X-IVR-Path=welcome%2Chas_license%2Cservice_area%2Ctransfer_ai"),
        "{}",
        refers[0].text
    );
    let trace = server.trace(&run.call_id);
    assert_path(
        &trace,
        &["welcome", "has_license", "service_area", "transfer_ai"],
        &server,
    );
    assert_eq!(trace.outcome(), "transfer", "{}", trace.pretty());
    assert_eq!(trace.0["ivr"], json!(id), "{}", trace.pretty());
    server.assert_running();
}

/// 2. PATCH while a call is in progress: call A waits in `welcome`; the seed's PATCH (plus an
///    `hours` node) goes in; call B presses `2` and reaches `hours`; then A presses `2`, which
///    its (old) menu does not know: A replays `welcome`. A and B ran different versions.
#[test]
fn a_patch_changes_new_calls_and_not_the_call_in_progress() {
    let _serial = sipp::serial();
    let setup = Setup::new();
    let (mut server, api) = setup.start();
    let id = seed_sequence(&api, &server);
    let old_version = api.get(&format!("/ivr/{id}")).json()["version"].clone();

    // A: waits in welcome (the TTS prompt runs ~6 s, then 5 s of timeout and a replay; three
    // timeouts in a row would end the call, at ~30 s) until B is done, then presses 2.
    let a = Sipp::call(
        &setup.dir,
        "api-patch-a",
        SEED_DID,
        &[
            Step::Pause(20_000),
            Step::Info('2'),
            Step::Pause(2000),
            Step::Bye,
        ],
    )
    .caller(CALLER)
    .timeout(45)
    .spawn(&server);
    let in_welcome = poll(Duration::from_secs(8), || {
        let live = api.get("/calls").json();
        live.as_array()?
            .iter()
            .find(|c| c["call_id"] == json!(a.sipp.call_id) && c["step"] == "welcome")
            .cloned()
    });
    assert!(
        in_welcome.is_some(),
        "call A is not in welcome\n{}",
        server.log()
    );

    let mut patch: Value = serde_json::from_str(SEED_PATCH).expect("seed PATCH body");
    patch["nodes"]["hours"] = json!({"action": "hangup", "say": "We are open nine to five."});
    let patched = api.json("PATCH", &format!("/ivr/{id}"), &patch);
    assert_eq!(patched.status, 200, "{patched:?}\n{}", server.log());
    let patched = patched.json();
    assert_eq!(
        patched["definition"]["nodes"]["welcome"]["gather"],
        json!({"1": "has_license", "2": "hours", "9": "dnc"}),
        "{patched}"
    );
    assert!(
        patched["definition"]["nodes"]["has_license"].is_object(),
        "nodes merge: the others stay\n{patched}"
    );
    assert_eq!(patched["status"], "live", "{patched}");
    let new_version = patched["version"].clone();
    assert_ne!(
        new_version, old_version,
        "PATCH answers with the new version"
    );

    let b_started = Instant::now();
    let b = Sipp::call(
        &setup.dir,
        "api-patch-b",
        SEED_DID,
        &[Step::Pause(1000), Step::Info('2'), Step::AwaitBye(20_000)],
    )
    .caller("+14155550101")
    .timeout(30)
    .run(&server);
    b.assert_success(&server);
    let b_trace = server.trace(&b.call_id);
    assert_path(&b_trace, &["welcome", "hours"], &server);
    assert_eq!(b_trace.outcome(), "hangup", "{}", b_trace.pretty());
    assert_eq!(b_trace.0["version"], new_version, "{}", b_trace.pretty());
    assert!(
        b_started.elapsed() < Duration::from_secs(15),
        "call B took {:?}; call A presses 2 at ~20 s and must do so after B ended",
        b_started.elapsed()
    );

    let a = a.wait();
    a.assert_success(&server);
    let a_trace = server.trace(&a.call_id);
    let a_path = a_trace.path();
    assert!(
        a_path.len() >= 2 && a_path.iter().all(|n| n == "welcome"),
        "call A stays in welcome (2 is not on its menu)\n{}",
        a_trace.pretty()
    );
    assert!(
        a_trace.gather_results().contains(&json!({"digits": "2"})),
        "call A pressed 2\n{}",
        a_trace.pretty()
    );
    assert_eq!(a_trace.outcome(), "caller-hangup", "{}", a_trace.pretty());
    assert_eq!(a_trace.0["version"], old_version, "{}", a_trace.pretty());
    assert_ne!(
        a_trace.0["version"], b_trace.0["version"],
        "A and B ran different versions"
    );
    server.assert_running();
}

/// 3. Errors: 401 without a key and with a wrong one (`/healthz` needs none); 400 on a tree
///    naming an unknown node, naming it; 409 when a second IVR assigns a taken DID; 400 on a
///    non-audio upload.
#[test]
fn errors_are_json_with_the_right_status() {
    let _serial = sipp::serial();
    let setup = Setup::new();
    let (mut server, api) = setup.start();

    for (auth, what) in [
        (Auth::None, "no key"),
        (Auth::Bearer("k2"), "a wrong key"),
        (Auth::Bearer(""), "an empty key"),
    ] {
        for (method, path) in [("GET", "/ivr"), ("GET", "/dnc"), ("GET", "/metrics")] {
            let reply = api.send(method, path, auth, None);
            assert_eq!(reply.status, 401, "{method} {path} with {what}: {reply:?}");
            assert!(
                reply.json()["error"].is_string(),
                "{method} {path} with {what}: {reply:?}"
            );
        }
        let create = api.send(
            "POST",
            "/ivr",
            auth,
            Some(("application/json", SEED_CREATE.as_bytes().to_vec())),
        );
        assert_eq!(create.status, 401, "POST /ivr with {what}: {create:?}");
    }
    let suffixed = api.send("GET", "/ivr", Auth::Bearer(&format!("{KEY}x")), None);
    assert_eq!(suffixed.status, 401, "a key with a suffix: {suffixed:?}");
    assert_eq!(
        api.get("/ivr").json(),
        json!([]),
        "nothing was created without a key"
    );
    let health = api.send("GET", "/healthz", Auth::None, None);
    assert_eq!(health.status, 200, "{health:?}");
    assert_eq!(health.json()["status"], "ok", "{health:?}");

    let mut bad: Value = serde_json::from_str(SEED_CREATE).expect("seed body");
    bad["nodes"]["welcome"]["gather"]["1"] = json!("has_licence");
    let reply = api.json("POST", "/ivr", &bad);
    assert_eq!(reply.status, 400, "{reply:?}");
    assert!(
        reply.body.contains("has_licence") && reply.body.contains("welcome"),
        "the error names the unknown node and where: {reply:?}"
    );
    assert!(reply.json()["error"].is_string(), "{reply:?}");
    assert_eq!(api.get("/ivr").json(), json!([]), "no IVR from a bad tree");

    // Two IVRs without prompts (so they can go live at once); the second cannot take the DID.
    let first = api.json(
        "POST",
        "/ivr",
        &json!({"name": "First", "nodes": {"bye": {"action": "hangup"}}}),
    );
    assert_eq!(first.status, 201, "{first:?}");
    let first = first.json()["id"].as_str().expect("id").to_owned();
    let second = api.json(
        "POST",
        "/ivr",
        &json!({"name": "Second", "nodes": {"bye": {"action": "hangup"}}}),
    );
    assert_eq!(second.status, 201, "{second:?}");
    let second = second.json()["id"].as_str().expect("id").to_owned();
    let assigned = api.json(
        "POST",
        &format!("/ivr/{first}/assign"),
        &json!({"did": SEED_DID}),
    );
    assert_eq!(assigned.status, 200, "{assigned:?}");
    let taken = api.json(
        "POST",
        &format!("/ivr/{second}/assign"),
        &json!({"did": SEED_DID}),
    );
    assert_eq!(taken.status, 409, "{taken:?}");
    assert!(
        taken.body.contains(&first),
        "the conflict names the owner: {taken:?}"
    );
    let again = api.json(
        "POST",
        &format!("/ivr/{first}/assign"),
        &json!({"did": SEED_DID}),
    );
    assert_eq!(
        again.status, 200,
        "assigning it to its owner again: {again:?}"
    );
    let owner = api.get(&format!("/ivr/{second}")).json();
    assert_eq!(owner["dids"], json!([]), "{owner}");
    assert_eq!(owner["status"], "draft", "{owner}");

    // Uploads that are not audio.
    let junk = api.upload(
        "/audio",
        "junk.wav",
        b"this is not audio at all, just text\n",
    );
    assert_eq!(junk.status, 400, "{junk:?}");
    assert!(junk.json()["error"].is_string(), "{junk:?}");
    let text = api.upload("/audio", "notes.txt", b"hello");
    assert_eq!(text.status, 400, "{text:?}");
    let no_field = api.send(
        "POST",
        "/audio",
        Auth::Key,
        Some((
            "multipart/form-data; boundary=b0",
            b"--b0\r\nContent-Disposition: form-data; name=\"other\"\r\n\r\nx\r\n--b0--\r\n"
                .to_vec(),
        )),
    );
    assert_eq!(no_field.status, 400, "{no_field:?}");
    assert_eq!(api.get("/audio").json(), json!([]), "nothing was stored");
    server.assert_running();
}

/// 4. Do-not-call: pressing 9 on the seed tree lists the caller; after SIGKILL and a restart
///    on the same store and folder the list (JSON and CSV) still has it, and the IVR is still
///    assigned and live.
#[test]
fn suppress_lists_the_caller_and_everything_survives_a_kill() {
    let _serial = sipp::serial();
    let setup = Setup::new();
    let (mut server, api) = setup.start();
    let id = seed_sequence(&api, &server);
    assert_eq!(api.get("/dnc").json(), json!([]));

    let mut steps = keys("9");
    steps.push(Step::AwaitBye(20_000));
    let run = call_ok(&setup, &server, "api-dnc", &steps);
    let trace = server.trace(&run.call_id);
    assert_path(&trace, &["welcome", "dnc"], &server);
    assert_eq!(trace.outcome(), "suppress", "{}", trace.pretty());

    let listed = |api: &Api| {
        poll(Duration::from_secs(5), || {
            let list = api.get("/dnc").json();
            list.as_array()?
                .iter()
                .find(|e| e["number"] == CALLER)
                .cloned()
        })
    };
    let entry = listed(&api).unwrap_or_else(|| {
        panic!(
            "GET /dnc does not list {CALLER}: {}\n{}",
            api.get("/dnc").body,
            server.log()
        )
    });
    assert!(
        entry["source"]
            .as_str()
            .is_some_and(|s| s.starts_with("ivr:")),
        "{entry}"
    );
    server.assert_running();

    // SIGKILL (Child::kill), then the same folder and store again.
    let pid = server.pid();
    drop(server);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.contains(") Z ")),
        "the server is gone"
    );
    let (mut server, api) = setup.start();
    assert!(
        listed(&api).is_some(),
        "after the restart GET /dnc does not list {CALLER}: {}",
        api.get("/dnc").body
    );
    let csv = api.get("/dnc?format=csv");
    assert_eq!(csv.status, 200, "{csv:?}");
    assert!(csv.content_type.starts_with("text/csv"), "{csv:?}");
    let mut lines = csv.body.lines();
    assert_eq!(lines.next(), Some("number,added_at,source"), "{csv:?}");
    assert!(
        lines.any(|l| l.starts_with(&format!("{CALLER},"))),
        "CSV lists {CALLER}: {csv:?}"
    );
    let detail = api.get(&format!("/ivr/{id}"));
    assert_eq!(detail.status, 200, "{detail:?}");
    let detail = detail.json();
    assert_eq!(detail["status"], "live", "{detail}");
    assert_eq!(detail["dids"], json!([SEED_DID]), "{detail}");
    assert_eq!(detail["name"], "Plumber Qualifier", "{detail}");

    // And it answers calls: 1 2 → unqualified.
    let mut steps = keys("12");
    steps.push(Step::AwaitBye(20_000));
    let run = Sipp::call(&setup.dir, "api-after-restart", SEED_DID, &steps)
        .caller("+14155550102")
        .timeout(45)
        .run(&server);
    run.assert_success(&server);
    assert_path(
        &server.trace(&run.call_id),
        &["welcome", "has_license", "unqualified"],
        &server,
    );
    server.assert_running();
}

/// 5a. `/metrics` is Prometheus text whose call and step counters move after a call.
#[test]
fn metrics_are_prometheus_text_and_move_after_a_call() {
    let _serial = sipp::serial();
    let setup = Setup::new();
    let (mut server, api) = setup.start();
    seed_sequence(&api, &server);

    let before = api.get("/metrics");
    assert_eq!(before.status, 200, "{before:?}");
    assert!(before.content_type.starts_with("text/plain"), "{before:?}");
    let before = parse_prometheus(&before.body);

    let mut steps = keys("12");
    steps.push(Step::AwaitBye(20_000));
    let run = call_ok(&setup, &server, "api-metrics", &steps);
    let _ = server.trace(&run.call_id);

    let after_text = api.get("/metrics").body;
    let after = parse_prometheus(&after_text);
    for name in ["wasm_ivr_calls_total", "wasm_ivr_step_visits_total"] {
        assert!(
            metric_sum(&after, name) > metric_sum(&before, name),
            "{name} did not move after a call\n{after_text}"
        );
    }
    assert!(
        after
            .iter()
            .any(|(n, l, v)| n == "wasm_ivr_step_visits_total"
                && l.contains("\"unqualified\"")
                && *v >= 1.0),
        "a step counter for unqualified\n{after_text}"
    );

    server.assert_running();
}

/// 5b. `/openapi.json` is an OpenAPI 3 document whose `paths` hold every route the router
///     serves, `/healthz` included (and every operation it documents is served).
#[test]
fn the_openapi_document_lists_every_route() {
    let _serial = sipp::serial();
    let setup = Setup::new();
    let (mut server, api) = setup.start();
    let doc = api.get("/openapi.json");
    assert_eq!(doc.status, 200, "{doc:?}");
    let doc = doc.json();
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{doc}"
    );
    assert!(doc["info"]["title"].is_string(), "{doc}");
    let paths = doc["paths"].as_object().expect("paths");
    // Every route of `api::router` with its methods.
    let routes: &[(&str, &[&str])] = &[
        ("/ivr", &["get", "post"]),
        ("/ivr/{id}", &["get", "patch", "delete"]),
        ("/ivr/{id}/audio", &["post"]),
        ("/ivr/{id}/assign", &["post"]),
        ("/ivr/{id}/assign/{did}", &["delete"]),
        ("/audio", &["get", "post"]),
        ("/audio/{name}", &["delete"]),
        ("/components/{name}", &["put"]),
        ("/dnc", &["get", "post"]),
        ("/dnc/{number}", &["delete"]),
        ("/calls", &["get"]),
        ("/calls/history", &["get"]),
        ("/calls/{id}", &["get"]),
        ("/metrics", &["get"]),
        ("/healthz", &["get"]),
    ];
    let mut missing = Vec::new();
    for (path, methods) in routes {
        for method in *methods {
            if paths.get(*path).is_none_or(|p| p.get(*method).is_none()) {
                missing.push(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    // Every documented operation is served: no 405, and no router 404 (a handler's 404 is JSON).
    let mut unserved = Vec::new();
    for (path, item) in paths {
        for method in ["get", "post", "put", "patch", "delete"] {
            if item.get(method).is_none() {
                continue;
            }
            let concrete = path
                .replace("{id}", "ivr_0000000000")
                .replace("{did}", "+15550000000")
                .replace("{name}", "nothing-here")
                .replace("{number}", "+15550000000");
            let body = match method {
                "post" | "put" | "patch" => Some(("application/json", b"{}".to_vec())),
                _ => None,
            };
            let reply = api.send(&method.to_uppercase(), &concrete, Auth::Key, body);
            let router_404 =
                reply.status == 404 && serde_json::from_str::<Value>(&reply.body).is_err();
            if reply.status == 405 || router_404 {
                unserved.push(format!(
                    "{} {path} -> {}",
                    method.to_uppercase(),
                    reply.status
                ));
            }
        }
    }
    assert!(
        unserved.is_empty(),
        "documented but not served: {unserved:?}"
    );
    assert!(
        missing.is_empty(),
        "routes the router serves that /openapi.json lacks: {missing:?}\npaths: {:?}",
        paths.keys().collect::<Vec<_>>()
    );
    let bearer = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(bearer["scheme"], "bearer", "{doc}");
    server.assert_running();
}

/// 6. `GET /calls` lists a call waiting in a gather with its step; `GET /calls/history?did=…`
///    lists finished calls.
#[test]
fn live_calls_and_the_call_history() {
    let _serial = sipp::serial();
    let setup = Setup::new();
    let (mut server, api) = setup.start();
    let id = seed_sequence(&api, &server);
    assert_eq!(api.get("/calls").json(), json!([]));

    // Waits in welcome, then presses 1 and waits in has_license, then hangs up.
    let running = Sipp::call(
        &setup.dir,
        "api-live",
        SEED_DID,
        &[
            Step::Pause(4000),
            Step::Info('1'),
            Step::Pause(4000),
            Step::Bye,
        ],
    )
    .caller(CALLER)
    .timeout(30)
    .spawn(&server);
    let call_id = running.sipp.call_id.clone();
    let live_in = |step: &str| {
        poll(Duration::from_secs(4), || {
            let live = api.get("/calls").json();
            live.as_array()?
                .iter()
                .find(|c| c["call_id"] == json!(call_id) && c["step"] == step)
                .cloned()
        })
    };
    let live = live_in("welcome").unwrap_or_else(|| {
        panic!(
            "GET /calls never showed the call in welcome: {}\n{}",
            api.get("/calls").body,
            server.log()
        )
    });
    assert_eq!(live["ivr"], json!(id), "{live}");
    assert_eq!(live["did"], SEED_DID, "{live}");
    assert_eq!(live["caller"], CALLER, "{live}");
    assert!(
        live["answered_at_ms"].as_u64().is_some_and(|t| t > 0),
        "{live}"
    );
    let one = api.get(&format!("/calls/{}", call_id.replace('@', "%40")));
    assert_eq!(one.status, 200, "GET /calls/{{id}} while live: {one:?}");
    assert_eq!(one.json()["step"], "welcome", "{one:?}");
    assert!(
        live_in("has_license").is_some(),
        "GET /calls never showed the call in has_license: {}",
        api.get("/calls").body
    );
    let run = running.wait();
    run.assert_success(&server);
    let _ = server.trace(&run.call_id);
    assert!(
        poll(Duration::from_secs(5), || {
            api.get("/calls")
                .json()
                .as_array()?
                .is_empty()
                .then_some(())
        })
        .is_some(),
        "the call is still listed live after it ended: {}",
        api.get("/calls").body
    );

    let finds = |query: &str| -> Option<Value> {
        poll(Duration::from_secs(5), || {
            let history = api.get(&format!("/calls/history?{query}")).json();
            history
                .as_array()?
                .iter()
                .find(|r| r["call_id"] == json!(call_id))
                .cloned()
        })
    };
    let record = finds("did=%2B14155559876").unwrap_or_else(|| {
        panic!(
            "GET /calls/history?did=%2B14155559876 does not list the call: {}",
            api.get("/calls/history").body
        )
    });
    assert_eq!(
        record["path"],
        json!(["welcome", "has_license"]),
        "{record}"
    );
    assert_eq!(record["outcome"], "caller-hangup", "{record}");
    assert_eq!(record["ivr"], json!(id), "{record}");
    assert_eq!(
        api.get("/calls/history?did=%2B15550000000").json(),
        json!([]),
        "another DID has no calls"
    );
    let one = api.get(&format!("/calls/{}", call_id.replace('@', "%40")));
    assert_eq!(one.status, 200, "GET /calls/{{id}} after the call: {one:?}");
    assert_eq!(one.json()["outcome"], "caller-hangup", "{one:?}");
    server.assert_running();
}

/// 6b. `GET /calls/history?did=+14155559876` as typed (curl sends the `+` as is) lists the
///     DID's calls, like `?did=%2B14155559876` does.
#[test]
fn the_call_history_filter_takes_the_did_as_typed() {
    let _serial = sipp::serial();
    let setup = Setup::new();
    let (mut server, api) = setup.start();
    seed_sequence(&api, &server);
    let mut steps = keys("12");
    steps.push(Step::AwaitBye(20_000));
    let run = call_ok(&setup, &server, "api-history-plus", &steps);
    let _ = server.trace(&run.call_id);
    let listed = |query: &str| {
        poll(Duration::from_secs(5), || {
            api.get(&format!("/calls/history?{query}"))
                .json()
                .as_array()?
                .iter()
                .any(|r| r["call_id"] == json!(run.call_id))
                .then_some(())
        })
        .is_some()
    };
    assert!(
        listed("did=%2B14155559876"),
        "?did=%2B14155559876 does not list the call: {}",
        api.get("/calls/history").body
    );
    assert!(
        listed("did=+14155559876"),
        "GET /calls/history?did=+14155559876 (a literal +, as curl sends it) lists nothing \
         while ?did=%2B14155559876 lists the call: {}",
        api.get("/calls/history?did=+14155559876").body
    );
    server.assert_running();
}
