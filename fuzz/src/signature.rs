//! `X-Hub-Signature` parsing and verification on arbitrary header text, body and secrets.

use domain::signature::{SignatureError, parse_header, sign, verify};

use crate::split_line;

/// More secrets than rotation ever keeps only slows the target down.
const MAX_SECRETS: usize = 4;

pub fn check(data: &[u8]) {
    let (header, rest) = split_line(data);
    let (secrets, body) = split_line(rest);
    let header = String::from_utf8_lossy(header);
    let secrets: Vec<&[u8]> = secrets.split(|&b| b == b'\t').take(MAX_SECRETS).collect();

    // A parsed digest is exactly the header's hex digits: nothing dropped, nothing added.
    let parsed = parse_header(&header);
    if let Ok(digest) = &parsed {
        let canonical = format!("sha256={}", hex::encode(digest));
        assert!(canonical.eq_ignore_ascii_case(header.trim()), "{header:?} parsed as {canonical}");
    }

    // The header is accepted exactly when it is the true signature under some accepted secret.
    let genuine = secrets.iter().any(|secret| sign(secret, body).eq_ignore_ascii_case(header.trim()));
    match verify(Some(&header), body, secrets.iter().copied()) {
        Ok(()) => assert!(genuine, "verify accepted a signature that no secret produces: {header:?}"),
        Err(SignatureError::Mismatch) => assert!(!genuine && parsed.is_ok(), "genuine signature refused: {header:?}"),
        Err(SignatureError::Malformed(_)) => assert!(parsed.is_err(), "verify and parse_header disagree"),
        Err(SignatureError::Missing) => panic!("a present header reported missing"),
    }
    assert_eq!(verify(None, body, secrets.iter().copied()), Err(SignatureError::Missing));

    // Every secret's own signature verifies, in either hex case, and not over another body.
    for secret in &secrets {
        let own = sign(secret, body);
        assert_eq!(verify(Some(&own), body, [*secret]), Ok(()));
        assert_eq!(verify(Some(&own.to_ascii_uppercase()), body, [*secret]), Ok(()));
        let mut other = body.to_vec();
        other.push(b'\n');
        assert_eq!(verify(Some(&own), &other, [*secret]), Err(SignatureError::Mismatch));
    }
}
