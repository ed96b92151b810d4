//! Bitbucket Data Center: the REST routes (`/rest/...`) and the same repository as Data Center shows
//! it, with its own hooks and event payloads.

pub(crate) mod auth;
pub(crate) mod routes;
pub(crate) mod state;
