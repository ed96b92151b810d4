//! The whole public fixture corpus: every payload parses and normalizes to what its MANIFEST
//! note says, and every HMAC vector verifies (and fails with one byte changed).

use cross_function_tests::{Fixture, fixtures_dir, manifest, signature_vectors};
use domain::signature::{SignatureError, verify};
use domain::webhook::{RepoEvent, parse, summarize};

/// file → (repository, summary of the normalized events).
const EXPECTED: &[(&str, Option<&str>, &str)] = &[
    (
        "cloud/atlantis__bitbucket-cloud-comment-event.json",
        Some("lkysow/atlantis-example"),
        "pullrequest:comment_created (not acted on)",
    ),
    (
        "cloud/atlantis__bitbucket-cloud-pull-event-created.json",
        Some("lkysow/atlantis-example"),
        "pull request #16 opened (Luke/maintf-edited-online-with-bitbucket-1560433073473 -> main)",
    ),
    (
        "cloud/atlantis__bitbucket-cloud-pull-event-fulfilled.json",
        Some("lkysow/atlantis-example"),
        "pull request #16 merged (Luke/maintf-edited-online-with-bitbucket-1560433073473 -> main)",
    ),
    (
        "cloud/atlantis__bitbucket-cloud-pull-event-rejected.json",
        Some("lkysow/atlantis-example"),
        "pull request #13 declined (test -> main)",
    ),
    (
        "cloud/atlantis__bitbucket-cloud-pull-event-updated.json",
        Some("lkysow/atlantis-example"),
        "pull request #1 updated (example -> main)",
    ),
    ("cloud/jenkins-bbs__annotated_tag_created.json", Some("amuniz/test-repos"), "tag test-tag created"),
    ("cloud/jenkins-bbs__branch_created.json", Some("amuniz/test-repos"), "branch feature/test created"),
    ("cloud/jenkins-bbs__branch_deleted.json", Some("amuniz/test-repos"), "branch feature/test deleted"),
    ("cloud/jenkins-bbs__commit_created.json", Some("amuniz/test-repos"), "branch feature/issue-819 updated (forced)"),
    (
        "cloud/jenkins-bbs__pullrequest_created.json",
        Some("amuniz/test-repos"),
        "pull request #735 opened (feature/test -> master)",
    ),
    (
        "cloud/jenkins-bbs__pullrequest_rejected.json",
        Some("amuniz/test-repos"),
        "pull request #735 declined (feature/test -> master)",
    ),
    (
        "cloud/jenkins-bbs__pullrequest_updated.json",
        Some("nfalco79/test-repos"),
        "pull request #1 updated (release/release-1 -> master)",
    ),
    ("cloud/jenkins-bbs__signed_payload.json", Some("nfalco79/test-repos"), "branch feature/webhook created"),
    ("cloud/jenkins-bbs__tag_created.json", Some("amuniz/test-repos"), "tag simple-tag created"),
    ("cloud/jenkins-bbs__tag_deleted.json", Some("amuniz/test-repos"), "tag test deleted"),
    ("datacenter/goplayground__pr-comment-added.json", None, "pr:comment:added (not acted on)"),
    ("datacenter/goplayground__pr-comment-deleted.json", None, "pr:comment:deleted (not acted on)"),
    ("datacenter/goplayground__pr-comment-edited.json", None, "pr:comment:edited (not acted on)"),
    (
        "datacenter/goplayground__pr-declined.json",
        Some("~gopher/webhook-test"),
        "pull request #2 declined (feature/wip -> master)",
    ),
    (
        "datacenter/goplayground__pr-deleted.json",
        Some("~gopher/webhook-test"),
        "pull request #2 deleted (feature/wip -> master)",
    ),
    (
        "datacenter/goplayground__pr-merged.json",
        Some("~gopher/webhook-test"),
        "pull request #5 merged (feature/wip -> master)",
    ),
    (
        "datacenter/goplayground__pr-modified.json",
        Some("~gopher/webhook-test"),
        "pull request #3 updated (feature/wip -> master)",
    ),
    (
        "datacenter/goplayground__pr-opened.json",
        Some("~gopher/webhook-test"),
        "pull request #5 opened (feature/wip -> master)",
    ),
    ("datacenter/goplayground__pr-reviewer-approved.json", None, "pr:reviewer:approved (not acted on)"),
    ("datacenter/goplayground__pr-reviewer-needs-work.json", None, "pr:reviewer:needs_work (not acted on)"),
    ("datacenter/goplayground__pr-reviewer-unapproved.json", None, "pr:reviewer:unapproved (not acted on)"),
    ("datacenter/goplayground__pr-reviewer-updated.json", None, "pr:reviewer:updated (not acted on)"),
    (
        "datacenter/goplayground__repo-comment-added.json",
        Some("~gopher/webhook-test"),
        "repo:comment:added (not acted on)",
    ),
    (
        "datacenter/goplayground__repo-comment-deleted.json",
        Some("~gopher/webhook-test"),
        "repo:comment:deleted (not acted on)",
    ),
    (
        "datacenter/goplayground__repo-comment-edited.json",
        Some("~gopher/webhook-test"),
        "repo:comment:edited (not acted on)",
    ),
    ("datacenter/goplayground__repo-forked.json", Some("~tux/webhook-test"), "repo:forked (not acted on)"),
    ("datacenter/goplayground__repo-modified.json", None, "repo:modified (not acted on)"),
    ("datacenter/goplayground__repo-refs-changed.json", Some("~gopher/webhook-test"), "branch feature/wip deleted"),
    ("datacenter/jenkins-bbs__annotated_tag_created.json", Some("AMUNIZ/test-repos"), "tag annotated-tag created"),
    ("datacenter/jenkins-bbs__branch_deleted.json", Some("AMUNIZ/test-repos"), "branch feature/BB-1 deleted"),
    ("datacenter/jenkins-bbs__emptyPayload.json", Some("AMUNIZ/test-repos"), "no changes"),
    ("datacenter/jenkins-bbs__mirrorSynchronized.json", Some("AMUNIZ/test-repos"), "branch main updated"),
    (
        "datacenter/jenkins-bbs__mirrorSynchronized_refLimitExceeded.json",
        Some("AMUNIZ/test-repos"),
        "mirror:repo_synchronized (not acted on)",
    ),
    ("datacenter/jenkins-bbs__ping.json", None, "ping"),
    (
        "datacenter/jenkins-bbs__prOpenFromTagPayload.json",
        Some("AMUNIZ/test-repos"),
        "pull request #1 opened (v1.0 -> master)",
    ),
    ("datacenter/jenkins-bbs__pushPayload.json", Some("AMUNIZ/test-repos"), "branch main updated"),
    ("datacenter/jenkins-bbs__pushPayload_v10.json", Some("AMUNIZ/test-repos"), "branch feature/BB-1 created"),
    ("datacenter/jenkins-bbs__signed_payload.json", Some("AMUNIZ/test-repos"), "branch feature/BB-1 deleted"),
    ("datacenter/jenkins-bbs__tag_created.json", Some("AMUNIZ/test-repos"), "tag simple-tag created"),
    ("datacenter/jenkins-bbs__tag_deleted.json", Some("AMUNIZ/test-repos"), "tag simple-tag deleted"),
];

