//! The integrator contract: one JSON Schema and one example per event type and version under
//! `docs/events/<aggregate>/`, generated from the Rust event types with schemars.
//!
//! The schemas describe what leaves the store (and so what Kafka consumers receive): the
//! externally tagged event JSON with its secrets redacted. The examples are the insta
//! snapshots of the event tests passed through the same redaction, so the published samples
//! are exactly the ones the stored form is pinned by. Nothing is rewritten silently: a missing
//! or outdated file fails the test with the command that regenerates it, so a contract change
//! shows up as a reviewed diff under `docs/events/`. Schemas of older versions are never
//! generated nor deleted here; they stay as published and their examples keep validating.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use cqrs_es::{Aggregate, DomainEvent};
use framegate_domain::{
    redact_payload, sensitive_fields, CreditAccount, Image, User, Video, WebhookEndpoint, REDACTED,
};
use schemars::generate::SchemaSettings;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde_json::{json, Map, Value};

const UPDATE_VAR: &str = "UPDATE_EVENT_SCHEMAS";
const REGENERATE: &str =
    "UPDATE_EVENT_SCHEMAS=1 cargo test -p framegate-domain --test it event_schemas";
/// The topic prefix the relay uses unless configured otherwise.
const DEFAULT_TOPIC_PREFIX: &str = "framegate";

/// One event type at its current version, as published.
struct Contract {
    aggregate_type: &'static str,
    event_type: String,
    event_version: String,
    schema: Value,
    /// The stored (unredacted) sample, as the insta snapshot pins it.
    stored: Value,
    /// What consumers receive for that sample.
    example: Value,
}

impl Contract {
    /// The aggregate type in snake case, as in the topic name (`credit_account`).
    fn dir(&self) -> String {
        snake_case(self.aggregate_type)
    }

    fn file_stem(&self) -> String {
        format!("{}/{}.v{}", self.dir(), self.event_type, self.event_version)
    }
}

/// Whether this run rewrites the published files. The tests that read them then skip the
/// files (another test is writing them concurrently) and check only what was generated.
fn updating() -> bool {
    std::env::var_os(UPDATE_VAR).is_some()
}

fn docs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/events")
}

fn snapshots_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/snapshots")
}

/// The contracts of every event type of every aggregate.
fn contracts() -> Vec<Contract> {
    let mut all = Vec::new();
    // The snapshot prefix is the test file that pins the aggregate's events.
    all.extend(contracts_of::<User>("events"));
    all.extend(contracts_of::<CreditAccount>("events"));
    all.extend(contracts_of::<Video>("events"));
    all.extend(contracts_of::<Image>("image"));
    all.extend(contracts_of::<WebhookEndpoint>("webhook"));
    all
}

fn contracts_of<A>(snapshot_prefix: &str) -> Vec<Contract>
where
    A: Aggregate,
    A::Event: JsonSchema + DeserializeOwned,
{
    // The serialize contract: every field serde writes is required (an `Option` is written
    // as `null`, never left out), which is what a consumer can rely on.
    let root = SchemaSettings::draft2020_12()
        .for_serialize()
        .into_generator()
        .into_root_schema_for::<A::Event>()
        .to_value();
    let variants = root["oneOf"].as_array().unwrap_or_else(|| {
        panic!(
            "{} events must be an externally tagged enum of struct variants",
            A::TYPE
        )
    });
    variants
        .iter()
        .map(|variant| {
            let event_type = tag_of(variant);
            let stored = snapshot(snapshot_prefix, &event_type);
            let event: A::Event = serde_json::from_value(stored.clone()).unwrap_or_else(|err| {
                panic!("the {event_type} snapshot does not deserialize: {err}")
            });
            assert_eq!(
                event.event_type(),
                event_type,
                "the serde tag is the event type"
            );
            assert_eq!(
                serde_json::to_value(&event).expect("events serialize"),
                stored,
                "the {event_type} snapshot is what the event serializes to"
            );
            let event_version = event.event_version();
            let example = redact_payload(A::TYPE, &event_type, &stored);
            let schema = event_schema(A::TYPE, &event_type, &event_version, variant, &root);
            Contract {
                aggregate_type: A::TYPE,
                event_type,
                event_version,
                schema,
                stored,
                example,
            }
        })
        .collect()
}

