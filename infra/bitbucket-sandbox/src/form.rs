//! Form bodies as Bitbucket reads them (`POST …/src` on Cloud, `PUT …/browse/{path}` on Data
//! Center): `multipart/form-data` or `application/x-www-form-urlencoded` fields, in order.
//!
//! Strict where a lenient parser would quietly change meaning: a `Content-Disposition` whose
//! quoted name is followed by anything but `;` or its end (`name="a.json".bak"`), or that holds a
//! backslash escape, is refused with a 400 rather than cut at the first quote.

use axum::Form;
use axum::extract::{FromRequest, Multipart, Request};
use axum::http::header;

use crate::error::Error;
use crate::paging::percent_decode;

/// One form field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormField {
    pub name: String,
    pub value: Vec<u8>,
    /// A multipart file field: its `Content-Disposition` has a `filename`.
    pub is_file: bool,
    /// That `filename` (`filename*` decoded), when there is one.
    pub filename: Option<String>,
}

/// The fields of a form body, multipart or URL-encoded, in order.
pub async fn form_fields(request: Request) -> Result<Vec<FormField>, Error> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if content_type.starts_with("multipart/form-data") {
        let bad = |e: axum::extract::multipart::MultipartError| Error::bad_request(e.body_text());
        let mut multipart =
            Multipart::from_request(request, &()).await.map_err(|e| Error::bad_request(e.body_text()))?;
        let mut fields = Vec::new();
        while let Some(field) = multipart.next_field().await.map_err(bad)? {
            let disposition = field
                .headers()
                .get(header::CONTENT_DISPOSITION)
                .ok_or_else(|| Error::bad_request("A form part has no Content-Disposition"))?;
            let disposition = std::str::from_utf8(disposition.as_bytes())
                .map_err(|_| Error::bad_request("A form part's Content-Disposition is not UTF-8"))?;
            let (name, filename) = field_name(disposition)?;
            let value = field.bytes().await.map_err(bad)?.to_vec();
            fields.push(FormField { name, value, is_file: filename.is_some(), filename });
        }
        Ok(fields)
    } else if content_type.starts_with("application/x-www-form-urlencoded") {
        let Form(pairs) = Form::<Vec<(String, String)>>::from_request(request, &())
            .await
            .map_err(|e| Error::bad_request(e.body_text()))?;
        Ok(pairs
            .into_iter()
            .map(|(name, value)| FormField { name, value: value.into_bytes(), is_file: false, filename: None })
            .collect())
    } else {
        Err(Error::bad_request("Expected multipart/form-data or application/x-www-form-urlencoded"))
    }
}

/// The field name of a `form-data` disposition, and the file name it gives (a file field).
/// `name*=utf-8''…` (RFC 5987, what some clients send for non-ASCII names) is read too.
fn field_name(disposition: &str) -> Result<(String, Option<String>), Error> {
    let malformed = || Error::bad_request(format!("Malformed Content-Disposition: {disposition:?}"));
    let mut rest = disposition.trim();
    let kind_end = rest.find(';').unwrap_or(rest.len());
    if !rest[..kind_end].trim().eq_ignore_ascii_case("form-data") {
        return Err(malformed());
    }
    rest = &rest[kind_end..];
    let (mut name, mut extended, mut filename) = (None, None, None);
    while let Some(after) = rest.strip_prefix(';') {
        let after = after.trim_start();
        if after.is_empty() {
            break;
        }
        let eq = after.find('=').ok_or_else(malformed)?;
        let key = after[..eq].trim().to_ascii_lowercase();
        let value_and_rest = after[eq + 1..].trim_start();
        let (value, remainder) = if let Some(quoted) = value_and_rest.strip_prefix('"') {
            let close = quoted.find('"').ok_or_else(malformed)?;
            let value = &quoted[..close];
            if value.contains('\\') {
                return Err(malformed());
            }
            (value.to_owned(), &quoted[close + 1..])
        } else {
            let end = value_and_rest.find(';').unwrap_or(value_and_rest.len());
            (value_and_rest[..end].trim().to_owned(), &value_and_rest[end..])
        };
        // After a parameter: the next one, or the end — never more of a value.
        rest = remainder.trim_start();
        if !(rest.is_empty() || rest.starts_with(';')) {
            return Err(malformed());
        }
        match key.as_str() {
            "name" => name = Some(value),
            "name*" => extended = Some(value),
            "filename" => filename = Some(filename.unwrap_or(value)),
            "filename*" => filename = Some(decode_extended(&value).unwrap_or(value)),
            _ => {}
        }
    }
    let extended = extended.and_then(|v| decode_extended(&v));
    let name = extended.or(name).ok_or_else(|| Error::bad_request("A form field has no name"))?;
    Ok((name, filename))
}

/// RFC 5987 `utf-8''percent-encoded`.
fn decode_extended(value: &str) -> Option<String> {
    let (charset, rest) = value.split_once('\'')?;
    let (_language, encoded) = rest.split_once('\'')?;
    charset.eq_ignore_ascii_case("utf-8").then(|| percent_decode(encoded))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_files_and_malformed_dispositions() {
        assert_eq!(field_name(r#"form-data; name="message""#).unwrap(), ("message".into(), None));
        assert_eq!(
            field_name(r#"form-data; name="/a/b.json"; filename="b.json""#).unwrap(),
            ("/a/b.json".into(), Some("b.json".into()))
        );
        assert_eq!(field_name("form-data; name=branch").unwrap(), ("branch".into(), None));
        assert_eq!(field_name("form-data; name*=utf-8''docs%2F%C3%A9.md").unwrap(), ("docs/é.md".into(), None));
        for bad in [
            r#"form-data; name="important.json".bak""#,
            r#"form-data; name="a\"b""#,
            r#"form-data; name="unterminated"#,
            r#"attachment; name="a""#,
            r#"form-data; name"#,
        ] {
            assert!(field_name(bad).is_err(), "{bad}");
        }
        assert!(field_name("form-data; filename=\"x\"").is_err(), "a field needs a name");
    }
}
