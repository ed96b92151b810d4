//! Cloud answers as live Cloud gives them: 12-digit pull request hashes in `{hash}` objects, pull
//! request pages of at most 50, `q` and `sort`, `links` on hooks and statuses, trailing-slash
//! collections, `workspaces/{ws}`, `commits`, `src` listings and the refusal of
//! `src/{branch-with-/}/…`.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use bitbucket_sandbox::ACCESS_TOKEN;
use domain::webhook::{Flavor, RepoEvent, parse};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::common::{Harness, probe, start};

fn ids(page: &Value) -> Vec<u64> {
    page["values"].as_array().unwrap().iter().map(|p| p["id"].as_u64().unwrap()).collect()
}

impl Harness {
    /// A GET with the access token (every legacy scope) that must answer 200.
    async fn pulls(&self, query: &str) -> Value {
        let response = self.http.get(self.repo(&format!("/pullrequests{query}"))).bearer_auth(ACCESS_TOKEN);
        let response = response.send().await.unwrap();
        assert_eq!(response.status(), 200, "{query}");
        response.json().await.unwrap()
    }
    async fn status_of(&self, url: &str) -> u16 {
        self.get(url).send().await.unwrap().status().as_u16()
    }
}

#[derive(Clone, Default)]
struct Bodies(Arc<Mutex<Vec<(String, Bytes)>>>);

async fn keep(State(bodies): State<Bodies>, headers: axum::http::HeaderMap, body: Bytes) -> StatusCode {
    let key = headers["x-event-key"].to_str().unwrap().to_owned();
    bodies.0.lock().unwrap().push((key, body));
    StatusCode::OK
}

async fn receiver() -> (String, Bodies) {
    let bodies = Bodies::default();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let app = Router::new().route("/hook", post(keep)).with_state(bodies.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, bodies)
}

#[tokio::test]
async fn pull_requests_carry_12_digit_hashes_in_the_api_and_webhooks() {
    let h = start().await;
    let (url, bodies) = receiver().await;
    h.create_hook(&url, None, &["pullrequest:created"]).await;
    let (source, destination) = (h.tip("develop").await, h.tip("main").await);
    let id = h.sandbox.open_pull_request("develop", "main", "Dev").await;
    h.sandbox.settle().await;

    let single = h.pulls(&format!("/{id}")).await;
    let listed = h.pulls("").await["values"][0].clone();
    let (_, body) = bodies.0.lock().unwrap()[0].clone();
    let payload: Value = serde_json::from_slice(&body).unwrap();
    for pull in [&single, &listed, &payload["pullrequest"]] {
        // Schema `pullrequest_endpoint`: `commit` is `{hash}` and nothing else.
        assert_eq!(pull["source"]["commit"], json!({ "hash": &source[..12] }), "{pull}");
        assert_eq!(pull["destination"]["commit"], json!({ "hash": &destination[..12] }), "{pull}");
    }
    let parsed = parse(Flavor::Cloud, "pullrequest:created", &body).unwrap();
    let RepoEvent::PullRequestOpened { pull_request } = &parsed.events[0] else { panic!("{parsed:?}") };
    assert_eq!(pull_request.head.as_deref(), Some(&source[..12]), "what the client gets to compare");
}

#[tokio::test]
async fn pull_request_pages_hold_at_most_50() {
    let h = start().await;
    for i in 0..60 {
        h.sandbox.open_pull_request("develop", "main", &format!("PR {i}")).await;
    }
    // More than live Cloud allows a pull request page, on purpose.
    let first: Value = probe(h.get(&h.repo("/pullrequests?pagelen=100"))).send().await.unwrap().json().await.unwrap();
    assert_eq!((&first["pagelen"], first["values"].as_array().unwrap().len()), (&json!(50), 50));
    assert_eq!(first["size"], 60);
    let next = first["next"].as_str().unwrap();
    assert!(next.contains("page=2"), "{next}");
    let second: Value = probe(h.http.get(next).bearer_auth(ACCESS_TOKEN)).send().await.unwrap().json().await.unwrap();
    assert_eq!(second["values"].as_array().unwrap().len(), 10);
    assert_eq!(h.pulls("").await["pagelen"], 10, "the default");
    // Other listings still go to 100.
    let names: Vec<String> = (0..120).map(|i| format!("b{i:03}")).collect();
    h.sandbox.seed_branches(&names, "main").unwrap();
    assert_eq!(h.cloud_get(&h.repo("/refs/branches?pagelen=100")).await["pagelen"], 100);
}

