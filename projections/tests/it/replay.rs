//! Rebuilding read models from the log (`replay`) against real Postgres, after a mixed
//! workload written through the real command path: the copy equals the live table, an
//! interrupted replay resumes, a dry run changes nothing public, and events written while a
//! replay swaps are neither lost nor counted twice.

use crate::support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use framegate_commands::testing::TestDatabase;
use framegate_commands::videos::request_video;
use framegate_commands::{Actor, CommandMetadata, EventStore};
use framegate_domain::{
    CreditCommand, Credits, ImageCommand, ModerationDecision, ProviderKind, ProviderPreference,
    UserCommand, UserId, VideoCommand, VideoId, VideoSpec,
};
use framegate_projections::read_models::{self, READ_MODELS};
use framegate_projections::replay::{self, ReplayOptions, ReplayReport, Silent};
use sqlx::PgPool;
use uuid::Uuid;

use support::{
    catch_up, credit_command, image_command, issue_key, register, system, upload, user_command,
    video_command, webhook_endpoint,
};

/// Users with keys (one revoked, one user disabled), credits granted, purchased, reserved,
/// captured and released, videos completed, failed and cancelled, images uploaded, rejected
/// and deleted.
pub(crate) async fn mixed_workload(store: &EventStore, users: usize) {
    for n in 0..users {
        let (user, _) = register(store, &format!("replay{n}@example.com")).await;
        let key = issue_key(store, user, "ci", &format!("fg_live_{n:08}_secret")).await;
        if n % 3 == 0 {
            user_command(store, user, UserCommand::RevokeApiKey { key_id: key }).await;
        }
        let grant = CreditCommand::Grant {
            amount: Credits::new(100),
            reason: "welcome".into(),
            granted_by: "system".into(),
        };
        credit_command(store, user, grant, &system()).await;
        let purchase = CreditCommand::Purchase {
            amount: Credits::new(50),
            payment_reference: format!("pay_{n}"),
            payment: None,
        };
        credit_command(store, user, purchase, &system()).await;
        for outcome in 0..3 {
            let video = request(store, user).await;
            video_command(store, video, start()).await;
            match outcome {
                0 => {
                    let submitted = VideoCommand::MarkSubmitted {
                        provider_job_id: format!("job-{video}"),
                    };
                    video_command(store, video, submitted).await;
                    video_command(store, video, VideoCommand::RecordProgress { percent: 40 }).await;
                    video_command(store, video, VideoCommand::MarkGenerated).await;
                    let stored = VideoCommand::RecordStored {
                        blob_key: format!("videos/{video}.mp4"),
                        bytes: 1234,
                        sha256: "ab".repeat(32),
                        duration_ms: 4000,
                        width: 640,
                        height: 360,
                    };
                    video_command(store, video, stored).await;
                    video_command(
                        store,
                        video,
                        VideoCommand::Complete {
                            final_cost: Credits::new(4),
                        },
                    )
                    .await;
                    let capture = CreditCommand::Capture {
                        video_id: video,
                        amount: Credits::new(4),
                    };
                    credit_command(store, user, capture, &system()).await;
                }
                1 => {
                    let fail = VideoCommand::Fail {
                        code: "provider_error".into(),
                        message: "upstream said no".into(),
                        retryable: false,
                        charged: false,
                    };
                    video_command(store, video, fail).await;
                    let release = CreditCommand::Release { video_id: video };
                    credit_command(store, user, release, &system()).await;
                }
                _ => {
                    let cancel = VideoCommand::RequestCancel {
                        reason: "changed my mind".into(),
                    };
                    video_command(store, video, cancel).await;
                }
            }
        }
        let verdicts = [
            ModerationDecision::allow(),
            ModerationDecision::reject("violence", "weapons"),
        ];
        for (m, moderation) in verdicts.into_iter().enumerate() {
            let (image, upload) = upload(user, (n * 10 + m) as u128, moderation);
            image_command(store, image, upload).await;
            if m == 0 && n % 2 == 0 {
                image_command(store, image, ImageCommand::Delete { by: user }).await;
            }
        }
        webhook_endpoint(store, user, n).await;
        if n % 4 == 1 {
            let disable = UserCommand::Disable {
                reason: "abuse".into(),
            };
            user_command(store, user, disable).await;
        }
    }
}

fn start() -> VideoCommand {
    VideoCommand::StartSubmission {
        attempt: 1,
        provider: ProviderKind::Simulator,
        model: "simulator-v1".into(),
    }
}

