//! How each API answer shows for people (`--json` prints the answer itself). Shapes: see
//! `functions/*/src/lib.rs` and `domain`.

use serde_json::Value;

use crate::table::{Column, render, short_hash, text, time};

/// One page of a listing, with the cursor of the next page when there is one.
fn page(answer: &Value, key: &str, columns: &[Column]) -> String {
    let rows = answer[key].as_array().map(Vec::as_slice).unwrap_or_default();
    let mut out = render(rows, columns);
    if let Some(cursor) = answer["next_cursor"].as_str() {
        out.push_str(&format!("more: --cursor {cursor}\n"));
    }
    out
}

fn webhook_state(i: &Value) -> String {
    match i["webhook"]["active"].as_bool() {
        Some(true) => "active".into(),
        Some(false) => "inactive".into(),
        None => "-".into(),
    }
}

/// `api_token (dev@example.com)`: the kind and its non-secret identifier.
fn credential(i: &Value) -> String {
    let c = &i["credential"];
    let details: Vec<&str> =
        c.as_object().into_iter().flatten().filter(|(k, _)| *k != "kind").filter_map(|(_, v)| v.as_str()).collect();
    match details.is_empty() {
        true => text(&c["kind"]),
        false => format!("{} ({})", text(&c["kind"]), details.join(", ")),
    }
}

pub fn integrations(answer: &Value) -> String {
    page(
        answer,
        "integrations",
        &[
            ("ID", |i| text(&i["id"])),
            ("NAME", |i| text(&i["name"])),
            ("FLAVOR", |i| text(&i["flavor"])),
            ("STATUS", |i| text(&i["status"])),
            ("REPOSITORY", |i| text(&i["repository"]["full_name"])),
            ("WEBHOOK", webhook_state),
        ],
    )
}

pub fn integration(i: &Value) -> String {
    let error = &i["last_error"];
    let fields = [
        ("id", text(&i["id"])),
        ("name", text(&i["name"])),
        ("description", text(&i["description"])),
        ("status", text(&i["status"])),
        ("flavor", text(&i["flavor"])),
        ("repository", text(&i["repository"]["full_name"])),
        ("base url", text(&i["repository"]["base_url"])),
        ("credential", credential(i)),
        ("webhook", format!("{} {}", webhook_state(i), text(&i["webhook"]["url"]))),
        ("options", i["options"].to_string()),
        ("last error", if error.is_object() { text(&error["message"]) } else { text(error) }),
        ("created", time(&i["created_at"])),
        ("updated", time(&i["updated_at"])),
    ];
    fields.iter().map(|(name, value)| format!("{:<13}{value}\n", format!("{name}:"))).collect()
}

pub fn events(answer: &Value) -> String {
    page(
        answer,
        "events",
        &[
            ("RECEIVED", |e| time(&e["received_at"])),
            ("EVENT", |e| text(&e["event_key"])),
            ("DELIVERY", |e| text(&e["delivery_id"])),
            ("SUMMARY", |e| text(&e["summary"])),
        ],
    )
}

fn duration(run: &Value) -> String {
    run["duration_seconds"].as_u64().map_or_else(|| "-".into(), |s| format!("{s}s"))
}

fn tests(run: &Value) -> String {
    let t = &run["tests"];
    match (t["passed"].as_u64(), t["total"].as_u64(), t["failed"].as_u64()) {
        (Some(passed), Some(total), Some(failed)) if failed > 0 => format!("{passed}/{total} passed, {failed} failed"),
        (Some(passed), Some(total), _) => format!("{passed}/{total} passed"),
        _ => "-".into(),
    }
}

pub fn builds(answer: &Value) -> String {
    page(
        answer,
        "pipelines",
        &[
            ("#", |r| text(&r["build_number"])),
            ("BRANCH", |r| text(&r["branch"])),
            ("TRIGGER", |r| text(&r["trigger"])),
            ("STATUS", |r| text(&r["status"])),
            ("STARTED", |r| time(&r["started"])),
            ("DURATION", duration),
            ("TESTS", tests),
            ("UUID", |r| text(&r["uuid"])),
        ],
    )
}

pub fn environments(answer: &Value) -> String {
    page(
        answer,
        "environments",
        &[
            ("BRANCH", |e| text(&e["branch"])),
            ("STATUS", |e| text(&e["status"])),
            ("HEAD", |e| short_hash(&e["head"])),
            ("PR", |e| text(&e["pull_request"])),
            ("LAST ACTIVITY", |e| time(&e["last_activity"])),
        ],
    )
}

pub fn failures(answer: &Value) -> String {
    page(
        answer,
        "failures",
        &[
            ("DELIVERY", |f| text(&f["delivery_id"])),
            ("CONSUMER", |f| text(&f["consumer"])),
            ("ATTEMPTS", |f| f["attempts"].to_string()),
            ("LAST ATTEMPT", |f| time(&f["last_attempt_at"])),
            ("EVENT", |f| text(&f["event_key"])),
            ("ERROR", |f| text(&f["error"])),
        ],
    )
}

/// What each consumer did with a replayed delivery, one line each.
pub fn replayed(answer: &Value) -> String {
    let mut out = String::new();
    for c in answer["consumers"].as_array().into_iter().flatten() {
        let detail = match c["outcome"].as_str() {
            Some("acted") => {
                let effects = &c["effects"];
                let count = |field: &str| effects[field].as_array().map_or(0, Vec::len);
                let parts: Vec<String> = ["started", "stopped", "refreshed", "repeated"]
                    .iter()
                    .filter(|f| count(f) > 0)
                    .map(|f| format!("{} {f}", count(f)))
                    .collect();
                if parts.is_empty() { String::new() } else { format!(" ({})", parts.join(", ")) }
            }
            Some("parked") => format!(": {}", text(&c["reason"])),
            Some("failed") => format!(": {}", text(&c["error"])),
            _ => String::new(),
        };
        out.push_str(&format!("{}: {}{detail}\n", text(&c["consumer"]), text(&c["outcome"])));
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn builds_show_duration_tests_and_the_next_page() {
        let answer = json!({"pipelines": [{"build_number": 7, "branch": "main", "trigger": "push", "status": "FAILED",
            "started": "2025-01-01T12:00:00Z", "duration_seconds": 8, "uuid": "{u}",
            "tests": {"total": 12, "passed": 10, "failed": 2, "skipped": 0}}], "next_cursor": "abc"});
        let out = builds(&answer);
        let row = out.lines().nth(1).unwrap();
        for part in ["7", "main", "push", "FAILED", "2025-01-01 12:00:00", "8s", "10/12 passed, 2 failed", "{u}"] {
            assert!(row.contains(part), "{part} in {row}");
        }
        assert!(out.ends_with("more: --cursor abc\n"), "{out}");
    }

    #[test]
    fn an_integration_shows_its_credential_identifier_only() {
        let i = json!({"id": "x", "credential": {"kind": "api_token", "email": "dev@example.com"},
            "webhook": {"active": true, "url": "https://h/webhooks/x"}, "last_error": null});
        let out = integration(&i);
        assert!(out.contains("credential:  api_token (dev@example.com)"), "{out}");
        assert!(out.contains("webhook:     active https://h/webhooks/x"), "{out}");
        assert!(out.contains("last error:  -"), "{out}");
    }
}
