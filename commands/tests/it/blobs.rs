//! Blob storage: one contract suite run against both adapters (the filesystem in a temporary
//! directory, S3 against a real S3-compatible server), then what only one adapter does
//! (HMAC-signed links for the filesystem, presigned URLs for S3) and the configuration.
//!
//! The S3 tests need the server that `scripts/services.sh` starts (moto on 127.0.0.1:9000;
//! override with FRAMEGATE_TEST_S3_ENDPOINT). Without it they fail, saying so: a storage
//! adapter that was never exercised must not pass CI.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use framegate_commands::blobs::{
    build, BlobBackend, BlobConfig, BlobError, BlobKey, BlobRead, BlobStore, Blobs, ByteRange,
    FilesystemStore, S3Config, S3Store,
};
use tempfile::TempDir;
use uuid::Uuid;

fn key(key: &str) -> BlobKey {
    BlobKey::new(key).unwrap_or_else(|error| panic!("test key {key:?} is invalid: {error}"))
}

/// Bytes that are not all alike, so an off-by-one or a reordering shows.
fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state >> 24) as u8
        })
        .collect()
}

/// A store under test plus whatever must outlive it (the temporary directory).
struct Fixture {
    store: Arc<dyn BlobStore>,
    _dir: Option<TempDir>,
}

const PUBLIC_URL: &str = "http://framegate.test";
const SIGNING_KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

fn filesystem_store() -> (FilesystemStore, TempDir) {
    let dir = TempDir::new().expect("temporary directory");
    let store = FilesystemStore::new(
        dir.path().join("blobs"),
        SIGNING_KEY.to_vec(),
        format!("{PUBLIC_URL}/"),
    );
    (store, dir)
}

async fn filesystem_fixture() -> Fixture {
    let (store, dir) = filesystem_store();
    Fixture {
        store: Arc::new(store),
        _dir: Some(dir),
    }
}

fn s3_endpoint() -> String {
    std::env::var("FRAMEGATE_TEST_S3_ENDPOINT")
        .ok()
        .filter(|endpoint| !endpoint.is_empty())
        .unwrap_or_else(|| "http://127.0.0.1:9000".to_owned())
}

/// Test credentials passed explicitly rather than through the process environment, which
/// tests running in parallel would share (moto accepts any pair).
fn s3_config(bucket: &str) -> S3Config {
    let access = std::env::var("AWS_ACCESS_KEY_ID").unwrap_or_else(|_| "test".to_owned());
    let secret = std::env::var("AWS_SECRET_ACCESS_KEY").unwrap_or_else(|_| "test".to_owned());
    S3Config::new(bucket, "us-east-1", Some(s3_endpoint())).with_static_credentials(access, secret)
}

/// An S3 store on a fresh bucket of its own.
async fn s3_store() -> S3Store {
    let bucket = format!("framegate-test-{}", Uuid::new_v4().simple());
    let store = S3Store::new(&s3_config(&bucket))
        .await
        .expect("S3 client configuration");
    if let Err(error) = store.ensure_bucket().await {
        panic!(
            "cannot create a bucket on the S3 test server at {} ({error}). Start it with \
             scripts/services.sh, or point FRAMEGATE_TEST_S3_ENDPOINT at an S3-compatible server",
            s3_endpoint()
        );
    }
    store
}

async fn s3_fixture() -> Fixture {
    Fixture {
        store: Arc::new(s3_store().await),
        _dir: None,
    }
}

/// The behaviour every adapter must have, written once against the port.
mod contract {
    use super::*;

    pub async fn a_stored_blob_reads_back_byte_for_byte(store: &dyn BlobStore) {
        let k = key("images/0190f3c2/original.png");
        let content = pattern(70_001, 1);
        store
            .put(&k, Bytes::from(content.clone()), "image/png")
            .await
            .expect("put");
        assert_eq!(store.get(&k).await.expect("get"), content);
        assert_eq!(store.head(&k).await.expect("head"), Some(70_001));
    }

