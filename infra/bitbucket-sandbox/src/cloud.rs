//! Bitbucket Cloud: the REST 2.0 routes, their credentials and scopes, Pipelines, and the JSON the
//! API and its webhooks show.

pub(crate) mod auth;
pub(crate) mod pipelines;
pub(crate) mod query;
pub(crate) mod render;
pub(crate) mod routes;
pub(crate) mod scopes;
