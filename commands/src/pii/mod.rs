//! Crypto-shredding: personal fields of events are stored encrypted under their user's data
//! key, and erasing a user destroys the key (docs/adr/0043-crypto-shredding.md).
//!
//! Two calls carry it, both below the domain types: [`Pii::seal`] on the one append path
//! (`unit::insert`) and [`Pii::open`] wherever stored rows are read back (the ordered log,
//! aggregate loading, the audit view), right before `versions::decode`. Which fields are
//! personal, and whose, is `framegate_domain::pii`; the keys are [`keys`] and [`keyring`].
//! A destroyed key opens to `[erased]` fields, never to an error.

use std::fmt::Write as _;
use std::sync::{Arc, OnceLock, RwLock};

use framegate_domain::pii::{self as fields, Sealed, ENVELOPE, METADATA_FIELDS};
use serde_json::{Map, Value};
use sqlx::{PgConnection, PgPool};

pub mod crypto;
pub mod in_place;
pub mod keyring;
pub mod keys;
mod open;
mod rows;

pub use in_place::SealReport;
pub use keyring::Keyring;
pub use keys::{DataKeys, KeyState};
pub use rows::{open_serialized, open_stored, open_stored_as, seal_serialized};

use crypto::SecretKey;

/// Why personal data could not be sealed or opened: storage, or a configuration that lacks
/// the master key a data key was wrapped with (never a destroyed key: that reads as erased).
#[derive(Debug, thiserror::Error)]
pub enum PiiError {
    #[error("data keys: {0}")]
    Database(#[from] sqlx::Error),
    #[error("a data key is wrapped by master key version {0}, which FRAMEGATE_MASTER_KEYS lacks")]
    UnknownMasterKey(i32),
    #[error("the data key of user {0} does not unwrap under its master key")]
    Unwrap(String),
    #[error(
        "{0} registrations of users not erased have no email claim: the plaintext email index \
         still guards their uniqueness, so rows are not sealed in place"
    )]
    Unclaimed(i64),
    /// A write would record new personal data of a user erased already (a request that was
    /// authenticated before the erasure and reached the store after it): refused, so nothing
    /// new is kept about them and no work is done for them.
    #[error("user {0} was erased: nothing new is recorded about them")]
    Erased(String),
}

/// What [`Pii::seal`] does with the personal data of a user erased already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForErased {
    /// Refuses the write ([`PiiError::Erased`]) when the data is in an event's body or comes
    /// from the erased user's own request: new events (the append path).
    Refuse,
    /// Writes `[erased]` in its place: rows stored before the erasure, sealed in place.
    Erase,
}

/// The keyring and the data key cache of this process.
pub struct Pii {
    pub keyring: Keyring,
    pub keys: DataKeys,
}

static INSTALLED: RwLock<Option<Arc<Pii>>> = RwLock::new(None);

/// Makes `keyring` the one this process seals and opens with (at start-up, from
/// `Keyring::from_lookup`).
pub fn install(keyring: Keyring) {
    let pii = Arc::new(Pii {
        keyring,
        keys: DataKeys::default(),
    });
    *INSTALLED.write().unwrap_or_else(|p| p.into_inner()) = Some(pii);
}

/// The installed keyring, or the development one when none was installed (tests, tools).
pub fn current() -> Arc<Pii> {
    static DEVELOPMENT: OnceLock<Arc<Pii>> = OnceLock::new();
    if let Some(pii) = INSTALLED.read().unwrap_or_else(|p| p.into_inner()).as_ref() {
        return Arc::clone(pii);
    }
    Arc::clone(DEVELOPMENT.get_or_init(|| {
        Arc::new(Pii {
            keyring: Keyring::development(),
            keys: DataKeys::default(),
        })
    }))
}

/// Which personal data a reader of stored rows has opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opening {
    /// Every envelope, in bodies and in metadata (aggregates, the audit view, the Kafka relay,
    /// process managers).
    Everything,
    /// Event bodies only: the personal entries of metadata (client IP, user agent, or their
    /// envelope) are removed unread. For readers that never look at them, such as the read
    /// models: an envelope not opened costs no decryption.
    Bodies,
}

