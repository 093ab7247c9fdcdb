//! JSON menu trees: the format operators write ([`source`]), its validation with precise
//! messages, and the lowered form that the built-in tree guest runs ([`lowered`]).
//!
//! A tree file is parsed and checked by [`check_text`]; when it has no errors the result carries
//! a [`LoweredTree`] with every default filled in, which the engine hands to `guests/tree`
//! through the `config` import. Warnings (an unreachable node, a silent gather) never stop a
//! tree from loading.
//!
//! Defaults, for fields a node leaves out: the start node is the first node in the file; a
//! gather waits 5 s for the first key and 3 s between keys, takes one key, lets a key cut the
//! prompt (barge-in), and on no key or an unmapped key plays the node again; after 3 such
//! replays in a row (timeouts or invalid keys, counted across the call and reset by a valid key)
//! the call is hung up. So the seed's `has_license`, which has no `timeout_node`, replays itself
//! on silence, like `welcome` does explicitly. A transfer with no `to` goes to the runtime's
//! default target.

pub mod graph;
pub mod lowered;
pub mod source;

pub use lowered::{LoweredDestination, LoweredNode, LoweredPrompt, LoweredTree};
pub use source::{
    Checked, Diagnostic, Severity, TreeFile, ValidateOptions, check_text, json_schema, parse,
    validate,
};

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    const SEED: &str = include_str!("../../../examples/plumber-qualifier/plumber-qualifier.json");

    fn errors(text: &str) -> Vec<String> {
        check_text("t.json", text, &ValidateOptions::default())
            .errors()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn seed_tree_is_accepted_verbatim_with_defaults() {
        let checked = check_text("seed.json", SEED, &ValidateOptions::default());
        assert!(checked.diagnostics.is_empty(), "{:?}", checked.diagnostics);
        let tree = checked.lowered.expect("lowered");
        assert_eq!(tree.start, "welcome");
        assert_eq!(tree.nodes.len(), 7);
        let Some(LoweredNode::Gather {
            timeout_node,
            invalid_node,
            max_retries,
            timeout_ms,
            ..
        }) = tree.nodes.get("has_license")
        else {
            panic!("has_license is a gather");
        };
        assert_eq!(
            timeout_node, "has_license",
            "no timeout_node replays the node"
        );
        assert_eq!(invalid_node, "has_license");
        assert_eq!(*max_retries, 3);
        assert_eq!(*timeout_ms, 5000);
        assert_eq!(
            tree.nodes.get("transfer_ai"),
            Some(&LoweredNode::Transfer {
                prompts: vec![],
                to: LoweredDestination::Default,
                context: Default::default(),
                failed_node: None
            })
        );
    }

    #[test]
    fn unknown_target_names_file_node_and_target() {
        let text = SEED.replace("\"1\": \"has_license\"", "\"1\": \"has_licence\"");
        assert_eq!(
            errors(&text),
            ["error: t.json: node 'welcome': gather key '1' leads to unknown node 'has_licence'"]
        );
    }

    #[test]
    fn bad_keys_are_rejected() {
        let text = SEED.replace("\"9\": \"dnc\"", "\"A\": \"dnc\"");
        let errs = errors(&text);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].contains("node 'welcome': bad key 'A'"), "{errs:?}");
        let text = SEED.replace("\"9\": \"dnc\"", "\"99\": \"dnc\"");
        assert!(errors(&text)[0].contains("key '99' is 2 keys long but \"max_digits\" is 1"));
    }

    #[test]
    fn missing_audio_is_an_error_when_the_folder_is_given() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("welcome.wav"), b"x").expect("write");
        let options = ValidateOptions {
            audio_dir: Some(dir.path()),
            known_ivrs: None,
        };
        let checked = check_text("t.json", SEED, &options);
        let errs: Vec<String> = checked.errors().map(ToString::to_string).collect();
        assert_eq!(errs.len(), 4, "{errs:?}");
        assert!(errs[0].contains("node 'has_license': missing audio file 'license_check.wav'"));
    }

    #[test]
    fn invalid_json_reports_line_and_column() {
        let text =
            "{\n  \"name\": \"x\",\n  \"nodes\": {\n    \"a\": { \"action\": \"hangup\", }\n  }\n}";
        let errs = errors(text);
        assert_eq!(errs.len(), 1);
        assert!(errs[0].starts_with("error: t.json:4:"), "{errs:?}");
    }

    #[test]
    fn typos_in_field_names_are_errors() {
        let text = SEED.replace("\"timeout_node\"", "\"timout_node\"");
        let errs = errors(&text);
        assert!(errs[0].contains("unknown field `timout_node`"), "{errs:?}");
    }

    #[test]
    fn no_start_node() {
        assert!(errors(r#"{"name":"x","nodes":{}}"#)[0].contains("no start node"));
        let errs = errors(r#"{"name":"x","start":"b","nodes":{"a":{"action":"hangup"}}}"#);
        assert!(
            errs[0].contains("\"start\" names unknown node 'b'"),
            "{errs:?}"
        );
    }

    #[test]
    fn unreachable_nodes_are_warnings_only() {
        let text = r#"{"name":"x","nodes":{"a":{"action":"hangup"},"b":{"action":"hangup"}}}"#;
        let checked = check_text("t.json", text, &ValidateOptions::default());
        assert!(checked.lowered.is_some());
        assert_eq!(checked.diagnostics.len(), 1);
        assert_eq!(checked.diagnostics[0].severity, Severity::Warning);
        assert_eq!(checked.diagnostics[0].node.as_deref(), Some("b"));
    }

    #[test]
    fn extensions_lower_as_documented() {
        let text = r#"{
          "name": "x", "start": "pin", "voice": "en-us",
          "nodes": {
            "pin": { "say": "Enter your PIN", "gather": { "1234": "ok" }, "max_digits": 4,
                     "invalid_node": "bad", "invalid_say": "Wrong", "max_retries": 1 },
            "bad": { "say": "Sorry", "next": "pin" },
            "ok": { "action": "transfer", "to": { "ivr": "sales" }, "failed_node": "bad",
                    "context": { "verified": "yes" } }
          }
        }"#;
        let known: HashSet<String> = ["sales".to_owned()].into();
        let options = ValidateOptions {
            audio_dir: None,
            known_ivrs: Some(&known),
        };
        let checked = check_text("t.json", text, &options);
        assert!(checked.diagnostics.is_empty(), "{:?}", checked.diagnostics);
        let tree = checked.lowered.expect("lowered");
        let Some(LoweredNode::Gather {
            terminators,
            prompts,
            invalid_prompts,
            max_retries,
            ..
        }) = tree.nodes.get("pin")
        else {
            panic!("pin is a gather");
        };
        assert_eq!(
            terminators, "#",
            "multi-digit entry defaults to # as terminator"
        );
        assert_eq!(*max_retries, 1);
        assert_eq!(
            prompts,
            &[LoweredPrompt::Say {
                text: "Enter your PIN".into(),
                voice: Some("en-us".into())
            }]
        );
        assert_eq!(invalid_prompts.len(), 1);
        let unknown: HashSet<String> = HashSet::new();
        let options = ValidateOptions {
            audio_dir: None,
            known_ivrs: Some(&unknown),
        };
        let errs: Vec<String> = check_text("t.json", text, &options)
            .errors()
            .map(ToString::to_string)
            .collect();
        assert!(errs[0].contains("names unknown IVR 'sales'"), "{errs:?}");
    }

    #[test]
    fn fields_on_the_wrong_kind_of_node_are_errors() {
        let errs = errors(r#"{"name":"x","nodes":{"a":{"action":"hangup","timeout_node":"a"}}}"#);
        assert!(
            errs[0].contains("\"timeout_node\" applies to gather nodes only"),
            "{errs:?}"
        );
        let errs = errors(r#"{"name":"x","nodes":{"a":{"audio":"a.wav"}}}"#);
        assert!(errs[0].contains("the node does nothing"), "{errs:?}");
        let errs = errors(
            r#"{"name":"x","nodes":{"a":{"action":"transfer","to":{"uri":"a@b","ivr":"c"}}}}"#,
        );
        assert!(errs[0].contains("exactly one of"), "{errs:?}");
    }

    #[test]
    fn lowered_tree_round_trips_through_json() {
        let tree = check_text("seed.json", SEED, &ValidateOptions::default())
            .lowered
            .expect("lowered");
        let json = serde_json::to_string(&tree).expect("serialise");
        let back: LoweredTree = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, tree);
    }
}
