//! `bba failures drain` against the AWS emulator (moto: SQS, and DynamoDB with its stream) and the
//! local stack on that table: a delivery whose stream batch failed past its retries is named, as
//! the mapping's on-failure destination names it, by a message holding its stream range; the
//! drain reads the range back from the stream, replays the delivery through the API and deletes
//! the message. Needs `AWS_ENDPOINT_URL` on loopback (`make test` starts moto).

use std::process::Command;
use std::sync::Arc;

use domain::Backends;
use local_stack::{Config, start_with};
use serde_json::{Value, json};

fn emulator() -> String {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
    assert!(
        endpoint.starts_with("http://127.0.0.1:") || endpoint.starts_with("http://localhost:"),
        "this test needs the moto server on loopback: run it with `make test` (AWS_ENDPOINT_URL is {endpoint:?})"
    );
    endpoint
}

fn bba(base: &str, dir: &std::path::Path, args: &[String]) -> (Option<i32>, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_bba"));
    command.arg("--api").arg(base).arg("--state-dir").arg(dir).args(args);
    for name in ["API_TOKEN", "BBA_API", "BBA_WEBHOOK_URL", "STATE_DIR"] {
        command.env_remove(name);
    }
    let output = command.output().expect("bba runs");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_on_failure_queue_is_drained_through_replays() {
    emulator();
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest()).load().await;
    let table = format!("drain-{}", uuid::Uuid::new_v4().simple());
    let store = aws_adapters::DynamoStore::new(aws_sdk_dynamodb::Client::new(&config), table.clone());
    store.create_table().await.expect("the table is created on the emulator");
    let dir = std::env::temp_dir().join(format!("bba-drain-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let backends = Backends {
        store: Arc::new(store),
        secrets: Arc::new(local_adapters::FileSecretStore::new(dir.join("secrets.json"))),
    };
    // No worker: the delivery is recorded and nothing acts on it, as when its stream batch
    // failed past its retries.
    let stack_config = Config { worker: false, ..Config::for_tests(dir.clone()) };
    let running = start_with(stack_config, backends, false).await.expect("the local stack starts");
    let base = running.base_url.clone();
    let ran = {
        let (base, dir) = (base.clone(), dir.clone());
        move |args: &[&str]| {
            let (base, dir) = (base.clone(), dir.clone());
            let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
            tokio::task::spawn_blocking(move || bba(&base, &dir, &args))
        }
    };
    let (code, sent, stderr) = ran(&["webhook", "send", "sandbox", "--delivery-id", "drain-me"]).await.unwrap();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(sent.starts_with("202 "), "{sent}");

    // The delivery's stream record: its shard and sequence number.
    let ddb = aws_sdk_dynamodb::Client::new(&config);
    let stream_arn =
        ddb.describe_table().table_name(&table).send().await.unwrap().table.unwrap().latest_stream_arn.unwrap();
    let streams = aws_sdk_dynamodbstreams::Client::new(&config);
    let shards = streams.describe_stream().stream_arn(&stream_arn).send().await.unwrap();
    let mut found = None;
    for shard in shards.stream_description().unwrap().shards() {
        let shard_id = shard.shard_id().unwrap().to_owned();
        let iterator = streams
            .get_shard_iterator()
            .stream_arn(&stream_arn)
            .shard_id(&shard_id)
            .shard_iterator_type(aws_sdk_dynamodbstreams::types::ShardIteratorType::TrimHorizon)
            .send()
            .await
            .unwrap()
            .shard_iterator
            .unwrap();
        let records = streams.get_records().shard_iterator(iterator).send().await.unwrap();
        for record in records.records() {
            let data = record.dynamodb().unwrap();
            let image = data.new_image().cloned().unwrap_or_default();
            if image.get("delivery_id") == Some(&aws_sdk_dynamodbstreams::types::AttributeValue::S("drain-me".into())) {
                found = Some((shard_id.clone(), data.sequence_number().unwrap().to_owned()));
            }
        }
    }
    let (shard, sequence) = found.expect("the delivery is on the table's stream");

    // What the mapping's on-failure destination receives once the retries ran out.
    let sqs = aws_sdk_sqs::Client::new(&config);
    let queue =
        sqs.create_queue().queue_name(format!("failures-{}", uuid::Uuid::new_v4().simple())).send().await.unwrap();
    let queue_url = queue.queue_url().unwrap().to_owned();
    let body = json!({
        "requestContext": {"requestId": "c7a3f7e4", "functionArn": "arn:aws:lambda:us-east-1:123456789012:function:s-pipeline-trigger",
            "condition": "RetryAttemptsExhausted", "approximateInvokeCount": 11},
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": null},
        "version": "1.0", "timestamp": "2026-12-03T10:00:00.000Z",
        "DDBStreamBatchInfo": {"shardId": shard, "startSequenceNumber": sequence, "endSequenceNumber": sequence,
            "approximateArrivalOfFirstRecord": "2026-12-03T09:00:00Z", "approximateArrivalOfLastRecord": "2026-12-03T09:00:00Z",
            "batchSize": 1, "streamArn": stream_arn}
    });
    sqs.send_message().queue_url(&queue_url).message_body(body.to_string()).send().await.unwrap();
    sqs.send_message().queue_url(&queue_url).message_body("{\"not\": \"a stream batch\"}").send().await.unwrap();

    let (code, out, stderr) = ran(&["failures", "drain", "--queue-url", &queue_url]).await.unwrap();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(out.contains("sandbox/drain-me: pipelines: acted; environments: acted"), "{out}");
    assert!(out.contains("not a failed stream batch; left in the queue"), "{out}");
    assert!(out.ends_with("drained 1 of 2 messages (1 deliveries replayed)\n"), "{out}");
    // The replay acted: the pushed branch is an environment now.
    let client = reqwest::Client::new();
    let environments: Value = client
        .get(format!("{base}/integrations/sandbox/environments"))
        .bearer_auth(running.seeded.api_token.expose())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(environments.to_string().contains("feature/login"), "{environments}");
    // Only the message that is no stream batch is left (once its visibility timeout is over).
    let left = sqs
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .unwrap();
    let count = |name| left.attributes().and_then(|a| a.get(&name)).and_then(|v| v.parse::<u32>().ok()).unwrap_or(0);
    let total = count(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
        + count(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesNotVisible);
    assert_eq!(total, 1, "the drained message was deleted");
    running.stop().await.expect("the stack stops");
    let _ = std::fs::remove_dir_all(&dir);
}
