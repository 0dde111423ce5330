//! Paging, shared by every list endpoint: a page size, and where the page
//! starts, either after a cursor (keyset paging: page 1,000 costs what page
//! 1 costs) or, for clients written against the original API, after
//! skipping `offset` items (bounded, since a deep offset reads every row
//! it skips).

use chrono::DateTime;
use schemars::JsonSchema;
use serde::Deserialize;
use uuid::Uuid;

use super::error::ApiError;
pub use crate::db::Cursor;

const DEFAULT_PAGE_SIZE: i64 = 20;
const MAX_PAGE_SIZE: i64 = 100;
/// Past this, `offset` is refused in favour of the cursor.
pub const MAX_OFFSET: i64 = 10_000;

#[derive(Deserialize, JsonSchema)]
pub struct PageParams {
    /// Page size, 1–100 (default 20).
    #[schemars(range(min = 1, max = 100))]
    pub limit: Option<i64>,
    /// Items to skip (default 0, at most 10,000; use `cursor` to go further).
    #[schemars(range(min = 0, max = 10_000))]
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
        if offset > MAX_OFFSET {
            return Err(ApiError::unprocessable(format!(
                "offset must be at most {MAX_OFFSET}; page further with `cursor`"
            )));
        }
        Ok((limit, offset))
    }
}

/// The shape of a cursor on the wire, for the OpenAPI document: a client
/// treats it as opaque, but a fuzzer (or a reader) learns what is
/// well-formed.
pub const CURSOR_PATTERN: &str = r"^[0-9]{1,16}\.[0-9a-f]{32}$";

/// A [`Cursor`] on the wire: opaque text (`<microseconds>.<id>`), handed
/// out as `next_cursor`.
pub fn encode_cursor(cursor: &Cursor) -> String {
    format!(
        "{}.{}",
        cursor.created_at.timestamp_micros(),
        cursor.id.simple()
    )
}

/// Parses a cursor a client sent back; a malformed one is 400.
pub fn decode_cursor(raw: &str) -> Result<Cursor, ApiError> {
    {
        let malformed =
            || ApiError::bad_request("invalid_cursor", "cursor: not a cursor this API handed out");
        let (micros, id) = raw.split_once('.').ok_or_else(malformed)?;
        let created_at = micros
            .parse::<i64>()
            .ok()
            .and_then(DateTime::from_timestamp_micros)
            .ok_or_else(malformed)?;
        let id = Uuid::try_parse(id).map_err(|_| malformed())?;
        Ok(Cursor { created_at, id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let cursor = Cursor {
            created_at: DateTime::from_timestamp_micros(1_764_000_000_123_456).expect("time"),
            id: Uuid::from_u128(42),
        };
        assert_eq!(
            decode_cursor(&encode_cursor(&cursor)).expect("decodes"),
            cursor
        );
        for garbage in [
            "",
            "x",
            "1.",
            ".00000000000000000000000000000042",
            "1.zz",
            "99999999999999999999.1",
        ] {
            assert!(decode_cursor(garbage).is_err(), "{garbage:?}");
        }
    }

    #[test]
    fn offsets_are_bounded() {
        let params = |offset| PageParams {
            limit: Some(20),
            offset: Some(offset),
        };
        assert!(params(MAX_OFFSET).resolve().is_ok());
        assert!(params(MAX_OFFSET + 1).resolve().is_err());
        assert!(params(-1).resolve().is_err());
    }
}
