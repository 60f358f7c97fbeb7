//! HTTP handlers, one file per group of endpoints.

pub mod admin;
pub mod api_keys;
pub mod audit;
pub mod auth;
pub mod billing;
pub mod blobs;
pub mod credits;
pub mod health;
pub mod images;
pub mod videos;
pub mod webhooks;

use framegate_commands::{Actor, CommandMetadata};
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::Principal;

/// Metadata for a command issued by `principal` (or the platform) on this request.
pub fn metadata(
    principal: Option<&Principal>,
    ip: std::net::IpAddr,
    agent: Option<String>,
) -> CommandMetadata {
    let actor = principal.map_or(Actor::System, |p| Actor::User(p.user_id));
    CommandMetadata::new_request(actor).with_client(Some(ip.to_string()), agent)
}

/// The query of every cursor-paginated list.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// From a previous page's `next_cursor`.
    pub cursor: Option<String>,
    /// 1 to 100, default 20.
    pub limit: Option<i64>,
}

/// A page of results with an opaque cursor for the next one.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// Builds a page from up to `limit + 1` rows fetched in page order: the extra row only
    /// tells that another page exists, and the last row kept names the cursor.
    pub fn from_rows<R>(
        mut rows: Vec<R>,
        limit: i64,
        cursor: impl Fn(&R) -> String,
        item: impl FnMut(R) -> T,
    ) -> Self {
        let next_cursor = if rows.len() as i64 > limit {
            rows.truncate(limit as usize);
            rows.last().map(cursor)
        } else {
            None
        };
        Page {
            items: rows.into_iter().map(item).collect(),
            next_cursor,
        }
    }
}

/// The cursor of listings ordered by (created_at, id): `<micros>_<uuid>`.
pub fn time_cursor(created_at: chrono::DateTime<chrono::Utc>, id: uuid::Uuid) -> String {
    format!("{}_{}", created_at.timestamp_micros(), id)
}

/// The position a [`time_cursor`] names; `invalid_cursor` for anything else.
pub fn decode_cursor(
    cursor: &str,
) -> Result<(chrono::DateTime<chrono::Utc>, uuid::Uuid), crate::error::ApiError> {
    let invalid =
        || crate::error::ApiError::field("cursor", "invalid_cursor", "this cursor is not valid");
    let (micros, id) = cursor.split_once('_').ok_or_else(invalid)?;
    let micros: i64 = micros.parse().map_err(|_| invalid())?;
    let at = chrono::DateTime::from_timestamp_micros(micros).ok_or_else(invalid)?;
    Ok((at, id.parse().map_err(|_| invalid())?))
}

/// A cursor that is one value (a log position, an id): `invalid_cursor` unless it parses.
pub fn value_cursor<T: std::str::FromStr>(
    cursor: Option<&str>,
) -> Result<Option<T>, crate::error::ApiError> {
    cursor
        .map(|cursor| {
            cursor.parse::<T>().map_err(|_| {
                crate::error::ApiError::field(
                    "cursor",
                    "invalid_cursor",
                    "this cursor is not valid",
                )
            })
        })
        .transpose()
}

/// Page size: 1..=100, default 20.
pub fn page_limit(limit: Option<i64>) -> Result<i64, crate::error::ApiError> {
    match limit {
        None => Ok(20),
        Some(n) if (1..=100).contains(&n) => Ok(n),
        Some(_) => Err(crate::error::ApiError::field(
            "limit",
            "out_of_range",
            "limit must be between 1 and 100",
        )),
    }
}

/// The most characters a free-text reason (a cancellation's, an admin's grant or disable)
/// may have: it is stored in an event forever and published to Kafka.
pub const MAX_REASON_CHARS: usize = 500;

/// Refuses a reason longer than [`MAX_REASON_CHARS`] with a 422 naming `field`.
pub fn check_reason(field: &'static str, reason: &str) -> Result<(), crate::error::ApiError> {
    if reason.chars().count() > MAX_REASON_CHARS {
        return Err(crate::error::ApiError::field(
            field,
            "too_long",
            format!("at most {MAX_REASON_CHARS} characters"),
        ));
    }
    Ok(())
}
