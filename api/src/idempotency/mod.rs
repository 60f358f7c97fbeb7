//! `Idempotency-Key` for POST requests: a retried request gets the first response back instead
//! of doing the work twice.
//!
//! Records live in `idempotency_keys`, keyed by scope (`user:<id>`, or `ip:<pseudonym>` for
//! anonymous callers: a keyed hash of the address, ADR 0043) and key, for 24 hours. The first request inserts a row with a NULL
//! status (in progress), runs, and stores its final response; a repeat with the same body
//! replays it (`Idempotency-Replayed: true`); a repeat with a different body is refused (422
//! `idempotency_key_reused`); a repeat while the first still runs gets 409
//! `idempotency_in_progress`. Responses that say "nothing happened, try again" (5xx, 408,
//! 409, 429, a panic) are not stored: the row is deleted so the client can retry.
//!
//! The handler runs in its own task, so a client that disconnects mid-request neither cancels
//! the work nor leaves the key stuck "in progress": the outcome is still recorded.
//!
//! A claim is owned by its live request (`records`): the request renews a short lease while it
//! runs, and a retry after its process died takes the record over once the lease ran out.
//! The request's events commit together with a mark on the record that it took effect, so a
//! request that committed is never run again, and a handler may store its response in that
//! very transaction ([`store_with_commit`]): `POST /v1/videos` does, so a failure after the
//! commit can only ever replay the one video created.
//!
//! Stored bodies are sealed ([`ResponseSeal`]): some responses carry a secret shown once (a
//! new API key, the tokens of a login or refresh), and the table must not hold it in clear.

mod records;
mod seal;

use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody as _};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use framegate_commands::idempotency::{LeaseLost, CLAIM};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use sha2::{Digest as _, Sha256};
use sqlx::{PgConnection, PgPool};
use tracing::Instrument as _;

pub use records::{abandon, begin, complete, purge_expired, renew, Begin, Claim, StoredResponse};
pub use seal::ResponseSeal;

use crate::auth::{authenticate, Principal};
use crate::client_ip::client_ip;
use crate::error::ApiError;
use crate::state::AppState;

pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
pub const IDEMPOTENCY_REPLAYED: HeaderName = HeaderName::from_static("idempotency-replayed");

/// How long a key is remembered (the SQL in `records` spells it as `interval '24 hours'`).
pub const KEY_TTL: Duration = Duration::from_secs(24 * 3600);

/// Larger responses are passed through without being stored (the key is released).
pub const MAX_STORED_RESPONSE: usize = 4 * 1024 * 1024;

const MAX_KEY_LEN: usize = 255;

/// SHA-256 (hex) of method, path with query, and body: what "the same request" means.
pub fn fingerprint(method: &Method, uri: &Uri, body: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(method.as_str().as_bytes());
    hasher.update(b"\n");
    hasher.update(
        uri.path_and_query()
            .map_or(uri.path(), |pq| pq.as_str())
            .as_bytes(),
    );
    hasher.update(b"\n");
    hasher.update(body);
    hex::encode(hasher.finalize())
}

/// A multipart body with its boundary replaced by a fixed marker: clients draw a new random
/// boundary for every attempt, and a retry of the same form is still the same request. Any
/// other body as it is.
fn without_boundary<'a>(
    headers: &axum::http::HeaderMap,
    body: &'a [u8],
) -> std::borrow::Cow<'a, [u8]> {
    let boundary = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("multipart/")
        })
        .and_then(|v| {
            v.split(';').find_map(|param| {
                let (name, value) = param.split_once('=')?;
                (name.trim().eq_ignore_ascii_case("boundary"))
                    .then(|| value.trim().trim_matches('"'))
            })
        })
        .filter(|b| !b.is_empty());
    let Some(boundary) = boundary else {
        return std::borrow::Cow::Borrowed(body);
    };
    let needle = boundary.as_bytes();
    let mut out = Vec::with_capacity(body.len());
    let mut rest = body;
    while let Some(at) = rest.windows(needle.len()).position(|w| w == needle) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(b"\0boundary\0");
        rest = &rest[at + needle.len()..];
    }
    out.extend_from_slice(rest);
    std::borrow::Cow::Owned(out)
}

