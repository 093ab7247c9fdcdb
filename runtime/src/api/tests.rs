//! The API through its router, against a real engine, SQLite file, TTS and folder watcher.

use super::*;
use crate::engine::folder::{self, Folder};
use crate::engine::{EngineSettings, IvrEngine, Outcome, Registry};
use crate::simulate::{SimulationOptions, parse_script, simulate};
use axum::body::Body;
use axum::http::Request as HttpRequest;
use serde_json::{Value, json};
use tower::ServiceExt;

const KEY: &str = "test-key";

struct Fixture {
    _dir: tempfile::TempDir,
    app: axum::Router,
    engine: Arc<IvrEngine>,
    registry: Arc<Registry>,
    _watcher: folder::Watcher,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let ivrs = dir.path().join("ivrs");
    let audio = ivrs.join("audio");
    std::fs::create_dir_all(&audio).unwrap();
    let engine = IvrEngine::new(EngineSettings {
        max_instances: 8,
        cache_dir: None,
        ..EngineSettings::default()
    })
    .unwrap();
    let registry = Arc::new(Registry::new());
    let store: Arc<dyn crate::store::Store> =
        Arc::new(crate::store::SqliteStore::open(&dir.path().join("s.db")).unwrap());
    let speech = crate::tts::Speech::detect(
        crate::tts::EngineKind::Festival,
        dir.path().join("tts"),
        crate::tts::CacheLimits::default(),
    )
    .ok()
    .map(Arc::new);
    assert!(
        speech.is_some(),
        "festival, flite and espeak-ng are installed by scripts/setup.sh"
    );
    let folder = Folder::new(ivrs.clone(), audio.clone());
    let watcher = folder::watch(folder, engine.clone(), registry.clone(), || {}, |_| {}).unwrap();
    let state = Arc::new(ApiState::new(
        ivrs,
        audio,
        registry.clone(),
        engine.clone(),
        store,
        speech,
        &[KEY.to_owned()],
    ));
    Fixture {
        _dir: dir,
        app: router(state),
        engine,
        registry,
        _watcher: watcher,
    }
}

async fn send(
    app: &axum::Router,
    method: &str,
    uri: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = HttpRequest::builder()
        .method(method)
        .uri(uri)
        .header("authorization", format!("Bearer {KEY}"));
    let body = match body {
        Some(v) => {
            request = request.header("content-type", "application/json");
            Body::from(v.to_string())
        }
        None => Body::empty(),
    };
    let response = app
        .clone()
        .oneshot(request.body(body).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 24)
        .await
        .unwrap();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, value)
}