/// The single property an externally tagged variant's schema requires: its event type.
fn tag_of(variant: &Value) -> String {
    match variant["required"].as_array().map(Vec::as_slice) {
        Some([Value::String(tag)]) => tag.clone(),
        _ => panic!("not an externally tagged variant: {variant}"),
    }
}

/// The standalone schema of one variant: its own keywords plus the `$defs` it reaches.
fn event_schema(
    aggregate_type: &str,
    event_type: &str,
    event_version: &str,
    variant: &Value,
    root: &Value,
) -> Value {
    let aggregate = snake_case(aggregate_type);
    let mut schema = Map::new();
    schema.insert("$schema".into(), root["$schema"].clone());
    schema.insert(
        "title".into(),
        format!("{event_type} v{event_version}").into(),
    );
    let description = variant["description"].as_str().map_or_else(
        || format!("The {event_type} event of the {aggregate_type} aggregate."),
        str::to_string,
    );
    schema.insert("description".into(), description.into());
    schema.insert(
        "x-framegate".into(),
        json!({
            "aggregate_type": aggregate_type,
            "event_type": event_type,
            "event_version": event_version,
            "ce_type": format!("framegate.{aggregate}.{event_type}"),
            "topic": format!("{DEFAULT_TOPIC_PREFIX}.{aggregate}.events"),
        }),
    );
    let Value::Object(keywords) = variant else {
        panic!("a variant schema is an object: {variant}");
    };
    for (key, value) in keywords {
        if key != "description" {
            schema.insert(key.clone(), value.clone());
        }
    }
    let defs = reachable_defs(variant, &root["$defs"]);
    if !defs.is_empty() {
        schema.insert("$defs".into(), Value::Object(defs));
    }
    Value::Object(schema)
}

fn reachable_defs(from: &Value, defs: &Value) -> Map<String, Value> {
    let mut reached = Map::new();
    let mut pending = Vec::new();
    collect_refs(from, &mut pending);
    while let Some(name) = pending.pop() {
        if reached.contains_key(&name) {
            continue;
        }
        let def = defs
            .get(&name)
            .unwrap_or_else(|| panic!("no $defs entry for {name}"));
        collect_refs(def, &mut pending);
        reached.insert(name, def.clone());
    }
    reached
}

fn collect_refs(value: &Value, into: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("$ref", Value::String(reference)) => {
                        let name = reference
                            .strip_prefix("#/$defs/")
                            .unwrap_or_else(|| panic!("unexpected $ref {reference}"));
                        into.push(name.to_string());
                    }
                    _ => collect_refs(value, into),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| collect_refs(item, into)),
        _ => {}
    }
}

/// The JSON an insta snapshot of `event_type` pins (`it__<prefix>__<event_type in snake_case>`:
/// insta names a snapshot after the module that took it, `it::<prefix>`).
fn snapshot(prefix: &str, event_type: &str) -> Value {
    let path = snapshots_dir().join(format!("it__{prefix}__{}.snap", snake_case(event_type)));
    let text = fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "{event_type} has no sample: add one to the snapshot tests in domain/tests/it/{prefix}.rs \
             ({} is missing)",
            path.display()
        )
    });
    let body = text
        .strip_prefix("---\n")
        .and_then(|rest| rest.split_once("\n---\n"))
        .map(|(_header, body)| body)
        .unwrap_or_else(|| panic!("{} is not an insta snapshot", path.display()));
    serde_json::from_str(body)
        .unwrap_or_else(|err| panic!("{} does not hold JSON: {err}", path.display()))
}

