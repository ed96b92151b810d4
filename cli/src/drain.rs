//! `bba failures drain`: works off the stream mappings' on-failure queue. Each message names a
//! range of the table's stream that failed past its retries (`DDBStreamBatchInfo`); the delivery
//! records in that range are read back from the stream and each is replayed through the API
//! (`POST /integrations/{id}/deliveries/{delivery_id}/replay`, which goes through the same claims,
//! so a delivery that had partly succeeded is not acted on twice). A message is deleted once every
//! delivery in it replayed without a failure; anything else stays for the next drain, and its
//! deliveries stay in `GET /integrations/{id}/failures`.

use aws_sdk_dynamodbstreams::types::{AttributeValue, ShardIteratorType};
use reqwest::{Method, Url};
use serde_json::Value;

use crate::api::{Client, endpoint};
use crate::error::CliError;

/// GetRecords calls per message at most (a range is one batch of at most ten records).
const MAX_READS: usize = 20;

fn aws<E: std::fmt::Display>(what: &str) -> impl Fn(E) -> CliError + '_ {
    move |e| CliError::Aws(format!("{what}: {e}"))
}

/// A stream sequence number, compared as the number it is (they have no fixed width).
fn sequence(s: &str) -> u128 {
    s.parse().unwrap_or(u128::MAX)
}

/// The deliveries (integration, delivery id) recorded in one failed stream range.
async fn deliveries_in(
    streams: &aws_sdk_dynamodbstreams::Client,
    info: &Value,
) -> Result<Vec<(String, String)>, CliError> {
    let field = |name: &str| info[name].as_str().map(str::to_owned).ok_or_else(|| CliError::Aws(format!("no {name}")));
    let (stream, shard, start, end) =
        (field("streamArn")?, field("shardId")?, field("startSequenceNumber")?, field("endSequenceNumber")?);
    let mut iterator = streams
        .get_shard_iterator()
        .stream_arn(&stream)
        .shard_id(&shard)
        .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
        .sequence_number(&start)
        .send()
        .await
        .map_err(aws("reading the stream (its records are kept 24 hours)"))?
        .shard_iterator;
    let mut found = Vec::new();
    for _ in 0..MAX_READS {
        let Some(current) = iterator.take() else { break };
        let page = streams.get_records().shard_iterator(current).send().await.map_err(aws("reading the stream"))?;
        let records = page.records();
        for record in records {
            let Some(data) = record.dynamodb() else { continue };
            if sequence(data.sequence_number().unwrap_or_default()) > sequence(&end) {
                return Ok(found);
            }
            let Some(image) = data.new_image() else { continue };
            let text = |name: &str| match image.get(name) {
                Some(AttributeValue::S(s)) => Some(s.clone()),
                _ => None,
            };
            if text("kind").as_deref() != Some("delivery") {
                continue;
            }
            if let (Some(integration), Some(delivery)) = (text("integration_id"), text("delivery_id")) {
                found.push((integration, delivery));
            }
        }
        if records.is_empty() {
            break;
        }
        iterator = page.next_shard_iterator;
    }
    Ok(found)
}

/// Drains up to `max` messages of `queue_url`; one line per delivery replayed and a summary.
pub async fn drain(client: &Client, api: &Url, queue_url: &str, max: usize) -> Result<String, CliError> {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest()).load().await;
    let sqs = aws_sdk_sqs::Client::new(&config);
    let streams = aws_sdk_dynamodbstreams::Client::new(&config);
    let (mut out, mut seen, mut drained, mut replayed) = (String::new(), 0, 0, 0);
    while seen < max {
        let received = sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages((max - seen).min(10) as i32)
            .visibility_timeout(120)
            .wait_time_seconds(1)
            .send()
            .await
            .map_err(aws("receiving from the queue"))?;
        let messages = received.messages();
        if messages.is_empty() {
            break;
        }
        for message in messages {
            seen += 1;
            let id = message.message_id().unwrap_or("?");
            let body: Value = serde_json::from_str(message.body().unwrap_or_default()).unwrap_or(Value::Null);
            let info = &body["DDBStreamBatchInfo"];
            if info.is_null() {
                out.push_str(&format!("message {id}: not a failed stream batch; left in the queue\n"));
                continue;
            }
            let deliveries = match deliveries_in(&streams, info).await {
                Ok(deliveries) => deliveries,
                Err(e) => {
                    out.push_str(&format!(
                        "message {id}: {e}; left in the queue (its deliveries are in GET /integrations/{{id}}/failures)\n"
                    ));
                    continue;
                }
            };
            if deliveries.is_empty() {
                // Another stream consumer's batch (the event publisher's outbox records): not
                // deliveries to replay, so not this command's to delete.
                out.push_str(&format!("message {id}: no delivery in its stream range; left in the queue\n"));
                continue;
            }
            let mut all_ok = true;
            for (integration, delivery) in &deliveries {
                let url = endpoint(api, &["integrations", integration, "deliveries", delivery, "replay"], &[]);
                match client.send(client.request(Method::POST, url)).await {
                    Ok((_, body)) => {
                        let answer: Value = serde_json::from_str(&body).map_err(CliError::BadAnswer)?;
                        all_ok &= answer["ok"].as_bool() == Some(true);
                        replayed += 1;
                        let lines = crate::views::replayed(&answer);
                        out.push_str(&format!("{integration}/{delivery}: {}\n", lines.trim_end().replace('\n', "; ")));
                    }
                    // Deleted or expired since: nothing left to replay.
                    Err(CliError::Api { status: 404, message }) => {
                        out.push_str(&format!("{integration}/{delivery}: {message}\n"));
                    }
                    Err(e) => {
                        all_ok = false;
                        out.push_str(&format!("{integration}/{delivery}: {e}\n"));
                    }
                }
            }
            if all_ok {
                if let Some(receipt) = message.receipt_handle() {
                    sqs.delete_message()
                        .queue_url(queue_url)
                        .receipt_handle(receipt)
                        .send()
                        .await
                        .map_err(aws("deleting a drained message"))?;
                }
                drained += 1;
            }
        }
    }
    out.push_str(&format!("drained {drained} of {seen} messages ({replayed} deliveries replayed)\n"));
    Ok(out)
}
