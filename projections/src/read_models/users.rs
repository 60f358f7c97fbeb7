//! The `users` read model: one row per registered account with its email, role and state,
//! for sign-in lookups, the admin user list and authorisation checks.
//!
//! Written by [`UsersProjector`] from `User` events, inline (in the transaction that appends
//! them, `crate::inline`) and by its subscription; `version` makes each event count once. Secrets (password hashes, pending
//! tokens) stay in the event store: the commands that check them load the aggregate. A batch
//! is folded per user and written with one insert of the new rows (their later events
//! applied already) and one update of the rows that were there (see `batch`). A role change
//! or disabling is announced on `CREDENTIALS_CHANNEL` for the API's credential cache. The
//! notification preferences are the ones `GET /v1/me` shows; the notification subscription
//! reads them as of each event from the log instead (`crate::preferences`).

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cqrs_es::Aggregate as _;
use framegate_domain::pii::ERASED;
use framegate_domain::{Credits, NotificationPreferences, User, UserEvent, UserId};
use serde::Serialize;
use sqlx::{FromRow, PgConnection, PgPool};
use uuid::Uuid;

use super::batch::{decode_all, expect_rows, SetBased};
use super::versioned::{self, Versioned, VersionedModel, Writer};
use super::{aggregate_uuid, announce_credentials_changed, decode, expect_row, ProjectionError};
use crate::log::{Reads, StoredEvent};
use crate::subscription::{BoxError, EventHandler, HandlerError};

/// The subscription name of the users projector.
pub const SUBSCRIPTION: &str = "read_model.users";

/// A user as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, FromRow)]
pub struct UserRow {
    pub id: Uuid,
    pub email: String,
    pub email_verified: bool,
    /// `user` or `admin`.
    pub role: String,
    pub disabled: bool,
    pub created_at: DateTime<Utc>,
    pub notify_video_completed: bool,
    pub notify_video_failed: bool,
    pub notify_credits_low: bool,
    pub credits_low_threshold: i64,
}

impl UserRow {
    /// The notification preferences the row holds.
    pub fn notification_preferences(&self) -> NotificationPreferences {
        NotificationPreferences {
            video_completed: self.notify_video_completed,
            video_failed: self.notify_video_failed,
            credits_low: self.notify_credits_low,
            credits_low_threshold: Credits::new(self.credits_low_threshold),
        }
    }
}

/// Projects `User` events into `users`.
#[derive(Debug, Clone, Copy, Default)]
pub struct UsersProjector;

#[async_trait]
impl EventHandler for UsersProjector {
    /// Its own aggregate's bodies; nothing personal of metadata.
    fn reads(&self) -> Reads {
        Reads::bodies_of(&[User::TYPE])
    }

    async fn handle(&self, conn: &mut PgConnection, event: &StoredEvent) -> Result<(), BoxError> {
        if event.aggregate_type != User::TYPE {
            return Ok(());
        }
        versioned::apply::<Self>(conn, event, Writer::Projector).await
    }

    async fn handle_batch(
        &self,
        conn: &mut PgConnection,
        events: &[StoredEvent],
    ) -> Result<(), HandlerError> {
        versioned::handle_batch(self, conn, events).await
    }
}

/// Rows carry the sequence of the last event they reflect: the table is also written inline.
impl VersionedModel for UsersProjector {
    const VERSIONS: Versioned = Versioned {
        aggregate_type: User::TYPE,
        table: "users",
        key: "id",
    };

    async fn project_one(conn: &mut PgConnection, event: &StoredEvent) -> Result<(), BoxError> {
        project(conn, event).await?;
        Ok(())
    }
}

#[async_trait]
impl SetBased for UsersProjector {
    const AGGREGATE_TYPE: &'static str = User::TYPE;

