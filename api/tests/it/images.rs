//! Image uploads through the real router: recognition by content, hostile and broken files,
//! per-user dedupe (also under concurrency), ownership, moderation, location privacy,
//! deletion with the blob cleanup subscriber, and listing.
//!
//! Every image is made in the test with the `image` crate; EXIF and lying headers are
//! patched in by hand (`common::pictures`).

use crate::common;

use std::io::Cursor;
use std::path::Path;

use common::pictures::*;
use common::{assert_problem, TestApp};
use framegate_api::images::RuleSet;
use framegate_domain::{ImageId, UserId};
use framegate_projections::Subscription;
use framegate_workers::image_cleanup::{ImageCleanup, SUBSCRIPTION};
use image::DynamicImage;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

async fn upload(
    app: &TestApp,
    token: &str,
    bytes: Vec<u8>,
    name: &str,
    mime: &str,
) -> reqwest::Response {
    let part = reqwest::multipart::Part::bytes(bytes)
        .file_name(name.to_owned())
        .mime_str(mime)
        .expect("mime");
    let form = reqwest::multipart::Form::new().part("file", part);
    app.client
        .post(app.url("/v1/images"))
        .bearer_auth(token)
        .multipart(form)
        .send()
        .await
        .expect("request")
}

/// Uploads `bytes` expecting `status`; returns the body.
async fn upload_expecting(app: &TestApp, token: &str, bytes: Vec<u8>, status: StatusCode) -> Value {
    let response = upload(app, token, bytes, "image.bin", "application/octet-stream").await;
    assert_eq!(response.status(), status);
    response.json().await.expect("json")
}

async fn json(response: reqwest::Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status);
    response.json().await.expect("json")
}

async fn download(app: &TestApp, link: &Value) -> reqwest::Response {
    let url = link["url"].as_str().expect("a signed url");
    app.client.get(url).send().await.expect("download")
}

/// Runs the blob cleanup subscriber over everything committed so far.
async fn clean_up(app: &TestApp) {
    Subscription::new(SUBSCRIPTION, app.db.pool.clone())
        .drain(&ImageCleanup::new(app.state.blobs.clone()))
        .await
        .expect("cleanup drains");
}

/// The event types of an image's stream, in order, with their payloads as text.
async fn stream(app: &TestApp, id: &str) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT event_type, payload::text FROM events
          WHERE aggregate_type = 'Image' AND aggregate_id = $1 ORDER BY sequence",
    )
    .bind(id)
    .fetch_all(&app.db.pool)
    .await
    .expect("events")
}

/// How many originals the filesystem blob store holds (it keeps the bytes under `objects/`
/// and a content-type sidecar for each under `meta/`).
fn stored_originals(app: &TestApp) -> usize {
    originals(&app.state.config.blobs.dir.join("objects"))
}

fn originals(root: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(root) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| {
            let path = entry.path();
            if path.is_dir() {
                originals(&path)
            } else {
                usize::from(entry.file_name().to_string_lossy().starts_with("original."))
            }
        })
        .sum()
}

