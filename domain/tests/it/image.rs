//! Given/when/then tests of the `Image` aggregate (every command's accepted path and each of
//! its refusals, compared by value), the derived image id, and the stored form of every image
//! event: JSON snapshots, the event type being the serde tag, and redaction leaving it alone.

use chrono::{DateTime, Utc};
use cqrs_es::test::TestFramework;
use cqrs_es::{Aggregate, DomainEvent};
use framegate_domain::{
    image_id_for, normalize_sha256, redact_event, FixedClock, Image, ImageCommand,
    ImageContentType, ImageError, ImageEvent, ImageExif, ImageId, ImageStatus, ModerationDecision,
    UserId, MAX_EXIF_TEXT_CHARS, MAX_MODERATION_TEXT_CHARS, MAX_STORAGE_KEY_LEN,
};
use insta::assert_json_snapshot;
use serde_json::Value;
use uuid::Uuid;

const SHA: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
const OTHER_SHA: &str = "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752";

fn framework() -> TestFramework<Image> {
    let now = DateTime::<Utc>::from_timestamp(1_767_225_600, 0).expect("a valid timestamp");
    TestFramework::with(FixedClock(now).shared())
}

fn owner() -> UserId {
    UserId::from_uuid(Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001))
}

fn someone_else() -> UserId {
    UserId::from_uuid(Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0002))
}

fn image_id() -> ImageId {
    ImageId::for_content(owner(), SHA)
}

fn exif() -> ImageExif {
    ImageExif {
        camera_make: Some("Fujifilm".to_string()),
        camera_model: Some("X-T5".to_string()),
        taken_at: Some("2025-06-01T07:45:12".to_string()),
    }
}

fn blob_key(upload: u32) -> String {
    format!("images/{}/{}/{upload}/original.jpg", owner(), image_id())
}

fn thumbnail_key(upload: u32) -> String {
    format!("images/{}/{}/{upload}/thumbnail.jpg", owner(), image_id())
}

fn upload_command(moderation: ModerationDecision) -> ImageCommand {
    upload_numbered(1, moderation)
}

fn upload_numbered(upload: u32, moderation: ModerationDecision) -> ImageCommand {
    ImageCommand::Upload {
        image_id: image_id(),
        owner: owner(),
        sha256: SHA.to_string(),
        content_type: ImageContentType::Jpeg,
        bytes: 1_234_567,
        width: 3000,
        height: 4000,
        orientation: 6,
        exif: exif(),
        blob_key: blob_key(upload),
        thumbnail_key: thumbnail_key(upload),
        moderation,
    }
}

/// The accepted upload command with one field changed.
fn upload_with(change: impl FnOnce(&mut ImageCommand)) -> ImageCommand {
    let mut command = upload_command(ModerationDecision::allow());
    change(&mut command);
    command
}

fn uploaded() -> ImageEvent {
    uploaded_numbered(1)
}

fn uploaded_numbered(upload: u32) -> ImageEvent {
    ImageEvent::ImageUploaded {
        image_id: image_id(),
        owner: owner(),
        sha256: SHA.to_string(),
        content_type: ImageContentType::Jpeg,
        bytes: 1_234_567,
        width: 3000,
        height: 4000,
        orientation: 6,
        exif: exif(),
        blob_key: blob_key(upload),
        thumbnail_key: thumbnail_key(upload),
        moderation: ModerationDecision::allow(),
    }
}

fn too_many_megapixels() -> ModerationDecision {
    ModerationDecision::reject(
        "max_megapixels",
        "the image has 12.0 megapixels, more than the 8 allowed",
    )
}

fn rejected() -> ImageEvent {
    ImageEvent::ImageRejected {
        image_id: image_id(),
        owner: owner(),
        sha256: SHA.to_string(),
        content_type: ImageContentType::Jpeg,
        bytes: 1_234_567,
        width: 3000,
        height: 4000,
        moderation: too_many_megapixels(),
    }
}

fn deleted() -> ImageEvent {
    ImageEvent::ImageDeleted {}
}

fn replay(events: Vec<ImageEvent>) -> Image {
    let mut image = Image::default();
    for event in events {
        image.apply(event);
    }
    image
}

// --- Upload -------------------------------------------------------------------------------

#[test]
fn uploading_new_content_records_the_upload_with_everything_about_it() {
    framework()
        .given_no_previous_events()
        .when(upload_command(ModerationDecision::allow()))
        .then_expect_events(vec![uploaded()]);
}