async fn request(store: &EventStore, owner: UserId) -> VideoId {
    let video = VideoId::from_uuid(Uuid::now_v7());
    let spec = VideoSpec {
        owner,
        prompt: "a paper boat on a rainy street".into(),
        negative_prompt: None,
        provider: ProviderPreference::Auto,
        model: Some("simulator-v1".into()),
        duration_seconds: 4,
        aspect_ratio: "16:9".into(),
        resolution: "480p".into(),
        image_id: None,
        seed: Some(7),
        estimated_cost: Credits::new(4),
        generate_audio: false,
        external_id: None,
        webhook: None,
    };
    let meta = CommandMetadata::new_request(Actor::User(owner));
    request_video(store, video, spec, &meta, None)
        .await
        .expect("video request");
    video
}

pub(crate) async fn replay_all(pool: &PgPool, options: ReplayOptions) -> ReplayReport {
    let models = replay::all_models(pool).expect("models");
    replay::replay(pool, &models, &options, &Silent)
        .await
        .expect("replay")
}

fn dry_run() -> ReplayOptions {
    ReplayOptions {
        dry_run: true,
        ..ReplayOptions::default()
    }
}

/// Every table in `public` with an order-independent digest of its rows.
pub(crate) async fn public_digest(pool: &PgPool) -> Vec<(String, String)> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables
          WHERE table_schema = 'public' ORDER BY table_name",
    )
    .fetch_all(pool)
    .await
    .expect("tables");
    let mut digests = Vec::new();
    for table in tables {
        // A swap stamps the checkpoint's updated_at; the position is what must match.
        let row = if table == "subscription_checkpoints" {
            "(t.name, t.last_tx_id, t.last_position, t.events_handled)::text"
        } else {
            "t::text"
        };
        let digest: Option<String> = sqlx::query_scalar(&format!(
            "SELECT md5(string_agg({row}, '|' ORDER BY {row})) FROM public.\"{table}\" t"
        ))
        .fetch_one(pool)
        .await
        .expect("digest");
        digests.push((table, digest.unwrap_or_default()));
    }
    digests
}

async fn replay_schemas(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar("SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'replay%'")
        .fetch_all(pool)
        .await
        .expect("schemas")
}

async fn public_indexes(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT indexname::text FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .expect("indexes")
}

#[tokio::test]
async fn every_read_model_can_be_replayed_and_only_projectors_run() {
    let db = TestDatabase::new().await;
    let models = replay::all_models(&db.pool).expect("every read model names its tables");
    let names: Vec<&str> = models.iter().map(|m| m.subscription.as_str()).collect();
    assert_eq!(names, READ_MODELS, "exactly the read-model projectors");
    let one = replay::select_models(&db.pool, Some(&["users".to_owned()])).expect("select");
    assert_eq!(one.len(), 1);
    assert!(replay::select_models(&db.pool, Some(&["dispatcher".to_owned()])).is_err());
}

#[tokio::test]
async fn a_rebuilt_read_model_equals_the_live_one_and_swaps_in_unchanged() {
    let db = TestDatabase::new().await;
    let store = EventStore::new(db.pool.clone());
    mixed_workload(&store, 6).await;
    catch_up(&db.pool).await;
    let before = public_digest(&db.pool).await;
    let indexes = public_indexes(&db.pool).await;

    let report = replay_all(&db.pool, dry_run()).await;
    assert!(report.finished && !report.swapped);
    for model in &report.models {
        assert!(!model.tables.is_empty(), "{} compared", model.name);
        for table in &model.tables {
            assert!(table.identical(), "{} differs: {table:?}", model.name);
            assert!(table.live_rows > 0, "{} is not empty", table.table);
        }
    }

    let report = replay_all(&db.pool, ReplayOptions::default()).await;
    assert!(report.finished && report.swapped && report.identical());
    assert_eq!(
        public_digest(&db.pool).await,
        before,
        "same rows, same checkpoints"
    );
    assert_eq!(public_indexes(&db.pool).await, indexes, "index names kept");
    assert!(
        replay_schemas(&db.pool).await.is_empty(),
        "nothing left behind"
    );

    // The live projectors go on from the swapped-in tables.
    let (user, _) = register(&store, "after@example.com").await;
    catch_up(&db.pool).await;
    assert!(read_models::users::get(&db.pool, user)
        .await
        .expect("get")
        .is_some());
}

