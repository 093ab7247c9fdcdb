//! The JSON tree format as operators write it, and its validation.
//!
//! The format is the hosted IVR API's (`name`, `nodes`; gather nodes with `audio`, `gather`,
//! `timeout_node`; action nodes `transfer`, `hangup` with optional `audio`, `suppress`), accepted
//! verbatim, plus optional extensions documented on each field. Every field is checked: an
//! unknown field is an error (a typo such as `timout_node` must not be silently ignored).

use super::lowered::{LoweredDestination, LoweredNode, LoweredPrompt, LoweredTree};
use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fmt;
use std::path::Path;

/// Wait for the first key when a node does not say, in milliseconds.
pub const DEFAULT_TIMEOUT_MS: u32 = 5000;
/// Wait between keys of a multi-digit entry when a node does not say, in milliseconds.
pub const DEFAULT_INTER_DIGIT_TIMEOUT_MS: u32 = 3000;
/// Timeouts or invalid entries in a row before the call is ended, when the tree does not say.
pub const DEFAULT_MAX_RETRIES: u32 = 3;
/// The longest entry a gather may ask for.
pub const MAX_DIGITS_LIMIT: u8 = 32;
/// Bounds on any timeout, in milliseconds.
pub const TIMEOUT_RANGE_MS: std::ops::RangeInclusive<u32> = 100..=600_000;

/// A tree file: a named set of nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "wasm-ivr JSON tree")]
pub struct TreeFile {
    /// The tree's display name.
    pub name: String,
    /// Extension: the node the call starts in. Default: the first node in the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    /// Extension: the TTS voice for `say` text in this tree, unless a node names its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voice: Option<String>,
    /// Extension: the first-key timeout for every gather node that does not set one (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u32>,
    /// Extension: timeouts or invalid entries in a row before the call is ended. Default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    /// The nodes, by name. The first is the start node unless `start` says otherwise.
    pub nodes: IndexMap<String, NodeSpec>,
}

/// One or several audio file names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum AudioSpec {
    /// One file in the audio folder (`welcome.wav`).
    One(String),
    /// Several files, played in order.
    Many(Vec<String>),
}

impl AudioSpec {
    fn names(&self) -> Vec<&str> {
        match self {
            AudioSpec::One(name) => vec![name.as_str()],
            AudioSpec::Many(names) => names.iter().map(String::as_str).collect(),
        }
    }
}

/// What an action node does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Transfer the caller (by default to the runtime's default target, the seed's AI agent).
    Transfer,
    /// Play the optional audio and hang up.
    Hangup,
    /// Put the caller on the do-not-call list, play the optional audio and hang up.
    Suppress,
    /// Extension: play the optional audio and return the caller to the IVR that entered this
    /// tree as a sub-menu (`to.ivr`); in a tree that answered the call itself, hang up.
    Return,
}

/// Where a transfer goes: exactly one of the fields.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DestinationSpec {
    /// A SIP URI, with or without `sip:`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// An external number; the runtime adds its dial prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<String>,
    /// An internal extension, mapped by the runtime's configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internal: Option<String>,
    /// Another IVR by name, entered as a sub-menu.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ivr: Option<String>,
}

/// A node. Which kind it is follows from its fields: `action` makes an action node, `gather` a
/// gather node, `next` a play node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    /// Audio file(s) from the audio folder, played first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio: Option<AudioSpec>,
    /// Extension: text spoken by TTS, played after `audio`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub say: Option<String>,
    /// Extension: the TTS voice for `say`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voice: Option<String>,
    /// Gather node: key(s) pressed → next node. Keys are made of `0-9`, `*` and `#`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gather: Option<IndexMap<String, String>>,
    /// Gather node: where to go when no key is pressed. Default: this node again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_node: Option<String>,
    /// Extension, gather node: the first-key timeout in ms. Default 5000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u32>,
    /// Extension, gather node: keys per entry. Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_digits: Option<u8>,
    /// Extension, gather node: key(s) that end an entry early. Default `#` when
    /// `max_digits` > 1, none otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminator: Option<String>,
    /// Extension, gather node: the wait between keys in ms. Default 3000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inter_digit_timeout_ms: Option<u32>,
    /// Extension, gather node: whether a key stops the prompt. Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub barge_in: Option<bool>,
    /// Extension, gather node: timeouts or invalid entries in a row before the call is ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    /// Extension, gather node: where to go when the keys match no branch. Default: this node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid_node: Option<String>,
    /// Extension, gather node: audio played when the keys match no branch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid_audio: Option<AudioSpec>,
    /// Extension, gather node: TTS text played when the keys match no branch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid_say: Option<String>,
    /// Extension, play node: the node after the prompts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// Action node: `transfer`, `hangup`, `suppress` or (extension) `return`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
    /// Extension, transfer node: the destination. Default: the runtime's default target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<DestinationSpec>,
    /// Extension, transfer node: where to go when the transfer fails. Default: hang up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_node: Option<String>,
    /// Extension, transfer node: key/values sent with the transfer (as SIP headers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<BTreeMap<String, String>>,
}

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// The tree cannot run.
    Error,
    /// The tree runs, but something is probably not what the author meant.
    Warning,
}