#[test]
fn uploading_records_the_sha256_in_lowercase() {
    framework()
        .given_no_previous_events()
        .when(upload_with(|command| {
            if let ImageCommand::Upload { sha256, .. } = command {
                *sha256 = SHA.to_uppercase();
            }
        }))
        .then_expect_events(vec![uploaded()]);
}

#[test]
fn an_upload_refused_by_moderation_records_the_decision_without_storage_keys_or_exif() {
    framework()
        .given_no_previous_events()
        .when(upload_command(too_many_megapixels()))
        .then_expect_events(vec![rejected()]);
}

#[test]
fn a_refused_upload_needs_no_storage_keys() {
    let mut command = upload_command(too_many_megapixels());
    if let ImageCommand::Upload {
        blob_key,
        thumbnail_key,
        ..
    } = &mut command
    {
        blob_key.clear();
        thumbnail_key.clear();
    }
    framework()
        .given_no_previous_events()
        .when(command)
        .then_expect_events(vec![rejected()]);
}

#[test]
fn uploading_the_same_content_again_is_rejected_as_already_uploaded() {
    framework()
        .given(vec![uploaded()])
        .when(upload_numbered(2, ModerationDecision::allow()))
        .then_expect_error(ImageError::AlreadyUploaded);
}

#[test]
fn uploading_the_same_content_again_is_rejected_even_if_moderation_would_now_refuse_it() {
    framework()
        .given(vec![uploaded()])
        .when(upload_numbered(2, too_many_megapixels()))
        .then_expect_error(ImageError::AlreadyUploaded);
}

#[test]
fn uploading_again_after_deletion_records_a_new_upload_on_the_same_image() {
    framework()
        .given(vec![uploaded(), deleted()])
        .when(upload_numbered(2, ModerationDecision::allow()))
        .then_expect_events(vec![uploaded_numbered(2)]);
}

#[test]
fn uploading_again_after_a_refusal_is_reviewed_again() {
    framework()
        .given(vec![rejected()])
        .when(upload_command(ModerationDecision::allow()))
        .then_expect_events(vec![uploaded()]);
    framework()
        .given(vec![rejected()])
        .when(upload_command(too_many_megapixels()))
        .then_expect_events(vec![rejected()]);
}

#[test]
fn uploading_with_a_malformed_sha256_is_rejected() {
    let too_long = format!("{SHA}0");
    let not_hex = format!("{}g", &SHA[..63]);
    for bad in ["", "abc", &SHA[..63], too_long.as_str(), not_hex.as_str()] {
        framework()
            .given_no_previous_events()
            .when(upload_with(|command| {
                if let ImageCommand::Upload { sha256, .. } = command {
                    *sha256 = bad.to_string();
                }
            }))
            .then_expect_error(ImageError::InvalidSha256);
    }
}

#[test]
fn uploading_under_an_id_not_derived_from_owner_and_content_is_rejected() {
    let wrong_ids = [
        ImageId::from_uuid(Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_3001)),
        ImageId::for_content(someone_else(), SHA),
        ImageId::for_content(owner(), OTHER_SHA),
    ];
    for wrong in wrong_ids {
        framework()
            .given_no_previous_events()
            .when(upload_with(|command| {
                if let ImageCommand::Upload { image_id, .. } = command {
                    *image_id = wrong;
                }
            }))
            .then_expect_error(ImageError::ImageIdMismatch);
    }
}

#[test]
fn uploading_into_the_stream_of_another_owner_is_rejected() {
    let mut theirs = uploaded();
    if let ImageEvent::ImageUploaded { owner, .. } = &mut theirs {
        *owner = someone_else();
    }
    framework()
        .given(vec![theirs, deleted()])
        .when(upload_command(ModerationDecision::allow()))
        .then_expect_error(ImageError::NotOwner);
}

#[test]
fn uploading_an_empty_file_is_rejected() {
    framework()
        .given_no_previous_events()
        .when(upload_with(|command| {
            if let ImageCommand::Upload { bytes, .. } = command {
                *bytes = 0;
            }
        }))
        .then_expect_error(ImageError::EmptyImage);
}

#[test]
fn uploading_with_a_zero_width_or_height_is_rejected() {
    for (w, h) in [(0, 4000), (3000, 0), (0, 0)] {
        framework()
            .given_no_previous_events()
            .when(upload_with(|command| {
                if let ImageCommand::Upload { width, height, .. } = command {
                    *width = w;
                    *height = h;
                }
            }))
            .then_expect_error(ImageError::InvalidDimensions);
    }
}

