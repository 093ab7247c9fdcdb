//! The lowered form of a JSON tree: what the built-in tree guest (`guests/tree`) runs.
//!
//! The host validates a tree file, fills in every default and writes it out in this form; the
//! guest receives it through the `config` import and only has to walk it. This file depends on
//! nothing but `serde`, because the guest compiles it too (`#[path]`-included), so host and guest
//! can never disagree about the format.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A validated tree with every default resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoweredTree {
    /// The tree's display name.
    pub name: String,
    /// The node the call starts in.
    pub start: String,
    /// Every node by name.
    pub nodes: BTreeMap<String, LoweredNode>,
}

impl LoweredTree {
    /// Every TTS text in the tree with its voice, so the host can render them at load.
    pub fn say_texts(&self) -> Vec<(String, Option<String>)> {
        let mut texts = Vec::new();
        for node in self.nodes.values() {
            let (prompts, extra): (&[LoweredPrompt], &[LoweredPrompt]) = match node {
                LoweredNode::Gather {
                    prompts,
                    invalid_prompts,
                    ..
                } => (prompts, invalid_prompts),
                LoweredNode::Play { prompts, .. }
                | LoweredNode::Transfer { prompts, .. }
                | LoweredNode::Hangup { prompts }
                | LoweredNode::Suppress { prompts }
                | LoweredNode::Return { prompts } => (prompts, &[]),
            };
            for prompt in prompts.iter().chain(extra) {
                if let LoweredPrompt::Say { text, voice } = prompt {
                    texts.push((text.clone(), voice.clone()));
                }
            }
        }
        texts
    }
}

/// A node, with what it plays and where it leads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LoweredNode {
    /// Plays prompts, collects keys and follows the matching branch.
    Gather {
        /// Prompts played while waiting for keys.
        prompts: Vec<LoweredPrompt>,
        /// Key sequence → next node.
        keys: BTreeMap<String, String>,
        /// How many keys complete an entry.
        max_digits: u8,
        /// Keys that end an entry early.
        terminators: String,
        /// Wait for the first key, in milliseconds.
        timeout_ms: u32,
        /// Wait between keys, in milliseconds.
        inter_digit_timeout_ms: u32,
        /// Whether a key stops the prompts.
        barge_in: bool,
        /// Where to go when no key is pressed.
        timeout_node: String,
        /// Where to go when the keys match no branch.
        invalid_node: String,
        /// Played when the keys match no branch, before going to `invalid_node`.
        invalid_prompts: Vec<LoweredPrompt>,
        /// How many timeouts or invalid entries in a row are tolerated before the call ends.
        max_retries: u32,
    },
    /// Plays prompts, then goes on to `next`.
    Play {
        /// What to play.
        prompts: Vec<LoweredPrompt>,
        /// The node after.
        next: String,
    },
    /// Transfers the call.
    Transfer {
        /// Played before the transfer.
        prompts: Vec<LoweredPrompt>,
        /// Where to.
        to: LoweredDestination,
        /// Key/values sent along with the transfer.
        context: BTreeMap<String, String>,
        /// Where to go when the transfer fails; none hangs up.
        failed_node: Option<String>,
    },
    /// Plays a goodbye and hangs up.
    Hangup {
        /// The goodbye.
        prompts: Vec<LoweredPrompt>,
    },
    /// Puts the caller on the do-not-call list, plays a goodbye and hangs up.
    Suppress {
        /// The goodbye.
        prompts: Vec<LoweredPrompt>,
    },
    /// Plays prompts and returns to the IVR that entered this one (hangs up at the top level).
    Return {
        /// Played first.
        prompts: Vec<LoweredPrompt>,
    },
}

/// One prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoweredPrompt {
    /// A file in the audio folder.
    File(String),
    /// TTS text with an optional voice.
    Say {
        /// What to say.
        text: String,
        /// Which voice; none is the runtime's default.
        voice: Option<String>,
    },
    /// Silence in milliseconds.
    Silence(u32),
}

/// A transfer destination.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoweredDestination {
    /// A SIP URI.
    Uri(String),
    /// An external number (the runtime adds the dial prefix).
    External(String),
    /// An internal extension.
    Internal(String),
    /// Another IVR by name, as a sub-menu.
    Ivr(String),
    /// The runtime's default target.
    Default,
}