    pub async fn storing_again_replaces_the_previous_blob(store: &dyn BlobStore) {
        let k = key("thumbnails/v1.webp");
        store
            .put(
                &k,
                Bytes::from_static(b"first version, longer"),
                "image/webp",
            )
            .await
            .expect("first put");
        store
            .put(&k, Bytes::from_static(b"second"), "image/webp")
            .await
            .expect("second put");
        assert_eq!(store.get(&k).await.expect("get"), &b"second"[..]);
        assert_eq!(store.head(&k).await.expect("head"), Some(6));
    }

    pub async fn a_large_file_is_stored_from_disk(store: &dyn BlobStore) {
        let size = 5 * 1024 * 1024 + 3;
        let content = pattern(size, 2);
        let source = tempfile::NamedTempFile::new().expect("temporary file");
        std::fs::write(source.path(), &content).expect("write the source file");
        let k = key("videos/0190f3c2/video.mp4");

        store
            .put_file(&k, source.path(), "video/mp4")
            .await
            .expect("put_file");

        assert_eq!(store.head(&k).await.expect("head"), Some(size as u64));
        let stored = store.get(&k).await.expect("get");
        assert!(stored == content, "the stored video differs from the file");
        store.delete(&k).await.expect("delete");
    }

    pub async fn storing_a_missing_file_fails(store: &dyn BlobStore) {
        let k = key("videos/missing.mp4");
        let result = store
            .put_file(&k, &PathBuf::from("/nonexistent/video.mp4"), "video/mp4")
            .await;
        assert!(matches!(result, Err(BlobError::Io(_))), "{result:?}");
        assert_eq!(store.head(&k).await.expect("head"), None);
    }

    pub async fn head_reports_the_size_or_nothing(store: &dyn BlobStore) {
        let empty = key("empty");
        store
            .put(&empty, Bytes::new(), "text/plain")
            .await
            .expect("put an empty blob");
        assert_eq!(store.head(&empty).await.expect("head"), Some(0));
        assert_eq!(store.head(&key("never/stored")).await.expect("head"), None);
    }

    pub async fn getting_a_missing_blob_is_not_found(store: &dyn BlobStore) {
        let error = store
            .get(&key("never/stored.png"))
            .await
            .expect_err("a missing blob");
        assert!(matches!(error, BlobError::NotFound(_)), "{error:?}");
        assert_eq!(error.code(), "blob_not_found");
    }

    pub async fn deleting_is_idempotent(store: &dyn BlobStore) {
        let k = key("posters/p.jpg");
        store
            .put(&k, Bytes::from_static(b"jpeg"), "image/jpeg")
            .await
            .expect("put");
        store.delete(&k).await.expect("delete");
        assert_eq!(store.head(&k).await.expect("head"), None);
        assert!(matches!(store.get(&k).await, Err(BlobError::NotFound(_))));
        store.delete(&k).await.expect("deleting again");
        store
            .delete(&key("never/stored"))
            .await
            .expect("deleting what never existed");
    }