#[test]
fn uploading_with_an_orientation_outside_one_to_eight_is_rejected() {
    for bad in [0, 9, u16::MAX] {
        framework()
            .given_no_previous_events()
            .when(upload_with(|command| {
                if let ImageCommand::Upload { orientation, .. } = command {
                    *orientation = bad;
                }
            }))
            .then_expect_error(ImageError::InvalidOrientation);
    }
}

#[test]
fn every_exif_orientation_from_one_to_eight_is_accepted() {
    for good in 1..=8 {
        let result = framework()
            .given_no_previous_events()
            .when(upload_with(|command| {
                if let ImageCommand::Upload { orientation, .. } = command {
                    *orientation = good;
                }
            }))
            .inspect_result();
        assert!(
            matches!(result.as_deref(), Ok([ImageEvent::ImageUploaded { orientation, .. }]) if *orientation == good),
            "orientation {good}: {result:?}"
        );
    }
}

#[test]
fn uploading_with_overlong_or_control_character_exif_text_is_rejected() {
    let too_long = "a".repeat(MAX_EXIF_TEXT_CHARS + 1);
    let bad_exifs = [
        ImageExif {
            camera_make: Some(too_long.clone()),
            ..exif()
        },
        ImageExif {
            camera_model: Some("X-T5\nInjected: yes".to_string()),
            ..exif()
        },
        ImageExif {
            taken_at: Some(too_long),
            ..exif()
        },
    ];
    for bad in bad_exifs {
        framework()
            .given_no_previous_events()
            .when(upload_with(|command| {
                if let ImageCommand::Upload { exif, .. } = command {
                    *exif = bad;
                }
            }))
            .then_expect_error(ImageError::InvalidExif);
    }
}

#[test]
fn exif_text_of_exactly_the_limit_and_missing_exif_are_accepted() {
    let longest = "é".repeat(MAX_EXIF_TEXT_CHARS);
    for good in [
        ImageExif {
            camera_make: Some(longest),
            ..exif()
        },
        ImageExif::default(),
    ] {
        let result = framework()
            .given_no_previous_events()
            .when(upload_with(|command| {
                if let ImageCommand::Upload { exif, .. } = command {
                    *exif = good.clone();
                }
            }))
            .inspect_result();
        assert!(
            matches!(result.as_deref(), Ok([ImageEvent::ImageUploaded { exif, .. }]) if *exif == good),
            "{result:?}"
        );
    }
}

#[test]
fn a_rejection_that_names_no_rule_or_has_blank_or_overlong_texts_is_refused() {
    let too_long = "r".repeat(MAX_MODERATION_TEXT_CHARS + 1);
    let bad_decisions = [
        ModerationDecision {
            allowed: false,
            rule: None,
            reason: Some("no".to_string()),
        },
        ModerationDecision::reject("  ", "blank rule"),
        ModerationDecision::reject("max_megapixels", ""),
        ModerationDecision::reject("max_megapixels", too_long.as_str()),
        ModerationDecision::reject("max\u{0}megapixels", "control character"),
    ];
    for bad in bad_decisions {
        framework()
            .given_no_previous_events()
            .when(upload_command(bad))
            .then_expect_error(ImageError::InvalidModerationDecision);
    }
}

#[test]
fn an_allowing_decision_may_carry_a_note_and_is_recorded_as_given() {
    let noted = ModerationDecision {
        allowed: true,
        rule: None,
        reason: Some("reviewed by the default policy".to_string()),
    };
    let result = framework()
        .given_no_previous_events()
        .when(upload_command(noted.clone()))
        .inspect_result();
    assert!(
        matches!(result.as_deref(), Ok([ImageEvent::ImageUploaded { moderation, .. }]) if *moderation == noted),
        "{result:?}"
    );
}

#[test]
fn an_accepted_upload_without_valid_storage_keys_is_rejected() {
    let too_long = "k".repeat(MAX_STORAGE_KEY_LEN + 1);
    for (blob, thumbnail) in [
        (String::new(), thumbnail_key(1)),
        (blob_key(1), "   ".to_string()),
        (too_long, thumbnail_key(1)),
        (blob_key(1), "a\nb".to_string()),
    ] {
        framework()
            .given_no_previous_events()
            .when(upload_with(|command| {
                if let ImageCommand::Upload {
                    blob_key,
                    thumbnail_key,
                    ..
                } = command
                {
                    *blob_key = blob;
                    *thumbnail_key = thumbnail;
                }
            }))
            .then_expect_error(ImageError::InvalidStorageKey);
    }
}