/// The key of a request this layer applies to: `None` for anything but a POST with an
/// `Idempotency-Key` header; an error for a malformed key (1 to 255 visible ASCII characters).
pub fn requested_key(request: &Request) -> Option<Result<String, ApiError>> {
    if request.method() != Method::POST {
        return None;
    }
    let value = request.headers().get(IDEMPOTENCY_KEY)?;
    let bytes = value.as_bytes();
    let valid = (1..=MAX_KEY_LEN).contains(&bytes.len()) && bytes.iter().all(u8::is_ascii_graphic);
    Some(match (valid, std::str::from_utf8(bytes)) {
        (true, Ok(key)) => Ok(key.to_owned()),
        _ => Err(ApiError::BadRequest {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_idempotency_key",
            message: format!(
                "{IDEMPOTENCY_KEY} must be 1 to {MAX_KEY_LEN} visible ASCII characters"
            ),
        }),
    })
}

/// Middleware (`axum::middleware::from_fn_with_state`).
pub async fn layer(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let key = match requested_key(&request) {
        None => return next.run(request).await,
        Some(Err(error)) => return error.into_response(),
        Some(Ok(key)) => key,
    };
    let resolved = match request.extensions().get::<Principal>() {
        Some(principal) => Ok(Some(principal.clone())),
        None => authenticate(&state, request.headers()).await,
    };
    let scope = match resolved {
        Ok(Some(principal)) => {
            let path = crate::auth::policy_path(request.uri().path(), request.extensions());
            if let Err(refused) = principal.authorize(request.method(), path) {
                return refused.into_response();
            }
            principal.scope()
        }
        Ok(None) => {
            let connect = request
                .extensions()
                .get::<ConnectInfo<std::net::SocketAddr>>()
                .map(|ConnectInfo(addr)| *addr);
            // A pseudonym, not the address: the record outlives nobody's erasure (ADR 0043).
            let ip = client_ip(request.headers(), connect, &state.config.proxies);
            let pii = framegate_commands::pii::current();
            format!("ip:{}", pii.keyring.pseudonym("ip", &ip.to_string()))
        }
        // The handler's extractor refuses it with the proper 401.
        Err(_) => return next.run(request).await,
    };
    // Uploads have their own, larger limit (an OpenAI-style video request may carry its
    // reference image); everything else the global one.
    let path = request.uri().path();
    let body_limit = if path == "/v1/images" || crate::openai::takes_upload(&state, path) {
        crate::handlers::images::upload_body_limit(&state.config.images)
    } else {
        state.config.body_limit
    };
    let protocol = Protocol {
        pool: &state.pool,
        seal: &state.response_seal,
        lease: state.config.idempotency_lease,
        body_limit,
    };
    execute_once(&protocol, &scope, &key, request, next).await
}

/// What the protocol needs besides the request: where records live, how bodies are sealed,
/// how long a claim's lease lasts, and the largest body read.
#[derive(Clone, Copy)]
pub struct Protocol<'a> {
    pub pool: &'a PgPool,
    pub seal: &'a ResponseSeal,
    pub lease: Duration,
    pub body_limit: usize,
}

/// A response extension: the handler stored this response for the key in the transaction
/// that committed its events, so the layer leaves the record alone.
#[derive(Debug, Clone, Copy)]
pub struct StoredWithCommit;

/// Stores `body` as the final response of the running request's claim through `conn`, the
/// transaction about to commit its events, and marks the claim committed there; fails with
/// [`LeaseLost`] when the claim was taken over (the transaction must then roll back).
/// Returns whether there was a claim to store (and so whether it is marked).
pub async fn store_with_commit(
    conn: &mut PgConnection,
    seal: &ResponseSeal,
    status: StatusCode,
    body: &[u8],
) -> Result<bool, framegate_commands::error::BoxError> {
    let Some(claim) = framegate_commands::idempotency::current() else {
        return Ok(false);
    };
    let stored = StoredResponse {
        status,
        body: seal.seal(body, &claim.scope, &claim.key),
        content_type: Some("application/json".to_owned()),
    };
    if !complete(&mut *conn, &claim, &stored, true).await? {
        return Err(Box::new(LeaseLost));
    }
    Ok(true)
}