    pub async fn keys_that_extend_one_another_are_separate_blobs(store: &dyn BlobStore) {
        let keys = ["posters/p.jpg", "posters/p.jpg.meta", "posters/p.jpg-2"];
        for (i, k) in keys.iter().enumerate() {
            store
                .put(&key(k), Bytes::from(format!("blob {i}")), "text/plain")
                .await
                .expect("put");
        }
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(
                store.get(&key(k)).await.expect("get"),
                format!("blob {i}").as_bytes()
            );
        }
    }

    pub async fn a_content_type_that_cannot_be_a_header_is_refused(store: &dyn BlobStore) {
        let k = key("bad/content-type");
        let result = store
            .put(&k, Bytes::from_static(b"x"), "text/plain\r\nX-Evil: 1")
            .await;
        assert!(matches!(result, Err(BlobError::Other(_))), "{result:?}");
        assert_eq!(store.head(&k).await.expect("head"), None);
    }

    pub async fn a_signed_url_names_the_key_and_expires_after_the_ttl(store: &dyn BlobStore) {
        let k = key("videos/0190f3c2/poster.jpg");
        let before = Utc::now();
        let signed = store
            .signed_url(&k, Duration::from_secs(600))
            .await
            .expect("signed url");
        let after = Utc::now();
        assert!(signed.url.contains(k.as_str()), "{}", signed.url);
        assert!(
            signed.expires_at > before + chrono::Duration::seconds(598)
                && signed.expires_at <= after + chrono::Duration::seconds(600),
            "expires_at {} is not 10 minutes after {before}",
            signed.expires_at
        );
    }

    async fn drain(mut read: BlobRead) -> Vec<u8> {
        use tokio::io::AsyncReadExt as _;
        let mut bytes = Vec::new();
        read.body.read_to_end(&mut bytes).await.expect("read body");
        bytes
    }

    pub async fn a_blob_streams_whole_or_by_range(store: &dyn BlobStore) {
        let k = key("videos/0190f3c2/video.mp4");
        let content = pattern(300_007, 5);
        store
            .put(&k, Bytes::from(content.clone()), "video/mp4")
            .await
            .expect("put");

        let whole = store.read(&k, None).await.expect("read");
        assert_eq!(
            (
                whole.size,
                whole.range,
                whole.len(),
                whole.content_type.as_str()
            ),
            (300_007, None, 300_007, "video/mp4")
        );
        assert_eq!(drain(whole).await, content);

        let middle = ByteRange {
            start: 1000,
            end: Some(1999),
        };
        let part = store.read(&k, Some(middle)).await.expect("read range");
        assert_eq!(
            (part.size, part.range, part.len()),
            (300_007, Some((1000, 1999)), 1000)
        );
        assert_eq!(drain(part).await, &content[1000..2000]);

        // An open or overlong end stops at the last byte.
        let tail = ByteRange {
            start: 300_000,
            end: Some(400_000),
        };
        let part = store.read(&k, Some(tail)).await.expect("read tail");
        assert_eq!(part.range, Some((300_000, 300_006)));
        assert_eq!(drain(part).await, &content[300_000..]);

        let past = ByteRange {
            start: 300_007,
            end: None,
        };
        let refused = store.read(&k, Some(past)).await;
        assert!(
            matches!(
                refused,
                Err(BlobError::RangeNotSatisfiable {
                    size: Some(300_007)
                })
            ),
            "{refused:?}"
        );
        let missing = store.read(&key("videos/none/video.mp4"), None).await;
        assert!(
            matches!(missing, Err(BlobError::NotFound(_))),
            "{missing:?}"
        );
    }

    pub async fn a_working_store_is_healthy(store: &dyn BlobStore) {
        store.health().await.expect("healthy");
    }
}

/// One test per contract item for an adapter, each on a fresh store from `$fixture`.
macro_rules! contract_tests {
    ($fixture:path => $($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let fixture = $fixture().await;
                contract::$name(&*fixture.store).await;
            }
        )*
    };
}

macro_rules! contract_suite {
    ($fixture:path) => {
        contract_tests!($fixture =>
            a_stored_blob_reads_back_byte_for_byte,
            storing_again_replaces_the_previous_blob,
            a_large_file_is_stored_from_disk,
            storing_a_missing_file_fails,
            head_reports_the_size_or_nothing,
            getting_a_missing_blob_is_not_found,
            deleting_is_idempotent,
            keys_that_extend_one_another_are_separate_blobs,
            a_content_type_that_cannot_be_a_header_is_refused,
            a_signed_url_names_the_key_and_expires_after_the_ttl,
            a_blob_streams_whole_or_by_range,
            a_working_store_is_healthy,
        );
    };
}

