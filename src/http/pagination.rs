//! Limit/offset paging, shared by every list endpoint.

use schemars::JsonSchema;
use serde::Deserialize;

use super::error::ApiError;

const DEFAULT_PAGE_SIZE: i64 = 20;
const MAX_PAGE_SIZE: i64 = 100;

#[derive(Deserialize, JsonSchema)]
pub struct PageParams {
    /// Page size, 1–100 (default 20).
    #[schemars(range(min = 1, max = 100))]
    pub limit: Option<i64>,
    /// Items to skip (default 0).
    #[schemars(range(min = 0))]
    pub offset: Option<i64>,
}

impl PageParams {
    pub fn resolve(&self) -> Result<(i64, i64), ApiError> {
        let limit = self.limit.unwrap_or(DEFAULT_PAGE_SIZE);
        let offset = self.offset.unwrap_or(0);
        if !(1..=MAX_PAGE_SIZE).contains(&limit) {
            return Err(ApiError::unprocessable(format!(
                "limit must be between 1 and {MAX_PAGE_SIZE}"
            )));
        }
        if offset < 0 {
            return Err(ApiError::unprocessable("offset must not be negative"));
        }
        Ok((limit, offset))
    }
}