/// Runs `request` at most once per `(scope, key)`: the protocol of this module for one
/// request whose key and scope are known.
#[tracing::instrument(skip_all, fields(%scope, idempotency_key = %key))]
pub async fn execute_once(
    protocol: &Protocol<'_>,
    scope: &str,
    key: &str,
    request: Request,
    next: Next,
) -> Response {
    let Protocol {
        pool,
        seal,
        lease,
        body_limit,
    } = *protocol;
    let (parts, body) = request.into_parts();
    let bytes = match read_body(&parts.headers, body, body_limit).await {
        Ok(bytes) => bytes,
        Err(error) => return error.into_response(),
    };
    let request_hash = fingerprint(
        &parts.method,
        &parts.uri,
        &without_boundary(&parts.headers, &bytes),
    );
    let claim = match begin(pool, scope, key, &request_hash, lease).await {
        Err(error) => return ApiError::from(error).into_response(),
        Ok(Begin::Replay(mut stored)) => {
            let Some(body) = seal.open(&stored.body, scope, key) else {
                tracing::warn!("the stored response does not open under this server's secret");
                return ApiError::Conflict {
                    code: "idempotency_response_unavailable",
                    message: "the response stored for this Idempotency-Key can no longer be read \
                              (the server's secret changed); check whether the first request \
                              took effect, then use a new key"
                        .to_owned(),
                }
                .into_response();
            };
            tracing::debug!("replaying the stored response");
            stored.body = body;
            return stored.into_replay();
        }
        Ok(Begin::Mismatch) => {
            return ApiError::Unprocessable {
                code: "idempotency_key_reused",
                message: "this Idempotency-Key was already used for a different request".to_owned(),
            }
            .into_response()
        }
        Ok(Begin::InProgress) => {
            let mut response = ApiError::Conflict {
                code: "idempotency_in_progress",
                message:
                    "a request with this Idempotency-Key is still being processed; retry shortly"
                        .to_owned(),
            }
            .into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return response;
        }
        Ok(Begin::Committed) => {
            return ApiError::Conflict {
                code: "idempotency_response_unavailable",
                message: "the first request with this Idempotency-Key took effect, but its \
                          response was lost; look the result up, then use a new key"
                    .to_owned(),
            }
            .into_response()
        }
        Ok(Begin::Execute(claim)) => claim,
    };

    let request = Request::from_parts(parts, Body::from(bytes));
    let task_pool = pool.clone();
    let task_claim = claim.clone();
    let task_seal = seal.clone();
    // The lease is renewed by the task that does the work, for as long as it runs: a client
    // that hangs up drops this future, not the work, and the renewal must end with the work.
    let heartbeat = tokio::spawn(keep_alive(pool.clone(), claim.clone(), lease));
    let work = async move {
        // Appends made by the handler mark the record committed with their events.
        let response = CLAIM.scope(task_claim.clone(), next.run(request)).await;
        let response = settle(&task_pool, &task_seal, &task_claim, response).await;
        heartbeat.abort();
        response
    }
    .instrument(tracing::Span::current());
    // Task-locals do not follow a spawned task; the request id must (problem documents).
    let handle = match crate::REQUEST_ID.try_with(Clone::clone) {
        Ok(request_id) => tokio::spawn(crate::REQUEST_ID.scope(request_id, work)),
        Err(_) => tokio::spawn(work),
    };
    match handle.await {
        Ok(response) => response,
        Err(failure) => {
            if let Err(error) = abandon(pool, &claim).await {
                tracing::error!(%error, "could not release the idempotency key after a failure");
            }
            let cause = if failure.is_panic() {
                "handler panicked"
            } else {
                "handler was cancelled"
            };
            ApiError::internal(cause).into_response()
        }
    }
}

