//! DynamoDB adapter: the single table keyed `pk`/`sk`, a local secondary index `by_sort` on
//! `sort`, TTL on `expires_at`. Conditions become condition expressions, so "exactly once" is
//! one conditional write, not a read-then-write.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, CancellationReason, Delete, KeySchemaElement, KeyType,
    LocalSecondaryIndex, Projection, ProjectionType, Put, ReturnValuesOnConditionCheckFailure, ScalarAttributeType,
    StreamSpecification, StreamViewType, TimeToLiveSpecification, TransactWriteItem,
};
use serde_json::{Map, Value};

use domain::now_epoch;
use domain::store::{
    Condition, Index, Item, Key, Page, Query, StateStore, StoreError, Write, check_batch, decode_cursor, encode_cursor,
};

pub const SORT_INDEX: &str = "by_sort";

#[derive(Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
}

type Attrs = HashMap<String, AttributeValue>;

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_owned())
}

fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// Maps SDK errors to the port's: throttling is retryable, the rest is "unavailable".
fn store_error<E: ProvideErrorMetadata + std::error::Error + 'static, R: std::fmt::Debug>(
    err: SdkError<E, R>,
) -> StoreError {
    match err.code() {
        Some("ProvisionedThroughputExceededException" | "ThrottlingException" | "RequestLimitExceeded") => {
            StoreError::Throttled
        }
        _ => StoreError::Unavailable(crate::describe_sdk_error(&err)),
    }
}

fn to_attrs(item: &Item) -> Result<Attrs, StoreError> {
    let mut attrs: Attrs =
        serde_dynamo::to_item(&item.attrs).map_err(|e| StoreError::Corrupt(format!("cannot encode item: {e}")))?;
    attrs.insert("pk".into(), s(&item.key.pk));
    attrs.insert("sk".into(), s(&item.key.sk));
    attrs.insert("kind".into(), s(&item.kind));
    attrs.insert("version".into(), n(item.version as i64));
    if let Some(sort) = &item.sort {
        attrs.insert("sort".into(), s(sort));
    }
    if let Some(at) = item.expires_at {
        attrs.insert("expires_at".into(), n(at));
    }
    Ok(attrs)
}

fn from_attrs(mut attrs: Attrs) -> Result<Item, StoreError> {
    let mut take_s = |name: &str| match attrs.remove(name) {
        Some(AttributeValue::S(v)) => Some(v),
        _ => None,
    };
    let (pk, sk, kind, sort) = (take_s("pk"), take_s("sk"), take_s("kind"), take_s("sort"));
    let mut take_n = |name: &str| match attrs.remove(name) {
        Some(AttributeValue::N(v)) => v.parse::<i64>().ok(),
        _ => None,
    };
    let (version, expires_at) = (take_n("version"), take_n("expires_at"));
    let (Some(pk), Some(sk), Some(kind)) = (pk, sk, kind) else {
        return Err(StoreError::Corrupt("item without pk/sk/kind".into()));
    };
    let attrs: Map<String, Value> =
        serde_dynamo::from_item(attrs).map_err(|e| StoreError::Corrupt(format!("cannot decode item: {e}")))?;
    Ok(Item { key: Key { pk, sk }, kind, sort, expires_at, version: version.unwrap_or(0) as u64, attrs })
}

/// An item from a DynamoDB stream record's `NewImage` (DynamoDB JSON, `{"S": "…"}`), as the
/// port shows it, so stream consumers read the same records as everyone else.
pub fn item_from_stream_image(image: &Value) -> Result<Item, StoreError> {
    let item: serde_dynamo::Item = serde_json::from_value(image.clone())
        .map_err(|e| StoreError::Corrupt(format!("not a DynamoDB stream image: {e}")))?;
    from_attrs(item.into())
}

