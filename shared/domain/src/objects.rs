//! `deserialize_with` helpers for request fields that are structs: serde's derived structs also
//! accept an array of their fields in order (`"options": []` would be every default), which no
//! client means; these accept only a JSON object and keep the path of a nested problem.

use serde::Deserialize;
use serde::de::{DeserializeOwned, Deserializer, Error, Unexpected};
use serde_json::Value;

fn unexpected(value: &Value) -> Unexpected<'_> {
    match value {
        Value::Null => Unexpected::Unit,
        Value::Bool(b) => Unexpected::Bool(*b),
        Value::Number(_) => Unexpected::Other("a number"),
        // Not the string itself: a misplaced secret must not be echoed into an answer or a log.
        Value::String(_) => Unexpected::Other("a string"),
        Value::Array(_) => Unexpected::Seq,
        Value::Object(_) => Unexpected::Map,
    }
}

/// `path` and the message of a problem found there, as `a.b[0].c: message`. A message that
/// starts with `.` or `[` already carries the rest of a nested path (see [`from_object`]).
pub fn join_path(path: &str, message: &str) -> String {
    if path.is_empty() || path == "." {
        message.to_owned()
    } else if message.starts_with(['.', '[']) {
        format!("{path}{message}")
    } else {
        format!("{path}: {message}")
    }
}

fn from_object<T: DeserializeOwned, E: Error>(value: Value) -> Result<T, E> {
    if !value.is_object() {
        return Err(E::invalid_type(unexpected(&value), &"a JSON object"));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let joined = join_path(&path, &e.into_inner().to_string());
        // Relative to this field, so the caller's path is prefixed: `options.fetch_branches: …`.
        if path == "." { E::custom(joined) } else { E::custom(format!(".{joined}")) }
    })
}

/// A struct, from a JSON object only.
pub fn object<'de, D: Deserializer<'de>, T: DeserializeOwned>(deserializer: D) -> Result<T, D::Error> {
    from_object(Value::deserialize(deserializer)?)
}

/// An optional struct: `null` (or absent, with `#[serde(default)]`) is `None`, else an object.
pub fn optional_object<'de, D: Deserializer<'de>, T: DeserializeOwned>(deserializer: D) -> Result<Option<T>, D::Error> {
    match Value::deserialize(deserializer)? {
        Value::Null => Ok(None),
        value => from_object(value).map(Some),
    }
}

/// A field-less enum (`"cloud"`), from a JSON string only: serde also takes `{"cloud": null}`.
pub fn name<'de, D: Deserializer<'de>, T: DeserializeOwned>(deserializer: D) -> Result<T, D::Error> {
    match Value::deserialize(deserializer)? {
        value @ Value::String(_) => serde_json::from_value(value).map_err(D::Error::custom),
        value => Err(D::Error::invalid_type(unexpected(&value), &"a string")),
    }
}

/// A list of structs, each from a JSON object.
pub fn objects<'de, D: Deserializer<'de>, T: DeserializeOwned>(deserializer: D) -> Result<Vec<T>, D::Error> {
    Vec::<Value>::deserialize(deserializer)?
        .into_iter()
        .enumerate()
        .map(|(n, value)| {
            from_object(value).map_err(|e: D::Error| D::Error::custom(join_path(&format!("[{n}]"), &e.to_string())))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, PartialEq, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Inner {
        a: u32,
        b: bool,
    }

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        #[serde(default, deserialize_with = "object")]
        inner: Inner,
        #[serde(default, deserialize_with = "optional_object")]
        maybe: Option<Inner>,
        #[serde(default, deserialize_with = "objects")]
        list: Vec<Inner>,
        #[serde(default, deserialize_with = "name")]
        kind: Kind,
    }

    #[derive(Debug, Default, PartialEq, Deserialize)]
    #[serde(rename_all = "lowercase")]
    enum Kind {
        #[default]
        One,
        Two,
    }

    fn parse(text: &str) -> Result<Outer, String> {
        serde_json::from_str(text).map_err(|e| e.to_string())
    }

    #[test]
    fn objects_only() {
        let ok = parse(r#"{"inner": {"a": 1}, "maybe": null, "list": [{"b": true}]}"#).unwrap();
        assert_eq!((ok.inner.a, ok.maybe, ok.list[0].b), (1, None, true));
        assert!(parse("{}").unwrap().inner == Inner::default());
        for bad in [r#"{"inner": []}"#, r#"{"inner": [7, true]}"#, r#"{"maybe": [1]}"#, r#"{"list": [[1, true]]}"#] {
            assert!(parse(bad).unwrap_err().contains("expected a JSON object"), "{bad}");
        }
        assert!(parse(r#"{"inner": {"a": "x"}}"#).unwrap_err().starts_with(".a: invalid type"));
        let nested = parse(r#"{"list": [{}, {"c": 1}]}"#).unwrap_err();
        assert!(nested.starts_with("[1].c: unknown field `c`"), "{nested}");
        assert_eq!(join_path("options", ".stale_branches.merged_days: bad"), "options.stale_branches.merged_days: bad");
        assert_eq!(join_path("variables", "[0]: bad"), "variables[0]: bad");
        assert_eq!(join_path("name", "bad"), "name: bad");
        assert_eq!(parse(r#"{"kind": "two"}"#).unwrap().kind, Kind::Two);
        for bad in [r#"{"kind": {"two": null}}"#, r#"{"kind": ["two"]}"#, r#"{"kind": "three"}"#] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        let secret = parse(r#"{"inner": "hunter2-secret"}"#).unwrap_err();
        assert!(!secret.contains("hunter2"), "{secret}");
    }
}