fn parsed(file: &str) -> domain::webhook::ParsedPayload {
    let f: Fixture = manifest().into_iter().find(|f| f.file == file).expect("in manifest");
    parse(f.flavor, &f.event_key, &f.body()).expect("parses")
}

#[test]
fn every_manifest_row_parses_and_normalizes_as_expected() {
    let rows = manifest();
    assert_eq!(rows.len(), 45, "MANIFEST.tsv rows");
    assert_eq!(rows.len(), EXPECTED.len(), "every fixture has an expectation");
    for f in &rows {
        let (_, repository, summary) = EXPECTED
            .iter()
            .find(|(file, ..)| *file == f.file)
            .unwrap_or_else(|| panic!("no expectation for {}", f.file));
        let p = parse(f.flavor, &f.event_key, &f.body()).unwrap_or_else(|e| panic!("{}: {e}", f.file));
        assert_eq!(p.repository.as_deref(), *repository, "{}", f.file);
        assert_eq!(summarize(&p.events), *summary, "{}", f.file);
    }
}

#[test]
fn ref_changes_carry_real_hashes_and_forced_flag() {
    // DC: the all-zero hash of the missing side never leaks out.
    match &parsed("datacenter/jenkins-bbs__branch_deleted.json").events[..] {
        [RepoEvent::BranchDeleted { previous: Some(p), .. }] => assert!(!p.starts_with("0000")),
        other => panic!("{other:?}"),
    }
    match &parsed("datacenter/jenkins-bbs__pushPayload_v10.json").events[..] {
        [RepoEvent::BranchCreated { head: Some(h), .. }] => assert_eq!(h.len(), 40),
        other => panic!("{other:?}"),
    }
    match &parsed("cloud/jenkins-bbs__commit_created.json").events[..] {
        [RepoEvent::BranchUpdated { forced: true, head: Some(_), previous: Some(_), .. }] => {}
        other => panic!("{other:?}"),
    }
    match &parsed("cloud/jenkins-bbs__branch_deleted.json").events[..] {
        [RepoEvent::BranchDeleted { previous: Some(_), .. }] => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn pull_requests_carry_head_and_branches() {
    for file in ["cloud/atlantis__bitbucket-cloud-pull-event-updated.json", "datacenter/goplayground__pr-opened.json"] {
        let events = parsed(file).events;
        let pr = match &events[..] {
            [RepoEvent::PullRequestOpened { pull_request } | RepoEvent::PullRequestUpdated { pull_request }] => {
                pull_request
            }
            other => panic!("{file}: {other:?}"),
        };
        assert!(pr.head.as_deref().is_some_and(|h| h.len() >= 12), "{file}: {pr:?}");
        assert!(!pr.source_branch.is_empty() && !pr.destination_branch.is_empty());
    }
}

#[test]
fn a_multi_ref_push_yields_one_event_per_change() {
    let body = br#"{"push":{"changes":[
        {"new":{"type":"branch","name":"a","target":{"hash":"1111"}},"old":null,"created":true,"closed":false,"forced":false,"truncated":false},
        {"new":null,"old":{"type":"tag","name":"v1","target":{"hash":"2222"}},"created":false,"closed":true,"forced":false,"truncated":false},
        {"new":{"type":"branch","name":"main","target":{"hash":"3333"}},"old":{"type":"branch","name":"main","target":{"hash":"4444"}},"created":false,"closed":false,"forced":false,"truncated":true}
    ]},"repository":{"full_name":"ws/repo"},"unknown":{"ignored":true}}"#;
    let p = parse(domain::webhook::Flavor::Cloud, "repo:push", body).unwrap();
    assert_eq!(summarize(&p.events), "branch a created; tag v1 deleted; branch main updated");
}