/// The inverse: an item as a stream record's `NewImage` would carry it (for sample events and
/// tests that replay the stream).
pub fn stream_image_from_item(item: &Item) -> Result<Value, StoreError> {
    let item: serde_dynamo::Item = to_attrs(item)?.into();
    serde_json::to_value(item).map_err(|e| StoreError::Corrupt(format!("cannot encode stream image: {e}")))
}

/// The port's error for a failed condition, carrying the live item DynamoDB returned
/// (`ReturnValuesOnConditionCheckFailure::AllOld`).
fn condition_failed(old: Option<Attrs>, now: i64) -> StoreError {
    match old.map(from_attrs).transpose() {
        Ok(current) => StoreError::ConditionFailed { current: current.filter(|i| !i.is_expired(now)).map(Box::new) },
        Err(e) => e,
    }
}

fn key_attrs(key: &Key) -> Attrs {
    HashMap::from([("pk".to_owned(), s(&key.pk)), ("sk".to_owned(), s(&key.sk))])
}

/// The condition expression for `condition`, evaluated at `now`.
fn condition_expression(condition: Condition, now: i64) -> Option<(String, Attrs)> {
    match condition {
        Condition::None => None,
        Condition::Absent => {
            Some(("attribute_not_exists(pk) OR expires_at <= :now".into(), HashMap::from([(":now".into(), n(now))])))
        }
        Condition::Version(v) => Some((
            "version = :expected AND (attribute_not_exists(expires_at) OR expires_at > :now)".into(),
            HashMap::from([(":expected".into(), n(v as i64)), (":now".into(), n(now))]),
        )),
    }
}

impl DynamoStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoStore { client, table: table.into() }
    }

    /// Creates the table as `template.yaml` declares it (used against emulators and by
    /// `infra/`; on AWS, CloudFormation owns the table).
    pub async fn create_table(&self) -> Result<(), StoreError> {
        let attr = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .expect("complete attribute definition")
        };
        let key = |name: &str, kind| {
            KeySchemaElement::builder().attribute_name(name).key_type(kind).build().expect("complete key element")
        };
        let created = self
            .client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(attr("pk"))
            .attribute_definitions(attr("sk"))
            .attribute_definitions(attr("sort"))
            .key_schema(key("pk", KeyType::Hash))
            .key_schema(key("sk", KeyType::Range))
            .local_secondary_indexes(
                LocalSecondaryIndex::builder()
                    .index_name(SORT_INDEX)
                    .key_schema(key("pk", KeyType::Hash))
                    .key_schema(key("sort", KeyType::Range))
                    .projection(Projection::builder().projection_type(ProjectionType::All).build())
                    .build()
                    .expect("complete index"),
            )
            .stream_specification(
                StreamSpecification::builder()
                    .stream_enabled(true)
                    .stream_view_type(StreamViewType::NewImage)
                    .build()
                    .expect("complete stream spec"),
            )
            .send()
            .await;
        match created {
            Ok(_) => {}
            Err(e) if e.code() == Some("ResourceInUseException") => return Ok(()),
            Err(e) => return Err(store_error(e)),
        }
        self.client
            .update_time_to_live()
            .table_name(&self.table)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .enabled(true)
                    .attribute_name("expires_at")
                    .build()
                    .expect("complete ttl spec"),
            )
            .send()
            .await
            .map_err(store_error)?;
        Ok(())
    }

    async fn conditional_put(&self, item: &Item, condition: Condition) -> Result<(), StoreError> {
        let now = now_epoch();
        let mut request = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(to_attrs(item)?))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        if let Some((expression, values)) = condition_expression(condition, now) {
            request = request.condition_expression(expression).set_expression_attribute_values(Some(values));
        }
        match request.send().await {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => Err(condition_failed(
                match e.into_err() {
                    aws_sdk_dynamodb::operation::put_item::PutItemError::ConditionalCheckFailedException(c) => c.item,
                    _ => None,
                },
                now,
            )),
            Err(e) => Err(store_error(e)),
        }
    }

    /// One TransactWriteItems of `writes`, their puts' versions already set.
    async fn transact(&self, writes: &[Write], now: i64) -> Result<(), StoreError> {
        let mut items = Vec::with_capacity(writes.len());
        for write in writes {
            let condition = condition_expression(write.condition(), now);
            let (expression, values) = condition.unzip();
            let old = ReturnValuesOnConditionCheckFailure::AllOld;
            let built = match write {
                Write::Put(item, _) => TransactWriteItem::builder().put(
                    Put::builder()
                        .table_name(&self.table)
                        .set_item(Some(to_attrs(item)?))
                        .set_condition_expression(expression)
                        .set_expression_attribute_values(values)
                        .return_values_on_condition_check_failure(old)
                        .build()
                        .expect("table and item set"),
                ),
                Write::Delete(key, _) => TransactWriteItem::builder().delete(
                    Delete::builder()
                        .table_name(&self.table)
                        .set_key(Some(key_attrs(key)))
                        .set_condition_expression(expression)
                        .set_expression_attribute_values(values)
                        .return_values_on_condition_check_failure(old)
                        .build()
                        .expect("table and key set"),
                ),
            };
            items.push(built.build());
        }
        match self.client.transact_write_items().set_transact_items(Some(items)).send().await {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(e)) if e.err().is_transaction_canceled_exception() => {
                let reasons = match e.into_err() {
                    aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(
                        c,
                    ) => c.cancellation_reasons.unwrap_or_default(),
                    _ => Vec::new(),
                };
                Err(cancelled(reasons, now))
            }
            Err(e) => Err(store_error(e)),
        }
    }
}

