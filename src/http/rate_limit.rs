//! Per-client request budgets, counted in the ephemeral store.

use std::{net::IpAddr, time::Duration};

use super::{AppState, error::ApiError};
use crate::ephemeral::RateDecision;

/// Counts a request to an unauthenticated auth endpoint against the client
/// IP's budget. If the counter store is down the request is let through: a
/// Redis outage must not lock every user out of signing in.
pub async fn limit_auth_endpoint(
    state: &AppState,
    endpoint: &str,
    ip: IpAddr,
) -> Result<(), ApiError> {
    let requests = state.config.auth.rate_limit_per_minute;
    let bucket = format!("auth:{endpoint}:{ip}");
    match state
        .ephemeral
        .hit_rate_limit(&bucket, requests, Duration::from_secs(60))
        .await
    {
        Ok(RateDecision::Allowed) => Ok(()),
        Ok(RateDecision::Limited { retry_after }) => Err(ApiError::rate_limited(retry_after)),
        Err(err) => {
            tracing::warn!(error = %err, endpoint, "rate limiter unavailable; allowing request");
            Ok(())
        }
    }
}
