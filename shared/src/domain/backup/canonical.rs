//! The canonical form a backed-up document is committed in: object keys sorted (by their UTF-8
//! bytes), two-space indentation, a trailing newline. Equal documents give equal bytes, so
//! their sha256 tells whether anything changed and commits diff cleanly.

use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::Value;

/// Serializes a value with its object keys in sorted order, without copying it.
struct Sorted<'a>(&'a Value);

impl Serialize for Sorted<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Object(map) => {
                let mut entries: Vec<_> = map.iter().collect();
                entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
                let mut out = serializer.serialize_map(Some(entries.len()))?;
                for (key, value) in entries {
                    out.serialize_entry(key, &Sorted(value))?;
                }
                out.end()
            }
            Value::Array(items) => {
                let mut out = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    out.serialize_element(&Sorted(item))?;
                }
                out.end()
            }
            scalar => scalar.serialize(serializer),
        }
    }
}

pub fn canonical(document: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing a `Value` to a Vec cannot fail: every key is a string and there is no I/O.
    serde_json::to_writer_pretty(&mut out, &Sorted(document)).expect("a JSON value serializes");
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn keys_sorted_two_space_indent_trailing_newline() {
        let doc: Value = serde_json::from_str(r#"{"b": [3, {"z": 1, "a": null}], "a": "é", "A": 1.5}"#).unwrap();
        let text = String::from_utf8(canonical(&doc)).unwrap();
        assert_eq!(
            text,
            "{\n  \"A\": 1.5,\n  \"a\": \"é\",\n  \"b\": [\n    3,\n    {\n      \"a\": null,\n      \"z\": 1\n    }\n  ]\n}\n"
        );
    }

    #[test]
    fn equal_documents_give_equal_bytes() {
        let one: Value = serde_json::from_str(r#"{"info": {"name": "x", "id": 1}, "item": []}"#).unwrap();
        let two: Value = serde_json::from_str("{\"item\":[],\n\"info\":{\"id\":1,\"name\":\"x\"}}").unwrap();
        assert_eq!(canonical(&one), canonical(&two));
        assert_ne!(canonical(&one), canonical(&json!({"info": {"name": "y", "id": 1}, "item": []})));
        assert_eq!(canonical(&json!([])), b"[]\n");
    }

    #[test]
    fn the_canonical_form_is_a_fixed_point() {
        // Found by fuzz/admin_bodies: without correctly rounded float parsing, reading this back
        // gave another float, so re-sending a committed file made a new commit.
        for text in ["[122222222222222222222222222222222222222222222222222, 265]", "[1.2222222222222219e50, 0.1, -0.0]"]
        {
            let first = canonical(&serde_json::from_str(text).unwrap());
            let again = canonical(&serde_json::from_slice(&first).unwrap());
            assert_eq!(String::from_utf8(again).unwrap(), String::from_utf8(first).unwrap(), "{text}");
        }
    }
}
