//! Originals stored before ADR 0027 (with their metadata) are rewritten by the API's
//! maintenance (`images::restrip`), issue 12 item 9: what an upgrade inherits is cleaned too.

use crate::common;

use std::io::Cursor;

use axum::body::Bytes;
use common::pictures::{contains, marked_jpeg, with_exif};
use common::TestApp;
use framegate_api::images::restrip::{self, Drained, MAX_ATTEMPTS};
use framegate_commands::blobs::BlobKey;
use reqwest::StatusCode;
use serde_json::Value;
use uuid::Uuid;

async fn list(app: &TestApp, key: &str, content_type: &str) {
    sqlx::query("INSERT INTO originals_to_strip (blob_key, content_type) VALUES ($1, $2)")
        .bind(key)
        .bind(content_type)
        .execute(&app.db.pool)
        .await
        .expect("listed");
}

fn exif_tags(bytes: &[u8]) -> Vec<exif::Tag> {
    exif::Reader::new()
        .read_from_container(&mut Cursor::new(bytes))
        .map(|exif| exif.fields().map(|field| field.tag).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn an_original_stored_with_its_metadata_is_rewritten_once_and_the_rest_is_accounted_for() {
    let app = TestApp::spawn().await;
    let (_, token, _) = app.signed_in_user("inherited@example.com").await;
    let photo = with_exif(&marked_jpeg(600, 400), "Framegate Optics", 6);
    let part = reqwest::multipart::Part::bytes(photo.clone())
        .file_name("photo.jpg")
        .mime_str("image/jpeg")
        .expect("mime");
    let uploaded = app
        .client
        .post(app.url("/v1/images"))
        .bearer_auth(&token)
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
        .expect("upload");
    assert_eq!(uploaded.status(), StatusCode::CREATED);
    let uploaded: Value = uploaded.json().await.expect("json");
    let id: Uuid = uploaded["id"].as_str().expect("id").parse().expect("uuid");
    let (key, content_type): (String, String) =
        sqlx::query_as("SELECT blob_key, content_type FROM images WHERE id = $1")
            .bind(id)
            .fetch_one(&app.db.pool)
            .await
            .expect("image row");
    let blob = BlobKey::new(key.as_str()).expect("key");

    // As a release before ADR 0027 stored it: the upload itself, GPS and camera included.
    app.state
        .blobs
        .put(&blob, Bytes::from(photo.clone()), &content_type)
        .await
        .expect("put");
    assert!(exif_tags(&photo).contains(&exif::Tag::GPSLatitude));
    list(&app, &key, &content_type).await;
    // One whose image was deleted and cleaned up since, and one that is not an image.
    list(&app, "images/gone/original", "image/jpeg").await;
    let broken = BlobKey::new("images/broken/original").expect("key");
    app.state
        .blobs
        .put(&broken, Bytes::from_static(b"not a picture"), "image/png")
        .await
        .expect("put");
    list(&app, broken.as_str(), "image/png").await;

    let done = restrip::drain(&app.state).await.expect("drain");
    assert_eq!(
        done,
        Drained {
            rewritten: 1,
            unchanged: 1,
            failed: 1
        }
    );
    let stored = app.state.blobs.get(&blob).await.expect("get");
    assert_eq!(exif_tags(&stored), [exif::Tag::Orientation]);
    assert!(!contains(&stored, b"Framegate Optics"));
    let pixels = |bytes: &[u8]| {
        image::load_from_memory_with_format(bytes, image::ImageFormat::Jpeg)
            .expect("a JPEG")
            .to_rgb8()
    };
    assert_eq!(pixels(&stored), pixels(&photo), "not re-encoded");

    // The broken one is retried up to the limit, then left listed with its error.
    for _ in 1..MAX_ATTEMPTS {
        let again = restrip::drain(&app.state).await.expect("drain");
        assert_eq!(again.failed, 1);
    }
    assert_eq!(
        restrip::drain(&app.state).await.expect("drain"),
        Drained::default()
    );
    let left: Vec<(String, i32, Option<String>)> =
        sqlx::query_as("SELECT blob_key, attempts, last_error FROM originals_to_strip")
            .fetch_all(&app.db.pool)
            .await
            .expect("rows");
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].0, broken.as_str());
    assert_eq!(left[0].1, MAX_ATTEMPTS);
    assert!(left[0].2.is_some());
}
