//! The status poll: Bitbucket's runs newest first into the builds view. Paging stops at the first
//! page holding a run already stored as final, and runs still unfinished in the store are read
//! one by one — so once nothing changes, a poll is one request per integration.

use std::collections::HashSet;

use serde::Serialize;

use super::Pipelines;
use crate::bitbucket::{BitbucketError, NO_PIPELINES};
use crate::consumers;
use crate::error::Error;
use crate::integration::{Integration, IntegrationStatus};
use crate::webhook::Flavor;

const PAGE_LEN: u32 = 25;
const MAX_PAGES: u32 = 8;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PollReport {
    pub integration: String,
    /// Runs seen for the first time or whose state changed.
    pub updated: usize,
    pub pages: u32,
    /// Unfinished runs older than the pages read, fetched one by one.
    pub fetched_individually: usize,
    /// Parked deliveries acted on (see [`crate::parked`]).
    pub parked_handled: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Pipelines {
    /// `POST /integrations/{id}/pipelines/refresh`.
    pub async fn refresh(&self, id: &str) -> Result<PollReport, Error> {
        let integration = self.ctx.get(id).await?.record;
        if !pollable(&integration) {
            let status = integration.status;
            if integration.flavor() == Flavor::DataCenter {
                return Err(BitbucketError::Unsupported(NO_PIPELINES.into()).into());
            }
            return Err(Error::WrongState { id: id.to_owned(), status, action: "refresh pipelines" });
        }
        self.poll(&integration).await
    }

    /// The scheduled poll: every Cloud integration that is active (or in error, to notice a
    /// fixed credential); archived and disconnected ones are skipped. One failing integration
    /// does not stop the others.
    pub async fn poll_all(&self) -> Result<Vec<PollReport>, Error> {
        let mut reports = Vec::new();
        for integration in self.ctx.list().await? {
            if !pollable(&integration) {
                continue;
            }
            let report = match self.drain_then_poll(&integration).await {
                Ok(report) => report,
                Err(e) => {
                    PollReport { integration: integration.id.clone(), error: Some(e.to_string()), ..Default::default() }
                }
            };
            reports.push(report);
        }
        Ok(reports)
    }

    /// One integration's scheduled poll (one message of the fanned-out schedule): nothing for
    /// one that is gone or not pollable any more.
    pub async fn poll_one(&self, id: &str) -> Result<Option<PollReport>, Error> {
        let Some(integration) = self.ctx.find(id).await? else { return Ok(None) };
        if !pollable(&integration.record) {
            return Ok(None);
        }
        self.drain_then_poll(&integration.record).await.map(Some)
    }

    /// Whether the scheduled poll applies to an integration.
    pub fn pollable(integration: &Integration) -> bool {
        pollable(integration)
    }

    /// An active integration first gets the runs of deliveries parked while it could not act.
    async fn drain_then_poll(&self, integration: &Integration) -> Result<PollReport, Error> {
        let drained = consumers::drain(self, integration).await?;
        Ok(PollReport { parked_handled: drained, ..self.poll(integration).await? })
    }

    async fn poll(&self, integration: &Integration) -> Result<PollReport, Error> {
        let id = &integration.id;
        let client = self.client(integration).await?;
        let mut report = PollReport { integration: id.clone(), ..Default::default() };
        let mut seen = HashSet::new();
        for page in 1..=MAX_PAGES {
            let runs = match client.list_pipelines(page, PAGE_LEN).await {
                Ok(runs) => runs,
                Err(e) => return Err(self.noted(id, e).await),
            };
            report.pages = page;
            let mut reached_known_final = false;
            for fresh in &runs {
                seen.insert(fresh.uuid.clone());
                let known = self.stored(id, &fresh.uuid).await?.map(|(run, _)| run);
                if known.as_ref().is_some_and(|k| k.is_final() && k.tests_fetched && !k.differs_from(fresh)) {
                    reached_known_final = true;
                    continue;
                }
                self.record(integration, client.as_ref(), fresh, "bitbucket").await?;
                report.updated += 1;
            }
            if reached_known_final || runs.len() < PAGE_LEN as usize {
                break;
            }
        }
        for open in self.open_runs(id).await? {
            if seen.contains(&open.uuid) {
                continue;
            }
            let fresh = match client.get_pipeline(&open.uuid).await {
                Ok(fresh) => fresh,
                Err(e) => return Err(self.noted(id, e).await),
            };
            report.fetched_individually += 1;
            let before = self.stored(id, &open.uuid).await?.map(|(run, _)| run);
            let after = self.record(integration, client.as_ref(), &fresh, "bitbucket").await?;
            if before.as_ref() != Some(&after) {
                report.updated += 1;
            }
        }
        Ok(report)
    }
}

fn pollable(integration: &Integration) -> bool {
    integration.flavor() == Flavor::Cloud
        && matches!(integration.status, IntegrationStatus::Active | IntegrationStatus::Error)
}
