//! The projectors' set-based batches on logs the commands never write but a projector must
//! still handle as it always did: a registration, request or key issued twice, progress going
//! down, events after a terminal state, repeated revocations and deletions, a key issued after
//! its owner was disabled, and recorded times that go backwards (commit order is not insertion
//! order). Cut into batches of many sizes, the log must give the same rows as event by event
//! after every batch.

use crate::copies;

use chrono::{DateTime, Duration, Utc};
use framegate_commands::testing::TestDatabase;
use framegate_domain::webhook::DisabledReason;
use framegate_domain::{
    hash_token, ApiKeyHash, ApiKeyId, CreditEvent, Credits, ImageContentType, ImageEvent,
    ImageExif, ImageId, ModerationDecision, PasswordHash, ProviderKind, ProviderPreference, Role,
    UserEvent, UserId, VideoEvent, VideoId, VideoSpec, WebhookEndpointId, WebhookEvent,
};
use framegate_projections::replay;
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use copies::{copies, in_batches, log, one_by_one, rows};

/// Writes events straight into the log, each aggregate's sequence counted up, each event's
/// recorded time given as seconds from a fixed start.
struct Log<'p> {
    pool: &'p PgPool,
    start: DateTime<Utc>,
    sequences: std::collections::HashMap<Uuid, i64>,
}

impl Log<'_> {
    async fn append(&mut self, aggregate_type: &str, id: Uuid, at: i64, event: impl Serialize) {
        let payload = serde_json::to_value(event).expect("payload");
        let event_type = payload
            .as_object()
            .and_then(|tagged| tagged.keys().next().cloned())
            .expect("an externally tagged event");
        let sequence = self.sequences.entry(id).or_insert(0);
        *sequence += 1;
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type,
                                 event_version, payload, metadata, recorded_at)
             VALUES ($1, $2, $3, $4, '1.0', $5, '{\"actor\": \"system\"}', $6)",
        )
        .bind(aggregate_type)
        .bind(id.to_string())
        .bind(*sequence)
        .bind(event_type)
        .bind(payload)
        .bind(self.start + Duration::seconds(at))
        .execute(self.pool)
        .await
        .expect("append");
    }
}

fn registered(user: Uuid, email: &str) -> UserEvent {
    UserEvent::UserRegistered {
        user_id: UserId::from_uuid(user),
        email: email.to_owned(),
        password_hash: PasswordHash::new("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA"),
        role: Role::User,
        verification_token_hash: hash_token("verify"),
        verification_expires_at: Utc::now(),
    }
}

fn issued(key: Uuid, secret: &str) -> UserEvent {
    UserEvent::ApiKeyIssued {
        key_id: ApiKeyId::from_uuid(key),
        name: "ci".into(),
        prefix: secret[..8].to_owned(),
        key_hash: ApiKeyHash::new(hash_token(secret).into_inner()),
        scopes: vec!["videos:read".into()],
    }
}

fn requested(video: Uuid, owner: Uuid, prompt: &str) -> VideoEvent {
    VideoEvent::VideoRequested {
        video_id: VideoId::from_uuid(video),
        spec: VideoSpec {
            owner: UserId::from_uuid(owner),
            prompt: prompt.into(),
            negative_prompt: None,
            provider: ProviderPreference::Auto,
            model: None,
            duration_seconds: 4,
            aspect_ratio: "16:9".into(),
            resolution: "480p".into(),
            image_id: None,
            seed: None,
            estimated_cost: Credits::new(4),
            generate_audio: false,
            external_id: None,
            webhook: None,
        },
    }
}

fn started(attempt: u32) -> VideoEvent {
    VideoEvent::SubmissionStarted {
        attempt,
        provider: ProviderKind::Simulator,
        model: format!("model-{attempt}"),
    }
}

fn refused(attempt: u32) -> VideoEvent {
    VideoEvent::SubmissionFailed {
        attempt,
        provider: ProviderKind::Simulator,
        code: "busy".into(),
        message: format!("attempt {attempt} refused"),
        retry_at: Utc::now(),
    }
}

fn uploaded(image: Uuid, owner: Uuid, accepted: bool, n: u32) -> ImageEvent {
    let (image_id, owner, sha256) = (ImageId::from_uuid(image), UserId::from_uuid(owner), "ab");
    if !accepted {
        return ImageEvent::ImageRejected {
            image_id,
            owner,
            sha256: sha256.repeat(32),
            content_type: ImageContentType::Png,
            bytes: 10 + u64::from(n),
            width: 20,
            height: 30,
            moderation: ModerationDecision::reject("violence", "weapons"),
        };
    }
    ImageEvent::ImageUploaded {
        image_id,
        owner,
        sha256: sha256.repeat(32),
        content_type: ImageContentType::Jpeg,
        bytes: 10 + u64::from(n),
        width: 20,
        height: 30,
        orientation: 6,
        exif: ImageExif {
            camera_make: Some(format!("camera {n}")),
            camera_model: None,
            taken_at: None,
        },
        blob_key: format!("images/{image}/{n}/original.jpg"),
        thumbnail_key: format!("images/{image}/{n}/thumbnail.jpg"),
        moderation: ModerationDecision::allow(),
    }
}