#[tokio::test]
async fn a_dry_run_leaves_every_public_table_untouched() {
    let db = TestDatabase::new().await;
    let store = EventStore::new(db.pool.clone());
    mixed_workload(&store, 3).await;
    catch_up(&db.pool).await;
    // A table no projector owns, written by the workers: a replay must not reach it.
    sqlx::query(
        "INSERT INTO provider_health (provider, consecutive_failures) VALUES ('simulator', 2)",
    )
    .execute(&db.pool)
    .await
    .expect("provider health");
    let before = public_digest(&db.pool).await;
    // Some live state differs from what the log says: the dry run reports it, changes nothing.
    sqlx::query("UPDATE credit_accounts SET balance = balance + 1")
        .execute(&db.pool)
        .await
        .expect("tamper");
    let tampered = public_digest(&db.pool).await;
    assert_ne!(before, tampered);

    let report = replay_all(&db.pool, dry_run()).await;
    let accounts = report
        .models
        .iter()
        .find(|m| m.name == "credit_accounts")
        .expect("credit_accounts");
    assert_eq!(accounts.tables[0].only_live, 3, "{:?}", accounts.tables);
    assert_eq!(accounts.tables[0].only_rebuilt, 3);
    assert!(!report.swapped);
    assert_eq!(public_digest(&db.pool).await, tampered, "public untouched");
    assert!(replay_schemas(&db.pool).await.is_empty());

    // A real replay repairs it from the log.
    let report = replay_all(&db.pool, ReplayOptions::default()).await;
    assert!(report.swapped && !report.identical());
    assert_eq!(public_digest(&db.pool).await, before);
}

#[tokio::test]
async fn an_interrupted_replay_resumes_where_it_stopped() {
    let db = TestDatabase::new().await;
    let store = EventStore::new(db.pool.clone());
    mixed_workload(&store, 3).await;
    catch_up(&db.pool).await;
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&db.pool)
        .await
        .expect("count");

    let first = replay_all(
        &db.pool,
        ReplayOptions {
            batch_size: 10,
            stop_after: Some(30),
            ..ReplayOptions::default()
        },
    )
    .await;
    assert!(!first.finished && !first.swapped);
    assert_eq!(first.events_read, 30);
    let models = replay::all_models(&db.pool).expect("models").len();
    assert_eq!(replay_schemas(&db.pool).await.len(), models, "copies kept");

    let second = replay_all(
        &db.pool,
        ReplayOptions {
            batch_size: 10,
            ..ReplayOptions::default()
        },
    )
    .await;
    assert!(second.finished && second.swapped && second.identical());
    assert_eq!(
        first.events_read + second.events_read,
        total as u64,
        "each event read once across both runs"
    );
    for model in &second.models {
        assert_eq!(model.events_handled, total, "{}", model.name);
    }
}

#[tokio::test]
async fn events_written_during_a_replay_survive_the_swap() {
    let db = TestDatabase::with_pool_size(30).await;
    let store = EventStore::new(db.pool.clone());
    mixed_workload(&store, 3).await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let live = read_models::spawn_all(db.pool.clone(), stopped);

    // A writer granting credits to one account throughout the replay.
    let (user, _) = register(&store, "busy@example.com").await;
    let writing = Arc::new(AtomicBool::new(true));
    let writer = {
        let (store, writing) = (store.clone(), writing.clone());
        tokio::spawn(async move {
            let mut grants = 0i64;
            while writing.load(Ordering::Relaxed) || grants < 20 {
                let grant = CreditCommand::Grant {
                    amount: Credits::new(1),
                    reason: "drip".into(),
                    granted_by: "system".into(),
                };
                credit_command(&store, user, grant, &system()).await;
                grants += 1;
            }
            grants
        })
    };
    let report = replay_all(
        &db.pool,
        ReplayOptions {
            batch_size: 7,
            ..ReplayOptions::default()
        },
    )
    .await;
    assert!(report.swapped);
    writing.store(false, Ordering::Relaxed);
    let grants = writer.await.expect("writer");
    catch_up(&db.pool).await;

    let account = read_models::credit_accounts::account(&db.pool, user)
        .await
        .expect("account");
    assert_eq!(account.balance, grants, "every grant counted exactly once");
    let ledger: i64 = sqlx::query_scalar("SELECT count(*) FROM credit_ledger WHERE user_id = $1")
        .bind(user.as_uuid())
        .fetch_one(&db.pool)
        .await
        .expect("ledger");
    assert_eq!(ledger, grants);
    let again = replay_all(&db.pool, dry_run()).await;
    assert!(again.identical(), "{:?}", again.models);

    let _ = stop.send(true);
    for projector in live {
        projector
            .await
            .expect("join")
            .expect("projector ran cleanly");
    }
}

