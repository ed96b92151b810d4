//! The domain-event publisher on AWS: each outbox event onto the stack's EventBridge bus, its type
//! as the `detail-type`, the event itself as the `detail`.

use async_trait::async_trait;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use domain::outbox::{DomainEvent, PublishError, Publisher, SOURCE};

pub struct EventBridgePublisher {
    client: aws_sdk_eventbridge::Client,
    bus: String,
}

impl EventBridgePublisher {
    pub fn new(client: aws_sdk_eventbridge::Client, bus: impl Into<String>) -> Self {
        EventBridgePublisher { client, bus: bus.into() }
    }
}

#[async_trait]
impl Publisher for EventBridgePublisher {
    async fn publish(&self, event: &DomainEvent) -> Result<(), PublishError> {
        let detail = serde_json::to_string(event).map_err(|e| PublishError(e.to_string()))?;
        let entry = PutEventsRequestEntry::builder()
            .event_bus_name(&self.bus)
            .source(SOURCE)
            .detail_type(event.kind.as_str())
            .detail(detail)
            .time(aws_sdk_eventbridge::primitives::DateTime::from_millis(event.occurred_at.timestamp_millis()))
            .build();
        let answer = self
            .client
            .put_events()
            .entries(entry)
            .send()
            .await
            .map_err(|e| PublishError(aws_sdk_eventbridge::error::DisplayErrorContext(e).to_string()))?;
        // PutEvents answers 200 with per-entry failures.
        if answer.failed_entry_count() > 0 {
            let why = answer.entries().iter().filter_map(|e| e.error_message()).collect::<Vec<_>>().join("; ");
            return Err(PublishError(format!("EventBridge refused the event: {why}")));
        }
        Ok(())
    }
}