#[tokio::test]
async fn pull_requests_filter_with_q_and_sort() {
    let h = start().await;
    let one = h.sandbox.open_pull_request("develop", "main", "Develop").await;
    let two = h.sandbox.open_pull_request("feature/login", "develop", "Login into develop").await;
    let three = h.sandbox.open_pull_request("feature/login", "main", "Login").await;
    h.sandbox.advance_clock(chrono::Duration::minutes(5));
    h.sandbox.merge_pull_request(two).await.unwrap();
    h.sandbox.update_pull_request(one, None).await.unwrap();

    let q = |q: &str, rest: &str| format!("?q={}{rest}", urlencode(q));
    assert_eq!(ids(&h.pulls(&q(r#"state="MERGED""#, "")).await), [two]);
    // With `q`, `state` and its OPEN default give way to the query, as on live Cloud.
    assert_eq!(ids(&h.pulls(&q(r#"source.branch.name="feature/login""#, "")).await), [two, three]);
    assert_eq!(ids(&h.pulls(&q(r#"source.branch.name="feature/login""#, "&state=OPEN")).await), [two, three]);
    assert_eq!(ids(&h.pulls(&q(r#"state IN ("OPEN", "DECLINED")"#, "")).await), [one, three]);
    assert_eq!(ids(&h.pulls(&q(r#"destination.branch.name="develop""#, "&state=MERGED")).await), [two]);
    assert_eq!(ids(&h.pulls(&q(&format!("id={three}"), "")).await), [three]);
    let either = format!(r#"id={one} OR (state="MERGED" AND title ~ "login")"#);
    assert_eq!(ids(&h.pulls(&q(&either, "")).await), [one, two]);
    assert_eq!(ids(&h.pulls("?sort=-id").await), [three, one]);
    assert_eq!(ids(&h.pulls("?state=OPEN&state=MERGED&sort=-updated_on").await), [one, two, three]);
    assert_eq!(ids(&h.pulls("?sort=title").await), [one, three]);
    for bad in [q("nope=1", ""), q(r#"state="#, ""), "?sort=nope".to_owned()] {
        let response = h.http.get(h.repo(&format!("/pullrequests{bad}"))).bearer_auth(ACCESS_TOKEN).send();
        let response = response.await.unwrap();
        assert_eq!(response.status(), 400, "{bad}");
        assert_eq!(response.json::<Value>().await.unwrap()["type"], "error");
    }
    // Branches take `q` on any of their fields now, not only `name`.
    let main = h.tip("main").await;
    let on_main = h.cloud_get(&h.repo(&format!("/refs/branches{}", q(&format!(r#"target.hash="{main}""#), "")))).await;
    assert_eq!(
        on_main["values"].as_array().unwrap().iter().map(|b| b["name"].clone()).collect::<Vec<_>>(),
        [json!("main")]
    );
    assert_eq!(h.status_of(&h.repo(&format!("/refs/branches{}", q("colour = 1", "")))).await, 400);
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn hooks_and_statuses_carry_links() {
    let h = start().await;
    let hook = h.create_hook("https://example.test/h", None, &["repo:push"]).await;
    let uuid = hook["uuid"].as_str().unwrap();
    let link = hook["links"]["self"]["href"].as_str().unwrap();
    assert_eq!(link, h.repo(&format!("/hooks/%7B{}%7D", &uuid[1..uuid.len() - 1])));
    assert_eq!(h.cloud_get(link).await["uuid"], uuid);
    assert_eq!(h.cloud_get(&h.repo("/hooks")).await["values"][0]["links"], hook["links"]);

    let tip = h.tip("main").await;
    let status = json!({ "key": "ci/build", "state": "SUCCESSFUL", "url": "https://ci.test/1" });
    let created = h.post(&h.repo(&format!("/commit/{tip}/statuses/build"))).json(&status).send().await.unwrap();
    let created: Value = created.json().await.unwrap();
    assert_eq!(created["links"]["self"]["href"], h.repo(&format!("/commit/{tip}/statuses/build/ci%2Fbuild")));
    assert_eq!(created["links"]["commit"]["href"], h.repo(&format!("/commit/{tip}")));
    let listed = h.cloud_get(&h.repo(&format!("/commit/{tip}/statuses"))).await;
    assert_eq!(listed["values"][0]["links"], created["links"]);
}

#[tokio::test]
async fn collections_answer_with_a_trailing_slash() {
    let h = start().await;
    h.create_hook("https://example.test/h", None, &["repo:push"]).await;
    h.sandbox.open_pull_request("develop", "main", "Dev").await;
    h.sandbox.add_branch_restriction("delete", "main");
    for collection in ["/hooks", "/refs/branches", "/pullrequests", "/commits", "/branch-restrictions"] {
        let without = h.cloud_get(&h.repo(collection)).await;
        let with = h.cloud_get(&h.repo(&format!("{collection}/"))).await;
        assert_eq!(with["values"], without["values"], "{collection}");
        assert!(!with["values"].as_array().unwrap().is_empty(), "{collection}");
    }
    let main = h.tip("main").await;
    let body = json!({ "name": "slashed", "target": { "hash": main } });
    assert_eq!(h.post(&h.repo("/refs/branches/")).json(&body).send().await.unwrap().status(), 201);
    let hook = json!({ "url": "https://example.test/2", "events": ["repo:push"] });
    assert_eq!(h.post(&h.repo("/hooks/")).json(&hook).send().await.unwrap().status(), 201);
}

#[tokio::test]
async fn the_workspace_is_served() {
    let h = start().await;
    let workspace = h.cloud_get(&h.url("/2.0/workspaces/sandbox")).await;
    assert_eq!((&workspace["type"], &workspace["slug"]), (&json!("workspace"), &json!("sandbox")));
    assert_eq!(workspace["links"]["self"]["href"], h.url("/2.0/workspaces/sandbox"));
    assert!(workspace["uuid"].as_str().unwrap().starts_with('{'));
    assert_eq!(h.status_of(&h.url("/2.0/workspaces/elsewhere")).await, 404);
}

#[tokio::test]
async fn commits_list_the_history_newest_first() {
    let h = start().await;
    let initial = h.cloud_get(&h.repo(&format!("/commit/{}", h.tip("main").await))).await["hash"].clone();
    let first = h.sandbox.push("develop", &[("a.txt", "a")], "First").await;
    let second = h.sandbox.push("develop", &[("b.txt", "b")], "Second").await;
    let develop_start = h.cloud_get(&h.repo(&format!("/commit/{first}"))).await["parents"][0]["hash"].clone();

    let hashes = |page: &Value| -> Vec<String> {
        page["values"].as_array().unwrap().iter().map(|c| c["hash"].as_str().unwrap().to_owned()).collect()
    };
    let at_develop = h.cloud_get(&h.repo("/commits/develop")).await;
    assert_eq!(
        hashes(&at_develop),
        [
            second.clone(),
            first.clone(),
            develop_start.as_str().unwrap().to_owned(),
            initial.as_str().unwrap().to_owned()
        ]
    );
    assert!(at_develop.get("size").is_none(), "iterator paging: no size");
    assert_eq!(at_develop["values"][0]["type"], "commit");
    assert_eq!(at_develop["values"][0]["repository"]["full_name"], "sandbox/demo");
    assert_eq!(hashes(&h.cloud_get(&h.repo(&format!("/commits/{}", &second[..12]))).await), hashes(&at_develop));

    let only_develop = h.cloud_get(&h.repo("/commits?include=develop&exclude=main")).await;
    assert_eq!(hashes(&only_develop), [second.clone(), first, develop_start.as_str().unwrap().to_owned()]);
    let everything = h.cloud_get(&h.repo("/commits?pagelen=2")).await;
    assert_eq!(hashes(&everything)[0], second, "every branch, newest first");
    assert!(everything["next"].as_str().unwrap().contains("page=2"));
    assert_eq!(h.status_of(&h.repo("/commits/no-such-branch")).await, 404);
}

#[tokio::test]
async fn src_lists_directories_and_refuses_slashed_branch_names() {
    let h = start().await;
    let tip = h.sandbox.push("main", &[("docs/guide/a.md", "# A\n"), ("docs/b.md", "b")], "Docs").await;

    // `src` redirects to the root listing of the main branch's tip.
    let no_redirects = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let root = no_redirects.get(h.repo("/src")).bearer_auth(ACCESS_TOKEN).send().await.unwrap();
    assert_eq!(root.status(), 302);
    assert_eq!(root.headers()["location"], h.repo(&format!("/src/{tip}/")).as_str());

    let listing = h.cloud_get(&h.repo("/src")).await;
    let entries: Vec<(Value, Value)> =
        listing["values"].as_array().unwrap().iter().map(|e| (e["type"].clone(), e["path"].clone())).collect();
    assert_eq!(entries, [(json!("commit_file"), json!("README.md")), (json!("commit_directory"), json!("docs"))]);
    let readme = &listing["values"][0];
    assert_eq!((&readme["commit"]["type"], &readme["commit"]["hash"]), (&json!("commit"), &json!(tip)));
    assert!(readme["size"].as_u64().unwrap() > 0);
    assert_eq!(h.cloud_get(&h.repo(&format!("/src/{tip}/"))).await, listing);

    let docs = h.cloud_get(&h.repo(&format!("/src/{tip}/docs/"))).await;
    let paths: Vec<_> = docs["values"].as_array().unwrap().iter().map(|e| e["path"].clone()).collect();
    assert_eq!(paths, [json!("docs/b.md"), json!("docs/guide")]);
    assert_eq!(h.cloud_get(&h.repo(&format!("/src/{tip}/docs"))).await, docs, "with or without the slash");
    let meta = h.cloud_get(&h.repo(&format!("/src/{tip}/docs/b.md?format=meta"))).await;
    assert_eq!((&meta["type"], &meta["path"], &meta["size"]), (&json!("commit_file"), &json!("docs/b.md"), &json!(1)));
    let dir_meta = h.cloud_get(&h.repo(&format!("/src/{tip}/docs/guide?format=meta"))).await;
    assert_eq!(dir_meta["type"], "commit_directory");
    let file = h.get(&h.repo(&format!("/src/{tip}/docs/guide/a.md"))).send().await.unwrap();
    assert_eq!(file.text().await.unwrap(), "# A\n");

    // Branch names work when they have no `/`; with one, only the commit does.
    assert_eq!(h.get(&h.repo("/src/main/docs/b.md")).send().await.unwrap().text().await.unwrap(), "b");
    let login = h.tip("feature/login").await;
    for rev in ["feature/login", "feature%2Flogin"] {
        assert_eq!(h.status_of(&h.repo(&format!("/src/{rev}/src/login.txt"))).await, 404, "{rev}");
    }
    assert_eq!(h.status_of(&h.repo(&format!("/src/{login}/src/login.txt"))).await, 200);
    assert_eq!(h.status_of(&h.repo(&format!("/src/{}/src/login.txt", &login[..12]))).await, 200);
    assert_eq!(h.status_of(&h.repo(&format!("/src/{tip}/nope"))).await, 404);
    let raw = probe(h.get(&h.repo(&format!("/src/{tip}/README.md?format=raw")))).send().await.unwrap();
    assert_eq!(raw.status(), 400);
}