fn snake_case(name: &str) -> String {
    let mut snake = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            snake.push('_');
        }
        snake.extend(c.to_lowercase());
    }
    snake
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).expect("JSON values serialize") + "\n"
}

fn read_json(path: &Path) -> Value {
    let text = fs::read_to_string(path)
        .unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|err| panic!("{} is not JSON: {err}", path.display()))
}

fn validator(schema: &Value, name: &str) -> jsonschema::Validator {
    jsonschema::meta::validate(schema)
        .unwrap_or_else(|err| panic!("{name} is not a valid JSON Schema: {err}"));
    jsonschema::options()
        .should_validate_formats(true)
        .build(schema)
        .unwrap_or_else(|err| panic!("{name} does not compile: {err}"))
}

fn errors(validator: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    validator
        .iter_errors(instance)
        .map(|err| format!("{} at {}", err, err.instance_path()))
        .collect()
}

/// Every `*.schema.json` and `*.example.json` under `docs/events/<aggregate>/`.
fn published_files() -> BTreeSet<String> {
    let mut files = BTreeSet::new();
    let Ok(dirs) = fs::read_dir(docs_dir()) else {
        return files;
    };
    for dir in dirs.flatten().filter(|entry| entry.path().is_dir()) {
        for file in fs::read_dir(dir.path()).into_iter().flatten().flatten() {
            let name = file.file_name().to_string_lossy().into_owned();
            if name.ends_with(".schema.json") || name.ends_with(".example.json") {
                files.insert(format!("{}/{name}", dir.file_name().to_string_lossy()));
            }
        }
    }
    files
}

#[test]
fn every_event_type_has_its_generated_schema_and_example_checked_in() {
    let update = updating();
    let mut stale = Vec::new();
    for contract in contracts() {
        for (suffix, value) in [("schema", &contract.schema), ("example", &contract.example)] {
            let relative = format!("{}.{suffix}.json", contract.file_stem());
            let path = docs_dir().join(&relative);
            let expected = pretty(value);
            if fs::read_to_string(&path).ok().as_deref() == Some(expected.as_str()) {
                continue;
            }
            if update {
                fs::create_dir_all(docs_dir().join(contract.dir())).expect("creates docs/events");
                fs::write(&path, expected).expect("writes the schema");
            } else {
                stale.push(relative);
            }
        }
    }
    assert!(
        stale.is_empty(),
        "these files under docs/events are missing or differ from what the Rust event types \
         generate:\n  {}\nRegenerate them with `{REGENERATE}` and review the diff: a breaking \
         change needs a new event_version, not an edited schema.",
        stale.join("\n  ")
    );
}

#[test]
fn every_published_file_belongs_to_an_event_type_and_comes_in_pairs() {
    let known: BTreeMap<String, &'static str> = contracts()
        .iter()
        .map(|contract| (contract.event_type.clone(), contract.aggregate_type))
        .collect();
    let files = if updating() {
        BTreeSet::new()
    } else {
        published_files()
    };
    for file in &files {
        let (dir, name) = file.split_once('/').expect("dir/name");
        let event_type = name
            .split_once(".v")
            .map_or(name, |(event_type, _)| event_type);
        let owner = known.get(event_type).map(|aggregate| snake_case(aggregate));
        assert_eq!(
            owner.as_deref(),
            Some(dir),
            "docs/events/{file} is not the file of a {dir} event type"
        );
        let (stem, other) = match name.strip_suffix(".schema.json") {
            Some(stem) => (stem, "example"),
            None => (name.trim_end_matches(".example.json"), "schema"),
        };
        assert!(
            files.contains(&format!("{dir}/{stem}.{other}.json")),
            "docs/events/{file} has no {other}"
        );
    }
}