/// Renews the claim's lease every third of it while the request runs (the caller aborts this
/// when it is done). A process that dies stops renewing, and a retry may take over.
async fn keep_alive(pool: PgPool, claim: Claim, lease: Duration) {
    let every = lease / 3;
    loop {
        tokio::time::sleep(every).await;
        match renew(&pool, &claim, lease).await {
            Ok(true) => {}
            Ok(false) => return, // Completed, released or taken over: nothing to keep.
            Err(error) => tracing::warn!(%error, "could not renew the Idempotency-Key lease"),
        }
    }
}

/// Reads the whole request body, refusing more than `limit` bytes.
async fn read_body(
    headers: &axum::http::HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let too_large = || ApiError::BadRequest {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        code: "body_too_large",
        message: "the request body is larger than the limit".to_owned(),
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large());
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Err(error) => Err(ApiError::BadRequest {
            status: StatusCode::BAD_REQUEST,
            code: "unreadable_body",
            message: format!("the request body could not be read: {error}"),
        }),
    }
}

/// Whether a response is the request's final outcome, to be replayed on retries. The others
/// tell the client that nothing happened and it should try again.
fn is_final(status: StatusCode) -> bool {
    // 401 and 403 say who may not do this, not what happened: storing them would keep
    // refusing the same request from a caller who may make it (another key of the user).
    !(status.is_server_error()
        || status == StatusCode::UNAUTHORIZED
        || status == StatusCode::FORBIDDEN
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::CONFLICT
        || status == StatusCode::TOO_MANY_REQUESTS)
}