#[test]
fn known_keys_with_the_wrong_shape_and_non_json_are_errors() {
    use domain::webhook::Flavor::*;
    for (flavor, key, body) in [
        (Cloud, "repo:push", &b"{\"pullrequest\": {}}"[..]),
        (Cloud, "pullrequest:created", b"{\"push\": {}}"),
        (DataCenter, "pr:opened", b"[]"),
        (DataCenter, "repo:refs_changed", b"{\"changes\": 5}"),
        (Cloud, "anything:else", b"{not json"),
        (DataCenter, "diagnostics:ping", b""),
    ] {
        let err = parse(flavor, key, body).expect_err(key);
        assert!(!err.to_string().is_empty());
    }
}

#[test]
fn every_signature_vector_verifies_and_one_changed_byte_does_not() {
    let vectors = signature_vectors();
    assert_eq!(vectors.len(), 19, "SIGNATURES.tsv rows");
    for (file, secret, header) in vectors {
        let body = std::fs::read(fixtures_dir().join(&file)).unwrap();
        assert_eq!(verify(Some(&header), &body, [secret.as_bytes()]), Ok(()), "{file}");
        for position in [0, body.len() / 2, body.len() - 1] {
            let mut tampered = body.clone();
            tampered[position] ^= 0x01;
            assert_eq!(
                verify(Some(&header), &tampered, [secret.as_bytes()]),
                Err(SignatureError::Mismatch),
                "{file}@{position}"
            );
        }
        assert_eq!(verify(Some(&header), &body, [b"wrong".as_slice()]), Err(SignatureError::Mismatch));
        // Rotation: the right secret anywhere in the accepted list is enough.
        assert_eq!(verify(Some(&header), &body, [b"old".as_slice(), secret.as_bytes()]), Ok(()));
    }
}