async fn unusual_log(pool: &PgPool) {
    let mut log = Log {
        pool,
        start: Utc::now() - Duration::days(1),
        sequences: Default::default(),
    };
    let (alice, bob) = (Uuid::now_v7(), Uuid::now_v7());
    let (first, second, late) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let (video, image) = (Uuid::now_v7(), Uuid::now_v7());
    let credits = |n| Credits::new(n);
    let held = VideoId::from_uuid(video);

    log.append("User", alice, 10, registered(alice, "alice@example.com"))
        .await;
    log.append("User", bob, 5, registered(bob, "bob@example.com"))
        .await;
    log.append("User", alice, 12, issued(first, "fg_live_first_secret"))
        .await;
    log.append("Video", video, 3, requested(video, alice, "first prompt"))
        .await;
    log.append(
        "User",
        alice,
        8,
        UserEvent::RoleChanged { role: Role::Admin },
    )
    .await;
    // A second registration (another email: the log's index forbids the same) does nothing.
    log.append("User", alice, 20, registered(alice, "alias@example.com"))
        .await;
    log.append("User", alice, 13, issued(first, "fg_live_again_secret"))
        .await;
    log.append(
        "Video",
        video,
        4,
        VideoEvent::VideoProgressed { percent: 50 },
    )
    .await;
    log.append(
        "Video",
        video,
        2,
        VideoEvent::VideoProgressed { percent: 20 },
    )
    .await;
    log.append("Image", image, 1, uploaded(image, alice, true, 1))
        .await;
    let grant = CreditEvent::CreditsGranted {
        amount: credits(10),
        reason: "welcome".into(),
        granted_by: "system".into(),
    };
    log.append("CreditAccount", alice, 9, grant).await;
    log.append("Video", video, 6, started(1)).await;
    log.append(
        "Video",
        video,
        7,
        VideoEvent::VideoProgressed { percent: 10 },
    )
    .await;
    log.append("Image", image, 2, ImageEvent::ImageDeleted {})
        .await;
    log.append("Image", image, 1, ImageEvent::ImageDeleted {})
        .await;
    let reserve = CreditEvent::CreditsReserved {
        video_id: held,
        amount: credits(10),
    };
    log.append("CreditAccount", alice, 11, reserve).await;
    log.append("Video", video, 8, refused(1)).await;
    log.append("User", alice, 14, UserEvent::EmailVerified {})
        .await;
    log.append(
        "User",
        alice,
        15,
        UserEvent::ApiKeyRevoked {
            key_id: ApiKeyId::from_uuid(first),
        },
    )
    .await;
    log.append(
        "User",
        alice,
        16,
        UserEvent::ApiKeyRevoked {
            key_id: ApiKeyId::from_uuid(first),
        },
    )
    .await;
    log.append("Video", video, 9, started(2)).await;
    log.append(
        "Video",
        video,
        10,
        VideoEvent::VideoSubmitted {
            provider_job_id: "job".into(),
        },
    )
    .await;
    log.append("Video", video, 11, refused(2)).await;
    log.append("Image", image, 5, uploaded(image, alice, false, 2))
        .await;
    let capture = CreditEvent::ReservationCaptured {
        video_id: held,
        reserved: credits(10),
        captured: credits(4),
        released: credits(6),
    };
    log.append("CreditAccount", alice, 7, capture).await;
    log.append("Video", video, 12, requested(video, bob, "second prompt"))
        .await;
    log.append("Video", video, 13, started(3)).await;
    log.append("Video", video, 14, VideoEvent::VideoGenerated {})
        .await;
    log.append(
        "Video",
        video,
        15,
        VideoEvent::VideoProgressed { percent: 40 },
    )
    .await;
    log.append("User", alice, 17, issued(second, "fg_live_second_secret"))
        .await;
    log.append(
        "User",
        alice,
        18,
        UserEvent::UserDisabled {
            reason: "abuse".into(),
        },
    )
    .await;
    log.append("User", alice, 19, issued(late, "fg_live_late_secret"))
        .await;
    log.append("Image", image, 4, uploaded(image, alice, true, 3))
        .await;
    log.append("Image", image, 6, ImageEvent::ImageDeleted {})
        .await;
    let stored = VideoEvent::VideoStored {
        blob_key: "videos/v.mp4".into(),
        bytes: 99,
        sha256: "cd".repeat(32),
        duration_ms: 4000,
        width: 640,
        height: 360,
    };
    log.append("Video", video, 16, stored).await;
    let complete = VideoEvent::VideoCompleted {
        final_cost: credits(4),
    };
    log.append("Video", video, 17, complete).await;
    let failed = VideoEvent::VideoFailed {
        code: "late".into(),
        message: "after completion".into(),
        retryable: true,
        charged: false,
    };
    log.append("Video", video, 5, failed).await;
    log.append(
        "Video",
        video,
        18,
        VideoEvent::CancelRequested {
            reason: "why".into(),
        },
    )
    .await;
    log.append(
        "Video",
        video,
        19,
        VideoEvent::VideoCancelled { charged: false },
    )
    .await;
    let purchase = CreditEvent::CreditsPurchased {
        amount: credits(5),
        payment_reference: "pay".into(),
        payment: None,
    };
    log.append("CreditAccount", bob, 3, purchase).await;
    let release = CreditEvent::ReservationReleased {
        video_id: held,
        amount: credits(0),
    };
    log.append("CreditAccount", bob, 2, release).await;
    log.append(
        "User",
        bob,
        1,
        UserEvent::PasswordChanged {
            password_hash: PasswordHash::new("x"),
        },
    )
    .await;
    log.append(
        "User",
        alice,
        21,
        UserEvent::ApiKeyRevoked {
            key_id: ApiKeyId::from_uuid(late),
        },
    )
    .await;
    log.append("Image", image, 7, uploaded(image, alice, false, 4))
        .await;
    webhook_endpoint_log(&mut log, alice).await;
}