    async fn project_set(
        &self,
        conn: &mut PgConnection,
        events: &[StoredEvent],
    ) -> Result<(), BoxError> {
        let mut folds: Vec<UserFold> = Vec::new();
        let mut index: HashMap<Uuid, usize> = HashMap::new();
        for event in decode_all::<UserEvent>(events, User::TYPE)? {
            let (id, at) = (event.id, event.event.recorded_at);
            let slot = *index.entry(id).or_insert_with(|| {
                folds.push(UserFold::new(id));
                folds.len() - 1
            });
            let fold = &mut folds[slot];
            let first = fold.events == 0;
            fold.events += 1;
            match event.body {
                UserEvent::UserRegistered {
                    user_id,
                    email,
                    role,
                    ..
                } => {
                    if user_id.as_uuid() != id {
                        return Err("UserRegistered names another user".into());
                    }
                    // Only a registration before any other event of the user can insert: after
                    // one, the row exists (the insert does nothing) or that event failed.
                    if first {
                        fold.insert = Some((email, role.as_str(), at));
                    }
                }
                UserEvent::EmailVerified {} => fold.touch(at).verified = true,
                UserEvent::RoleChanged { role } => fold.touch(at).role = Some(role.as_str()),
                UserEvent::UserDisabled { .. } => fold.touch(at).disabled = true,
                UserEvent::UserErased { .. } => fold.touch(at).erased = true,
                UserEvent::NotificationPreferencesChanged { preferences } => {
                    fold.touch(at).preferences = Some(preferences);
                }
                UserEvent::EmailVerificationIssued { .. }
                | UserEvent::PasswordChanged { .. }
                | UserEvent::PasswordResetRequested { .. }
                | UserEvent::PasswordResetCompleted { .. }
                | UserEvent::ApiKeyIssued { .. }
                | UserEvent::ApiKeyRevoked { .. } => {
                    fold.touch(at);
                }
            }
        }
        write_folds(conn, &folds).await?;
        let changed: Vec<Uuid> = folds
            .iter()
            .filter(|f| f.role.is_some() || f.disabled || f.erased)
            .map(|f| f.id)
            .collect();
        announce_credentials_changed(conn, &changed).await?;
        Ok(())
    }
}

/// One user's events of a batch: the registration that inserts the row, if it comes first,
/// then the net change of the updates that follow.
struct UserFold {
    id: Uuid,
    events: usize,
    insert: Option<(String, &'static str, DateTime<Utc>)>,
    /// The latest time of an updating event; `None` when there is none.
    updated_at: Option<DateTime<Utc>>,
    verified: bool,
    disabled: bool,
    /// Erased in the batch: the email is blanked and the account disabled.
    erased: bool,
    role: Option<&'static str>,
    /// The last preferences recorded in the batch (each event carries the whole set).
    preferences: Option<NotificationPreferences>,
}

impl UserFold {
    fn new(id: Uuid) -> Self {
        Self {
            id,
            events: 0,
            insert: None,
            updated_at: None,
            verified: false,
            disabled: false,
            erased: false,
            role: None,
            preferences: None,
        }
    }