// --- Delete -------------------------------------------------------------------------------

#[test]
fn the_owner_deleting_an_uploaded_image_records_the_deletion() {
    framework()
        .given(vec![uploaded()])
        .when(ImageCommand::Delete { by: owner() })
        .then_expect_events(vec![deleted()]);
}

#[test]
fn the_owner_can_delete_a_re_uploaded_image_again() {
    framework()
        .given(vec![uploaded(), deleted(), uploaded_numbered(2)])
        .when(ImageCommand::Delete { by: owner() })
        .then_expect_events(vec![deleted()]);
}

#[test]
fn deleting_someone_elses_image_is_rejected_whatever_its_state() {
    for history in [
        vec![uploaded()],
        vec![uploaded(), deleted()],
        vec![rejected()],
    ] {
        framework()
            .given(history)
            .when(ImageCommand::Delete { by: someone_else() })
            .then_expect_error(ImageError::NotOwner);
    }
}

#[test]
fn deleting_an_image_twice_is_rejected() {
    framework()
        .given(vec![uploaded(), deleted()])
        .when(ImageCommand::Delete { by: owner() })
        .then_expect_error(ImageError::AlreadyDeleted);
}

#[test]
fn deleting_an_image_that_was_never_uploaded_is_rejected() {
    framework()
        .given_no_previous_events()
        .when(ImageCommand::Delete { by: owner() })
        .then_expect_error(ImageError::NotUploaded);
}

#[test]
fn deleting_an_image_whose_upload_was_refused_is_rejected() {
    framework()
        .given(vec![rejected()])
        .when(ImageCommand::Delete { by: owner() })
        .then_expect_error(ImageError::NotUploaded);
    framework()
        .given(vec![uploaded(), deleted(), rejected()])
        .when(ImageCommand::Delete { by: owner() })
        .then_expect_error(ImageError::NotUploaded);
}

// --- State --------------------------------------------------------------------------------

#[test]
fn a_new_image_has_no_owner_status_or_upload() {
    let image = Image::default();
    assert_eq!(image.image_id(), None);
    assert_eq!(image.owner(), None);
    assert_eq!(image.status(), None);
    assert!(!image.is_available());
    assert!(image.upload().is_none());
    assert!(image.last_moderation().is_none());
}

#[test]
fn an_uploaded_image_is_available_with_the_facts_of_its_upload() {
    let image = replay(vec![uploaded()]);
    assert_eq!(image.image_id(), Some(image_id()));
    assert_eq!(image.owner(), Some(owner()));
    assert_eq!(image.status(), Some(ImageStatus::Uploaded));
    assert!(image.is_available());
    let upload = image.upload().expect("an upload");
    assert_eq!(upload.sha256, SHA);
    assert_eq!(
        (upload.width, upload.height, upload.orientation),
        (3000, 4000, 6)
    );
    assert_eq!(upload.blob_key, blob_key(1));
    assert_eq!(upload.exif, exif());
    assert_eq!(image.last_moderation(), Some(&ModerationDecision::allow()));
}

#[test]
fn a_deleted_image_is_unavailable_but_remembers_the_keys_to_clean_up() {
    let image = replay(vec![uploaded(), deleted()]);
    assert_eq!(image.status(), Some(ImageStatus::Deleted));
    assert!(!image.is_available());
    let upload = image.upload().expect("the last upload");
    assert_eq!(upload.blob_key, blob_key(1));
    assert_eq!(upload.thumbnail_key, thumbnail_key(1));
}

#[test]
fn a_refused_image_is_unavailable_and_remembers_why() {
    let image = replay(vec![rejected()]);
    assert_eq!(image.status(), Some(ImageStatus::Rejected));
    assert_eq!(image.owner(), Some(owner()));
    assert!(!image.is_available());
    assert!(image.upload().is_none());
    assert_eq!(image.last_moderation(), Some(&too_many_megapixels()));
}

// --- Ids and values -----------------------------------------------------------------------

#[test]
fn the_image_id_is_a_stable_function_of_owner_and_content() {
    assert_eq!(image_id(), ImageId::for_content(owner(), SHA));
    assert_ne!(image_id(), ImageId::for_content(someone_else(), SHA));
    assert_ne!(image_id(), ImageId::for_content(owner(), OTHER_SHA));
    assert_eq!(image_id().as_uuid().get_version_num(), 8);
    assert_eq!(image_id().as_uuid().get_variant(), uuid::Variant::RFC4122);
    // Pinned: every stored image stream is keyed by this derivation.
    insta::assert_snapshot!("image_id_derivation", image_id().to_string());
}