/// Stores or releases the claim according to the handler's response, and returns it.
async fn settle(pool: &PgPool, seal: &ResponseSeal, claim: &Claim, response: Response) -> Response {
    if response.extensions().get::<StoredWithCommit>().is_some() {
        return response;
    }
    let status = response.status();
    let storable = response
        .body()
        .size_hint()
        .upper()
        .is_some_and(|upper| upper <= MAX_STORED_RESPONSE as u64);
    if !is_final(status) || !storable {
        if is_final(status) {
            tracing::warn!(%status, "response too large or streamed: not stored for replay");
        }
        if let Err(error) = abandon(pool, claim).await {
            tracing::error!(%error, "could not release the idempotency key");
        }
        return response;
    }
    let (parts, body) = response.into_parts();
    let bytes = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            if let Err(error) = abandon(pool, claim).await {
                tracing::error!(%error, "could not release the idempotency key");
            }
            return ApiError::internal(format!("response body failed: {error}")).into_response();
        }
    };
    let stored = StoredResponse {
        status,
        body: seal.seal(&bytes, &claim.scope, &claim.key),
        content_type: parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    };
    match complete(pool, claim, &stored, false).await {
        Ok(true) => {}
        Ok(false) => tracing::warn!("idempotency record vanished before the response was stored"),
        // The work is done; the client still gets its response. If it committed anything, a
        // retry learns so once the lease has run out instead of doing the work twice.
        Err(error) => {
            tracing::error!(%error, "could not store the response for the idempotency key");
            if let Err(error) = abandon(pool, claim).await {
                tracing::error!(%error, "could not release the idempotency key");
            }
        }
    }
    Response::from_parts(parts, Body::from(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post_with_key(key: &[u8]) -> Request {
        let mut request = Request::new(Body::empty());
        *request.method_mut() = Method::POST;
        request.headers_mut().insert(
            IDEMPOTENCY_KEY,
            HeaderValue::from_bytes(key).expect("header value"),
        );
        request
    }

    #[test]
    fn a_sealed_body_opens_only_with_its_secret_scope_and_key() {
        let seal = ResponseSeal::derive(b"server secret");
        let body = br#"{"secret":"fg_abc"}"#;
        let sealed = seal.seal(body, "user:1", "k1");
        assert!(!sealed.windows(6).any(|w| w == b"fg_abc"));
        assert_ne!(
            sealed,
            seal.seal(body, "user:1", "k1"),
            "a fresh nonce each time"
        );
        assert_eq!(
            seal.open(&sealed, "user:1", "k1").as_deref(),
            Some(&body[..])
        );
        assert_eq!(seal.open(&sealed, "user:2", "k1"), None);
        assert_eq!(seal.open(&sealed, "user:1", "k2"), None);
        let other = ResponseSeal::derive(b"another secret");
        assert_eq!(other.open(&sealed, "user:1", "k1"), None);
        let mut tampered = sealed.clone();
        *tampered.last_mut().expect("bytes") ^= 1;
        assert_eq!(seal.open(&tampered, "user:1", "k1"), None);
        assert_eq!(seal.open(&sealed[..5], "user:1", "k1"), None);
    }

    #[test]
    fn only_posts_with_the_header_are_covered() {
        let mut get = post_with_key(b"abc");
        *get.method_mut() = Method::GET;
        assert!(requested_key(&get).is_none());
        let mut post = Request::new(Body::empty());
        *post.method_mut() = Method::POST;
        assert!(requested_key(&post).is_none());
        assert_eq!(
            requested_key(&post_with_key(b"order-42")).map(Result::ok),
            Some(Some("order-42".to_owned()))
        );
    }

    #[test]
    fn keys_must_be_1_to_255_visible_ascii_characters() {
        let longest = vec![b'k'; 255];
        assert!(matches!(
            requested_key(&post_with_key(&longest)),
            Some(Ok(_))
        ));
        for bad in [
            &b""[..],
            &[b'k'; 256][..],
            b"has space",
            b"tab\there",
            "caf\u{e9}".as_bytes(),
        ] {
            match requested_key(&post_with_key(bad)) {
                Some(Err(error)) => assert_eq!(error.code(), "invalid_idempotency_key"),
                other => panic!("{bad:?} accepted: {other:?}"),
            }
        }
    }

    #[test]
    fn the_fingerprint_covers_method_path_query_and_body() {
        let uri: Uri = "/v1/api-keys?x=1".parse().expect("uri");
        let base = fingerprint(&Method::POST, &uri, b"{}");
        assert_eq!(base, fingerprint(&Method::POST, &uri, b"{}"));
        assert_eq!(base.len(), 64);
        assert_ne!(base, fingerprint(&Method::PUT, &uri, b"{}"));
        assert_ne!(
            base,
            fingerprint(
                &Method::POST,
                &"/v1/api-keys?x=2".parse().expect("uri"),
                b"{}"
            )
        );
        assert_ne!(base, fingerprint(&Method::POST, &uri, b"{ }"));
    }

    #[test]
    fn retryable_outcomes_are_not_stored() {
        for status in [
            StatusCode::OK,
            StatusCode::CREATED,
            StatusCode::NO_CONTENT,
            StatusCode::UNPROCESSABLE_ENTITY,
            StatusCode::PAYMENT_REQUIRED,
        ] {
            assert!(is_final(status), "{status}");
        }
        for status in [
            StatusCode::INTERNAL_SERVER_ERROR,
            StatusCode::SERVICE_UNAVAILABLE,
            StatusCode::UNAUTHORIZED,
            StatusCode::FORBIDDEN,
            StatusCode::CONFLICT,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::REQUEST_TIMEOUT,
        ] {
            assert!(!is_final(status), "{status}");
        }
    }

    #[test]
    fn a_replay_keeps_status_body_and_content_type_and_says_it_is_a_replay() {
        let response = StoredResponse {
            status: StatusCode::CREATED,
            body: b"{\"id\":1}".to_vec(),
            content_type: Some("application/json".to_owned()),
        }
        .into_replay();
        assert_eq!(response.status(), StatusCode::CREATED);
        assert_eq!(
            response
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
            Some("application/json")
        );
        assert_eq!(
            response
                .headers()
                .get(IDEMPOTENCY_REPLAYED)
                .and_then(|v| v.to_str().ok()),
            Some("true")
        );
    }
}
