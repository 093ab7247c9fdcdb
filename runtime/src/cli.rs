//! The `wasm-ivr` command line: `check`, `simulate`, `serve`, `schema`.

use crate::engine::folder::{self, Folder};
use crate::engine::registry::{LoadContext, ivr_name, parse_routes};
use crate::engine::{EngineSettings, IvrEngine, Registry};
use crate::simulate::{self, SimulationOptions, TransferBehaviour, TransferFailureKind};
use crate::tree::{self, Severity, ValidateOptions};
use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// A self-hosted IVR runtime: SIP calls driven by WebAssembly components and JSON menu trees.
#[derive(Debug, Parser)]
#[command(name = "wasm-ivr", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Engine limits shared by the commands that run IVRs.
#[derive(Debug, Clone, clap::Args)]
pub struct EngineArgs {
    /// Where compiled components are cached (default: $XDG_CACHE_HOME/wasm-ivr).
    #[arg(long, env = "WASM_IVR_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Guest CPU time allowed per call, in milliseconds (default 2000).
    #[arg(long, env = "WASM_IVR_CPU_BUDGET_MS")]
    pub cpu_budget_ms: Option<u64>,
    /// Linear memory cap per guest instance, in MiB (default 64).
    #[arg(long, env = "WASM_IVR_MEMORY_LIMIT_MIB")]
    pub memory_limit_mib: Option<usize>,
}

impl EngineArgs {
    /// The engine settings these flags describe, over the file's `[engine]` section.
    pub fn settings(
        &self,
        max_instances: u32,
        file: &crate::config::EngineSection,
    ) -> EngineSettings {
        let defaults = EngineSettings::default();
        EngineSettings {
            max_instances,
            memory_limit_bytes: self
                .memory_limit_mib
                .or(file.memory_limit_mib)
                .map_or(defaults.memory_limit_bytes, |mib| mib.max(1) << 20),
            cpu_budget: self
                .cpu_budget_ms
                .or(file.cpu_budget_ms)
                .map_or(defaults.cpu_budget, Duration::from_millis),
            cache_dir: self
                .cache_dir
                .clone()
                .or(file.cache_dir.clone())
                .or(defaults.cache_dir),
            pooling: true,
        }
    }
}