#[tokio::test]
async fn inline_read_models_written_with_no_projector_running_are_rebuilt_identically() {
    let db = TestDatabase::new().await;
    // Every write keeps videos, credit_accounts, credit_ledger and credit_purchases current
    // inline; their
    // projectors have not run at all.
    let store = framegate_projections::inline::event_store(db.pool.clone());
    mixed_workload(&store, 4).await;
    let models = replay::select_models(
        &db.pool,
        Some(&[
            "videos".to_owned(),
            "credit_accounts".to_owned(),
            "credit_ledger".to_owned(),
            "credit_purchases".to_owned(),
        ]),
    )
    .expect("select");
    assert_eq!(models.len(), 4);
    let checkpoints: i64 =
        sqlx::query_scalar("SELECT count(*) FROM subscription_checkpoints WHERE last_position > 0")
            .fetch_one(&db.pool)
            .await
            .expect("checkpoints");
    assert_eq!(checkpoints, 0, "no projector ran");
    // The projectors, run now, find everything applied inline and change nothing.
    let before = public_digest(&db.pool).await;
    catch_up(&db.pool).await;
    let after = public_digest(&db.pool).await;
    for table in [
        "videos",
        "credit_accounts",
        "credit_ledger",
        "credit_purchases",
    ] {
        let digest = |digests: &[(String, String)]| {
            digests
                .iter()
                .find(|(t, _)| t == table)
                .map(|(_, d)| d.clone())
                .unwrap_or_default()
        };
        assert!(!digest(&before).is_empty(), "{table} was written inline");
        assert_eq!(
            digest(&after),
            digest(&before),
            "{table} unchanged by its projector"
        );
    }
    // A replay (from the log, at the projectors' checkpoint) builds the same rows.
    let report = replay::replay(&db.pool, &models, &ReplayOptions::default(), &Silent)
        .await
        .expect("replay");
    assert!(report.finished && report.swapped && report.identical());
    for model in &report.models {
        for table in &model.tables {
            assert!(table.live_rows > 0, "{} compared", table.table);
        }
    }
}

#[tokio::test]
async fn a_swap_keeps_what_was_written_inline_past_the_live_checkpoint() {
    let db = TestDatabase::new().await;
    let store = framegate_projections::inline::event_store(db.pool.clone());
    mixed_workload(&store, 2).await;
    catch_up(&db.pool).await;
    // Written after the projectors last ran: only the inline path has applied it.
    let (user, _) = register(&store, "late@example.com").await;
    let key = issue_key(&store, user, "late", "fg_late_0123456789abcdef").await;
    user_command(&store, user, UserCommand::RevokeApiKey { key_id: key }).await;
    user_command(
        &store,
        user,
        UserCommand::Disable {
            reason: "late".into(),
        },
    )
    .await;
    let before = public_digest(&db.pool).await;
    let models =
        replay::select_models(&db.pool, Some(&["users".to_owned(), "api_keys".to_owned()]))
            .expect("select");
    let report = replay::replay(&db.pool, &models, &ReplayOptions::default(), &Silent)
        .await
        .expect("replay");
    assert!(report.swapped);
    let (revoked, disabled): (bool, bool) = sqlx::query_as(
        "SELECT k.revoked_at IS NOT NULL, u.disabled FROM api_keys k JOIN users u ON u.id = k.user_id
          WHERE k.id = $1",
    )
    .bind(key.as_uuid())
    .fetch_one(&db.pool)
    .await
    .expect("the late key is there");
    assert!(
        revoked && disabled,
        "the revocation and the disabling survive the swap"
    );
    let after = public_digest(&db.pool).await;
    for table in ["users", "api_keys"] {
        let digest = |digests: &[(String, String)]| {
            digests
                .iter()
                .find(|(t, _)| t == table)
                .map(|(_, d)| d.clone())
        };
        assert_eq!(
            digest(&after),
            digest(&before),
            "{table} as before the replay"
        );
    }
}
