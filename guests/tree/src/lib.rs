//! The built-in tree guest: runs a JSON menu tree as an IVR.
//!
//! The runtime validates a tree file, lowers it (every default resolved) and passes it to this
//! component through the `config` import. The guest walks it: each node is labelled as a step,
//! gather nodes play their prompts and follow the key pressed, action nodes transfer, hang up or
//! suppress. Timeouts and unmapped keys go to the node's `timeout_node` / `invalid_node`; after
//! `max_retries` of them in a row the call is hung up, so a silent caller cannot hold a line
//! forever.

// The lowered format is the host's own file, compiled here too, so the two cannot drift apart.
#[path = "../../../runtime/src/tree/lowered.rs"]
#[allow(dead_code)]
mod lowered;

use lowered::{LoweredDestination, LoweredNode, LoweredPrompt, LoweredTree};
use wasm_ivr_sdk::{self as ivr, CallError, CallInfo, Destination, GatherResult, Ivr, Prompt};

struct TreeIvr;

impl Ivr for TreeIvr {
    fn handle_call(_call: CallInfo) -> Result<(), String> {
        let tree: LoweredTree = serde_json::from_str(&ivr::config())
            .map_err(|e| format!("the tree from config is not valid: {e}"))?;
        match Walk::new(&tree).run() {
            Ok(()) | Err(CallError::HungUp) => Ok(()),
            Err(other) => Err(format!("tree '{}' stopped: {other:?}", tree.name)),
        }
    }
}

wasm_ivr_sdk::export_ivr!(TreeIvr);

/// Where the walk is and what it has seen.
struct Walk<'t> {
    tree: &'t LoweredTree,
    /// Timeouts and invalid entries in a row; reset by a valid key.
    misses: u32,
}

impl<'t> Walk<'t> {
    fn new(tree: &'t LoweredTree) -> Self {
        Walk { tree, misses: 0 }
    }

    fn node(&self, name: &str) -> Result<&'t LoweredNode, CallError> {
        self.tree
            .nodes
            .get(name)
            .ok_or_else(|| CallError::BadRequest(format!("the tree has no node '{name}'")))
    }

    fn run(&mut self) -> Result<(), CallError> {
        let mut current = self.tree.start.clone();
        loop {
            ivr::step(&current);
            let next = match self.node(&current)? {
                LoweredNode::Gather {
                    prompts,
                    keys,
                    max_digits,
                    terminators,
                    timeout_ms,
                    inter_digit_timeout_ms,
                    barge_in,
                    timeout_node,
                    invalid_node,
                    invalid_prompts,
                    max_retries,
                } => {
                    let result = ivr::Gather::new()
                        .prompts(prompts.iter().map(to_prompt))
                        .max_digits(*max_digits)
                        .terminators(terminators)
                        .timeout_ms(*timeout_ms)
                        .inter_digit_timeout_ms(*inter_digit_timeout_ms)
                        .barge_in(*barge_in)
                        .run()?;
                    let entry = match result {
                        GatherResult::Digits(d) | GatherResult::Partial(d) => Some(d),
                        GatherResult::Timeout => None,
                    };
                    match entry.as_ref().and_then(|d| keys.get(d)) {
                        Some(target) => {
                            self.misses = 0;
                            target.clone()
                        }
                        None => {
                            self.misses += 1;
                            if self.misses > *max_retries {
                                ivr::log(
                                    ivr::LogLevel::Info,
                                    &format!(
                                        "no valid key after {} tries; hanging up",
                                        self.misses
                                    ),
                                );
                                ivr::hangup(&[]);
                                return Ok(());
                            }
                            if entry.is_some() {
                                if !invalid_prompts.is_empty() {
                                    ivr::play(&prompts_of(invalid_prompts))?;
                                }
                                invalid_node.clone()
                            } else {
                                timeout_node.clone()
                            }
                        }
                    }
                }
                LoweredNode::Play { prompts, next } => {
                    ivr::play(&prompts_of(prompts))?;
                    next.clone()
                }
                LoweredNode::Hangup { prompts } => {
                    ivr::hangup(&prompts_of(prompts));
                    return Ok(());
                }
                LoweredNode::Return { prompts } => {
                    if !prompts.is_empty() {
                        ivr::play(&prompts_of(prompts))?;
                    }
                    // Returning without ending the call hands the caller back to the IVR that
                    // entered this one; at the top level the runtime hangs up.
                    return Ok(());
                }
                LoweredNode::Suppress { prompts } => {
                    ivr::suppress(&prompts_of(prompts));
                    return Ok(());
                }
                LoweredNode::Transfer {
                    prompts,
                    to,
                    context,
                    failed_node,
                } => {
                    if !prompts.is_empty() {
                        ivr::play(&prompts_of(prompts))?;
                    }
                    // The runtime adds the path and the keys pressed (X-IVR-Path, X-IVR-Digits).
                    let pairs: Vec<(&str, &str)> = context
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str()))
                        .collect();
                    match ivr::transfer(&to_destination(to), &pairs) {
                        // A sub-menu returned the caller to us: carry on from the start.
                        Ok(()) if matches!(to, LoweredDestination::Ivr(_)) => {
                            self.tree.start.clone()
                        }
                        Ok(()) => return Ok(()),
                        Err(CallError::TransferFailed(why)) => {
                            ivr::log(ivr::LogLevel::Warn, &format!("transfer failed: {why:?}"));
                            match failed_node {
                                Some(node) => node.clone(),
                                None => {
                                    ivr::hangup(&[]);
                                    return Ok(());
                                }
                            }
                        }
                        Err(other) => return Err(other),
                    }
                }
            };
            current = next;
        }
    }
}

fn prompts_of(prompts: &[LoweredPrompt]) -> Vec<Prompt> {
    prompts.iter().map(to_prompt).collect()
}

fn to_prompt(prompt: &LoweredPrompt) -> Prompt {
    match prompt {
        LoweredPrompt::File(name) => ivr::file(name.as_str()),
        LoweredPrompt::Say {
            text,
            voice: Some(voice),
        } => ivr::say_with_voice(text.as_str(), voice.as_str()),
        LoweredPrompt::Say { text, voice: None } => ivr::say(text.as_str()),
        LoweredPrompt::Silence(ms) => ivr::silence(*ms),
    }
}

fn to_destination(to: &LoweredDestination) -> Destination {
    match to {
        LoweredDestination::Uri(uri) => Destination::SipUri(uri.clone()),
        LoweredDestination::External(number) => Destination::External(number.clone()),
        LoweredDestination::Internal(ext) => Destination::Internal(ext.clone()),
        LoweredDestination::Ivr(name) => Destination::Ivr(name.clone()),
        LoweredDestination::Default => Destination::Default,
    }
}