/// `serve`'s settings; each overrides the config file.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// The settings file (see `wasm-ivr.toml` in the README).
    #[arg(long, env = "WASM_IVR_CONFIG")]
    pub config: Option<PathBuf>,
    /// The IVR folder: NAME.json, NAME.wasm (+ NAME.toml), routes.toml (default: ivrs).
    #[arg(long, env = "WASM_IVR_DIR")]
    pub dir: Option<PathBuf>,
    /// The audio folder (default: `audio/` inside the IVR folder).
    #[arg(long, env = "WASM_IVR_AUDIO_DIR")]
    pub audio_dir: Option<PathBuf>,
    /// SIP listeners, `udp:ADDRESS:PORT` or `tcp:ADDRESS:PORT`; repeat the flag or separate
    /// with commas (default: udp:127.0.0.1:5060,tcp:127.0.0.1:5060).
    #[arg(long, env = "WASM_IVR_SIP_LISTEN", value_delimiter = ',')]
    pub sip_listen: Vec<String>,
    /// RTP port range, LOW-HIGH (default: 20000-29999).
    #[arg(long, env = "WASM_IVR_RTP_PORTS")]
    pub rtp_ports: Option<String>,
    /// Calls at once; more get 503 (default: 1000).
    #[arg(long, env = "WASM_IVR_MAX_CALLS")]
    pub max_calls: Option<usize>,
    /// The address RTP binds to and SDP announces (default: the first listener's).
    #[arg(long, env = "WASM_IVR_MEDIA_ADDRESS")]
    pub media_address: Option<std::net::IpAddr>,
    /// Ring (180) this long before answering, in ms (default: 0).
    #[arg(long, env = "WASM_IVR_ANSWER_DELAY_MS")]
    pub answer_delay_ms: Option<u64>,
    /// Write each finished call's trace as JSON into this folder.
    #[arg(long, env = "WASM_IVR_CALL_TRACES")]
    pub call_traces: Option<PathBuf>,
    /// The SQLite database: do-not-call list and call records (default: wasm-ivr.db).
    #[arg(long, env = "WASM_IVR_STORE")]
    pub store: Option<PathBuf>,
    /// The operator HTTP API's address, or `off` (default: 127.0.0.1:8080).
    #[arg(long, env = "WASM_IVR_HTTP_LISTEN")]
    pub http_listen: Option<String>,
    /// SIP requests per second allowed per source address; 0 turns the limit off (default 500).
    #[arg(long, env = "WASM_IVR_RATE_LIMIT")]
    pub rate_limit: Option<u32>,
    /// Prune call records older than this many days; 0 keeps them forever (default 90).
    #[arg(long, env = "WASM_IVR_RECORDS_KEEP_DAYS")]
    pub records_keep_days: Option<u64>,
    /// Keep at most this many call records, newest first; 0: no cap (default 1000000).
    #[arg(long, env = "WASM_IVR_RECORDS_MAX")]
    pub records_max: Option<u64>,
    /// Keep at most this many trace files, newest first; 0: no cap (default 10000).
    #[arg(long, env = "WASM_IVR_TRACES_KEEP")]
    pub traces_keep: Option<u64>,
    /// Whose RTP counts: strict (the SDP c= IP), signalling-ip (c= IP or the SIP source IP),
    /// any (unsafe: every source) (default: signalling-ip).
    #[arg(long, env = "WASM_IVR_MEDIA_LATCH")]
    pub media_latch: Option<crate::config::MediaLatch>,
    /// End a call after this many seconds without the caller's RTP (not on hold); 0 turns it
    /// off (default 60).
    #[arg(long, env = "WASM_IVR_RTP_TIMEOUT_S")]
    pub rtp_timeout_s: Option<u64>,
    /// End a call this many seconds after it was answered; 0 turns it off (default 14400).
    #[arg(long, env = "WASM_IVR_MAX_DURATION_S")]
    pub max_duration_s: Option<u64>,
    /// Engine flags.
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// `wasm-ivr dnc` actions.
#[derive(Debug, Subcommand)]
pub enum DncAction {
    /// Print the list (`--csv` for outbound dialers).
    List {
        /// CSV with a header row.
        #[arg(long)]
        csv: bool,
    },
    /// Add numbers.
    Add {
        /// The numbers.
        #[arg(required = true)]
        numbers: Vec<String>,
    },
    /// Remove numbers.
    Remove {
        /// The numbers.
        #[arg(required = true)]
        numbers: Vec<String>,
    },
}

