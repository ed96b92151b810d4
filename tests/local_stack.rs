//! The local stack end to end over real HTTP: every fixture, signed, posted to the running
//! process; listing; duplicates; admin auth; and state surviving a restart.

use cross_function_tests::{manifest, temp_dir};
use domain::secrets::Secret;
use domain::signature::sign;
use domain::webhook::Flavor;
use local_stack::{Config, SANDBOX_ID, start};
use serde_json::Value;

fn config(state_dir: std::path::PathBuf, token: Option<&str>) -> Config {
    Config { api_token: token.map(Secret::new), ..Config::for_tests(state_dir) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_fixtures_are_recorded_once_listed_and_survive_a_restart() {
    let temp = temp_dir("local-stack");
    let dir = temp.path().to_path_buf();
    let running = start(config(dir.clone(), None), false).await.unwrap();
    let base = format!("http://{}", running.addr);
    let secret = running.seeded.sandbox_webhook_secret.clone();
    let token = running.seeded.api_token.clone();
    let http = reqwest::Client::new();

    let health: Value = http.get(format!("{base}/health")).send().await.unwrap().json().await.unwrap();
    assert_eq!(health["status"], "ok");

    let fixtures = manifest();
    let mut recorded = 0;
    for (n, f) in fixtures.iter().enumerate() {
        let body = f.body();
        let id_header = match f.flavor {
            Flavor::Cloud => "X-Request-UUID",
            Flavor::DataCenter => "X-Request-Id",
        };
        let response = http
            .post(format!("{base}/webhooks/{SANDBOX_ID}"))
            .header("Content-Type", "application/json")
            .header("X-Event-Key", &f.event_key)
            .header(id_header, format!("delivery-{n}"))
            .header("X-Hub-Signature", sign(secret.expose().as_bytes(), &body))
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let answer: Value = response.json().await.unwrap();
        if f.event_key == "diagnostics:ping" {
            assert_eq!((status, &answer["ping"]), (200, &Value::Bool(true)), "{}", f.file);
        } else {
            assert_eq!(status, 202, "{}: {answer}", f.file);
            assert_eq!(answer["duplicate"], false);
            assert_eq!(answer["event_key"], f.event_key.as_str());
            assert_eq!(answer["flavor"], f.flavor.as_str());
            recorded += 1;
        }
    }
    assert_eq!(recorded, fixtures.len() - 1);

    // A Bitbucket retry of the last delivery: 200, duplicate, nothing new.
    let last = fixtures.iter().rposition(|f| f.event_key != "diagnostics:ping").unwrap();
    let body = fixtures[last].body();
    let retry = http
        .post(format!("{base}/webhooks/{SANDBOX_ID}"))
        .header("Content-Type", "application/json")
        .header("X-Event-Key", &fixtures[last].event_key)
        .header("X-Request-Id", format!("delivery-{last}"))
        .header("X-Hub-Signature", sign(secret.expose().as_bytes(), &body))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(retry.status(), 200);
    assert_eq!(retry.json::<Value>().await.unwrap()["duplicate"], true);

    let events_url = format!("{base}/integrations/{SANDBOX_ID}/events");
    assert_eq!(http.get(&events_url).send().await.unwrap().status(), 401);
    assert_eq!(http.get(&events_url).bearer_auth("wrong").send().await.unwrap().status(), 401);
    let list = |limit: usize| {
        let (http, url, token) = (http.clone(), events_url.clone(), token.clone());
        async move {
            let r = http.get(format!("{url}?limit={limit}")).bearer_auth(token.expose()).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.unwrap()
        }
    };
    let page = list(100).await;
    let events = page["events"].as_array().unwrap();
    assert_eq!(events.len(), recorded);
    assert_eq!(events[0]["delivery_id"], format!("delivery-{last}"), "newest first");
    assert!(events.iter().all(|e| e["summary"].as_str().is_some_and(|s| !s.is_empty())));
    let small = list(5).await;
    assert_eq!(small["events"].as_array().unwrap().len(), 5);
    assert!(small["next_cursor"].is_string());
    let bad = http.get(format!("{events_url}?limit=0")).bearer_auth(token.expose()).send().await.unwrap();
    assert_eq!(bad.status(), 400);
    running.stop().await.unwrap();

    // Restart on the same state dir: the same token and secret, and every event still there.
    let again = start(config(dir.clone(), None), false).await.unwrap();
    assert_eq!(again.seeded.api_token, token, "the generated token is kept");
    assert_eq!(again.seeded.sandbox_webhook_secret, secret, "the generated secret is kept");
    let r = reqwest::Client::new()
        .get(format!("http://{}/integrations/{SANDBOX_ID}/events?limit=100", again.addr))
        .bearer_auth(token.expose())
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["events"].as_array().unwrap().len(), recorded);
    again.stop().await.unwrap();

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for file in ["secrets.json", "api-token", "sandbox-webhook-secret"] {
            let mode = std::fs::metadata(dir.join(file)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{file} is owner-only");
        }
    }
}