fn seed() -> Value {
    serde_json::from_str(include_str!(
        "../../../examples/plumber-qualifier/plumber-qualifier.json"
    ))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_sequence_creates_renders_assigns_and_patches() {
    let f = fixture();
    let (status, created) = send(&f.app, "POST", "/ivr", Some(seed())).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("ivr_"));
    assert_eq!(created["status"], "draft");
    assert_eq!(created["name"], "Plumber Qualifier");

    // Going live needs every prompt: the error lists the missing ones.
    let (status, err) = send(
        &f.app,
        "POST",
        &format!("/ivr/{id}/assign"),
        Some(json!({"did": "+14155559876"})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    assert_eq!(err["details"].as_array().unwrap().len(), 5, "{err}");

    for (node, text) in [
        (
            "welcome",
            "Thanks for calling. Press 1 if you are a licensed plumber.",
        ),
        (
            "has_license",
            "Great. Press 1 if you serve the Phoenix metro area.",
        ),
        ("service_area", "Press 1 to talk to our assistant."),
        ("unqualified", "Sorry. Goodbye."),
        ("out_of_area", "Sorry, wrong area. Goodbye."),
    ] {
        let (status, audio) = send(
            &f.app,
            "POST",
            &format!("/ivr/{id}/audio"),
            Some(json!({"node": node, "text": text, "voice": "rachel"})),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{audio}");
        assert!(audio["duration_seconds"].as_f64().unwrap() > 0.5, "{audio}");
    }
    let (status, err) = send(
        &f.app,
        "POST",
        &format!("/ivr/{id}/audio"),
        Some(json!({"node": "welcome", "text": "x", "voice": "nobody"})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        err["error"]
            .as_str()
            .unwrap()
            .contains("unknown voice 'nobody'"),
        "{err}"
    );

    let (status, assigned) = send(
        &f.app,
        "POST",
        &format!("/ivr/{id}/assign"),
        Some(json!({"did": "+14155559876"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{assigned}");
    assert_eq!(assigned["status"], "live", "{assigned}");
    let ivr = f.registry.route("+14155559876").expect("routed");
    let report = simulate(
        &f.engine,
        f.registry.clone(),
        ivr,
        parse_script("1 1 1").unwrap(),
        &SimulationOptions::default(),
    )
    .await;
    assert_eq!(
        report.path,
        ["welcome", "has_license", "service_area", "transfer_ai"]
    );
    assert!(matches!(report.outcome, Outcome::Transfer { .. }));

    // The seed's PATCH: key 2 -> hours; the next call follows it.
    let (status, patched) = send(
        &f.app,
        "PATCH",
        &format!("/ivr/{id}"),
        Some(json!({"nodes": {
            "welcome": {"audio": "welcome.wav", "gather": {"1": "has_license", "2": "hours", "9": "dnc"}, "timeout_node": "welcome"},
            "hours": {"action": "hangup", "say": "We are open nine to five."}
        }})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    let ivr = f.registry.route("+14155559876").expect("routed");
    let report = simulate(
        &f.engine,
        f.registry.clone(),
        ivr,
        parse_script("2").unwrap(),
        &SimulationOptions::default(),
    )
    .await;
    assert_eq!(report.path, ["welcome", "hours"]);

    let (status, detail) = send(&f.app, "GET", &format!("/ivr/{id}"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(detail["status"], "live");
    assert_eq!(detail["dids"], json!(["+14155559876"]));
    assert!(detail["definition"]["nodes"]["hours"].is_object());

    // Another IVR cannot take the DID; deleting an assigned IVR is refused.
    let (_, other) = send(
        &f.app,
        "POST",
        "/ivr",
        Some(json!({"name": "Other", "nodes": {"a": {"action": "hangup"}}})),
    )
    .await;
    let other = other["id"].as_str().unwrap().to_owned();
    let (status, err) = send(
        &f.app,
        "POST",
        &format!("/ivr/{other}/assign"),
        Some(json!({"did": "+14155559876"})),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");
    let (status, _) = send(
        &f.app,
        "POST",
        &format!("/ivr/{other}/assign"),
        Some(json!({"did": "555"})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = send(&f.app, "DELETE", &format!("/ivr/{id}"), None).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = send(
        &f.app,
        "DELETE",
        &format!("/ivr/{id}/assign/+14155559876"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(f.registry.route("+14155559876").is_none());
    let (status, list) = send(&f.app, "GET", "/ivr", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list.as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn auth_errors_and_documents() {
    let f = fixture();
    let response = f
        .app
        .clone()
        .oneshot(HttpRequest::get("/ivr").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let wrong = f
        .app
        .clone()
        .oneshot(
            HttpRequest::get("/ivr")
                .header("authorization", "Bearer nope")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let health = f
        .app
        .clone()
        .oneshot(HttpRequest::get("/healthz").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);

    let mut bad = seed();
    bad["nodes"]["welcome"]["gather"]["1"] = json!("has_licence");
    let (status, err) = send(&f.app, "POST", "/ivr", Some(bad)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let details = err["details"].to_string();
    assert!(
        details.contains("node 'welcome'") && details.contains("has_licence"),
        "{err}"
    );

    let (status, doc) = send(&f.app, "GET", "/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    for path in [
        "/ivr",
        "/ivr/{id}",
        "/ivr/{id}/audio",
        "/ivr/{id}/assign",
        "/audio",
        "/dnc",
        "/calls/history",
        "/metrics",
        "/voices",
    ] {
        assert!(doc["paths"][path].is_object(), "missing {path}");
    }

    let (status, metrics) = send(&f.app, "GET", "/metrics", None).await;
    assert_eq!(status, StatusCode::OK);
    let text = metrics.as_str().unwrap();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (name, value) = line.rsplit_once(' ').unwrap();
        assert!(name.starts_with("wasm_ivr_"), "{line}");
        value
            .parse::<f64>()
            .unwrap_or_else(|_| panic!("not a number in {line}"));
    }
}

#[tokio::test]
async fn audio_uploads_and_the_dnc_list() {
    let f = fixture();
    let multipart = |name: &str, bytes: &[u8]| {
        let mut body = Vec::new();
        body.extend_from_slice(
            b"--XYZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"",
        );
        body.extend_from_slice(name.as_bytes());
        body.extend_from_slice(b"\"\r\nContent-Type: application/octet-stream\r\n\r\n");
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n--XYZ--\r\n");
        HttpRequest::post("/audio")
            .header("authorization", format!("Bearer {KEY}"))
            .header("content-type", "multipart/form-data; boundary=XYZ")
            .body(Body::from(body))
            .unwrap()
    };
    let response = f
        .app
        .clone()
        .oneshot(multipart("junk.wav", b"this is not audio"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    assert!(
        String::from_utf8_lossy(&bytes).contains("not usable audio"),
        "{bytes:?}"
    );

    let pcm: Vec<u8> = (0..8000i16)
        .flat_map(|i| ((i % 64) * 200).to_le_bytes())
        .collect();
    let response = f
        .app
        .clone()
        .oneshot(multipart("tone.pcm", &pcm))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let (status, files) = send(&f.app, "GET", "/audio", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(files[0]["name"], "tone.wav");
    assert!(
        (files[0]["duration_seconds"].as_f64().unwrap() - 1.0).abs() < 0.05,
        "{files}"
    );
    let (status, _) = send(&f.app, "DELETE", "/audio/tone.wav", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    let (status, added) = send(
        &f.app,
        "POST",
        "/dnc",
        Some(json!({"number": "+1 (415) 555-0100"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{added}");
    assert_eq!(added["number"], "+14155550100");
    let (_, list) = send(&f.app, "GET", "/dnc", None).await;
    assert_eq!(list[0]["number"], "+14155550100");
    let (_, csv) = send(&f.app, "GET", "/dnc?format=csv", None).await;
    assert!(
        csv.as_str()
            .unwrap()
            .starts_with("number,added_at,source\n+14155550100,"),
        "{csv}"
    );
    let (status, _) = send(&f.app, "DELETE", "/dnc/+14155550100", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
}

#[test]
fn loopback_authorities_and_csv_cells() {
    for ok in [
        "localhost",
        "LOCALHOST:8080",
        "127.0.0.1",
        "127.1.2.3:80",
        "[::1]",
        "[::1]:8080",
    ] {
        assert!(is_loopback_authority(ok), "{ok}");
    }
    for bad in [
        "",
        "evil.example",
        "localhost.evil.example",
        "127.0.0.1.evil.example",
        "10.0.0.1",
        "127.0.0.1:",
        "127.0.0.1:99999999",
        "[::2]",
        "[::1]x",
        "localhost:80:80",
    ] {
        assert!(!is_loopback_authority(bad), "{bad}");
    }
    assert_eq!(csv_cell("+14155550100"), "+14155550100");
    assert_eq!(csv_cell("=1+1"), "'=1+1");
    assert_eq!(csv_cell("@x"), "'@x");
    assert_eq!(csv_cell("-x"), "'-x");
    assert_eq!(csv_cell("\tx"), "'\tx");
    assert_eq!(csv_cell("a,b"), "\"a,b\"");
    assert_eq!(csv_cell("=a\"b"), "\"'=a\"\"b\"");
    assert_eq!(csv_cell("line\nbreak"), "\"line\nbreak\"");
}

#[tokio::test]
async fn voices_are_listed_and_rachel_is_the_default_female_voice() {
    let f = fixture();
    let (status, list) = send(&f.app, "GET", "/voices", None).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["default"], "festival:cmu_us_slt_arctic_hts", "{list}");
    assert_eq!(list["female"], "festival:cmu_us_slt_arctic_hts", "{list}");
    assert_eq!(list["male"], "flite:rms", "{list}");
    let voices = list["voices"].as_array().unwrap();
    let slt = voices
        .iter()
        .find(|v| v["id"] == "festival:cmu_us_slt_arctic_hts")
        .unwrap_or_else(|| panic!("{list}"));
    assert_eq!(slt["name"], "cmu_us_slt_arctic_hts");
    assert_eq!(slt["engine"], "festival");
    assert_eq!(slt["gender"], "female");
    assert_eq!(slt["language"], "en-US");
    for engine in ["festival", "flite", "espeak-ng"] {
        assert!(voices.iter().any(|v| v["engine"] == engine), "{engine}");
    }

    // The seed's call: "rachel" renders with the default female voice, as the file shows.
    let (status, created) = send(&f.app, "POST", "/ivr", Some(seed())).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let text = "Thanks for calling. Press 1 if you are a licensed plumber, or press 9 to be removed from our list.";
    let mut files = Vec::new();
    for voice in ["rachel", "festival:cmu_us_slt_arctic_hts", "flite:rms"] {
        let (status, audio) = send(
            &f.app,
            "POST",
            &format!("/ivr/{id}/audio"),
            Some(json!({"node": "welcome", "text": text, "voice": voice})),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{audio}");
        let path = f
            ._dir
            .path()
            .join("ivrs/audio")
            .join(audio["file"].as_str().unwrap());
        let reader = hound::WavReader::open(&path).unwrap();
        assert_eq!(
            (reader.spec().sample_rate, reader.spec().channels),
            (8000, 1)
        );
        files.push(std::fs::read(&path).unwrap());
    }
    assert_eq!(files[0], files[1], "rachel is the festival HTS voice");
    assert_ne!(
        files[0], files[2],
        "an explicit engine:voice selects another voice"
    );
}
