//! The batch open path without a database: rows sealed as `Pii::seal` seals them (under keys
//! given here instead of the key store's), opened as `Pii::open` opens them after its query.

use std::collections::HashMap;
use std::sync::Arc;

use framegate_domain::pii::{self as fields, ERASED, METADATA_FIELDS};
use serde_json::{json, Value};

use super::{batch_users, open_batch};
use crate::pii::crypto::SecretKey;
use crate::pii::{seal_taken, EventParts, KeyState, Opening};

#[derive(Clone, Debug, PartialEq)]
struct Row {
    aggregate_type: &'static str,
    aggregate_id: String,
    sequence: i64,
    event_type: &'static str,
    payload: Value,
    metadata: Value,
}

impl Row {
    fn parts(&mut self) -> EventParts<'_> {
        EventParts {
            aggregate_type: self.aggregate_type,
            aggregate_id: &self.aggregate_id,
            sequence: self.sequence,
            event_type: self.event_type,
            payload: &mut self.payload,
            metadata: &mut self.metadata,
        }
    }
}

fn client(actor: &str) -> Value {
    json!({"actor": actor, "request_id": "r", "client_ip": "203.0.113.7", "user_agent": "agent/1"})
}

/// A user's story: registration, a credit grant (nothing personal), a video request.
fn story(user: &str) -> Vec<Row> {
    vec![
        Row {
            aggregate_type: "User",
            aggregate_id: user.to_owned(),
            sequence: 1,
            event_type: "UserRegistered",
            payload: json!({"UserRegistered": {"user_id": user, "email": format!("{user}@example.com")}}),
            metadata: client("system"),
        },
        Row {
            aggregate_type: "CreditAccount",
            aggregate_id: user.to_owned(),
            sequence: 1,
            event_type: "CreditsGranted",
            payload: json!({"CreditsGranted": {"amount": 100}}),
            metadata: json!({"actor": "system"}),
        },
        Row {
            aggregate_type: "Video",
            aggregate_id: format!("video-of-{user}"),
            sequence: 1,
            event_type: "VideoRequested",
            payload: json!({"VideoRequested": {"spec": {
                "owner": user, "prompt": format!("a boat for {user}"), "negative_prompt": null
            }}}),
            metadata: client(&format!("user:{user}")),
        },
    ]
}

/// Seals `row` as the append path does, under `keys` (no key: `[erased]`).
fn seal(row: &mut Row, keys: &HashMap<&str, SecretKey>) {
    let parts = row.parts();
    let subject = parts.subject().map(str::to_owned);
    let event_type = parts.event_type;
    let payload_aad = parts.aad("payload");
    let metadata_aad = parts.aad("metadata");
    if let (Some(user), Some(body)) = (&subject, parts.payload.get_mut(event_type)) {
        if let Some(taken) = fields::take(body, fields::personal_fields(event_type)) {
            seal_taken(body, taken, user, keys.get(user.as_str()), &payload_aad);
        }
    }
    let owner = fields::metadata_subject(parts.metadata, subject.as_deref()).map(str::to_owned);
    if let Some(user) = owner {
        if let Some(taken) = fields::take(parts.metadata, METADATA_FIELDS) {
            seal_taken(
                parts.metadata,
                taken,
                &user,
                keys.get(user.as_str()),
                &metadata_aad,
            );
        }
    }
}

fn open(rows: &mut [Row], keys: &HashMap<String, KeyState>) -> Vec<String> {
    open_as(rows, keys, Opening::Everything)
}

fn open_as(rows: &mut [Row], keys: &HashMap<String, KeyState>, opening: Opening) -> Vec<String> {
    let mut parts: Vec<EventParts<'_>> = rows.iter_mut().map(Row::parts).collect();
    let mut users = batch_users(&parts, opening);
    users.sort();
    open_batch(keys, &mut parts, opening);
    users
}

fn live(key: &SecretKey) -> KeyState {
    KeyState::Live(Arc::new(key.clone()))
}

#[test]
fn a_batch_of_several_users_opens_to_its_plaintext() {
    let (a, b) = (SecretKey::generate(), SecretKey::generate());
    let plain: Vec<Row> = story("ua").into_iter().chain(story("ub")).collect();
    let mut rows = plain.clone();
    let keys = HashMap::from([("ua", a.clone()), ("ub", b.clone())]);
    for row in &mut rows {
        seal(row, &keys);
    }
    let stored = serde_json::to_string(
        &rows
            .iter()
            .map(|r| (&r.payload, &r.metadata))
            .collect::<Vec<_>>(),
    )
    .expect("json");
    for secret in ["ua@example.com", "a boat for ub", "203.0.113.7", "agent/1"] {
        assert!(!stored.contains(secret), "{secret} stored in clear");
    }
    assert_eq!(stored.matches("$pii").count(), 8);

    let keys = HashMap::from([("ua".to_owned(), live(&a)), ("ub".to_owned(), live(&b))]);
    let users = open(&mut rows, &keys);
    assert_eq!(users, ["ua", "ub"], "each user once per batch");
    assert_eq!(rows, plain);
}

