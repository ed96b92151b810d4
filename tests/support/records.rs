//! Reading back what the system stored, through the store port, and sending exact bytes over
//! HTTP (no client normalizes the path or adds headers).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use domain::store::{Item, StateStore};
use domain::tables::{INTEGRATIONS, integration_items};

/// Every live integration record and every record of each integration's own partition, for the
/// integrations listed plus `extra_ids` (ids that must stay empty), in key order.
pub async fn state_records(store: &dyn StateStore, extra_ids: &[&str]) -> Vec<Item> {
    let mut items = INTEGRATIONS.items(store, "", &[]).await.expect("the integrations read");
    let mut ids: Vec<String> = items.iter().filter_map(|i| i.attrs.get("id")?.as_str().map(str::to_owned)).collect();
    ids.extend(extra_ids.iter().map(|id| (*id).to_owned()));
    ids.sort();
    ids.dedup();
    for id in ids {
        items.extend(integration_items(store, &id).await.expect("a partition reads"));
    }
    items.sort_by(|a, b| a.key.cmp(&b.key));
    items
}

/// One HTTP/1.1 answer as received.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    /// Header names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Sends `method target` with exactly `headers` (plus `Host`, `Connection: close` and, with a
/// body, `Content-Length`) and `body`, and reads the whole answer. `target` goes on the request
/// line as given, so percent-encoded dots and bytes reach the server untouched.
pub async fn raw_request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(String, String)],
    body: Option<&[u8]>,
) -> RawResponse {
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(body) = body {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body.unwrap_or_default());
    tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(addr).expect("the stack accepts connections");
        stream.set_read_timeout(Some(Duration::from_secs(60))).expect("read timeout");
        // The server may answer (and stop reading) before the whole body is sent, e.g. a 415 or
        // 401 decided from the headers: the answer is still there to read.
        let _ = stream.write_all(&bytes);
        let mut received = Vec::new();
        let _ = stream.read_to_end(&mut received);
        parse_response(&received)
    })
    .await
    .expect("the request task ends")
}

fn parse_response(received: &[u8]) -> RawResponse {
    let end = received
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete answer: {:?}", String::from_utf8_lossy(received)));
    let head = String::from_utf8_lossy(&received[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let rest = &received[end + 4..];
    let chunked = headers.iter().any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked { dechunk(rest) } else { rest.to_vec() };
    RawResponse { status, headers, body }
}

fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    while let Some(line_end) = rest.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&rest[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("0").trim(), 16).unwrap_or(0);
        rest = &rest[line_end + 2..];
        if size == 0 || rest.len() < size {
            break;
        }
        body.extend_from_slice(&rest[..size]);
        rest = rest.get(size + 2..).unwrap_or_default();
    }
    body
}
