//! The canonical form a backed-up document is committed in: object keys sorted (by their UTF-8
//! bytes), two-space indentation, a trailing newline — and every number exactly as the caller
//! wrote it. Equal documents give equal bytes, so their sha256 tells whether anything changed
//! and commits diff cleanly.
//!
//! Numbers never pass through `f64`: `123456789012345678901234567890` stays that, not
//! `1.2345678901234568e+29`. The document arrives as a [`RawValue`] and is walked with
//! serde_json itself (objects and arrays into borrowed raw children, strings decoded and
//! re-escaped, numbers and literals copied); serde_json's `arbitrary_precision` would do the
//! same, but it changes `Value` for every crate in the binary, the DynamoDB record mapping
//! among them. The walk re-reads each nested value once per level above it: serde_json's
//! recursion limit (128) bounds that.

use std::collections::BTreeMap;

use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::value::RawValue;

/// A document, borrowed from its raw text.
enum Node<'a> {
    /// Keys sorted by their bytes; a repeated key keeps its last value, as `serde_json::Value` does.
    Object(BTreeMap<String, Node<'a>>),
    Array(Vec<Node<'a>>),
    String(String),
    /// A number, `true`, `false` or `null`, written back verbatim.
    Verbatim(&'a RawValue),
}

impl<'a> Node<'a> {
    fn read(raw: &'a RawValue) -> Result<Self, serde_json::Error> {
        Ok(match raw.get().as_bytes().first() {
            Some(b'{') => {
                let members: BTreeMap<String, &'a RawValue> = serde_json::from_str(raw.get())?;
                Node::Object(members.into_iter().map(|(k, v)| Ok((k, Node::read(v)?))).collect::<Result<_, _>>()?)
            }
            Some(b'[') => {
                let items: Vec<&'a RawValue> = serde_json::from_str(raw.get())?;
                Node::Array(items.into_iter().map(Node::read).collect::<Result<_, _>>()?)
            }
            Some(b'"') => Node::String(serde_json::from_str(raw.get())?),
            _ => Node::Verbatim(raw),
        })
    }
}

impl Serialize for Node<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Node::Object(members) => {
                let mut out = serializer.serialize_map(Some(members.len()))?;
                for (key, value) in members {
                    out.serialize_entry(key, value)?;
                }
                out.end()
            }
            Node::Array(items) => {
                let mut out = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    out.serialize_element(item)?;
                }
                out.end()
            }
            Node::String(text) => serializer.serialize_str(text),
            Node::Verbatim(raw) => raw.serialize(serializer),
        }
    }
}

/// The canonical bytes of `document` (valid JSON, as every [`RawValue`] is).
pub fn canonical(document: &RawValue) -> Result<Vec<u8>, serde_json::Error> {
    let node = Node::read(document)?;
    let mut out = Vec::with_capacity(document.get().len() + document.get().len() / 4);
    serde_json::to_writer_pretty(&mut out, &node)?;
    out.push(b'\n');
    Ok(out)
}

/// Whether the document is an object or an array (what a backup holds).
pub fn is_container(document: &RawValue) -> bool {
    matches!(document.get().as_bytes().first(), Some(b'{' | b'['))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(text: &str) -> String {
        let raw: Box<RawValue> = serde_json::from_str(text).unwrap();
        String::from_utf8(canonical(&raw).unwrap()).unwrap()
    }

    #[test]
    fn keys_sorted_two_space_indent_trailing_newline() {
        assert_eq!(
            canon(r#"{"b": [3, {"z": 1, "a": null}], "a": "é", "A": 1.5}"#),
            "{\n  \"A\": 1.5,\n  \"a\": \"é\",\n  \"b\": [\n    3,\n    {\n      \"a\": null,\n      \"z\": 1\n    }\n  ]\n}\n"
        );
        assert_eq!(canon("[]"), "[]\n");
        assert_eq!(canon(r#"{"e": {}, "a": []}"#), "{\n  \"a\": [],\n  \"e\": {}\n}\n");
    }

    #[test]
    fn equal_documents_give_equal_bytes() {
        let one = canon(r#"{"info": {"name": "x", "id": 1}, "item": []}"#);
        assert_eq!(one, canon("{\"item\":[],\n\"info\":{\"id\":1,\"name\":\"x\"}}"));
        assert_ne!(one, canon(r#"{"info": {"name": "y", "id": 1}, "item": []}"#));
    }

    #[test]
    fn numbers_keep_every_digit() {
        // The class: any number a float would round or reformat. Each must come out as it went in.
        for number in [
            "123456789012345678901234567890",
            "-9223372036854775809",
            "18446744073709551616",
            "0.1000000000000000055511151231257827",
            "1e400",
            "1E+2",
            "-0",
            "-0.0",
            "1.0",
            "1.2222222222222219e50",
            "5e-324",
        ] {
            assert_eq!(canon(&format!("[{number}]")), format!("[\n  {number}\n]\n"), "{number}");
            assert_eq!(canon(&format!(r#"{{"n": {number}}}"#)), format!("{{\n  \"n\": {number}\n}}\n"));
        }
    }

    #[test]
    fn strings_are_decoded_and_escaped_once_and_repeated_keys_keep_the_last() {
        assert_eq!(canon(r#"["\u00e9\/\ud83d\ude00\n"]"#), "[\n  \"é/😀\\n\"\n]\n");
        assert_eq!(canon(r#"{"a": 1, "a": 2}"#), "{\n  \"a\": 2\n}\n");
        // Keys sort by their decoded bytes, however they were escaped.
        assert_eq!(canon(r#"{"\u0062": 1, "a": 2}"#), "{\n  \"a\": 2,\n  \"b\": 1\n}\n");
    }

    #[test]
    fn the_canonical_form_is_a_fixed_point() {
        for text in [
            "[122222222222222222222222222222222222222222222222222, 265]",
            "[1.2222222222222219e50, 0.1, -0.0]",
            r#"{"z": [1e400, {"y": "\u0000"}], "a": true}"#,
        ] {
            let first = canon(text);
            assert_eq!(canon(&first), first, "{text}");
        }
    }
}
