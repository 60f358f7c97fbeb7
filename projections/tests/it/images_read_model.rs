//! The `images` read model against real Postgres, fed through the real command path: uploads,
//! rejections, deletions and re-uploads of one stream, and an owner's listing.

use crate::support;

use chrono::{DateTime, Utc};
use framegate_commands::testing::TestDatabase;
use framegate_commands::{Actor, CommandMetadata, EventStore};
use framegate_domain::{ImageCommand, ImageId, ModerationDecision, UserId};
use framegate_projections::read_models::catch_up_all;
use framegate_projections::read_models::images::{self, ImageRow};
use uuid::Uuid;

use support::upload;

fn sha256(n: u128) -> String {
    format!("{n:064x}")
}

async fn execute(store: &EventStore, id: ImageId, command: ImageCommand) {
    let meta = CommandMetadata::new_request(Actor::System);
    store
        .images()
        .execute(&id.to_string(), command, &meta)
        .await
        .expect("image command")
        .expect("an event is written");
}

async fn row(db: &TestDatabase, id: ImageId) -> ImageRow {
    catch_up_all(&db.pool).await.expect("projectors catch up");
    images::get(&db.pool, id.as_uuid())
        .await
        .expect("get")
        .expect("a row")
}

#[tokio::test]
async fn an_image_stream_is_one_row_through_upload_deletion_rejection_and_re_upload() {
    let db = TestDatabase::new().await;
    let store = EventStore::new(db.pool.clone());
    let owner = UserId::from_uuid(Uuid::now_v7());
    let (id, first) = upload(owner, 1, ModerationDecision::allow());
    let ImageCommand::Upload {
        blob_key,
        thumbnail_key,
        ..
    } = first.clone()
    else {
        unreachable!("an upload")
    };
    execute(&store, id, first).await;
    let uploaded = row(&db, id).await;
    assert_eq!(uploaded.id, id.as_uuid());
    assert_eq!(uploaded.owner_id, owner.as_uuid());
    assert_eq!(uploaded.status, images::AVAILABLE);
    assert!(uploaded.is_available());
    assert_eq!(uploaded.sha256, sha256(1));
    assert_eq!(uploaded.content_type, "image/jpeg");
    assert_eq!(
        (uploaded.bytes, uploaded.width, uploaded.height),
        (123_456, 400, 600)
    );
    assert_eq!(uploaded.orientation, Some(6));
    let exif = uploaded.exif.as_ref().expect("exif").0.clone();
    assert_eq!(exif.camera_make.as_deref(), Some("Framegate Optics"));
    assert_eq!(uploaded.blob_key.as_deref(), Some(blob_key.as_str()));
    assert_eq!(
        uploaded.thumbnail_key.as_deref(),
        Some(thumbnail_key.as_str())
    );
    assert_eq!(uploaded.moderation.0, ModerationDecision::allow());
    assert_eq!(uploaded.created_at, uploaded.updated_at);
    assert_eq!(uploaded.deleted_at, None);

    execute(&store, id, ImageCommand::Delete { by: owner }).await;
    let deleted = row(&db, id).await;
    assert_eq!(deleted.status, images::DELETED);
    assert!(deleted
        .deleted_at
        .is_some_and(|at| at > uploaded.created_at));
    assert_eq!(
        deleted.blob_key, uploaded.blob_key,
        "the keys stay for the cleanup"
    );
    assert!(images::list(&db.pool, owner, None, 10)
        .await
        .expect("list")
        .is_empty());

    let refusal = ModerationDecision::reject("deny_formats", "image/jpeg images are not accepted");
    let (_, rejected_upload) = upload(owner, 1, refusal.clone());
    execute(&store, id, rejected_upload).await;
    let rejected = row(&db, id).await;
    assert_eq!(rejected.status, images::REJECTED);
    assert_eq!(rejected.moderation.0, refusal);
    assert_eq!(
        (
            rejected.orientation,
            rejected.exif.clone(),
            rejected.blob_key.clone()
        ),
        (None, None, None),
        "a rejection stores nothing"
    );
    assert_eq!(rejected.deleted_at, None);
    assert!(rejected.created_at > deleted.updated_at);

    let (_, again) = upload(owner, 1, ModerationDecision::allow());
    execute(&store, id, again).await;
    let available = row(&db, id).await;
    assert!(available.is_available());
    assert!(available.blob_key.is_some() && available.blob_key != uploaded.blob_key);

    assert_eq!(
        images::get(&db.pool, Uuid::now_v7()).await.expect("get"),
        None
    );
}

#[tokio::test]
async fn an_owners_images_are_listed_newest_first_across_cursor_pages_and_only_theirs() {
    let db = TestDatabase::new().await;
    let store = EventStore::new(db.pool.clone());
    let owner = UserId::from_uuid(Uuid::now_v7());
    let other = UserId::from_uuid(Uuid::now_v7());
    let mut uploaded = Vec::new();
    for n in 0..5 {
        let (id, command) = upload(owner, n, ModerationDecision::allow());
        execute(&store, id, command).await;
        uploaded.push(id.as_uuid());
    }
    let (gone, command) = upload(owner, 99, ModerationDecision::allow());
    execute(&store, gone, command).await;
    execute(&store, gone, ImageCommand::Delete { by: owner }).await;
    let (theirs, command) = upload(other, 0, ModerationDecision::allow());
    execute(&store, theirs, command).await;
    catch_up_all(&db.pool).await.expect("projectors catch up");
    uploaded.reverse();

    let mut listed = Vec::new();
    let mut cursor: Option<(DateTime<Utc>, Uuid)> = None;
    loop {
        let page = images::list(&db.pool, owner, cursor, 2)
            .await
            .expect("page");
        assert!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        cursor = Some((last.created_at, last.id));
        listed.extend(page.iter().map(|row| row.id));
    }
    assert_eq!(
        listed, uploaded,
        "newest first, each once, without the deleted one"
    );
    let theirs_listed = images::list(&db.pool, other, None, 10).await.expect("list");
    assert_eq!(
        theirs_listed.iter().map(|row| row.id).collect::<Vec<_>>(),
        [theirs.as_uuid()]
    );
}