#[test]
fn keys_outside_the_allowed_shape_are_rejected() {
    let too_long = "a".repeat(513);
    for bad in [
        "",
        "../etc/passwd",
        "a/../../etc/passwd",
        "a..b",
        "/abs",
        "trailing/",
        "a//b",
        "./a",
        "a/./b",
        ".",
        "with space",
        "ünïcode",
        "back\\slash",
        "query?x=1",
        too_long.as_str(),
    ] {
        let error = BlobKey::new(bad).expect_err(bad);
        assert!(
            matches!(error, BlobError::InvalidKey(_)),
            "{bad:?}: {error:?}"
        );
        assert_eq!(error.code(), "invalid_blob_key");
    }
}

#[test]
fn keys_of_the_allowed_shape_are_accepted() {
    let longest = "a".repeat(512);
    for good in [
        "a",
        "videos/0190f3c2-aaaa/video.mp4",
        "uploads/user_1/Image-2.PNG",
        ".hidden/file",
        "a.b.c",
        longest.as_str(),
    ] {
        let k = BlobKey::new(good).unwrap_or_else(|error| panic!("{good:?}: {error}"));
        assert_eq!(k.as_str(), good);
        assert_eq!(k.to_string(), good);
    }
}

mod filesystem {
    use super::*;

    contract_suite!(filesystem_fixture);

    /// Splits a filesystem signed URL into its key, expiry and signature.
    fn parse(url: &str) -> (String, i64, String) {
        let rest = url
            .strip_prefix(&format!("{PUBLIC_URL}/v1/blobs/"))
            .unwrap_or_else(|| panic!("{url} is not under the public URL's blob route"));
        let (path, query) = rest.split_once('?').expect("a query string");
        let params: HashMap<&str, &str> = query
            .split('&')
            .map(|pair| pair.split_once('=').expect("name=value"))
            .collect();
        let expires = params["expires"].parse().expect("numeric expires");
        (path.to_owned(), expires, params["signature"].to_owned())
    }

    #[tokio::test]
    async fn a_signed_url_verifies_with_its_own_expiry_and_signature() {
        let (store, _dir) = filesystem_store();
        let k = key("videos/0190f3c2/video.mp4");
        let signed = store
            .signed_url(&k, Duration::from_secs(300))
            .await
            .expect("signed url");

        let (path, expires, signature) = parse(&signed.url);
        assert_eq!(path, k.as_str());
        assert_eq!(expires, signed.expires_at.timestamp());
        assert_eq!(signature.len(), 64, "hex HMAC-SHA256");
        store
            .verify(&key(&path), expires, &signature)
            .expect("the link's own signature verifies");
    }

