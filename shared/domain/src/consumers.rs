//! The delivery-consumer interface: what acts on recorded deliveries — pipelines (automatic
//! runs) and environments — implements [`DeliveryConsumer`]; the Lambda stream handler and the
//! local worker hand each delivery to a list of them through [`consume`], and the scheduled runs
//! [`drain`] what was parked.

use async_trait::async_trait;
use serde::Serialize;
use serde_json::Value;

use crate::context::IntegrationContext;
use crate::delivery::Delivery;
use crate::error::Error;
use crate::integration::Integration;
use crate::parked;

/// Whether a consumer acts on an integration's deliveries now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    Act,
    /// It never does (pipelines on Data Center, environments with `fetch_branches` off).
    Never,
    /// Not now (the integration is disconnected, or its credential refused): the delivery is
    /// parked with this reason and acted on once it can ([`drain`]).
    Later(String),
}

#[async_trait]
pub trait DeliveryConsumer: Send + Sync {
    /// The consumer's name: parked deliveries are kept under it.
    fn name(&self) -> &'static str;
    fn context(&self) -> &IntegrationContext;
    fn readiness(&self, integration: &Integration) -> Readiness;
    /// Acts on one delivery of an integration it is ready for; what it did, for logs. Safe to
    /// call more than once for the same delivery.
    async fn act(&self, integration: &Integration, delivery: &Delivery) -> Result<Value, Error>;
}

/// What became of a delivery at one consumer.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Acted(Value),
    /// Nothing to do: the integration is gone, or the consumer never acts on it.
    Skipped,
    Parked(String),
}

/// Hands `delivery` to `consumer`, parking it when the integration cannot act now.
pub async fn consume(consumer: &dyn DeliveryConsumer, delivery: &Delivery) -> Result<Outcome, Error> {
    let ctx = consumer.context();
    let Some(integration) = ctx.find(&delivery.integration_id).await? else { return Ok(Outcome::Skipped) };
    let integration = integration.record;
    match consumer.readiness(&integration) {
        Readiness::Never => Ok(Outcome::Skipped),
        Readiness::Later(reason) => {
            parked::park(ctx.store.as_ref(), consumer.name(), delivery, &reason).await?;
            Ok(Outcome::Parked(reason))
        }
        Readiness::Act => Ok(Outcome::Acted(consumer.act(&integration, delivery).await?)),
    }
}

/// Works through `consumer`'s parked deliveries of an integration that it can act on now,
/// oldest first, removing each one handled; stops at the first that is parked again. How many
/// were handled.
pub async fn drain(consumer: &dyn DeliveryConsumer, integration: &Integration) -> Result<usize, Error> {
    if consumer.readiness(integration) != Readiness::Act {
        return Ok(0);
    }
    let store = consumer.context().store.as_ref();
    let mut done = 0;
    for (waiting, version) in parked::waiting(store, &integration.id, consumer.name()).await? {
        if let Outcome::Parked(_) = consume(consumer, &waiting.delivery).await? {
            break;
        }
        parked::handled(store, &waiting, version).await?;
        done += 1;
    }
    Ok(done)
}
