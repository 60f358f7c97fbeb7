//! The upcaster chain: payloads stored in an old version decode as the current event.

use std::collections::BTreeMap;

use cqrs_es::DomainEvent;
use framegate_domain::versions::{self, DecodeError};
use framegate_domain::{VideoEvent, VideoSpec};
use serde_json::{json, Value};

/// A `VideoRequested` exactly as the store held it before version 2.0 (no `generate_audio`).
fn video_requested_v1() -> Value {
    json!({"VideoRequested": {
        "video_id": "01900000-0000-7000-8000-000000002001",
        "spec": {
            "owner": "01900000-0000-7000-8000-000000000001",
            "prompt": "a heron lifting off a misty lake at dawn",
            "negative_prompt": null,
            "provider": "veo",
            "model": "veo-3",
            "duration_seconds": 8,
            "aspect_ratio": "16:9",
            "resolution": "1080p",
            "image_id": null,
            "seed": 42,
            "estimated_cost": 80,
            "external_id": "order-7"
        }
    }})
}

fn spec_of(event: VideoEvent) -> VideoSpec {
    match event {
        VideoEvent::VideoRequested { spec, .. } => spec,
        other => panic!("not a request: {other:?}"),
    }
}

#[test]
fn a_version_1_video_request_decodes_without_audio() {
    let spec =
        spec_of(versions::decode("VideoRequested", "1.0", &video_requested_v1()).expect("upcast"));
    assert!(!spec.generate_audio);
    assert_eq!(spec.prompt, "a heron lifting off a misty lake at dawn");
    assert_eq!(spec.external_id.as_deref(), Some("order-7"));
}

#[test]
fn a_version_1_payload_read_as_version_2_is_refused() {
    // Without the chain the old payload is not a current event: the upcaster is what reads it.
    let error = versions::decode::<VideoEvent>("VideoRequested", "2.0", &video_requested_v1())
        .expect_err("no generate_audio");
    assert!(matches!(error, DecodeError::Payload { .. }), "{error}");
}

#[test]
fn upcasting_a_version_1_request_gives_what_version_2_stores() {
    let stored = video_requested_v1();
    let (upcast, version) = versions::upcast("VideoRequested", "1.0", &stored).expect("upcast");
    assert_eq!(version, "2.0");
    let event: VideoEvent = serde_json::from_value(upcast.clone().into_owned()).expect("v2");
    assert_eq!(event.event_version(), "2.0");
    assert_eq!(
        serde_json::to_value(&event).expect("json"),
        upcast.into_owned()
    );
}

#[test]
fn current_events_are_read_without_a_copy() {
    let payload = json!({"VideoProgressed": {"percent": 40}});
    let (read, version) = versions::upcast("VideoProgressed", "1.0", &payload).expect("current");
    assert!(matches!(read, std::borrow::Cow::Borrowed(_)));
    assert_eq!(version, "1.0");
}

#[test]
fn an_unknown_version_is_refused_not_guessed() {
    let error = versions::decode::<VideoEvent>("VideoRequested", "3.0", &video_requested_v1())
        .expect_err("no such version");
    assert!(
        matches!(&error, DecodeError::UnknownVersion { version, current: "2.0", .. } if version == "3.0"),
        "{error}"
    );
}

#[test]
fn a_payload_tagged_with_another_type_is_refused() {
    let error = versions::decode::<VideoEvent>("VideoCompleted", "1.0", &video_requested_v1())
        .expect_err("tag mismatch");
    assert!(matches!(error, DecodeError::TagMismatch { .. }), "{error}");
}

#[test]
fn each_chain_steps_from_version_to_version_without_gaps() {
    let mut chains: BTreeMap<&str, Vec<(&str, &str)>> = BTreeMap::new();
    for step in versions::UPCASTERS {
        chains
            .entry(step.event_type)
            .or_default()
            .push((step.from, step.to));
    }
    for (event_type, steps) in chains {
        assert_eq!(steps[0].0, versions::FIRST_VERSION, "{event_type}");
        for pair in steps.windows(2) {
            assert_eq!(pair[0].1, pair[1].0, "{event_type}: a gap in the chain");
        }
    }
}

/// Every reader of stored events goes through the chain: no source file of the readers
/// deserializes an event row's payload directly (the dispatcher once did, and a 1.0
/// `VideoRequested` would never have been dispatched).
#[test]
fn no_reader_decodes_a_stored_payload_around_the_chain() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut offenders = Vec::new();
    let mut dirs: Vec<std::path::PathBuf> = [
        "api/src",
        "commands/src",
        "projections/src",
        "src",
        "workers/src",
    ]
    .iter()
    .map(|dir| root.join(dir))
    .collect();
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("source dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                let text = std::fs::read_to_string(&path).expect("source");
                for pattern in ["deserialize(&event.payload", "from_value(event.payload"] {
                    if text.contains(pattern) {
                        offenders.push(format!("{}: {pattern}", path.display()));
                    }
                }
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "decode through versions::decode: {offenders:?}"
    );
}