/// An endpoint updated at a recorded time before its creation, disabled twice, deleted, and
/// then enabled and rotated after its deletion.
async fn webhook_endpoint_log(log: &mut Log<'_>, owner: Uuid) {
    let hook = Uuid::now_v7();
    let created = WebhookEvent::WebhookEndpointCreated {
        endpoint_id: WebhookEndpointId::from_uuid(hook),
        owner: UserId::from_uuid(owner),
        url: "https://hooks.example.com/a".into(),
        events: vec!["video.completed".into()],
        description: Some("first".into()),
        secret_fingerprint: "0123456789abcdef".into(),
    };
    let disabled = |reason| WebhookEvent::WebhookEndpointDisabled {
        reason,
        detail: "why".into(),
    };
    let rotated = WebhookEvent::WebhookEndpointSecretRotated {
        secret_fingerprint: "fedcba9876543210".into(),
        previous_expires_at: 1_767_312_000,
    };
    let updated = WebhookEvent::WebhookEndpointUpdated {
        url: "https://hooks.example.com/b".into(),
        events: vec!["video.failed".into(), "credits.low".into()],
        description: None,
    };
    log.append("WebhookEndpoint", hook, 30, created).await;
    log.append("WebhookEndpoint", hook, 5, updated).await;
    log.append("WebhookEndpoint", hook, 31, disabled(DisabledReason::Gone))
        .await;
    log.append(
        "WebhookEndpoint",
        hook,
        32,
        disabled(DisabledReason::Failing),
    )
    .await;
    log.append(
        "WebhookEndpoint",
        hook,
        33,
        WebhookEvent::WebhookEndpointDeleted {},
    )
    .await;
    log.append(
        "WebhookEndpoint",
        hook,
        34,
        WebhookEvent::WebhookEndpointEnabled {},
    )
    .await;
    log.append("WebhookEndpoint", hook, 35, rotated).await;
}

#[tokio::test]
async fn unusual_orders_in_batches_of_many_sizes_give_the_same_rows_as_one_by_one_after_each_batch()
{
    let db = TestDatabase::new().await;
    unusual_log(&db.pool).await;
    let events = log(&db.pool).await;

    for model in replay::all_models(&db.pool).expect("models") {
        for size in (2..=12).chain([16, 24, 32, events.len()]) {
            let (batches, each) = (
                format!("batches_{size}_{}", model.name),
                format!("each_{size}_{}", model.name),
            );
            copies(&db.pool, &batches, &model).await;
            copies(&db.pool, &each, &model).await;
            // Compared after every batch, not only at the end: a later event can overwrite
            // what an earlier batch got wrong. The second pass finds every row there already.
            for pass in 1..=2 {
                for (n, batch) in events.chunks(size).enumerate() {
                    in_batches(&db.pool, &batches, &model, batch, size)
                        .await
                        .expect("a batch");
                    one_by_one(&db.pool, &each, &model, batch)
                        .await
                        .expect("one by one");
                    assert_eq!(
                        rows(&db.pool, &batches, &model).await,
                        rows(&db.pool, &each, &model).await,
                        "{} in batches of {size}, pass {pass}, after batch {n}",
                        model.name
                    );
                }
            }
            let end = rows(&db.pool, &each, &model).await;
            assert!(
                end.iter().all(|(_, rows)| !rows.is_empty()),
                "{}",
                model.name
            );
        }
    }
}