#[tokio::test]
async fn an_upload_is_stored_with_its_facts_a_thumbnail_and_signed_links() {
    let app = TestApp::spawn().await;
    let (user, token, _) = app.signed_in_user("upload@example.com").await;
    let original = png(1024, 600);
    let created = upload_expecting(&app, &token, original.clone(), StatusCode::CREATED).await;

    let sha256 = hex::encode(Sha256::digest(&original));
    let id = ImageId::for_content(UserId::from_uuid(user), &sha256);
    assert_eq!(
        created["id"],
        id.to_string(),
        "the id is derived from owner and content"
    );
    assert_eq!(created["status"], "available");
    assert_eq!(created["content_type"], "image/png");
    assert_eq!(created["bytes"], original.len());
    assert_eq!(
        (created["width"].clone(), created["height"].clone()),
        (1024.into(), 600.into())
    );
    assert_eq!(created["sha256"], sha256);
    assert_eq!(created["moderation"]["allowed"], true);

    let fetched = json(
        app.get(&format!("/v1/images/{id}"), Some(&token)).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(fetched["sha256"], created["sha256"]);
    let stored = download(&app, &fetched["url"]).await;
    assert_eq!(stored.status(), StatusCode::OK);
    assert_eq!(
        stored.bytes().await.expect("bytes").as_ref(),
        original.as_slice(),
        "a PNG without metadata is stored as it came"
    );
    let thumbnail = download(&app, &fetched["thumbnail_url"])
        .await
        .bytes()
        .await
        .expect("bytes");
    let thumbnail =
        image::load_from_memory_with_format(&thumbnail, image::ImageFormat::Jpeg).expect("a JPEG");
    assert_eq!((thumbnail.width(), thumbnail.height()), (512, 300));
    assert!(fetched["url"]["expires_at"].is_string());

    let unauthenticated = app
        .client
        .get(app.url(&format!("/v1/images/{id}")))
        .send()
        .await
        .expect("request");
    assert_problem(unauthenticated, StatusCode::UNAUTHORIZED, "unauthenticated").await;
}

#[tokio::test]
async fn the_format_comes_from_the_content_never_the_name_or_declared_type() {
    let app = TestApp::spawn().await;
    let (_, token, _) = app.signed_in_user("formats@example.com").await;
    for (bytes, name, declared, detected) in [
        (webp(300, 300), "holiday.png", "image/png", "image/webp"),
        (jpeg(300, 300), "scan.webp", "image/webp", "image/jpeg"),
        (png(300, 300), "notes.txt", "text/plain", "image/png"),
    ] {
        let body = json(
            upload(&app, &token, bytes, name, declared).await,
            StatusCode::CREATED,
        )
        .await;
        assert_eq!(body["content_type"], detected, "{name}");
    }
    // A text file named and declared as a PNG is still text.
    let renamed = upload(
        &app,
        &token,
        b"just some text, not pixels".to_vec(),
        "photo.png",
        "image/png",
    )
    .await;
    assert_problem(
        renamed,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_image_type",
    )
    .await;
}

#[tokio::test]
async fn bad_uploads_are_clear_client_errors_and_store_nothing() {
    let app = TestApp::spawn().await;
    let (_, token, _) = app.signed_in_user("bad@example.com").await;
    let jpeg = jpeg(600, 400);
    let png_file = png(600, 400);
    let gif = b"GIF89a\x2c\x01\x2c\x01\x00\x00\x00;".to_vec();
    let mut too_big = png(300, 300);
    too_big.resize(10 * 1024 * 1024 + 1, 0);
    for (what, bytes, status, code) in [
        (
            "empty",
            Vec::new(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "empty_file",
        ),
        (
            "a GIF renamed",
            gif,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_image_type",
        ),
        (
            "too small",
            png(255, 600),
            StatusCode::UNPROCESSABLE_ENTITY,
            "image_too_small",
        ),
        (
            "too wide",
            png(4097, 256),
            StatusCode::UNPROCESSABLE_ENTITY,
            "image_too_large",
        ),
        (
            "a bomb's header",
            png_claiming(&png(300, 300), 60_000, 60_000),
            StatusCode::UNPROCESSABLE_ENTITY,
            "image_too_large",
        ),
        (
            "a lying header",
            png_claiming(&png(300, 300), 4000, 4000),
            StatusCode::UNPROCESSABLE_ENTITY,
            "corrupt_image",
        ),
        (
            "a truncated JPEG",
            jpeg[..jpeg.len() / 2].to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "corrupt_image",
        ),
        (
            "a truncated PNG",
            png_file[..png_file.len() / 2].to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "corrupt_image",
        ),
        (
            "over 10 MiB",
            too_big,
            StatusCode::PAYLOAD_TOO_LARGE,
            "file_too_large",
        ),
    ] {
        let response = upload(&app, &token, bytes, "upload.jpg", "image/jpeg").await;
        let problem = assert_problem(response, status, code).await;
        assert!(
            !problem["detail"].as_str().unwrap_or_default().is_empty(),
            "{what}"
        );
    }

    let not_multipart = app
        .post("/v1/images", Some(&token), serde_json::json!({"file": "x"}))
        .await;
    assert_problem(
        not_multipart,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    let form = reqwest::multipart::Form::new().text("image", "no file part");
    let no_file = app
        .client
        .post(app.url("/v1/images"))
        .bearer_auth(&token)
        .multipart(form)
        .send()
        .await
        .expect("request");
    let problem = assert_problem(
        no_file,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(problem["errors"][0]["field"], "file");
    let garbled = app
        .client
        .post(app.url("/v1/images"))
        .bearer_auth(&token)
        .header("content-type", "multipart/form-data; boundary=XYZ")
        .body("--XYZ\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nunterminated")
        .send()
        .await
        .expect("request");
    assert_problem(garbled, StatusCode::BAD_REQUEST, "malformed_multipart").await;

    let listed = json(app.get("/v1/images", Some(&token)).await, StatusCode::OK).await;
    assert_eq!(listed["items"], serde_json::json!([]));
    assert_eq!(stored_originals(&app), 0);
}

#[tokio::test]
async fn files_over_the_default_body_limit_are_accepted_and_bodies_over_the_upload_limit_refused() {
    let app = TestApp::with_config(|config| config.images.max_bytes = 4 * 1024 * 1024).await;
    let (_, token, _) = app.signed_in_user("large@example.com").await;
    let large = noise_png(1000, 1000);
    assert!(
        large.len() > 2 * 1024 * 1024,
        "over the 1 MiB default: {}",
        large.len()
    );
    upload_expecting(&app, &token, large, StatusCode::CREATED).await;

    let body = vec![0_u8; 4 * 1024 * 1024 + 128 * 1024];
    let response = upload(&app, &token, body, "huge.png", "image/png").await;
    assert_problem(response, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
}

#[tokio::test]
async fn the_same_file_is_one_image_per_user_even_when_uploaded_concurrently() {
    let app = TestApp::spawn().await;
    let (_, alice, _) = app.signed_in_user("alice@example.com").await;
    let (_, bob, _) = app.signed_in_user("bob@example.com").await;
    let file = jpeg(640, 480);

    let uploads = (0..6).map(|_| upload(&app, &alice, file.clone(), "a.jpg", "image/jpeg"));
    let responses = futures::future::join_all(uploads).await;
    let mut created = 0;
    let mut ids = Vec::new();
    for response in responses {
        match response.status() {
            StatusCode::CREATED => created += 1,
            StatusCode::OK | StatusCode::ACCEPTED => {}
            other => panic!(
                "unexpected {other}: {}",
                response.text().await.unwrap_or_default()
            ),
        }
        let body: Value = response.json().await.expect("json");
        ids.push(body["id"].as_str().expect("id").to_owned());
    }
    assert_eq!(
        created, 1,
        "one upload stores the image; the others are answered with it"
    );
    assert!(ids.windows(2).all(|pair| pair[0] == pair[1]), "{ids:?}");
    let again = upload_expecting(&app, &alice, file.clone(), StatusCode::OK).await;
    assert_eq!(again["id"], ids[0].as_str());
    let events = stream(&app, &ids[0]).await;
    assert_eq!(events.len(), 1, "one ImageUploaded: {events:?}");
    assert_eq!(
        stored_originals(&app),
        1,
        "the losers removed what they stored"
    );

    let bobs = upload_expecting(&app, &bob, file, StatusCode::CREATED).await;
    assert_ne!(
        bobs["id"],
        ids[0].as_str(),
        "another user's copy is another image"
    );
    let listed = json(app.get("/v1/images", Some(&alice)).await, StatusCode::OK).await;
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn another_users_image_cannot_be_seen_listed_or_deleted() {
    let app = TestApp::spawn().await;
    let (_, alice, _) = app.signed_in_user("owner@example.com").await;
    let (_, mallory, _) = app.signed_in_user("mallory@example.com").await;
    let image = upload_expecting(&app, &alice, png(400, 400), StatusCode::CREATED).await;
    let path = format!("/v1/images/{}", image["id"].as_str().expect("id"));

    assert_problem(
        app.get(&path, Some(&mallory)).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let deleted = app
        .request(Method::DELETE, &path, Some(&mallory), None)
        .await;
    assert_problem(deleted, StatusCode::NOT_FOUND, "not_found").await;
    let listed = json(app.get("/v1/images", Some(&mallory)).await, StatusCode::OK).await;
    assert_eq!(listed["items"], serde_json::json!([]));
    let unknown = format!("/v1/images/{}", Uuid::now_v7());
    assert_problem(
        app.get(&unknown, Some(&alice)).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;

    let still = json(app.get(&path, Some(&alice)).await, StatusCode::OK).await;
    assert_eq!(still["status"], "available", "the owner still has it");
}

#[tokio::test]
async fn location_is_neither_shown_nor_recorded_nor_left_in_the_thumbnail() {
    let app = TestApp::spawn().await;
    let (_, token, _) = app.signed_in_user("gps@example.com").await;
    let photo = jpeg_with_exif(600, 400, "Framegate Optics", 6);
    let body = upload_expecting(&app, &token, photo, StatusCode::CREATED).await;
    assert_eq!(
        (body["width"].clone(), body["height"].clone()),
        (400.into(), 600.into()),
        "upright"
    );
    assert_eq!(body["orientation"], 6);
    assert_eq!(
        body["exif"],
        serde_json::json!({"camera_make": "Framegate Optics", "camera_model": null, "taken_at": null})
    );
    let id = body["id"].as_str().expect("id");
    let fetched = app
        .get(&format!("/v1/images/{id}"), Some(&token))
        .await
        .text()
        .await
        .expect("text");
    let listed = app
        .get("/v1/images", Some(&token))
        .await
        .text()
        .await
        .expect("text");
    let row: String = sqlx::query_scalar("SELECT to_jsonb(images)::text FROM images WHERE id = $1")
        .bind(id.parse::<Uuid>().expect("uuid"))
        .fetch_one(&app.db.pool)
        .await
        .expect("row");
    let events: String = stream(&app, id)
        .await
        .into_iter()
        .map(|(_, payload)| payload)
        .collect();
    for text in [&fetched, &listed, &row, &events] {
        let lower = text.to_lowercase();
        assert!(
            !lower.contains("gps") && !lower.contains("latitude") && !lower.contains("longitude"),
            "{text}"
        );
    }

    let link: Value = serde_json::from_str(&fetched).expect("json");
    let thumbnail = download(&app, &link["thumbnail_url"])
        .await
        .bytes()
        .await
        .expect("bytes");
    assert!(
        !contains(&thumbnail, b"Exif"),
        "the thumbnail carries no EXIF at all"
    );
    assert!(!contains(&thumbnail, b"Framegate Optics"));
    let decoded = image::load_from_memory(&thumbnail).expect("a JPEG");
    assert_eq!((decoded.width(), decoded.height()), (341, 512), "upright");
}

/// Issue 12 (item 9): the original was stored byte for byte, GPS tags and all, although
/// location is "never kept".
#[tokio::test]
async fn the_stored_original_keeps_no_location_or_camera_and_still_shows_upright() {
    let app = TestApp::spawn().await;
    let (_, token, _) = app.signed_in_user("original@example.com").await;
    let photo = with_exif(&marked_jpeg(600, 400), "Framegate Optics", 6);
    let mut with_trailer = photo.clone();
    with_trailer.extend_from_slice(&jpeg_with_exif(300, 300, "Second Camera", 1));
    let body = upload_expecting(&app, &token, with_trailer.clone(), StatusCode::CREATED).await;
    assert_eq!(body["bytes"], with_trailer.len(), "the size of the upload");
    let stored = download(&app, &body["url"]).await;
    assert_eq!(stored.status(), StatusCode::OK);
    let stored = stored.bytes().await.expect("bytes").to_vec();

    let exif = exif::Reader::new()
        .read_from_container(&mut Cursor::new(&stored))
        .expect("the orientation is still there");
    let tags: Vec<exif::Tag> = exif.fields().map(|field| field.tag).collect();
    assert_eq!(
        tags,
        [exif::Tag::Orientation],
        "nothing else: no GPS, no camera"
    );
    assert!(!contains(&stored, b"Framegate Optics"));
    assert!(
        !contains(&stored, b"Second Camera"),
        "nothing after the image"
    );
    assert!(stored.ends_with(&[0xFF, 0xD9]));

    let pixels = |bytes: &[u8]| {
        image::load_from_memory_with_format(bytes, image::ImageFormat::Jpeg)
            .expect("a JPEG")
            .to_rgb8()
    };
    assert_eq!(
        pixels(&stored),
        pixels(&photo),
        "the same pixels, not re-encoded"
    );
    // As a viewer shows it: orientation 6 turns it a quarter clockwise, so the red corner
    // is at the top right of a 400 x 600 picture.
    let mut decoder =
        image::ImageReader::with_format(Cursor::new(&stored), image::ImageFormat::Jpeg)
            .into_decoder()
            .expect("a JPEG");
    let orientation = image::ImageDecoder::orientation(&mut decoder).expect("orientation");
    let mut shown = DynamicImage::from_decoder(decoder).expect("decodes");
    shown.apply_orientation(orientation);
    let shown = shown.to_rgb8();
    assert_eq!(shown.dimensions(), (400, 600));
    let red = |x, y| {
        let [r, g, b] = shown.get_pixel(x, y).0;
        r > 200 && g < 60 && b < 60
    };
    assert!(red(350, 50) && !red(50, 50), "upright");
}

/// Issue 12 (item 15): the header said 4096 x 4096, the scan held 640 x 360, and the rest
/// was accepted as grey.
#[tokio::test]
async fn a_jpeg_with_less_scan_data_than_its_header_claims_is_refused() {
    let app = TestApp::spawn().await;
    let (_, token, _) = app.signed_in_user("short-scan@example.com").await;
    let mut liar = jpeg(640, 360);
    let sof = liar
        .windows(2)
        .position(|pair| pair == [0xFF, 0xC0])
        .expect("a baseline frame header");
    liar[sof + 5..sof + 9].copy_from_slice(&[0x10, 0x00, 0x10, 0x00]); // 4096 x 4096
    let response = upload(&app, &token, liar, "liar.jpg", "image/jpeg").await;
    assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY, "corrupt_image").await;
    assert_eq!(stored_originals(&app), 0);
}

#[tokio::test]
async fn a_moderation_rule_rejects_an_upload_and_the_rejection_is_recorded() {
    let rules = RuleSet::parse("deny_formats=webp").expect("rules");
    let app = TestApp::with_config(|config| config.image_moderation = rules).await;
    let (user, token, _) = app.signed_in_user("moderated@example.com").await;
    let file = webp(300, 300);
    let id = ImageId::for_content(UserId::from_uuid(user), &hex::encode(Sha256::digest(&file)));

    let response = upload(&app, &token, file.clone(), "w.webp", "image/webp").await;
    let problem =
        assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY, "image_rejected").await;
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("deny_formats")),
        "{problem}"
    );
    let events = stream(&app, &id.to_string()).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].0, "ImageRejected");
    assert!(
        events[0].1.contains("deny_formats"),
        "the decision is recorded: {}",
        events[0].1
    );
    assert_eq!(stored_originals(&app), 0, "nothing stored");

    let rejected = json(
        app.get(&format!("/v1/images/{id}"), Some(&token)).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(rejected["status"], "rejected");
    assert_eq!(rejected["moderation"]["allowed"], false);
    assert_eq!(rejected["moderation"]["rule"], "deny_formats");
    assert!(rejected["url"].is_null() && rejected["thumbnail_url"].is_null());
    // Uploading it again is reviewed again (and rejected again), never answered as a duplicate.
    let again = upload(&app, &token, file, "w.webp", "image/webp").await;
    assert_problem(again, StatusCode::UNPROCESSABLE_ENTITY, "image_rejected").await;
    assert_eq!(stream(&app, &id.to_string()).await.len(), 2);

    let allowed = upload_expecting(&app, &token, png(300, 300), StatusCode::CREATED).await;
    assert_eq!(allowed["moderation"]["allowed"], true);
}

#[tokio::test]
async fn deleting_hides_the_image_and_cleanup_removes_only_that_uploads_files() {
    let app = TestApp::spawn().await;
    let (_, token, _) = app.signed_in_user("delete@example.com").await;
    let file = png(500, 500);
    let first = upload_expecting(&app, &token, file.clone(), StatusCode::CREATED).await;
    let path = format!("/v1/images/{}", first["id"].as_str().expect("id"));

    let deleted = app.request(Method::DELETE, &path, Some(&token), None).await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert_problem(
        app.get(&path, Some(&token)).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let twice = app.request(Method::DELETE, &path, Some(&token), None).await;
    assert_problem(twice, StatusCode::NOT_FOUND, "not_found").await;
    let listed = json(app.get("/v1/images", Some(&token)).await, StatusCode::OK).await;
    assert_eq!(listed["items"], serde_json::json!([]));

    // Uploaded again before the cleanup ran: same stream, same id, new files.
    let second = upload_expecting(&app, &token, file, StatusCode::CREATED).await;
    assert_eq!(second["id"], first["id"]);
    assert_ne!(second["url"]["url"], first["url"]["url"]);
    clean_up(&app).await;
    for link in [&first["url"], &first["thumbnail_url"]] {
        assert_eq!(
            download(&app, link).await.status(),
            StatusCode::NOT_FOUND,
            "the deleted upload's files are gone"
        );
    }
    for link in [&second["url"], &second["thumbnail_url"]] {
        assert_eq!(
            download(&app, link).await.status(),
            StatusCode::OK,
            "the re-upload's files stay"
        );
    }
    // Replaying the deletion (a crash before the checkpoint moved) finds nothing to remove.
    sqlx::query("DELETE FROM subscription_checkpoints WHERE name = $1")
        .bind(SUBSCRIPTION)
        .execute(&app.db.pool)
        .await
        .expect("reset the checkpoint");
    clean_up(&app).await;
    assert_eq!(stored_originals(&app), 1);
}

#[tokio::test]
async fn images_are_listed_newest_first_across_cursor_pages() {
    let app = TestApp::spawn().await;
    let (_, token, _) = app.signed_in_user("pages@example.com").await;
    let mut uploaded = Vec::new();
    for side in [300, 310, 320] {
        let body = upload_expecting(&app, &token, png(side, side), StatusCode::CREATED).await;
        uploaded.push(body["id"].as_str().expect("id").to_owned());
    }
    uploaded.reverse();

    let first = json(
        app.get("/v1/images?limit=2", Some(&token)).await,
        StatusCode::OK,
    )
    .await;
    let cursor = first["next_cursor"].as_str().expect("a next page");
    let second = json(
        app.get(&format!("/v1/images?limit=2&cursor={cursor}"), Some(&token))
            .await,
        StatusCode::OK,
    )
    .await;
    assert!(second["next_cursor"].is_null());
    let listed: Vec<&str> = [&first, &second]
        .iter()
        .flat_map(|page| page["items"].as_array().expect("items"))
        .map(|item| item["id"].as_str().expect("id"))
        .collect();
    assert_eq!(listed, uploaded);
    assert!(first["items"][0]["thumbnail_url"]["url"].is_string());
    let bad = app.get("/v1/images?cursor=nonsense", Some(&token)).await;
    assert_problem(bad, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
}

#[tokio::test]
async fn the_openapi_document_describes_the_image_endpoints() {
    let app = TestApp::spawn().await;
    let doc = json(app.get("/openapi.json", None).await, StatusCode::OK).await;
    let images = &doc["paths"]["/v1/images"];
    let form = &images["post"]["requestBody"]["content"]["multipart/form-data"]["schema"];
    assert!(form["properties"]["file"].is_object(), "{images}");
    assert!(images["get"].is_object());
    let image = &doc["paths"]["/v1/images/{id}"];
    assert!(
        image["get"].is_object() && image["delete"].is_object(),
        "{image}"
    );
    assert!(
        doc["components"]["schemas"]["ImageResponse"]["properties"]["thumbnail_url"].is_object()
    );
}