/// `wasm-ivr graph` output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GraphFormat {
    /// A Mermaid flowchart.
    Mermaid,
    /// A Graphviz digraph.
    Dot,
    /// SVG rendered by Graphviz.
    Svg,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate IVR files (.json trees, .wasm components) or whole IVR folders.
    /// Exits 0 when everything is valid, 1 with every error listed otherwise.
    Check {
        /// Files or folders to check.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// The audio folder prompts must exist in (default: `audio/` beside each file).
        #[arg(long)]
        audio_dir: Option<PathBuf>,
        /// Skip the check that prompt files exist (for drafts).
        #[arg(long)]
        no_audio_check: bool,
        /// Print the findings as JSON.
        #[arg(long)]
        json: bool,
        /// Engine flags (for components).
        #[command(flatten)]
        engine: EngineArgs,
    },
    /// Run an IVR against a scripted caller on a virtual clock, with no network.
    Simulate {
        /// The IVR: a .json tree or a .wasm component. IVRs it enters by name are loaded from
        /// the same folder.
        path: PathBuf,
        /// The caller's script: one token per gather: keys (`1`, `123#`), `timeout`, `hangup`.
        #[arg(long, default_value = "")]
        keys: String,
        /// Print one JSON object (path, events, outcome) instead of a readable trace.
        #[arg(long)]
        json: bool,
        /// The audio folder (default: `audio/` beside the file).
        #[arg(long)]
        audio_dir: Option<PathBuf>,
        /// The caller's number.
        #[arg(long, default_value = "+15550100")]
        caller: String,
        /// The number dialled.
        #[arg(long, default_value = "+15550199")]
        did: String,
        /// Make every transfer fail this way (to exercise failure branches).
        #[arg(long, value_enum)]
        transfer_fails: Option<TransferFailureKind>,
        /// The caller is on the do-not-call list.
        #[arg(long)]
        caller_on_dnc: bool,
        /// Engine flags.
        #[command(flatten)]
        engine: EngineArgs,
    },
    /// Answer SIP calls with the IVRs of a folder, hot-reloading it as files change.
    Serve(Box<ServeArgs>),
    /// Print the JSON Schema of the tree format.
    Schema,
    /// Draw a JSON tree: nodes, keys on edges, timeout and invalid-key edges dashed.
    Graph {
        /// The tree file.
        path: PathBuf,
        /// `mermaid`, `dot`, or `svg` (needs Graphviz's `dot`).
        #[arg(long, value_enum, default_value_t = GraphFormat::Mermaid)]
        format: GraphFormat,
        /// Write here instead of stdout.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// The do-not-call list.
    Dnc {
        /// The SQLite database (default: wasm-ivr.db).
        #[arg(long, global = true, env = "WASM_IVR_STORE", default_value = crate::config::DEFAULT_STORE)]
        store: PathBuf,
        /// What to do.
        #[command(subcommand)]
        action: DncAction,
    },
    /// Recent call records, newest first.
    Calls {
        /// The SQLite database (default: wasm-ivr.db).
        #[arg(long, env = "WASM_IVR_STORE", default_value = crate::config::DEFAULT_STORE)]
        store: PathBuf,
        /// Only calls to this DID.
        #[arg(long)]
        did: Option<String>,
        /// Only calls handled by this IVR.
        #[arg(long)]
        ivr: Option<String>,
        /// Only this outcome (transfer, hangup, suppress, caller-hangup, error, cancelled).
        #[arg(long)]
        outcome: Option<String>,
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Render text to an 8 kHz mono WAV prompt with TTS (Festival, Flite or espeak-ng), levelled
    /// to -20 dBFS and trimmed; or list the voices.
    Tts {
        /// What to say.
        #[arg(long, required_unless_present = "list_voices")]
        text: Option<String>,
        /// The voice: `engine:voice`, an installed voice's name, `default`, or a person's name or
        /// gender (`rachel`, `male`) for the default voice of that gender.
        #[arg(long)]
        voice: Option<String>,
        /// The WAV file to write.
        #[arg(short, long, required_unless_present = "list_voices")]
        output: Option<PathBuf>,
        /// List the installed voices (name, engine, gender, language) and the defaults.
        #[arg(long, conflicts_with_all = ["text", "output"])]
        list_voices: bool,
        /// Print the listing as JSON.
        #[arg(long, requires = "list_voices")]
        json: bool,
    },
    /// Create an IVR project in PARENT/NAME: `./build.sh` builds NAME.wasm, `./test.sh` tests it.
    New {
        /// The IVR's name: the folder, and the NAME.wasm it builds.
        name: String,
        /// The language.
        #[arg(long, value_enum)]
        lang: crate::scaffold::Lang,
        /// The folder to create the project in.
        #[arg(long, value_name = "PARENT", default_value = ".")]
        dir: PathBuf,
    },
}

/// Runs the command line; returns the process exit code.
pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Check {
            paths,
            audio_dir,
            no_audio_check,
            json,
            engine,
        } => check(&paths, audio_dir.as_deref(), no_audio_check, json, &engine),
        Command::Simulate {
            path,
            keys,
            json,
            audio_dir,
            caller,
            did,
            transfer_fails,
            caller_on_dnc,
            engine,
        } => {
            let options = SimulationOptions {
                caller,
                did,
                audio_dir: Some(audio_dir.unwrap_or_else(|| sibling_audio_dir(&path))),
                transfer: transfer_fails
                    .map_or(TransferBehaviour::Succeed, TransferBehaviour::Fail),
                caller_on_dnc_list: caller_on_dnc,
                started_at_ms: crate::time::unix_ms(),
            };
            simulate_cmd(&path, &keys, json, options, &engine)
        }
        Command::Serve(args) => serve(*args),
        Command::Tts {
            text,
            voice,
            output,
            list_voices,
            json,
        } => {
            let speech = speech_engine(None, &crate::config::TtsSection::default())?;
            if list_voices {
                print_voices(&speech.listing(), json)?;
                return Ok(ExitCode::SUCCESS);
            }
            let (Some(text), Some(output)) = (text, output) else {
                bail!("--text and --output are required");
            };
            let length = speech.render_file(&text, voice.as_deref(), &output)?;
            println!("{}: {:.2} s", output.display(), length.as_secs_f64());
            Ok(ExitCode::SUCCESS)
        }
        Command::Dnc { store, action } => dnc(&store, action),
        Command::Calls {
            store,
            did,
            ivr,
            outcome,
            limit,
            json,
        } => {
            use crate::store::{CallFilter, SqliteStore, Store};
            let store = SqliteStore::open(&store)?;
            let records = store.calls(&CallFilter {
                did,
                ivr,
                outcome,
                limit: Some(limit),
                ..CallFilter::default()
            })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&records)?);
            } else {
                for r in &records {
                    let seconds = (r.ended_at_ms - r.started_at_ms) as f64 / 1000.0;
                    println!(
                        "{}  {} -> {} ({} {})  {:>6.1}s  {:<13} {}  {}",
                        r.started_at_ms,
                        r.caller,
                        r.did,
                        r.ivr,
                        r.version,
                        seconds,
                        r.outcome,
                        r.path.join(">"),
                        r.call_id
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Graph {
            path,
            format,
            output,
        } => graph(&path, format, output.as_deref()),
        Command::Schema => {
            println!("{}", serde_json::to_string_pretty(&tree::json_schema())?);
            Ok(ExitCode::SUCCESS)
        }
        Command::New { name, lang, dir } => crate::scaffold::run(&name, lang, &dir),
    }
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

fn sibling_audio_dir(path: &Path) -> PathBuf {
    parent_dir(path).join("audio")
}

/// The IVR names in a folder (for checking sub-menu references).
fn names_in(dir: &Path) -> HashSet<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter_map(|e| ivr_name(&e.path()))
                .collect()
        })
        .unwrap_or_default()
}