/// One validation finding, naming the file, the node and the problem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// The file (or source label) the tree came from.
    pub file: String,
    /// The node concerned, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Line and column in the file, where known (JSON syntax errors).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<(usize, usize)>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{level}: {}", self.file)?;
        if let Some((line, column)) = self.position {
            write!(f, ":{line}:{column}")?;
        }
        if let Some(node) = &self.node {
            write!(f, ": node '{node}'")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// What validation may check beyond the file itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct ValidateOptions<'a> {
    /// The audio folder: every `audio` file must exist there. None skips the check (a draft
    /// whose prompts are not generated yet).
    pub audio_dir: Option<&'a Path>,
    /// The IVRs a transfer `to.ivr` may name. None skips the check.
    pub known_ivrs: Option<&'a HashSet<String>>,
}

/// The outcome of validating a tree: the lowered tree when it has no errors, and every finding.
#[derive(Debug, Clone)]
pub struct Checked {
    /// The tree ready for the tree guest; None when there were errors.
    pub lowered: Option<LoweredTree>,
    /// Errors and warnings, in file order.
    pub diagnostics: Vec<Diagnostic>,
}

impl Checked {
    /// The errors only.
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
    }
}

/// Parses tree JSON text. `file` labels diagnostics. A syntax or shape error comes back as one
/// diagnostic with its line and column.
pub fn parse(file: &str, text: &str) -> Result<TreeFile, Box<Diagnostic>> {
    serde_json::from_str(text).map_err(|e| {
        Box::new(Diagnostic {
            severity: Severity::Error,
            file: file.to_owned(),
            node: None,
            position: Some((e.line(), e.column())),
            message: e.to_string(),
        })
    })
}

/// Parses and validates tree JSON text in one step.
pub fn check_text(file: &str, text: &str, options: &ValidateOptions<'_>) -> Checked {
    match parse(file, text) {
        Ok(tree) => validate(file, &tree, options),
        Err(diagnostic) => Checked {
            lowered: None,
            diagnostics: vec![*diagnostic],
        },
    }
}

/// Checks a parsed tree and lowers it when it has no errors.
pub fn validate(file: &str, tree: &TreeFile, options: &ValidateOptions<'_>) -> Checked {
    let mut v = Validator {
        file,
        tree,
        options,
        diagnostics: Vec::new(),
    };
    let lowered = v.run();
    let has_errors = v.diagnostics.iter().any(|d| d.severity == Severity::Error);
    Checked {
        lowered: if has_errors { None } else { lowered },
        diagnostics: v.diagnostics,
    }
}

struct Validator<'a> {
    file: &'a str,
    tree: &'a TreeFile,
    options: &'a ValidateOptions<'a>,
    diagnostics: Vec<Diagnostic>,
}

/// The kind a node turned out to be, from its fields.
enum Kind {
    Gather,
    Play,
    Action(Action),
}