    #[tokio::test]
    async fn a_tampered_signature_is_rejected() {
        let (store, _dir) = filesystem_store();
        let k = key("videos/a/video.mp4");
        let signed = store
            .signed_url(&k, Duration::from_secs(300))
            .await
            .expect("signed url");
        let (_, expires, signature) = parse(&signed.url);

        let mut flipped = signature.into_bytes();
        flipped[10] = if flipped[10] == b'0' { b'1' } else { b'0' };
        let flipped = String::from_utf8(flipped).expect("hex is ASCII");
        for bad in [flipped.as_str(), "", "not-hex", &flipped[..62]] {
            let result = store.verify(&k, expires, bad);
            assert!(
                matches!(result, Err(BlobError::InvalidSignature)),
                "{bad:?}: {result:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_signature_does_not_open_another_key_or_a_later_expiry() {
        let (store, _dir) = filesystem_store();
        let k = key("videos/a/video.mp4");
        let signed = store
            .signed_url(&k, Duration::from_secs(300))
            .await
            .expect("signed url");
        let (_, expires, signature) = parse(&signed.url);

        let other_key = store.verify(&key("videos/b/video.mp4"), expires, &signature);
        assert!(
            matches!(other_key, Err(BlobError::InvalidSignature)),
            "{other_key:?}"
        );
        let extended = store.verify(&k, expires + 3600, &signature);
        assert!(
            matches!(extended, Err(BlobError::InvalidSignature)),
            "{extended:?}"
        );
    }

    #[tokio::test]
    async fn a_link_signed_with_another_key_is_rejected() {
        let (store, dir) = filesystem_store();
        let other = FilesystemStore::new(
            dir.path().join("blobs"),
            b"another signing key, 32+ characters".to_vec(),
            PUBLIC_URL.to_owned(),
        );
        let k = key("videos/a/video.mp4");
        let signed = other
            .signed_url(&k, Duration::from_secs(300))
            .await
            .expect("signed url");
        let (_, expires, signature) = parse(&signed.url);
        let result = store.verify(&k, expires, &signature);
        assert!(
            matches!(result, Err(BlobError::InvalidSignature)),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn a_genuine_link_past_its_expiry_is_rejected_as_expired() {
        let (store, _dir) = filesystem_store();
        let k = key("videos/a/video.mp4");
        let expires = Utc::now().timestamp() - 1;
        let signature = store.sign(&k, expires).expect("sign");
        let error = store
            .verify(&k, expires, &signature)
            .expect_err("an expired link");
        assert!(matches!(error, BlobError::Expired), "{error:?}");
        assert_eq!(error.code(), "link_expired");

        let instant = store
            .signed_url(&k, Duration::ZERO)
            .await
            .expect("signed url");
        let (_, expires, signature) = parse(&instant.url);
        assert!(matches!(
            store.verify(&k, expires, &signature),
            Err(BlobError::Expired)
        ));
    }

    #[tokio::test]
    async fn open_hands_out_the_file_with_its_length_and_content_type() {
        let (store, _dir) = filesystem_store();
        let k = key("videos/a/video.mp4");
        let content = pattern(4096, 3);
        store
            .put(&k, Bytes::from(content.clone()), "video/mp4")
            .await
            .expect("put");

        let (mut file, len, content_type) = store.open(&k).await.expect("open");
        let mut read = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut file, &mut read)
            .await
            .expect("read");
        assert_eq!(read, content);
        assert_eq!(len, 4096);
        assert_eq!(content_type, "video/mp4");
        assert_eq!(
            store.content_type(&k).await.expect("content type"),
            "video/mp4"
        );
    }

    #[tokio::test]
    async fn opening_a_missing_blob_is_not_found() {
        let (store, _dir) = filesystem_store();
        let k = key("videos/none.mp4");
        assert!(matches!(store.open(&k).await, Err(BlobError::NotFound(_))));
        assert!(matches!(
            store.content_type(&k).await,
            Err(BlobError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn a_folder_of_blobs_is_not_itself_a_blob() {
        let (store, _dir) = filesystem_store();
        store
            .put(
                &key("videos/a/video.mp4"),
                Bytes::from_static(b"mp4"),
                "video/mp4",
            )
            .await
            .expect("put");
        let folder = key("videos/a");
        assert_eq!(store.head(&folder).await.expect("head"), None);
        assert!(matches!(
            store.get(&folder).await,
            Err(BlobError::NotFound(_))
        ));
        assert!(matches!(
            store.open(&folder).await,
            Err(BlobError::NotFound(_))
        ));
        store.delete(&folder).await.expect("deleting a non-blob");
        let below_a_file = key("videos/a/video.mp4/x");
        assert_eq!(store.head(&below_a_file).await.expect("head"), None);
        assert!(matches!(
            store.get(&below_a_file).await,
            Err(BlobError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn writes_leave_no_temporary_files_behind() {
        let (store, _dir) = filesystem_store();
        let source = tempfile::NamedTempFile::new().expect("temporary file");
        std::fs::write(source.path(), b"file content").expect("write");
        store
            .put(&key("a/one"), Bytes::from_static(b"one"), "text/plain")
            .await
            .expect("put");
        store
            .put_file(&key("a/two"), source.path(), "text/plain")
            .await
            .expect("put_file");
        store.health().await.expect("health");

        let leftovers: Vec<_> = std::fs::read_dir(store.root().join("tmp"))
            .expect("the tmp folder exists")
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        assert!(
            source.path().exists(),
            "put_file must not consume its source"
        );
    }

    #[tokio::test]
    async fn an_unwritable_root_makes_the_store_unhealthy() {
        let dir = TempDir::new().expect("temporary directory");
        let file = dir.path().join("a-file");
        std::fs::write(&file, b"not a directory").expect("write");
        let store = FilesystemStore::new(file, SIGNING_KEY.to_vec(), PUBLIC_URL.to_owned());
        assert!(matches!(store.health().await, Err(BlobError::Io(_))));
    }
}

mod s3 {
    use super::*;

    contract_suite!(s3_fixture);

    #[tokio::test]
    async fn a_presigned_url_downloads_the_blob_with_its_content_type() {
        let store = s3_store().await;
        let k = key("videos/0190f3c2/video.mp4");
        let content = pattern(100_000, 4);
        store
            .put(&k, Bytes::from(content.clone()), "video/mp4")
            .await
            .expect("put");
        let signed = store
            .signed_url(&k, Duration::from_secs(300))
            .await
            .expect("presign");
        assert!(signed.url.contains("X-Amz-Signature="), "{}", signed.url);
        assert!(signed.url.contains("X-Amz-Expires=300"), "{}", signed.url);

        let response = reqwest::get(&signed.url).await.expect("download");
        assert_eq!(response.status(), 200);
        assert_eq!(
            response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("video/mp4")
        );
        assert!(response.bytes().await.expect("body") == content);
    }

    /// moto does not enforce presigned expiry, so this checks what S3 itself enforces: the
    /// signing time plus `X-Amz-Expires` is exactly the `expires_at` we report.
    #[tokio::test]
    async fn a_presigned_url_expires_when_it_says() {
        let store = s3_store().await;
        let signed = store
            .signed_url(&key("posters/p.jpg"), Duration::from_secs(900))
            .await
            .expect("presign");
        let (_, query) = signed.url.split_once('?').expect("a query string");
        let params: HashMap<&str, &str> = query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .collect();
        let signed_at =
            chrono::NaiveDateTime::parse_from_str(params["X-Amz-Date"], "%Y%m%dT%H%M%SZ")
                .expect("X-Amz-Date")
                .and_utc();
        let lifetime: i64 = params["X-Amz-Expires"].parse().expect("X-Amz-Expires");
        assert_eq!(lifetime, 900);
        assert_eq!(
            signed_at + chrono::Duration::seconds(lifetime),
            signed.expires_at
        );
    }

    #[tokio::test]
    async fn a_missing_bucket_makes_the_store_unhealthy() {
        let bucket = format!("framegate-absent-{}", Uuid::new_v4().simple());
        let store = S3Store::new(&s3_config(&bucket)).await.expect("client");
        // Reach the server first, so this cannot pass merely because it is down.
        s3_store().await;
        let error = store.health().await.expect_err("no bucket");
        assert!(matches!(error, BlobError::Unavailable(_)), "{error:?}");
    }

    #[tokio::test]
    async fn an_unreachable_server_is_reported_as_unavailable() {
        let mut config = s3_config("framegate-nowhere");
        config.endpoint = Some("http://127.0.0.1:1".to_owned());
        let store = S3Store::new(&config).await.expect("client");
        let error = store
            .put(&key("a"), Bytes::from_static(b"a"), "text/plain")
            .await
            .expect_err("nothing listens on port 1");
        assert!(matches!(error, BlobError::Unavailable(_)), "{error:?}");
        assert_eq!(error.code(), "dependency_unavailable");
        assert!(matches!(
            store.health().await,
            Err(BlobError::Unavailable(_))
        ));
    }

    #[tokio::test]
    async fn ensuring_an_existing_bucket_changes_nothing() {
        let store = s3_store().await;
        let k = key("kept");
        store
            .put(&k, Bytes::from_static(b"kept"), "text/plain")
            .await
            .expect("put");
        store.ensure_bucket().await.expect("ensure again");
        assert_eq!(store.get(&k).await.expect("get"), &b"kept"[..]);
    }
}

mod config {
    use super::*;
    use framegate_commands::testing::lookup;

    fn parse(pairs: &[(&str, &str)]) -> Result<BlobConfig, BlobError> {
        BlobConfig::from_lookup(lookup(pairs))
    }

    #[test]
    fn without_settings_the_filesystem_store_is_used_with_a_random_key() {
        let config = parse(&[]).expect("defaults");
        assert_eq!(config.backend, BlobBackend::Filesystem);
        assert_eq!(config.dir, PathBuf::from(".framegate/blobs"));
        assert_eq!(config.public_url, "http://127.0.0.1:8080");
        assert!(config.signing_key_generated);
        assert!(config.signing_key.expose().len() >= 32);
        assert_ne!(
            config.signing_key,
            parse(&[]).expect("defaults").signing_key,
            "each process gets its own random key"
        );
        assert_eq!(config.s3, None);
    }

    #[test]
    fn filesystem_settings_are_read() {
        let config = parse(&[
            ("FRAMEGATE_BLOB_DIR", "/var/lib/framegate/blobs"),
            ("FRAMEGATE_BLOB_SIGNING_KEY", "k".repeat(40).as_str()),
            ("FRAMEGATE_PUBLIC_URL", "https://api.example.com/"),
        ])
        .expect("config");
        assert_eq!(config.backend, BlobBackend::Filesystem);
        assert_eq!(config.dir, PathBuf::from("/var/lib/framegate/blobs"));
        assert_eq!(config.signing_key.expose(), &"k".repeat(40).into_bytes());
        assert!(!config.signing_key_generated);
        assert_eq!(config.public_url, "https://api.example.com");
    }

    #[test]
    fn a_bucket_alone_selects_s3_with_defaults() {
        let config = parse(&[("FRAMEGATE_S3_BUCKET", "media")]).expect("config");
        assert_eq!(config.backend, BlobBackend::S3);
        let s3 = config.s3.expect("s3 settings");
        assert_eq!(s3.bucket, "media");
        assert_eq!(s3.region, "us-east-1");
        assert_eq!(s3.endpoint, None);
        assert!(!s3.path_style, "AWS itself gets virtual-hosted addressing");
        assert_eq!((s3.access_key, s3.secret_key), (None, None));
    }

    #[test]
    fn s3_settings_are_read_with_path_style_for_a_custom_endpoint() {
        let config = parse(&[
            ("FRAMEGATE_BLOB_STORE", "s3"),
            ("FRAMEGATE_S3_BUCKET", "media"),
            ("FRAMEGATE_S3_ENDPOINT", "http://minio:9000"),
            ("FRAMEGATE_S3_REGION", "eu-west-3"),
        ])
        .expect("config");
        let s3 = config.s3.expect("s3 settings");
        assert_eq!(s3.endpoint.as_deref(), Some("http://minio:9000"));
        assert_eq!(s3.region, "eu-west-3");
        assert!(s3.path_style);

        let virtual_hosted = parse(&[
            ("FRAMEGATE_S3_BUCKET", "media"),
            ("FRAMEGATE_S3_ENDPOINT", "https://r2.example.com"),
            ("FRAMEGATE_S3_PATH_STYLE", "false"),
        ])
        .expect("config");
        assert!(!virtual_hosted.s3.expect("s3 settings").path_style);
    }

    #[test]
    fn an_explicit_filesystem_choice_wins_over_a_bucket() {
        let config = parse(&[
            ("FRAMEGATE_BLOB_STORE", "filesystem"),
            ("FRAMEGATE_S3_BUCKET", "media"),
        ])
        .expect("config");
        assert_eq!(config.backend, BlobBackend::Filesystem);
        assert_eq!(config.s3, None);
    }

    #[test]
    fn empty_values_count_as_unset() {
        let config = parse(&[
            ("FRAMEGATE_BLOB_STORE", ""),
            ("FRAMEGATE_S3_BUCKET", ""),
            ("FRAMEGATE_BLOB_SIGNING_KEY", ""),
        ])
        .expect("config");
        assert_eq!(config.backend, BlobBackend::Filesystem);
        assert!(config.signing_key_generated);
    }

    #[test]
    fn bad_settings_are_rejected_naming_the_variable() {
        for (pairs, variable) in [
            (
                vec![("FRAMEGATE_BLOB_STORE", "gcs")],
                "FRAMEGATE_BLOB_STORE",
            ),
            (vec![("FRAMEGATE_BLOB_STORE", "s3")], "FRAMEGATE_S3_BUCKET"),
            (
                vec![("FRAMEGATE_BLOB_SIGNING_KEY", "too-short")],
                "FRAMEGATE_BLOB_SIGNING_KEY",
            ),
            (
                vec![("FRAMEGATE_PUBLIC_URL", "api.example.com")],
                "FRAMEGATE_PUBLIC_URL",
            ),
            (
                vec![
                    ("FRAMEGATE_S3_BUCKET", "media"),
                    ("FRAMEGATE_S3_PATH_STYLE", "maybe"),
                ],
                "FRAMEGATE_S3_PATH_STYLE",
            ),
        ] {
            let error = parse(&pairs).expect_err(variable);
            assert!(
                error.to_string().contains(variable),
                "{pairs:?}: {error} does not name {variable}"
            );
        }
    }

    #[test]
    fn production_requires_a_strong_signing_key_for_the_filesystem_store_only() {
        let production = ("FRAMEGATE_ENV", "production");
        let missing = parse(&[production]).expect_err("no key");
        assert!(
            missing
                .to_string()
                .contains("FRAMEGATE_BLOB_SIGNING_KEY is required"),
            "{missing}"
        );
        let placeholder = parse(&[
            production,
            (
                "FRAMEGATE_BLOB_SIGNING_KEY",
                "change-me-too-change-me-too-change-me-too",
            ),
        ])
        .expect_err("placeholder");
        assert!(
            placeholder.to_string().contains("placeholder"),
            "{placeholder}"
        );
        assert!(
            !placeholder.to_string().contains("change-me"),
            "{placeholder}"
        );
        let strong = "b9Vq2kLx7TzR4mWp8YcN3hJd6FgS1aQe0uIo5";
        let config = parse(&[production, ("FRAMEGATE_BLOB_SIGNING_KEY", strong)])
            .expect("a strong key passes");
        assert!(!format!("{config:?}").contains(strong), "{config:?}");
        parse(&[production, ("FRAMEGATE_S3_BUCKET", "media")])
            .expect("S3 links are presigned: no key needed");
    }

    #[tokio::test]
    async fn build_makes_the_configured_adapter() {
        let dir = TempDir::new().expect("temporary directory");
        let dir_setting = dir.path().display().to_string();
        let filesystem: Blobs =
            build(&parse(&[("FRAMEGATE_BLOB_DIR", dir_setting.as_str())]).expect("config"))
                .await
                .expect("build");
        assert_eq!(filesystem.kind(), "filesystem");
        assert!(filesystem.as_filesystem().is_some());
        filesystem
            .health()
            .await
            .expect("a fresh directory is usable");

        let s3: Blobs = build(
            &parse(&[
                ("FRAMEGATE_S3_BUCKET", "media"),
                ("FRAMEGATE_S3_ENDPOINT", "http://127.0.0.1:9000"),
            ])
            .expect("config"),
        )
        .await
        .expect("build");
        assert_eq!(s3.kind(), "s3");
        assert!(s3.as_filesystem().is_none());
    }
}