#[test]
fn every_published_example_validates_against_its_schema() {
    let mut checked = 0;
    let files = if updating() {
        BTreeSet::new()
    } else {
        published_files()
    };
    for file in files {
        let Some(stem) = file.strip_suffix(".schema.json") else {
            continue;
        };
        let schema = read_json(&docs_dir().join(&file));
        let example = read_json(&docs_dir().join(format!("{stem}.example.json")));
        let found = errors(&validator(&schema, &file), &example);
        assert!(found.is_empty(), "{stem}.example.json: {found:?}");
        checked += 1;
    }
    // Also the generated pairs, so that this holds before they are first written.
    for contract in contracts() {
        let name = contract.file_stem();
        let found = errors(&validator(&contract.schema, &name), &contract.example);
        assert!(found.is_empty(), "{name} example: {found:?}");
    }
    assert!(
        updating() || checked >= contracts().len(),
        "every schema was checked"
    );
}

#[test]
fn the_schemas_describe_secrets_in_their_redacted_form() {
    let mut secret_bearing = 0;
    for contract in contracts() {
        let fields = sensitive_fields(contract.aggregate_type, &contract.event_type);
        let name = contract.file_stem();
        let validator = validator(&contract.schema, &name);
        if fields.is_empty() {
            assert_eq!(contract.example, contract.stored, "{name} has no secret");
            continue;
        }
        secret_bearing += 1;
        let body = &contract.example[&contract.event_type];
        for field in fields {
            assert_eq!(body[field], REDACTED, "{name}: {field}");
        }
        assert!(
            errors(&validator, &contract.example).is_empty(),
            "{name}: the redacted form validates"
        );
        assert!(
            !errors(&validator, &contract.stored).is_empty(),
            "{name}: the schema must not admit the stored secrets"
        );
    }
    // UserRegistered, EmailVerificationIssued, PasswordChanged, PasswordResetRequested,
    // PasswordResetCompleted and ApiKeyIssued.
    assert_eq!(secret_bearing, 6);
}

#[test]
fn the_readme_lists_every_schema() {
    let readme = fs::read_to_string(docs_dir().join("README.md")).expect("docs/events/README.md");
    let missing: Vec<String> = contracts()
        .iter()
        .map(|contract| format!("{}.schema.json", contract.file_stem()))
        .filter(|file| !readme.contains(file.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/events/README.md does not link {missing:?}"
    );
}

#[test]
fn the_schemas_reject_what_serde_would_not_write() {
    let contract = contracts()
        .into_iter()
        .find(|contract| contract.event_type == "VideoRequested")
        .expect("VideoRequested");
    let validator = validator(&contract.schema, "VideoRequested");
    let mut wrong_tag = contract.example.clone();
    let body = wrong_tag["VideoRequested"].take();
    wrong_tag = json!({ "VideoSubmitted": body });
    let mut bad_provider = contract.example.clone();
    bad_provider["VideoRequested"]["spec"]["provider"] = json!("Veo");
    let mut missing_option = contract.example.clone();
    if let Some(spec) = missing_option["VideoRequested"]["spec"].as_object_mut() {
        spec.remove("external_id");
    }
    let mut bad_id = contract.example.clone();
    bad_id["VideoRequested"]["video_id"] = json!("not-a-uuid");
    for (case, instance) in [
        ("another event's tag", wrong_tag),
        ("a provider not in snake_case", bad_provider),
        ("an optional field left out", missing_option),
        ("an id that is not a UUID", bad_id),
    ] {
        assert!(
            !errors(&validator, &instance).is_empty(),
            "{case} must not validate"
        );
    }
}

/// The upcaster chain (`framegate_domain::versions`) is keyed by event type alone: no two
/// aggregates may name an event alike.
#[test]
fn event_type_names_are_unique_across_aggregates() {
    let mut owners: BTreeMap<String, &'static str> = BTreeMap::new();
    for contract in contracts() {
        if let Some(other) = owners.insert(contract.event_type.clone(), contract.aggregate_type) {
            assert_eq!(
                other, contract.aggregate_type,
                "{} is an event of both {other} and {}",
                contract.event_type, contract.aggregate_type
            );
        }
    }
    assert!(owners.len() > 30, "{owners:?}");
}