impl Validator<'_> {
    fn error(&mut self, node: Option<&str>, message: impl Into<String>) {
        self.push(Severity::Error, node, message.into());
    }

    fn warning(&mut self, node: Option<&str>, message: impl Into<String>) {
        self.push(Severity::Warning, node, message.into());
    }

    fn push(&mut self, severity: Severity, node: Option<&str>, message: String) {
        self.diagnostics.push(Diagnostic {
            severity,
            file: self.file.to_owned(),
            node: node.map(str::to_owned),
            position: None,
            message,
        });
    }

    fn run(&mut self) -> Option<LoweredTree> {
        let tree = self.tree;
        if tree.name.trim().is_empty() {
            self.error(None, "the tree has an empty \"name\"");
        }
        if tree.nodes.is_empty() {
            self.error(None, "no start node: \"nodes\" is empty");
            return None;
        }
        let start = match &tree.start {
            Some(start) if !tree.nodes.contains_key(start) => {
                self.error(
                    None,
                    format!("no start node: \"start\" names unknown node '{start}'"),
                );
                return None;
            }
            Some(start) => start.clone(),
            None => tree.nodes.keys().next().cloned().unwrap_or_default(),
        };
        if let Some(ms) = tree.timeout_ms {
            self.check_timeout(None, "timeout_ms", ms);
        }

        let mut nodes = BTreeMap::new();
        for (name, spec) in &tree.nodes {
            if let Some(node) = self.lower_node(name, spec) {
                nodes.insert(name.clone(), node);
            }
        }
        self.warn_unreachable(&start);
        Some(LoweredTree {
            name: tree.name.clone(),
            start,
            nodes,
        })
    }

    fn kind_of(&mut self, name: &str, spec: &NodeSpec) -> Option<Kind> {
        match (spec.action, &spec.gather, &spec.next) {
            (Some(action), None, None) => Some(Kind::Action(action)),
            (None, Some(_), None) => Some(Kind::Gather),
            (None, None, Some(_)) => Some(Kind::Play),
            (None, None, None) => {
                self.error(
                    Some(name),
                    "the node does nothing: give it \"gather\" (a menu), \"action\" \
                     (transfer, hangup, suppress) or \"next\" (play and go on)",
                );
                None
            }
            _ => {
                self.error(
                    Some(name),
                    "a node has only one of \"gather\", \"action\" and \"next\"",
                );
                None
            }
        }
    }

    fn lower_node(&mut self, name: &str, spec: &NodeSpec) -> Option<LoweredNode> {
        let kind = self.kind_of(name, spec)?;
        self.reject_fields_not_for(name, spec, &kind);
        let prompts = self.prompts(name, spec.audio.as_ref(), spec.say.as_ref(), spec);
        match kind {
            Kind::Gather => self.lower_gather(name, spec, prompts),
            Kind::Play => {
                let next = spec.next.clone().unwrap_or_default();
                self.check_target(name, "next", &next);
                Some(LoweredNode::Play { prompts, next })
            }
            Kind::Action(Action::Hangup) => Some(LoweredNode::Hangup { prompts }),
            Kind::Action(Action::Suppress) => Some(LoweredNode::Suppress { prompts }),
            Kind::Action(Action::Return) => Some(LoweredNode::Return { prompts }),
            Kind::Action(Action::Transfer) => {
                let to = self.destination(name, spec.to.as_ref())?;
                if let Some(failed) = &spec.failed_node {
                    self.check_target(name, "failed_node", failed);
                }
                Some(LoweredNode::Transfer {
                    prompts,
                    to,
                    context: spec.context.clone().unwrap_or_default(),
                    failed_node: spec.failed_node.clone(),
                })
            }
        }
    }

    /// Fields that only make sense on another kind of node are errors, not silently ignored.
    fn reject_fields_not_for(&mut self, name: &str, spec: &NodeSpec, kind: &Kind) {
        let gather_only = [
            ("timeout_node", spec.timeout_node.is_some()),
            ("timeout_ms", spec.timeout_ms.is_some()),
            ("max_digits", spec.max_digits.is_some()),
            ("terminator", spec.terminator.is_some()),
            (
                "inter_digit_timeout_ms",
                spec.inter_digit_timeout_ms.is_some(),
            ),
            ("barge_in", spec.barge_in.is_some()),
            ("max_retries", spec.max_retries.is_some()),
            ("invalid_node", spec.invalid_node.is_some()),
            ("invalid_audio", spec.invalid_audio.is_some()),
            ("invalid_say", spec.invalid_say.is_some()),
        ];
        let transfer_only = [
            ("to", spec.to.is_some()),
            ("failed_node", spec.failed_node.is_some()),
            ("context", spec.context.is_some()),
        ];
        let is_gather = matches!(kind, Kind::Gather);
        let is_transfer = matches!(kind, Kind::Action(Action::Transfer));
        for (field, present) in gather_only {
            if present && !is_gather {
                self.error(
                    Some(name),
                    format!("\"{field}\" applies to gather nodes only"),
                );
            }
        }
        for (field, present) in transfer_only {
            if present && !is_transfer {
                self.error(
                    Some(name),
                    format!("\"{field}\" applies to transfer nodes only"),
                );
            }
        }
    }

    fn lower_gather(
        &mut self,
        name: &str,
        spec: &NodeSpec,
        prompts: Vec<LoweredPrompt>,
    ) -> Option<LoweredNode> {
        let max_digits = spec.max_digits.unwrap_or(1);
        if max_digits == 0 || max_digits > MAX_DIGITS_LIMIT {
            self.error(
                Some(name),
                format!("\"max_digits\" must be 1 to {MAX_DIGITS_LIMIT}, not {max_digits}"),
            );
        }
        let terminators = match &spec.terminator {
            Some(t) => t.clone(),
            None if max_digits > 1 => "#".to_owned(),
            None => String::new(),
        };
        if let Some(bad) = terminators.chars().find(|c| !is_key(*c)) {
            self.error(
                Some(name),
                format!("terminator '{bad}' is not a key (keys are 0-9, * and #)"),
            );
        }
        let timeout_ms = spec
            .timeout_ms
            .or(self.tree.timeout_ms)
            .unwrap_or(DEFAULT_TIMEOUT_MS);
        self.check_timeout(Some(name), "timeout_ms", timeout_ms);
        let inter_digit_timeout_ms = spec
            .inter_digit_timeout_ms
            .unwrap_or(DEFAULT_INTER_DIGIT_TIMEOUT_MS);
        self.check_timeout(Some(name), "inter_digit_timeout_ms", inter_digit_timeout_ms);

        let mut keys = BTreeMap::new();
        for (key, target) in spec.gather.iter().flatten() {
            if key.is_empty() {
                self.error(Some(name), "an empty key in \"gather\"");
            } else if let Some(bad) = key.chars().find(|c| !is_key(*c)) {
                self.error(
                    Some(name),
                    format!("bad key '{key}': '{bad}' is not a key (keys are 0-9, * and #)"),
                );
            } else if key.chars().count() > usize::from(max_digits) {
                self.error(
                    Some(name),
                    format!(
                        "key '{key}' is {} keys long but \"max_digits\" is {max_digits}",
                        key.chars().count()
                    ),
                );
            } else if let Some(t) = key.chars().find(|c| terminators.contains(*c)) {
                self.error(
                    Some(name),
                    format!("key '{key}' contains the terminator '{t}', so it can never match"),
                );
            }
            self.check_target(name, &format!("gather key '{key}'"), target);
            keys.insert(key.clone(), target.clone());
        }
        if keys.is_empty() {
            self.error(Some(name), "\"gather\" maps no keys");
        }
        if prompts.is_empty() {
            self.warning(
                Some(name),
                "a gather with no \"audio\" or \"say\": the caller hears nothing",
            );
        }
        let timeout_node = spec.timeout_node.clone().unwrap_or_else(|| name.to_owned());
        self.check_target(name, "timeout_node", &timeout_node);
        let invalid_node = spec.invalid_node.clone().unwrap_or_else(|| name.to_owned());
        self.check_target(name, "invalid_node", &invalid_node);
        let invalid_prompts = self.prompts(
            name,
            spec.invalid_audio.as_ref(),
            spec.invalid_say.as_ref(),
            spec,
        );
        Some(LoweredNode::Gather {
            prompts,
            keys,
            max_digits,
            terminators,
            timeout_ms,
            inter_digit_timeout_ms,
            barge_in: spec.barge_in.unwrap_or(true),
            timeout_node,
            invalid_node,
            invalid_prompts,
            max_retries: spec
                .max_retries
                .or(self.tree.max_retries)
                .unwrap_or(DEFAULT_MAX_RETRIES),
        })
    }

    fn prompts(
        &mut self,
        name: &str,
        audio: Option<&AudioSpec>,
        say: Option<&String>,
        spec: &NodeSpec,
    ) -> Vec<LoweredPrompt> {
        let mut prompts = Vec::new();
        for file in audio.map(AudioSpec::names).unwrap_or_default() {
            self.check_audio(name, file);
            prompts.push(LoweredPrompt::File(file.to_owned()));
        }
        if let Some(text) = say {
            if text.trim().is_empty() {
                self.error(Some(name), "\"say\" text is empty");
            }
            prompts.push(LoweredPrompt::Say {
                text: text.clone(),
                voice: spec.voice.clone().or_else(|| self.tree.voice.clone()),
            });
        } else if spec.voice.is_some() {
            self.warning(Some(name), "\"voice\" without \"say\" has no effect");
        }
        prompts
    }

    fn check_audio(&mut self, name: &str, file: &str) {
        if file.is_empty() || file.contains(['/', '\\']) || file.starts_with('.') {
            self.error(
                Some(name),
                format!("audio '{file}' must be a plain file name in the audio folder"),
            );
            return;
        }
        let lower = file.to_ascii_lowercase();
        if !(lower.ends_with(".wav") || lower.ends_with(".pcm")) {
            self.error(
                Some(name),
                format!("audio '{file}' is not a .wav or .pcm file"),
            );
            return;
        }
        if let Some(dir) = self.options.audio_dir
            && !dir.join(file).is_file()
        {
            self.error(
                Some(name),
                format!("missing audio file '{file}' (looked in {})", dir.display()),
            );
        }
    }

    fn check_target(&mut self, name: &str, what: &str, target: &str) {
        if !self.tree.nodes.contains_key(target) {
            self.error(
                Some(name),
                format!("{what} leads to unknown node '{target}'"),
            );
        }
    }

    fn check_timeout(&mut self, node: Option<&str>, field: &str, ms: u32) {
        if !TIMEOUT_RANGE_MS.contains(&ms) {
            self.error(
                node,
                format!(
                    "\"{field}\" must be {} to {} ms, not {ms}",
                    TIMEOUT_RANGE_MS.start(),
                    TIMEOUT_RANGE_MS.end()
                ),
            );
        }
    }

    fn destination(
        &mut self,
        name: &str,
        to: Option<&DestinationSpec>,
    ) -> Option<LoweredDestination> {
        let Some(to) = to else {
            return Some(LoweredDestination::Default);
        };
        let given: Vec<LoweredDestination> = [
            to.uri.clone().map(LoweredDestination::Uri),
            to.external.clone().map(LoweredDestination::External),
            to.internal.clone().map(LoweredDestination::Internal),
            to.ivr.clone().map(LoweredDestination::Ivr),
        ]
        .into_iter()
        .flatten()
        .collect();
        let [destination] = given.as_slice() else {
            self.error(
                Some(name),
                "\"to\" takes exactly one of \"uri\", \"external\", \"internal\", \"ivr\"",
            );
            return None;
        };
        match destination {
            LoweredDestination::Uri(uri)
                if uri.trim().is_empty() || uri.contains(char::is_whitespace) =>
            {
                self.error(Some(name), format!("\"to.uri\" '{uri}' is not a SIP URI"));
            }
            LoweredDestination::External(number)
                if number.is_empty()
                    || !number
                        .trim_start_matches('+')
                        .chars()
                        .all(|c| c.is_ascii_digit()) =>
            {
                self.error(
                    Some(name),
                    format!("\"to.external\" '{number}' is not a phone number (digits, optional leading +)"),
                );
            }
            LoweredDestination::Internal(ext) if ext.is_empty() => {
                self.error(Some(name), "\"to.internal\" is empty");
            }
            LoweredDestination::Ivr(ivr) => {
                if let Some(known) = self.options.known_ivrs
                    && !known.contains(ivr)
                {
                    self.error(Some(name), format!("\"to.ivr\" names unknown IVR '{ivr}'"));
                }
            }
            _ => {}
        }
        Some(destination.clone())
    }

    fn warn_unreachable(&mut self, start: &str) {
        let mut seen: HashSet<&str> = HashSet::new();
        let mut queue = VecDeque::from([start]);
        while let Some(name) = queue.pop_front() {
            if !seen.insert(name) {
                continue;
            }
            let Some(spec) = self.tree.nodes.get(name) else {
                continue;
            };
            let mut next: Vec<&str> = spec
                .gather
                .iter()
                .flat_map(|g| g.values().map(String::as_str))
                .collect();
            next.extend(
                [
                    &spec.timeout_node,
                    &spec.invalid_node,
                    &spec.next,
                    &spec.failed_node,
                ]
                .into_iter()
                .flatten()
                .map(String::as_str),
            );
            queue.extend(next);
        }
        let unreachable: Vec<String> = self
            .tree
            .nodes
            .keys()
            .filter(|n| !seen.contains(n.as_str()))
            .cloned()
            .collect();
        for name in unreachable {
            self.warning(
                Some(&name),
                format!("unreachable: no path leads here from the start node '{start}'"),
            );
        }
    }
}

/// Whether `c` is a telephone keypad key.
pub fn is_key(c: char) -> bool {
    c.is_ascii_digit() || c == '*' || c == '#'
}

/// The JSON Schema of the tree format, as published in `docs/tree.schema.json`.
pub fn json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(TreeFile)).unwrap_or_default()
}