/// The parts of one stored event that crypto-shredding reads and edits.
pub struct EventParts<'e> {
    pub aggregate_type: &'e str,
    pub aggregate_id: &'e str,
    pub sequence: i64,
    pub event_type: &'e str,
    pub payload: &'e mut Value,
    pub metadata: &'e mut Value,
}

impl EventParts<'_> {
    /// The associated data that binds a sealed part (`payload` or `metadata`) to this row.
    fn aad(&self, part: &str) -> String {
        let mut aad = String::new();
        self.write_aad(&mut aad, part);
        aad
    }

    /// [`EventParts::aad`] into `aad` (cleared first).
    fn write_aad(&self, aad: &mut String, part: &str) {
        aad.clear();
        let _ = write!(
            aad,
            "{}/{}/{}/{}/{part}",
            self.aggregate_type, self.aggregate_id, self.sequence, self.event_type
        );
    }

    fn subject(&self) -> Option<&str> {
        fields::subject(
            self.aggregate_type,
            self.aggregate_id,
            self.event_type,
            self.payload,
        )
    }
}

/// An email address claimed by a registration: its lookup hash and the user.
pub struct EmailClaim {
    pub email_hash: Vec<u8>,
    pub user_id: String,
}

impl Pii {
    /// Replaces the personal fields of `events` (body and metadata) by sealed envelopes under
    /// their users' keys (`[erased]` for an erased user), and returns the email claims of the
    /// registrations among them, to be inserted with the events. `erased` says what becomes
    /// of an erased user's data.
    pub async fn seal(
        &self,
        conn: &mut PgConnection,
        events: &mut [EventParts<'_>],
        erased: ForErased,
    ) -> Result<Vec<EmailClaim>, PiiError> {
        let mut claims = Vec::new();
        for event in events.iter_mut() {
            let subject = event.subject().map(str::to_owned);
            let event_type = event.event_type;
            if let (Some(user), Some(body)) = (&subject, event.payload.get_mut(event_type)) {
                if event_type == "UserRegistered" {
                    if let Some(email) = body.get("email").and_then(Value::as_str) {
                        claims.push(EmailClaim {
                            email_hash: self.keyring.email_hash(email),
                            user_id: user.clone(),
                        });
                    }
                }
            }
            let aad = event.aad("payload");
            if let (Some(user), Some(body)) = (&subject, event.payload.get_mut(event_type)) {
                let personal = fields::personal_fields(event_type);
                self.seal_part(conn, body, personal, user, &aad, erased)
                    .await?;
            }
            let aad = event.aad("metadata");
            if let Some(user) =
                fields::metadata_subject(event.metadata, subject.as_deref()).map(str::to_owned)
            {
                // Only an erased user's own request is refused; the address of a caller that
                // acts for the system (a payment provider's webhook about the user's account)
                // is written `[erased]` as the subject's.
                let acting = event
                    .metadata
                    .get("actor")
                    .and_then(Value::as_str)
                    .is_some_and(|actor| actor.strip_prefix("user:") == Some(user.as_str()));
                let erased = if acting { erased } else { ForErased::Erase };
                self.seal_part(conn, event.metadata, METADATA_FIELDS, &user, &aad, erased)
                    .await?;
            }
        }
        Ok(claims)
    }

    async fn seal_part(
        &self,
        conn: &mut PgConnection,
        part: &mut Value,
        personal: &[&str],
        user: &str,
        aad: &str,
        erased: ForErased,
    ) -> Result<(), PiiError> {
        let Some(taken) = fields::take(part, personal) else {
            return Ok(());
        };
        let key = match self.keys.for_write(&self.keyring, conn, user).await? {
            KeyState::Live(key) => Some(key),
            KeyState::Erased if erased == ForErased::Refuse => {
                return Err(PiiError::Erased(user.to_owned()))
            }
            KeyState::Erased | KeyState::Absent => None,
        };
        seal_taken(part, taken, user, key.as_deref(), aad);
        Ok(())
    }

    /// Opens the envelopes of `events` in place: the personal fields come back, or read
    /// `[erased]` when their user's key is gone. Plaintext rows written before encryption
    /// read `[erased]` too once their user is erased. One query for the whole batch, then
    /// [`open::open_batch`]. `opening` says which parts: [`Opening::Bodies`] removes the
    /// personal entries of metadata instead of opening them.
    pub async fn open<'c>(
        &self,
        db: impl sqlx::PgExecutor<'c>,
        events: &mut [EventParts<'_>],
        opening: Opening,
    ) -> Result<(), PiiError> {
        let users = open::batch_users(events, opening);
        // No user to look up: nothing sealed to open, but metadata may still be withheld.
        let keys = if users.is_empty() {
            std::collections::HashMap::new()
        } else {
            self.keys.for_read(&self.keyring, db, &users).await?
        };
        open::open_batch(&keys, events, opening);
        Ok(())
    }

    /// The user holding the claim on `normalized_email`, if any.
    pub async fn email_owner(
        &self,
        pool: &PgPool,
        normalized_email: &str,
    ) -> Result<Option<String>, sqlx::Error> {
        sqlx::query_scalar("SELECT user_id FROM email_claims WHERE email_hash = $1")
            .bind(self.keyring.email_hash(normalized_email))
            .fetch_optional(pool)
            .await
    }

    /// Claims the addresses of registrations written before encryption (their plaintext
    /// is still indexed by `events_user_email_key`), so that they stay taken. Idempotent; run
    /// after migrations. Once `framegate events seal` dropped that index (after making these
    /// claims) there is nothing left to claim, and nothing is read.
    pub async fn claim_plaintext_emails(&self, pool: &PgPool) -> Result<u64, sqlx::Error> {
        if !in_place::plaintext_index_exists(pool).await? {
            return Ok(0);
        }
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT e.aggregate_id, e.payload -> 'UserRegistered' ->> 'email' FROM events e
              WHERE e.aggregate_type = 'User' AND e.event_type = 'UserRegistered'
                AND e.payload -> 'UserRegistered' ->> 'email' IS NOT NULL
                AND NOT EXISTS (SELECT 1 FROM data_keys d
                                 WHERE d.user_id = e.aggregate_id AND d.erased_at IS NOT NULL)",
        )
        .fetch_all(pool)
        .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let (users, hashes): (Vec<String>, Vec<Vec<u8>>) = rows
            .into_iter()
            .map(|(user, email)| (user, self.keyring.email_hash(&email)))
            .unzip();
        let done = sqlx::query(
            "INSERT INTO email_claims (email_hash, user_id)
             SELECT * FROM unnest($1::bytea[], $2::text[]) ON CONFLICT DO NOTHING",
        )
        .bind(&hashes)
        .bind(&users)
        .execute(pool)
        .await?;
        Ok(done.rows_affected())
    }
}

/// Stores the personal fields `taken` out of `part` back into it as one envelope sealed under
/// `user`'s `key` and bound to `aad`; as `[erased]` when the user has no key (erased).
fn seal_taken(
    part: &mut Value,
    taken: Map<String, Value>,
    user: &str,
    key: Option<&SecretKey>,
    aad: &str,
) {
    let names: Vec<&str> = taken.keys().map(String::as_str).collect();
    let sealed = key.map(|key| {
        let plain = serde_json::to_vec(&taken).expect("a JSON map serializes");
        Sealed::format(user, &names, &key.seal_text(&plain, aad.as_bytes()))
    });
    match (sealed, part.as_object_mut()) {
        (Some(sealed), Some(object)) => {
            object.insert(ENVELOPE.to_owned(), Value::String(sealed));
        }
        _ => fields::erase(part, names),
    }
}