#[test]
fn an_erased_users_fields_read_erased_sealed_or_not() {
    let (a, gone) = (SecretKey::generate(), SecretKey::generate());
    let mut rows: Vec<Row> = story("ua").into_iter().chain(story("gone")).collect();
    let keys = HashMap::from([("ua", a.clone()), ("gone", gone)]);
    for row in &mut rows {
        seal(row, &keys);
    }
    // A row of the erased user written before encryption, in plaintext.
    let mut old = story("gone").remove(0);
    old.sequence = 2;
    rows.push(old);
    let keys = HashMap::from([
        ("ua".to_owned(), live(&a)),
        ("gone".to_owned(), KeyState::Erased),
    ]);
    let users = open(&mut rows, &keys);
    assert_eq!(users, ["gone", "ua"]);
    assert_eq!(rows[..3], story("ua")[..]);
    for row in &rows[3..] {
        let text = serde_json::to_string(&(&row.payload, &row.metadata)).expect("json");
        assert!(!text.contains("gone@") && !text.contains("for gone") && !text.contains("203.0"));
    }
    let registered = &rows[3].payload["UserRegistered"];
    assert_eq!(
        (registered["user_id"].as_str(), registered["email"].as_str()),
        (Some("gone"), Some(ERASED))
    );
    assert_eq!(rows[5].payload["VideoRequested"]["spec"]["prompt"], ERASED);
    assert_eq!(rows[5].metadata["client_ip"], ERASED);
    assert_eq!(rows[6].payload["UserRegistered"]["email"], ERASED);
    assert_eq!(rows[6].metadata["user_agent"], ERASED);
    assert_eq!(rows[4], story("gone")[1], "nothing personal: unchanged");
}

#[test]
fn an_envelope_opens_only_on_its_own_row_and_plaintext_passes() {
    let a = SecretKey::generate();
    let mut rows = story("ua");
    let keys = HashMap::from([("ua", a.clone())]);
    for row in &mut rows {
        seal(row, &keys);
    }
    // The registration's sealed body and metadata copied onto another row of the stream.
    let mut moved = rows[0].clone();
    moved.sequence = 7;
    rows.push(moved);
    // And a row of the same user still in plaintext, as before encryption.
    rows.push(story("ua").remove(2));
    let keys = HashMap::from([("ua".to_owned(), live(&a))]);
    open(&mut rows, &keys);
    assert_eq!(rows[..3], story("ua")[..]);
    assert_eq!(rows[3].payload["UserRegistered"]["email"], ERASED);
    assert_eq!(rows[3].metadata["client_ip"], ERASED);
    assert_eq!(rows[4], story("ua")[2]);
}

#[test]
fn a_batch_without_personal_data_needs_no_key() {
    let mut rows = [story("ua").remove(1)];
    let parts: Vec<EventParts<'_>> = rows.iter_mut().map(Row::parts).collect();
    assert!(batch_users(&parts, Opening::Everything).is_empty());
}

#[test]
fn opening_bodies_only_removes_personal_metadata_unread() {
    let (a, b) = (SecretKey::generate(), SecretKey::generate());
    let plain = story("ua");
    let mut rows = plain.clone();
    let keys = HashMap::from([("ua", a.clone()), ("ub", b)]);
    for row in &mut rows {
        seal(row, &keys);
    }
    // A credit event of ub's account that ua's request made: personal data in its metadata
    // only, so opening bodies needs no key of either.
    let mut granted = story("ub").remove(1);
    granted.metadata = client("user:ua");
    seal(&mut granted, &keys);
    assert!(granted.metadata.get("$pii").is_some());
    rows.push(granted);
    // And one in plaintext, as written before encryption.
    let mut old = story("ua").remove(1);
    old.metadata = client("user:ua");
    rows.push(old);

    let keys = HashMap::from([("ua".to_owned(), live(&a))]);
    let users = open_as(&mut rows, &keys, Opening::Bodies);
    assert_eq!(users, ["ua"], "only the users of sealed or personal bodies");
    for (row, plain) in rows.iter().zip(
        plain
            .iter()
            .chain(&story("ub")[1..2])
            .chain(&story("ua")[1..2]),
    ) {
        assert_eq!(row.payload, plain.payload, "bodies opened");
    }
    for row in &rows {
        let metadata = row.metadata.as_object().expect("metadata");
        for withheld in ["$pii", "client_ip", "user_agent"] {
            assert!(
                !metadata.contains_key(withheld),
                "{withheld} in {metadata:?}"
            );
        }
        assert!(
            metadata.contains_key("actor"),
            "the rest is kept: {metadata:?}"
        );
    }
    assert_eq!(rows[4].metadata["request_id"], "r");
}

#[test]
fn opening_bodies_only_still_reads_an_erased_users_fields_as_erased() {
    let gone = SecretKey::generate();
    let mut rows = story("gone");
    let keys = HashMap::from([("gone", gone)]);
    for row in &mut rows {
        seal(row, &keys);
    }
    // And a registration of theirs written before encryption, in plaintext.
    let mut old = story("gone").remove(0);
    old.sequence = 2;
    rows.push(old);
    let keys = HashMap::from([("gone".to_owned(), KeyState::Erased)]);
    let users = open_as(&mut rows, &keys, Opening::Bodies);
    assert_eq!(users, ["gone"]);
    assert_eq!(rows[0].payload["UserRegistered"]["email"], ERASED);
    assert_eq!(rows[2].payload["VideoRequested"]["spec"]["prompt"], ERASED);
    assert_eq!(
        rows[3].payload["UserRegistered"]["email"], ERASED,
        "plaintext too"
    );
    for row in &rows {
        let text = serde_json::to_string(&(&row.payload, &row.metadata)).expect("json");
        assert!(!text.contains("gone@") && !text.contains("for gone") && !text.contains("203.0"));
        assert!(row.metadata.get("client_ip").is_none() && row.metadata.get("$pii").is_none());
    }
}
