//! Helpers the cross-function tests share: the fixture corpus, the AWS emulator, temp dirs.

pub mod records;
pub mod stack;

use std::path::PathBuf;

use domain::webhook::Flavor;

/// `../shared/bitbucket-fixtures` beside the repository (override: `BITBUCKET_FIXTURES`).
pub fn fixtures_dir() -> PathBuf {
    std::env::var_os("BITBUCKET_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/bitbucket-fixtures"))
}

fn tsv(name: &str) -> Vec<Vec<String>> {
    let path = fixtures_dir().join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (the fixtures live in ../shared beside the repo)", path.display()));
    text.lines().skip(1).filter(|l| !l.is_empty()).map(|l| l.split('\t').map(str::to_owned).collect()).collect()
}

#[derive(Debug, Clone)]
pub struct Fixture {
    pub file: String,
    pub flavor: Flavor,
    pub event_key: String,
}

impl Fixture {
    pub fn body(&self) -> Vec<u8> {
        std::fs::read(fixtures_dir().join(&self.file)).expect("fixture readable")
    }
}

/// Every row of MANIFEST.tsv.
pub fn manifest() -> Vec<Fixture> {
    tsv("MANIFEST.tsv")
        .into_iter()
        .map(|cols| Fixture {
            file: cols[0].clone(),
            flavor: if cols[1] == "cloud" { Flavor::Cloud } else { Flavor::DataCenter },
            event_key: cols[2].clone(),
        })
        .collect()
}

/// Every row of SIGNATURES.tsv: (file, secret, X-Hub-Signature).
pub fn signature_vectors() -> Vec<(String, String, String)> {
    tsv("SIGNATURES.tsv").into_iter().map(|c| (c[0].clone(), c[1].clone(), c[2].clone())).collect()
}

/// SDK config for the AWS emulator that `make test` starts. Refuses to run against anything
/// but a loopback endpoint, so these tests can never touch a real account.
pub async fn emulator_config() -> aws_config::SdkConfig {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
    assert!(
        endpoint.starts_with("http://127.0.0.1:") || endpoint.starts_with("http://localhost:"),
        "AWS adapter tests need the moto server on loopback: run them with `make test` \
         (AWS_ENDPOINT_URL is {endpoint:?})"
    );
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new("testing", "testing", None, None, "tests"))
        .load()
        .await
}

/// A fresh DynamoDB table on the emulator, shaped like the one in `template.yaml`.
pub async fn emulator_table() -> aws_adapters::DynamoStore {
    let config = emulator_config().await;
    let store = aws_adapters::DynamoStore::new(aws_sdk_dynamodb::Client::new(&config), unique("state"));
    store.create_table().await.expect("create table on the emulator");
    store
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// A new empty directory under the system temp dir, removed (with what a test put in it) when
/// the guard is dropped: a test run leaves nothing behind.
pub fn temp_dir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(&format!("{prefix}-")).tempdir().expect("temp dir")
}

/// A DynamoDB stream batch to one consumer, as that consumer's Lambda handles it.
pub async fn on_stream(
    consumer: std::sync::Arc<dyn domain::consumers::DeliveryConsumer>,
    batch: &serde_json::Value,
) -> serde_json::Value {
    let entry::lambda::Event::Stream(records) = entry::lambda::Event::read(batch.clone()).expect("an event") else {
        panic!("not a stream batch: {batch}")
    };
    entry::lambda::on_stream(&[consumer], records).await
}

/// What `consumer` did with `delivery` (its effects), as the stream handler would have it act.
pub async fn acted(
    consumer: &dyn domain::consumers::DeliveryConsumer,
    delivery: &domain::Delivery,
) -> serde_json::Value {
    match domain::consumers::consume(consumer, delivery).await.expect("the consumer acts") {
        domain::consumers::Outcome::Acted(effects) => effects,
        other => panic!("expected the consumer to act, got {other:?}"),
    }
}

/// The length of a JSON array field of `effects`.
pub fn count(effects: &serde_json::Value, field: &str) -> usize {
    effects[field].as_array().map_or(0, Vec::len)
}
