//! Cloud's paging envelope (`pagelen`, `size`, `page`, `values`, `next`), Data Center's (`start`,
//! `limit`, `size`, `isLastPage`, `nextPageStart`, `values`) and query-string reading. The raw
//! query is kept so Cloud's `next` repeats the caller's query exactly, with only `page` changed.

use serde_json::{Value, json};

use crate::error::Error;

const DEFAULT_PAGELEN: usize = 10;
pub const MAX_PAGELEN: usize = 100;
/// Cloud's pull request listings: at most 50 a page, whatever is asked.
pub const MAX_PULL_REQUEST_PAGELEN: usize = 50;
const DC_DEFAULT_LIMIT: usize = 25;
const DC_MAX_LIMIT: usize = 1000;

/// Every value of `name` in a raw query string, percent-decoded.
pub fn params(query: &str, name: &str) -> Vec<String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .filter(|(key, _)| decode(key) == name)
        .map(|(_, value)| decode(value))
        .collect()
}

pub fn param(query: &str, name: &str) -> Option<String> {
    params(query, name).into_iter().next()
}

/// Query-string decoding: `+` is a space, then `%XX` escapes.
fn decode(s: &str) -> String {
    percent_decode(&s.replace('+', " "))
}

/// `%XX` escapes only; a `%` not followed by two hex digits stays as it is.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        // Both digits must be hex: `from_str_radix` alone would accept a sign such as `%+f`.
        let escaped = bytes
            .get(i + 1..i + 3)
            .filter(|h| bytes[i] == b'%' && h.iter().all(u8::is_ascii_hexdigit))
            .and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn positive(query: &str, name: &str, default: usize) -> Result<usize, Error> {
    match param(query, name) {
        None => Ok(default),
        Some(raw) => raw
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| Error::bad_request(format!("{name}: expected a positive integer, got {raw:?}"))),
    }
}

/// The positions of the values the query's page shows (what [`paginate`] keeps).
pub fn page_range(query: &str) -> Result<std::ops::Range<usize>, Error> {
    let pagelen = positive(query, "pagelen", DEFAULT_PAGELEN)?.min(MAX_PAGELEN);
    let start = (positive(query, "page", 1)? - 1).saturating_mul(pagelen);
    Ok(start..start.saturating_add(pagelen))
}

/// One page of `values`; `url` is the absolute URL of the listing, without query.
pub fn paginate(values: Vec<Value>, query: &str, url: &str) -> Result<Value, Error> {
    paginate_up_to(values, query, url, MAX_PAGELEN)
}

/// [`paginate`] with its own largest page.
pub fn paginate_up_to(values: Vec<Value>, query: &str, url: &str, max: usize) -> Result<Value, Error> {
    let pagelen = positive(query, "pagelen", DEFAULT_PAGELEN)?.min(max);
    let page = positive(query, "page", 1)?;
    let size = values.len();
    let start = (page - 1).saturating_mul(pagelen);
    let page_values: Vec<Value> = values.into_iter().skip(start).take(pagelen).collect();
    let mut body = json!({ "pagelen": pagelen, "size": size, "page": page, "values": page_values });
    if start.saturating_add(pagelen) < size {
        let mut pairs: Vec<&str> = query.split('&').filter(|p| !p.is_empty() && !p.starts_with("page=")).collect();
        let next_page = format!("page={}", page + 1);
        pairs.push(&next_page);
        body["next"] = json!(format!("{url}?{}", pairs.join("&")));
    }
    Ok(body)
}

/// One Data Center page of `values`: `start` (from 0) and `limit` from the query.
pub fn dc_paginate(values: Vec<Value>, query: &str) -> Result<Value, Error> {
    let limit = positive(query, "limit", DC_DEFAULT_LIMIT)?.min(DC_MAX_LIMIT);
    let start = match param(query, "start") {
        None => 0,
        Some(raw) => raw
            .trim()
            .parse::<usize>()
            .map_err(|_| Error::bad_request(format!("start: expected a non-negative integer, got {raw:?}")))?,
    };
    let total = values.len();
    let page: Vec<Value> = values.into_iter().skip(start).take(limit).collect();
    let end = start.saturating_add(page.len());
    let mut body =
        json!({ "size": page.len(), "limit": limit, "start": start, "isLastPage": end >= total, "values": page });
    if end < total {
        body["nextPageStart"] = json!(end);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_and_next_links() {
        let values: Vec<Value> = (0..25).map(|i| json!(i)).collect();
        let first = paginate(values.clone(), "pagelen=10&q=x", "http://h/l").unwrap();
        assert_eq!(first["values"].as_array().unwrap().len(), 10);
        assert_eq!(first["next"], "http://h/l?pagelen=10&q=x&page=2");
        let last = paginate(values.clone(), "pagelen=10&page=3", "http://h/l").unwrap();
        assert_eq!(last["values"], json!([20, 21, 22, 23, 24]));
        assert!(last.get("next").is_none());
        assert_eq!(paginate(values.clone(), "pagelen=500", "u").unwrap()["pagelen"], 100);
        assert_eq!(paginate_up_to(values.clone(), "pagelen=100", "u", 50).unwrap()["pagelen"], 50);
        assert!(paginate(values, "page=0", "u").is_err());
    }

    #[test]
    fn data_center_pages() {
        let values: Vec<Value> = (0..5).map(|i| json!(i)).collect();
        let first = dc_paginate(values.clone(), "limit=2").unwrap();
        assert_eq!(
            first,
            json!({ "size": 2, "limit": 2, "start": 0, "isLastPage": false, "nextPageStart": 2, "values": [0, 1] })
        );
        let last = dc_paginate(values.clone(), "limit=2&start=4").unwrap();
        assert_eq!((&last["values"], &last["isLastPage"]), (&json!([4]), &json!(true)));
        assert!(last.get("nextPageStart").is_none());
        assert_eq!(dc_paginate(values.clone(), "start=9").unwrap()["size"], 0);
        assert_eq!(dc_paginate(values.clone(), "").unwrap()["limit"], 25);
        assert!(dc_paginate(values.clone(), "start=-1").is_err());
        assert!(dc_paginate(values, "limit=0").is_err());
    }

    #[test]
    fn decodes_parameters() {
        assert_eq!(param("q=name+~+%22feat%22", "q").as_deref(), Some("name ~ \"feat\""));
        assert_eq!(params("state=OPEN&state=MERGED", "state"), ["OPEN", "MERGED"]);
        assert_eq!(param("bad=%zz", "bad").as_deref(), Some("%zz"));
        assert_eq!(percent_decode("a+b%2Fc%"), "a+b/c%");
    }
}