    /// Records an updating event: each takes `updated_at` to at least its time.
    fn touch(&mut self, at: DateTime<Utc>) -> &mut Self {
        self.updated_at = Some(self.updated_at.map_or(at, |before| before.max(at)));
        self
    }
}

async fn write_folds(conn: &mut PgConnection, folds: &[UserFold]) -> Result<(), ProjectionError> {
    let inserted = insert_new(conn, folds).await?;
    // Rows that were there already (the registration did nothing) take the updates here.
    let updates: Vec<&UserFold> = folds
        .iter()
        .filter(|f| f.updated_at.is_some() && !inserted.contains(&f.id))
        .collect();
    if updates.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = updates.iter().map(|f| f.id).collect();
    let verified: Vec<bool> = updates.iter().map(|f| f.verified).collect();
    let disabled: Vec<bool> = updates.iter().map(|f| f.disabled).collect();
    let erased: Vec<bool> = updates.iter().map(|f| f.erased).collect();
    let roles: Vec<Option<&str>> = updates.iter().map(|f| f.role).collect();
    let ats: Vec<Option<DateTime<Utc>>> = updates.iter().map(|f| f.updated_at).collect();
    let preferences = PreferenceColumns::of(updates.iter().map(|f| f.preferences));
    let result = sqlx::query(
        "UPDATE users u
            SET email_verified = u.email_verified OR c.verified,
                disabled = u.disabled OR c.disabled OR c.erased,
                email = CASE WHEN c.erased THEN $11 ELSE u.email END,
                role = COALESCE(c.role, u.role),
                notify_video_completed = COALESCE(c.completed, u.notify_video_completed),
                notify_video_failed = COALESCE(c.failed, u.notify_video_failed),
                notify_credits_low = COALESCE(c.low, u.notify_credits_low),
                credits_low_threshold = COALESCE(c.threshold, u.credits_low_threshold),
                updated_at = GREATEST(u.updated_at, c.at)
           FROM unnest($1::uuid[], $2::bool[], $3::bool[], $4::text[], $5::timestamptz[],
                       $6::bool[], $7::bool[], $8::bool[], $9::int8[], $10::bool[])
                AS c(id, verified, disabled, role, at, completed, failed, low, threshold, erased)
          WHERE u.id = c.id",
    )
    .bind(&ids)
    .bind(&verified)
    .bind(&disabled)
    .bind(&roles)
    .bind(&ats)
    .bind(&preferences.completed)
    .bind(&preferences.failed)
    .bind(&preferences.low)
    .bind(&preferences.threshold)
    .bind(&erased)
    .bind(ERASED)
    .execute(&mut *conn)
    .await?;
    expect_rows(&result, ids.len(), "users updated by a batch")
}

/// Preferences as columns, `NULL` where a row keeps its own.
struct PreferenceColumns {
    completed: Vec<Option<bool>>,
    failed: Vec<Option<bool>>,
    low: Vec<Option<bool>>,
    threshold: Vec<Option<i64>>,
}

impl PreferenceColumns {
    fn of(preferences: impl Iterator<Item = Option<NotificationPreferences>>) -> Self {
        let mut columns = Self {
            completed: Vec::new(),
            failed: Vec::new(),
            low: Vec::new(),
            threshold: Vec::new(),
        };
        for p in preferences {
            columns.completed.push(p.map(|p| p.video_completed));
            columns.failed.push(p.map(|p| p.video_failed));
            columns.low.push(p.map(|p| p.credits_low));
            columns
                .threshold
                .push(p.map(|p| p.credits_low_threshold.value()));
        }
        columns
    }
}

/// Inserts the users registered in the batch with their updates applied already (a new row
/// starts from the registration, so its end state is known); returns the ids inserted. Those
/// already there are left alone, as a registration leaves them.
async fn insert_new(
    conn: &mut PgConnection,
    folds: &[UserFold],
) -> Result<HashSet<Uuid>, ProjectionError> {
    let mut rows = NewRows::default();
    for fold in folds {
        let Some((email, role, at)) = &fold.insert else {
            continue;
        };
        rows.ids.push(fold.id);
        rows.emails
            .push(if fold.erased { ERASED } else { email.as_str() });
        rows.verified.push(fold.verified);
        rows.roles.push(fold.role.unwrap_or(*role));
        rows.disabled.push(fold.disabled || fold.erased);
        rows.created_at.push(*at);
        rows.updated_at
            .push(fold.updated_at.map_or(*at, |updated| updated.max(*at)));
        rows.preferences.push(fold.preferences.unwrap_or_default());
    }
    if rows.ids.is_empty() {
        return Ok(HashSet::new());
    }
    let preferences = PreferenceColumns::of(rows.preferences.iter().copied().map(Some));
    let inserted: Vec<Uuid> = sqlx::query_scalar(
        "INSERT INTO users (id, email, email_verified, role, disabled, created_at, updated_at,
                            notify_video_completed, notify_video_failed, notify_credits_low,
                            credits_low_threshold)
         SELECT * FROM unnest($1::uuid[], $2::text[], $3::bool[], $4::text[], $5::bool[],
                              $6::timestamptz[], $7::timestamptz[], $8::bool[], $9::bool[],
                              $10::bool[], $11::int8[])
         ON CONFLICT (id) DO NOTHING
         RETURNING id",
    )
    .bind(&rows.ids)
    .bind(&rows.emails)
    .bind(&rows.verified)
    .bind(&rows.roles)
    .bind(&rows.disabled)
    .bind(&rows.created_at)
    .bind(&rows.updated_at)
    .bind(&preferences.completed)
    .bind(&preferences.failed)
    .bind(&preferences.low)
    .bind(&preferences.threshold)
    .fetch_all(&mut *conn)
    .await?;
    Ok(inserted.into_iter().collect())
}

/// New users' rows as columns.
#[derive(Default)]
struct NewRows<'f> {
    ids: Vec<Uuid>,
    emails: Vec<&'f str>,
    verified: Vec<bool>,
    roles: Vec<&'static str>,
    disabled: Vec<bool>,
    created_at: Vec<DateTime<Utc>>,
    updated_at: Vec<DateTime<Utc>>,
    preferences: Vec<NotificationPreferences>,
}

