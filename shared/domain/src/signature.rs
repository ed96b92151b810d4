//! `X-Hub-Signature: sha256=<hex>` verification: HMAC-SHA256 of the raw request body, checked in
//! constant time against every accepted secret (current and, during rotation, previous).

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the X-Hub-Signature header is missing")]
    Missing,
    #[error("the X-Hub-Signature header is malformed: {0}")]
    Malformed(&'static str),
    #[error("the signature does not match the body for any accepted secret")]
    Mismatch,
}

/// Parses `sha256=<64 hex digits>` into the 32-byte digest. Never panics on any input.
pub fn parse_header(value: &str) -> Result<[u8; 32], SignatureError> {
    let (algorithm, hex_digest) =
        value.trim().split_once('=').ok_or(SignatureError::Malformed("expected `sha256=<hex>`"))?;
    if !algorithm.eq_ignore_ascii_case("sha256") {
        return Err(SignatureError::Malformed("only sha256 signatures are accepted"));
    }
    let mut digest = [0u8; 32];
    hex::decode_to_slice(hex_digest, &mut digest)
        .map_err(|_| SignatureError::Malformed("the digest must be 64 hexadecimal digits"))?;
    Ok(digest)
}

/// `sha256=<hex>` for `body` under `secret`, as Bitbucket sends it.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Verifies `header` (the raw header value, if any) over `body` against each accepted secret.
pub fn verify<'a>(
    header: Option<&str>,
    body: &[u8],
    accepted: impl IntoIterator<Item = &'a [u8]>,
) -> Result<(), SignatureError> {
    let digest = parse_header(header.ok_or(SignatureError::Missing)?)?;
    let mut matched = false;
    for secret in accepted {
        let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts keys of any length");
        mac.update(body);
        // verify_slice compares in constant time; keep checking every secret so timing does
        // not reveal which one matched.
        matched |= mac.verify_slice(&digest).is_ok();
    }
    if matched { Ok(()) } else { Err(SignatureError::Mismatch) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rotation() {
        let body = br#"{"push":{}}"#;
        let header = sign(b"new", body);
        assert_eq!(verify(Some(&header), body, [b"old".as_slice(), b"new"]), Ok(()));
        assert_eq!(verify(Some(&header), body, [b"old".as_slice()]), Err(SignatureError::Mismatch));
        assert_eq!(verify(Some(&header), b"{}", [b"new".as_slice()]), Err(SignatureError::Mismatch));
    }

    #[test]
    fn malformed_headers_are_errors_not_panics() {
        for bad in ["", "sha256", "sha256=", "sha1=abcd", "sha256=zz", "sha256=abc", "=", "sha256=é"] {
            assert!(matches!(parse_header(bad), Err(SignatureError::Malformed(_))), "{bad}");
        }
        let long = format!("sha256={}", "a".repeat(66));
        assert!(parse_header(&long).is_err());
        assert_eq!(verify(None, b"", [b"s".as_slice()]), Err(SignatureError::Missing));
    }
}