#[derive(serde::Serialize)]
struct Finding {
    severity: Severity,
    file: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    position: Option<(usize, usize)>,
    message: String,
}

fn check(
    paths: &[PathBuf],
    audio_dir: Option<&Path>,
    no_audio_check: bool,
    json: bool,
    engine_args: &EngineArgs,
) -> Result<ExitCode> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
                .with_context(|| format!("cannot read {}", path.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    ivr_name(p).is_some() || p.file_name().is_some_and(|n| n == folder::ROUTES_FILE)
                })
                .collect();
            entries.sort();
            files.extend(entries);
        } else {
            files.push(path.clone());
        }
    }
    let mut findings: Vec<Finding> = Vec::new();
    let mut engine: Option<Arc<IvrEngine>> = None;
    for file in &files {
        let label = file.display().to_string();
        let error = |message: String| Finding {
            severity: Severity::Error,
            file: label.clone(),
            node: None,
            position: None,
            message,
        };
        if file.file_name().is_some_and(|n| n == folder::ROUTES_FILE) {
            match std::fs::read_to_string(file)
                .map_err(|e| e.to_string())
                .and_then(|t| parse_routes(&t))
            {
                Ok(routes) => {
                    let known = names_in(&parent_dir(file));
                    for (did, name) in routes {
                        if !known.contains(&name) {
                            findings
                                .push(error(format!("route \"{did}\" names unknown IVR '{name}'")));
                        }
                    }
                }
                Err(e) => findings.push(error(e)),
            }
            continue;
        }
        match file.extension().and_then(|e| e.to_str()) {
            Some("json") => {
                let text = match std::fs::read_to_string(file) {
                    Ok(t) => t,
                    Err(e) => {
                        findings.push(error(e.to_string()));
                        continue;
                    }
                };
                let audio = audio_dir
                    .map(Path::to_owned)
                    .unwrap_or_else(|| sibling_audio_dir(file));
                let known = names_in(&parent_dir(file));
                let options = ValidateOptions {
                    audio_dir: (!no_audio_check).then_some(audio.as_path()),
                    known_ivrs: Some(&known),
                };
                let checked = tree::check_text(&label, &text, &options);
                findings.extend(checked.diagnostics.into_iter().map(|d| Finding {
                    severity: d.severity,
                    file: d.file,
                    node: d.node,
                    position: d.position,
                    message: d.message,
                }));
            }
            Some("wasm") => {
                let engine = match &engine {
                    Some(e) => e.clone(),
                    None => {
                        let e = IvrEngine::new(engine_args.settings(4, &Default::default()))?;
                        engine = Some(e.clone());
                        e
                    }
                };
                if let Err(e) = engine.load_path(file, &LoadContext::default()) {
                    findings.push(error(e.to_string()));
                }
            }
            _ => findings.push(error(
                "not a .json tree, .wasm component or routes.toml".into(),
            )),
        }
    }
    let errors = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count();
    let warnings = findings.len() - errors;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "files": files.len(), "errors": errors, "warnings": warnings, "findings": findings,
            }))?
        );
    } else {
        for f in &findings {
            let d = tree::Diagnostic {
                severity: f.severity,
                file: f.file.clone(),
                node: f.node.clone(),
                position: f.position,
                message: f.message.clone(),
            };
            println!("{d}");
        }
        println!(
            "{} file(s) checked: {errors} error(s), {warnings} warning(s)",
            files.len()
        );
    }
    Ok(if errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn simulate_cmd(
    path: &Path,
    keys: &str,
    json: bool,
    options: SimulationOptions,
    engine_args: &EngineArgs,
) -> Result<ExitCode> {
    let script = simulate::parse_script(keys)?;
    let engine = IvrEngine::new(engine_args.settings(16, &Default::default()))?;
    let dir = parent_dir(path);
    let context = LoadContext {
        audio_dir: options.audio_dir.clone(),
        known_ivrs: Some(names_in(&dir)),
    };
    let ivr = match engine.load_path(path, &context) {
        Ok(ivr) => ivr,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(2));
        }
    };
    let registry = Arc::new(Registry::lazy(dir, context, engine.clone()));
    let ivr = registry.insert(ivr);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(simulate::simulate(&engine, registry, ivr, script, &options));
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.to_text());
    }
    Ok(ExitCode::SUCCESS)
}