/// The port's error for a cancelled transaction: a failed condition (with the live item of the
/// first write whose condition failed), contention (retryable, as throttling is) or the rest.
fn cancelled(reasons: Vec<CancellationReason>, now: i64) -> StoreError {
    let code = |r: &CancellationReason| r.code.clone().unwrap_or_default();
    if let Some(failed) = reasons.iter().find(|r| code(r) == "ConditionalCheckFailed") {
        return condition_failed(failed.item.clone(), now);
    }
    match reasons.iter().map(code).find(|c| c != "None") {
        Some(c) if c == "TransactionConflict" || c.contains("Throttl") || c.contains("Throughput") => {
            StoreError::Throttled
        }
        other => StoreError::Unavailable(format!("transaction cancelled ({})", other.unwrap_or_default())),
    }
}

#[async_trait]
impl StateStore for DynamoStore {
    async fn get(&self, key: &Key) -> Result<Option<Item>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key_attrs(key)))
            .consistent_read(true)
            .send()
            .await
            .map_err(store_error)?;
        Ok(out.item.map(from_attrs).transpose()?.filter(|i| !i.is_expired(now_epoch())))
    }

    async fn put(&self, mut item: Item, condition: Condition) -> Result<u64, StoreError> {
        // Versions are computed from the condition, so an unconditional put becomes an
        // optimistic read-modify-write (a handful of retries under contention).
        for _ in 0..8 {
            let effective = match condition {
                Condition::None => match self.get(&item.key).await? {
                    Some(current) => Condition::Version(current.version),
                    None => Condition::Absent,
                },
                c => c,
            };
            item.version = effective.next_version().unwrap_or(1);
            match self.conditional_put(&item, effective).await {
                Ok(()) => return Ok(item.version),
                Err(StoreError::ConditionFailed { .. }) if condition == Condition::None => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Unavailable("too much contention on one item".into()))
    }

    async fn delete(&self, key: &Key, condition: Condition) -> Result<(), StoreError> {
        let mut request = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key_attrs(key)))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        let now = now_epoch();
        if let Some((expression, values)) = condition_expression(condition, now) {
            request = request.condition_expression(expression).set_expression_attribute_values(Some(values));
        }
        match request.send().await {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => Err(condition_failed(
                match e.into_err() {
                    aws_sdk_dynamodb::operation::delete_item::DeleteItemError::ConditionalCheckFailedException(c) => {
                        c.item
                    }
                    _ => None,
                },
                now,
            )),
            Err(e) => Err(store_error(e)),
        }
    }

    async fn write_all(&self, mut writes: Vec<Write>) -> Result<Vec<u64>, StoreError> {
        check_batch(&writes)?;
        // Versions come from the conditions, as in `put`: an unconditional put is read first and
        // written on the version it read; a batch that loses such a race is tried again.
        let unconditional: Vec<usize> = writes
            .iter()
            .enumerate()
            .filter(|(_, w)| matches!(w, Write::Put(_, Condition::None)))
            .map(|(i, _)| i)
            .collect();
        for _ in 0..8 {
            for &i in &unconditional {
                let Write::Put(item, condition) = &mut writes[i] else { continue };
                *condition = match self.get(&item.key).await? {
                    Some(current) => Condition::Version(current.version),
                    None => Condition::Absent,
                };
            }
            let versions: Vec<u64> = writes
                .iter_mut()
                .map(|write| match write {
                    Write::Put(item, condition) => {
                        item.version = condition.next_version().unwrap_or(1);
                        item.version
                    }
                    Write::Delete(..) => 0,
                })
                .collect();
            match self.transact(&writes, now_epoch()).await {
                Ok(()) => return Ok(versions),
                // Lost a race on an item read for an unconditional put: read it again.
                Err(StoreError::ConditionFailed { current })
                    if unconditional.iter().any(|&i| current.as_ref().is_some_and(|c| &c.key == writes[i].key())) =>
                {
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Unavailable("too much contention on one item".into()))
    }

    async fn query(&self, query: &Query) -> Result<Page, StoreError> {
        let (index, attribute, prefix) = match &query.index {
            Index::Primary { sk_prefix } => (None, "sk", sk_prefix),
            Index::Sorted { prefix } => (Some(SORT_INDEX), "sort", prefix),
        };
        let start_key = match query.cursor.as_deref() {
            Some(c) => {
                let position: HashMap<String, String> =
                    serde_json::from_value(decode_cursor(c)?).map_err(|_| StoreError::BadCursor)?;
                Some(position.into_iter().map(|(k, v)| (k, AttributeValue::S(v))).collect::<Attrs>())
            }
            None => None,
        };
        let mut values = HashMap::from([(":pk".to_owned(), s(&query.pk))]);
        let mut expression = "pk = :pk".to_owned();
        if !prefix.is_empty() {
            expression.push_str(" AND begins_with(#order, :prefix)");
            values.insert(":prefix".into(), s(prefix));
        }
        let mut request = self
            .client
            .query()
            .table_name(&self.table)
            .set_index_name(index.map(str::to_owned))
            .key_condition_expression(expression)
            .set_expression_attribute_values(Some(values))
            .scan_index_forward(!query.descending)
            .consistent_read(true)
            .limit(query.limit.min(i32::MAX as usize) as i32)
            .set_exclusive_start_key(start_key);
        if !prefix.is_empty() {
            request = request.expression_attribute_names("#order", attribute);
        }
        let out = request.send().await.map_err(store_error)?;
        let now = now_epoch();
        let items = out
            .items
            .unwrap_or_default()
            .into_iter()
            .map(from_attrs)
            .filter(|i| i.as_ref().map_or(true, |i| !i.is_expired(now)))
            .collect::<Result<Vec<_>, _>>()?;
        let cursor = out.last_evaluated_key.map(|key| {
            let position: Map<String, Value> = key
                .into_iter()
                .filter_map(|(k, v)| match v {
                    AttributeValue::S(s) => Some((k, Value::String(s))),
                    _ => None,
                })
                .collect();
            encode_cursor(&Value::Object(position))
        });
        Ok(Page { items, cursor })
    }
}