async fn project(conn: &mut PgConnection, event: &StoredEvent) -> Result<(), ProjectionError> {
    let id = aggregate_uuid(event)?;
    let at = event.recorded_at;
    let result = match decode::<UserEvent>(event)? {
        UserEvent::UserRegistered {
            user_id,
            email,
            role,
            ..
        } => {
            // Later events update the row by aggregate id, so the two must agree.
            if user_id.as_uuid() != id {
                return Err(ProjectionError::Inconsistent(format!(
                    "UserRegistered names user {user_id} in aggregate {id}"
                )));
            }
            // A replay finds the row already there and leaves it alone.
            sqlx::query(
                "INSERT INTO users (id, email, role, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $4)
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(id)
            .bind(email)
            .bind(role.as_str())
            .bind(at)
            .execute(&mut *conn)
            .await?;
            return Ok(());
        }
        UserEvent::EmailVerified {} => {
            sqlx::query(
                "UPDATE users SET email_verified = true, updated_at = GREATEST(updated_at, $2)
                  WHERE id = $1",
            )
            .bind(id)
            .bind(at)
            .execute(&mut *conn)
            .await?
        }
        UserEvent::RoleChanged { role } => {
            let result = sqlx::query(
                "UPDATE users SET role = $3, updated_at = GREATEST(updated_at, $2)
                      WHERE id = $1",
            )
            .bind(id)
            .bind(at)
            .bind(role.as_str())
            .execute(&mut *conn)
            .await?;
            announce_credentials_changed(conn, &[id]).await?;
            result
        }
        UserEvent::UserDisabled { .. } => {
            let result = sqlx::query(
                "UPDATE users SET disabled = true, updated_at = GREATEST(updated_at, $2)
                      WHERE id = $1",
            )
            .bind(id)
            .bind(at)
            .execute(&mut *conn)
            .await?;
            announce_credentials_changed(conn, &[id]).await?;
            result
        }
        UserEvent::UserErased { .. } => {
            let result = sqlx::query(
                "UPDATE users SET email = $3, disabled = true,
                                  updated_at = GREATEST(updated_at, $2)
                  WHERE id = $1",
            )
            .bind(id)
            .bind(at)
            .bind(ERASED)
            .execute(&mut *conn)
            .await?;
            announce_credentials_changed(conn, &[id]).await?;
            result
        }
        UserEvent::NotificationPreferencesChanged { preferences } => {
            sqlx::query(
                "UPDATE users SET notify_video_completed = $3, notify_video_failed = $4,
                                  notify_credits_low = $5, credits_low_threshold = $6,
                                  updated_at = GREATEST(updated_at, $2)
                  WHERE id = $1",
            )
            .bind(id)
            .bind(at)
            .bind(preferences.video_completed)
            .bind(preferences.video_failed)
            .bind(preferences.credits_low)
            .bind(preferences.credits_low_threshold.value())
            .execute(&mut *conn)
            .await?
        }
        // Nothing shown here changes, but the account did: keep updated_at honest.
        UserEvent::EmailVerificationIssued { .. }
        | UserEvent::PasswordChanged { .. }
        | UserEvent::PasswordResetRequested { .. }
        | UserEvent::PasswordResetCompleted { .. }
        | UserEvent::ApiKeyIssued { .. }
        | UserEvent::ApiKeyRevoked { .. } => {
            sqlx::query("UPDATE users SET updated_at = GREATEST(updated_at, $2) WHERE id = $1")
                .bind(id)
                .bind(at)
                .execute(&mut *conn)
                .await?
        }
    };
    expect_row(&result, || {
        format!("{} for user {id}, who is not in users", event.event_type)
    })
}

const COLUMNS: &str = "id, email, email_verified, role, disabled, created_at,
                       notify_video_completed, notify_video_failed, notify_credits_low,
                       credits_low_threshold";

/// The user with this id, if the projection has seen them register.
pub async fn get<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    id: UserId,
) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM users WHERE id = $1"))
        .bind(id.as_uuid())
        .fetch_optional(executor)
        .await
}

/// The user with this email; pass the address normalised (`framegate_domain::normalize_email`).
pub async fn find_by_email(
    pool: &PgPool,
    normalized_email: &str,
) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM users WHERE email = $1"))
        .bind(normalized_email)
        .fetch_optional(pool)
        .await
}

/// Up to `limit` users in registration order, after the cursor `(created_at, id)` of the last
/// row of the previous page.
pub async fn list(
    pool: &PgPool,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<UserRow>, sqlx::Error> {
    match after {
        Some((created_at, id)) => {
            sqlx::query_as(&format!(
                "SELECT {COLUMNS} FROM users WHERE (created_at, id) > ($1, $2)
                  ORDER BY created_at, id LIMIT $3"
            ))
            .bind(created_at)
            .bind(id)
            .bind(limit)
            .fetch_all(pool)
            .await
        }
        None => {
            sqlx::query_as(&format!(
                "SELECT {COLUMNS} FROM users ORDER BY created_at, id LIMIT $1"
            ))
            .bind(limit)
            .fetch_all(pool)
            .await
        }
    }
}