fn dnc(path: &Path, action: DncAction) -> Result<ExitCode> {
    use crate::store::{SqliteStore, Store};
    let store = SqliteStore::open(path)?;
    match action {
        DncAction::List { csv } => {
            let list = store.dnc_list()?;
            if csv {
                println!("number,added_at_ms,source");
            }
            for entry in list {
                if csv {
                    println!(
                        "{},{},{}",
                        crate::api::csv_cell(&entry.number),
                        entry.added_at_ms,
                        crate::api::csv_cell(&entry.source)
                    );
                } else {
                    println!("{}  {}  {}", entry.number, entry.added_at_ms, entry.source);
                }
            }
        }
        DncAction::Add { numbers } => {
            for number in numbers {
                let added = store.dnc_add(&number, "cli")?;
                println!(
                    "{} {}",
                    crate::store::normalize_number(&number),
                    if added { "added" } else { "already listed" }
                );
            }
        }
        DncAction::Remove { numbers } => {
            for number in numbers {
                let removed = store.dnc_remove(&number)?;
                println!(
                    "{} {}",
                    crate::store::normalize_number(&number),
                    if removed { "removed" } else { "not listed" }
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Binds and starts the operator API. Without API keys it only ever binds loopback. A default
/// address that is taken is a warning (the SIP side still serves); a configured one is an error.
async fn start_api(
    listen: Option<&str>,
    explicit: bool,
    state: Arc<crate::api::ApiState>,
    limits: crate::api::HttpLimits,
) -> Result<Option<std::net::SocketAddr>> {
    let Some(listen) = listen else {
        tracing::info!("HTTP API off");
        return Ok(None);
    };
    let mut addr: std::net::SocketAddr = listen
        .parse()
        .with_context(|| format!("[http] listen '{listen}' is not ADDRESS:PORT"))?;
    if !state.requires_key() && !addr.ip().is_loopback() {
        tracing::warn!(%addr, "no API key configured: the HTTP API binds loopback only (set [http] api_keys or WASM_IVR_API_KEYS)");
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(e) if !explicit => {
            tracing::warn!(%addr, "HTTP API not started: {e}; set [http] listen or --http-listen");
            return Ok(None);
        }
        Err(e) => return Err(anyhow::Error::new(e).context(format!("cannot listen on {addr}"))),
    };
    let local = listener.local_addr()?;
    if !state.requires_key() {
        tracing::warn!(%local, "HTTP API without API keys, on loopback only");
    }
    tracing::info!(%local, "HTTP API listening");
    tokio::spawn(crate::api::serve(listener, state, limits));
    Ok(Some(local))
}

fn graph(path: &Path, format: GraphFormat, output: Option<&Path>) -> Result<ExitCode> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let checked = tree::check_text(
        &path.display().to_string(),
        &text,
        &ValidateOptions::default(),
    );
    let Some(lowered) = checked.lowered else {
        for d in checked.errors() {
            eprintln!("{d}");
        }
        return Ok(ExitCode::from(1));
    };
    let drawing = match format {
        GraphFormat::Mermaid => tree::graph::mermaid(&lowered).into_bytes(),
        GraphFormat::Dot => tree::graph::dot(&lowered).into_bytes(),
        GraphFormat::Svg => {
            use std::io::Write as _;
            let mut child = std::process::Command::new("dot")
                .arg("-Tsvg")
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .context("SVG needs Graphviz's `dot` (apt-get install graphviz)")?;
            child
                .stdin
                .take()
                .context("dot's stdin")?
                .write_all(tree::graph::dot(&lowered).as_bytes())?;
            let rendered = child.wait_with_output()?;
            if !rendered.status.success() {
                bail!("dot failed: {}", String::from_utf8_lossy(&rendered.stderr));
            }
            rendered.stdout
        }
    };
    match output {
        Some(out) => std::fs::write(out, drawing)
            .with_context(|| format!("cannot write {}", out.display()))?,
        None => {
            use std::io::Write as _;
            std::io::stdout().write_all(&drawing)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The TTS engines with their cache under the compile cache (or a temporary folder).
fn speech_engine(
    cache_dir: Option<&Path>,
    settings: &crate::config::TtsSection,
) -> Result<Arc<crate::tts::Speech>> {
    let dir = cache_dir
        .map(Path::to_owned)
        .or_else(crate::engine::default_cache_dir)
        .unwrap_or_else(std::env::temp_dir)
        .join("tts");
    let speech = crate::tts::Speech::detect(
        settings.engine.unwrap_or_default(),
        dir,
        settings.cache_limits(),
    )?;
    Ok(Arc::new(speech))
}

fn print_voices(list: &crate::tts::VoiceList, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(list)?);
        return Ok(());
    }
    println!("default: {}", list.default);
    println!(
        "female names (rachel, ...): {}",
        list.female.as_deref().unwrap_or("none installed")
    );
    println!(
        "male names (adam, ...): {}",
        list.male.as_deref().unwrap_or("none installed")
    );
    println!(
        "{:<40} {:<10} {:<7} {:<12} SYNTHESIS",
        "VOICE", "ENGINE", "GENDER", "LANGUAGE"
    );
    for v in &list.voices {
        let gender = v.gender.map_or_else(|| "-".to_owned(), |g| g.to_string());
        let synthesis = serde_json::to_value(v.synthesis)?;
        println!(
            "{:<40} {:<10} {:<7} {:<12} {}",
            v.id,
            v.engine,
            gender,
            v.language,
            synthesis.as_str().unwrap_or_default()
        );
    }
    Ok(())
}

fn serve(args: ServeArgs) -> Result<ExitCode> {
    use crate::config::{self, FileConfig};
    use crate::media::library::PromptLibrary;
    use crate::server::{Listen, Server, ServerConfig};

    let file = match &args.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    let dir = args
        .dir
        .clone()
        .or(file.ivrs.dir.clone())
        .unwrap_or_else(|| PathBuf::from("ivrs"));
    if !dir.is_dir() {
        bail!("the IVR folder {} does not exist", dir.display());
    }
    let audio_dir = args
        .audio_dir
        .clone()
        .or(file.ivrs.audio_dir.clone())
        .unwrap_or_else(|| dir.join("audio"));
    let listen_text: Vec<String> = if !args.sip_listen.is_empty() {
        args.sip_listen.clone()
    } else {
        file.sip
            .listen
            .clone()
            .unwrap_or_else(|| config::DEFAULT_LISTEN.map(str::to_owned).to_vec())
    };
    let listen = listen_text
        .iter()
        .map(|l| l.parse::<Listen>().map_err(anyhow::Error::msg))
        .collect::<Result<Vec<_>>>()?;
    let rtp_ports = match args.rtp_ports.as_ref().or(file.sip.rtp_ports.as_ref()) {
        Some(text) => config::parse_port_range(text).map_err(anyhow::Error::msg)?,
        None => config::DEFAULT_RTP_PORTS,
    };
    let max_calls = args
        .max_calls
        .or(file.sip.max_calls)
        .unwrap_or(config::DEFAULT_MAX_CALLS);
    let call_traces = args.call_traces.clone().or(file.calls.traces_dir.clone());
    if let Some(traces) = &call_traces {
        std::fs::create_dir_all(traces)
            .with_context(|| format!("cannot create {}", traces.display()))?;
    }
    let retention = crate::store::retention::Retention::from_settings(
        args.records_keep_days.or(file.calls.records_keep_days),
        args.records_max.or(file.calls.records_max),
        args.traces_keep.or(file.calls.traces_keep),
        call_traces.clone(),
    );
    let server_config = ServerConfig {
        listen,
        rtp_ports,
        media_ip: args.media_address.or(file.sip.media_address),
        max_calls,
        answer_delay: Duration::from_millis(
            args.answer_delay_ms
                .or(file.sip.answer_delay_ms)
                .unwrap_or(0),
        ),
        call_traces,
        transfer: file.transfer.clone(),
        guard: {
            let mut guard = file.sip.guard().map_err(anyhow::Error::msg)?;
            if let Some(rate) = args.rate_limit {
                guard.rate_limit = rate;
            }
            guard
        },
        media: crate::server::media::MediaRules {
            latch: args
                .media_latch
                .or(file.sip.media_latch)
                .unwrap_or_default(),
            confirm: file.sip.media_confirm.unwrap_or(true),
        },
        rtp_timeout: config::limit_from_secs(
            args.rtp_timeout_s
                .or(file.calls.rtp_timeout_s)
                .unwrap_or(config::DEFAULT_RTP_TIMEOUT_S),
        ),
        max_duration: config::limit_from_secs(
            args.max_duration_s
                .or(file.calls.max_duration_s)
                .unwrap_or(config::DEFAULT_MAX_DURATION_S),
        ),
    };
    let store_path = args
        .store
        .clone()
        .or(file.store.path.clone())
        .unwrap_or_else(|| PathBuf::from(config::DEFAULT_STORE));
    let store: Arc<dyn crate::store::Store> =
        Arc::new(crate::store::SqliteStore::open(&store_path)?);
    let max_instances = u32::try_from(max_calls.max(1)).unwrap_or(u32::MAX);
    let http_explicit = args.http_listen.is_some() || file.http.listen.is_some();
    let http_listen = args
        .http_listen
        .clone()
        .or(file.http.listen.clone())
        .unwrap_or_else(|| config::DEFAULT_HTTP_LISTEN.to_owned());
    let http_listen = (!http_listen.eq_ignore_ascii_case("off")).then_some(http_listen);
    let http_limits = file.http.limits();
    let mut api_keys = file.http.api_keys.clone();
    if let Ok(keys) = std::env::var("WASM_IVR_API_KEYS") {
        api_keys.extend(
            keys.split(',')
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(str::to_owned),
        );
    }
    let engine = IvrEngine::new(args.engine.settings(max_instances, &file.engine))?;
    let registry = Arc::new(Registry::new());
    let prompts = Arc::new(PromptLibrary::new(audio_dir.clone()));
    prompts.sync().log();
    let mut folder = Folder::new(dir.clone(), audio_dir.clone());
    folder.sync(&engine, &registry).log();
    let speech = match speech_engine(engine.settings().cache_dir.as_deref(), &file.tts) {
        Ok(speech) => {
            let rendered = speech.prerender(&registry);
            tracing::info!(rendered, "TTS ready");
            Some(speech)
        }
        Err(e) => {
            tracing::warn!("no TTS: `say` prompts will be refused: {e:#}");
            None
        }
    };
    tracing::info!(dir = %dir.display(), ivrs = ?registry.names(), prompts = prompts.len(), pooling = engine.is_pooling(), "IVR folder loaded; watching for changes");
    let watched_prompts = prompts.clone();
    let watched_speech = speech.clone();
    let _watcher = folder::watch(
        folder,
        engine.clone(),
        registry.clone(),
        move || watched_prompts.sync().log(),
        move |registry| {
            if let Some(speech) = &watched_speech {
                speech.prerender(registry);
            }
        },
    )
    .context("cannot watch the IVR folder")?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let api_state = Arc::new(crate::api::ApiState::new(
            dir.clone(),
            audio_dir.clone(),
            registry.clone(),
            engine.clone(),
            store.clone(),
            speech.clone(),
            &api_keys,
        ));
        let http = start_api(
            http_listen.as_deref(),
            http_explicit,
            api_state,
            http_limits,
        )
        .await?;
        // Pruned at start and then periodically; the task ends with the runtime.
        tokio::spawn(crate::store::retention::run(
            store.clone(),
            retention,
            crate::store::retention::PRUNE_INTERVAL,
        ));
        let server = Server::bind(server_config, engine, registry, prompts, speech, store).await?;
        let addrs: Vec<String> = server
            .local_addrs()
            .iter()
            .map(ToString::to_string)
            .collect();
        // One line on stdout for scripts and tests: what is listening, ports resolved.
        let http_note = http.map(|a| format!(" http={a}")).unwrap_or_default();
        println!(
            "ready sip={} rtp={}-{}{http_note}",
            addrs.join(","),
            rtp_ports.0,
            rtp_ports.1
        );
        tracing::info!(sip = %addrs.join(","), "serving calls");
        server
            .run(async {
                let _ = tokio::signal::ctrl_c().await;
                tracing::info!("shutting down");
            })
            .await;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