#[test]
fn deriving_an_id_from_a_raw_digest_normalises_or_rejects_it() {
    assert_eq!(image_id_for(owner(), &SHA.to_uppercase()), Ok(image_id()));
    assert_eq!(
        image_id_for(owner(), "nope"),
        Err(ImageError::InvalidSha256)
    );
    assert_eq!(normalize_sha256(&SHA.to_uppercase()), Ok(SHA.to_string()));
}

#[test]
fn content_types_are_their_media_types_in_json_and_text() {
    for (kind, media, extension) in [
        (ImageContentType::Jpeg, "image/jpeg", "jpg"),
        (ImageContentType::Png, "image/png", "png"),
        (ImageContentType::Webp, "image/webp", "webp"),
    ] {
        assert_eq!(kind.as_str(), media);
        assert_eq!(kind.to_string(), media);
        assert_eq!(kind.extension(), extension);
        assert_eq!(media.parse::<ImageContentType>(), Ok(kind));
        assert_eq!(
            serde_json::to_value(kind).expect("serializes"),
            Value::String(media.to_string())
        );
    }
    assert!("image/gif".parse::<ImageContentType>().is_err());
    assert!("jpeg".parse::<ImageContentType>().is_err());
}

#[test]
fn every_image_error_has_its_own_snake_case_code() {
    let errors = [
        ImageError::InvalidSha256,
        ImageError::ImageIdMismatch,
        ImageError::EmptyImage,
        ImageError::InvalidDimensions,
        ImageError::InvalidOrientation,
        ImageError::InvalidExif,
        ImageError::InvalidModerationDecision,
        ImageError::InvalidStorageKey,
        ImageError::AlreadyUploaded,
        ImageError::NotUploaded,
        ImageError::AlreadyDeleted,
        ImageError::NotOwner,
    ];
    let mut codes: Vec<&str> = errors.iter().map(ImageError::code).collect();
    assert!(codes.iter().all(|code| code
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')));
    codes.sort_unstable();
    codes.dedup();
    assert_eq!(codes.len(), errors.len());
}

// --- Stored form --------------------------------------------------------------------------

fn all_image_events() -> Vec<ImageEvent> {
    vec![uploaded(), rejected(), deleted()]
}

#[test]
fn image_uploaded_json_is_stable() {
    assert_json_snapshot!("image_uploaded", uploaded());
}

#[test]
fn image_rejected_json_is_stable() {
    assert_json_snapshot!("image_rejected", rejected());
}

#[test]
fn image_deleted_json_is_stable() {
    assert_json_snapshot!("image_deleted", deleted());
}

#[test]
fn every_image_event_type_is_its_serde_tag_at_version_one() {
    for event in all_image_events() {
        let stored = serde_json::to_value(&event).expect("events serialize");
        let Value::Object(map) = &stored else {
            panic!("{stored} is not externally tagged");
        };
        let tags: Vec<&String> = map.keys().collect();
        assert_eq!(tags, vec![&event.event_type()]);
        assert_eq!(event.event_version(), "1.0");
    }
}

#[test]
fn every_image_event_survives_a_json_round_trip() {
    for event in all_image_events() {
        let stored = serde_json::to_string(&event).expect("events serialize");
        let back: ImageEvent = serde_json::from_str(&stored).expect("events deserialize");
        assert_eq!(back, event);
    }
}

#[test]
fn image_events_hold_no_secrets_and_no_location() {
    assert_eq!(Image::TYPE, "Image");
    for event in all_image_events() {
        let stored = serde_json::to_value(&event).expect("events serialize");
        assert_eq!(redact_event::<Image>(&event).expect("redacts"), stored);
        let text = stored.to_string().to_lowercase();
        for location in ["gps", "latitude", "longitude"] {
            assert!(!text.contains(location), "{text} mentions {location}");
        }
    }
}

#[test]
fn the_owner_and_sha256_the_event_store_indexes_sit_at_the_top_of_every_first_event() {
    for event in [uploaded(), rejected()] {
        let stored = serde_json::to_value(&event).expect("events serialize");
        let body = &stored[event.event_type()];
        assert_eq!(body["owner"], owner().to_string());
        assert_eq!(body["sha256"], SHA);
    }
}
