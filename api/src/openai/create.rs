//! `POST /videos`: a video request in OpenAI's words, as JSON or as a multipart form (what the
//! official SDKs send), with an optional `input_reference`: an image file in the form, or
//! `{"file_id": "<image id>"}` naming an image uploaded with `POST /v1/images`.
//!
//! The request is checked and priced before anything is stored (so a bad `seconds` never
//! leaves an uploaded image behind), the image is then recorded like any upload, and the
//! video is requested through `video_requests::submit`: the same reservation, the same one
//! transaction, the same Idempotency-Key record as `POST /v1/videos`.

use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{header, StatusCode};
use axum::response::Response;
use framegate_domain::{ImageId, VideoId, VideoSpec};
use serde::Deserialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::mapping::{self, in_openai_terms};
use super::object::Video;
use crate::auth::{Access, Principal};
use crate::error::ApiError;
use crate::extract::{from_json_slice, user_agent, ApiJson, ClientIp};
use crate::handlers::metadata;
use crate::images::upload::record_upload;
use crate::state::AppState;
use crate::video_requests::{self, price, usable_image, VideoRequestBody};

/// The parameters of `CreateVideoJsonBody` (the multipart form's text parts read the same).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    pub prompt: String,
    pub model: Option<String>,
    pub seconds: Option<Seconds>,
    pub size: Option<String>,
    pub input_reference: Option<Reference>,
}

/// `seconds` is a string in the spec (`"8"`); a number is taken too.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Seconds {
    Text(String),
    Number(u64),
}

impl Seconds {
    fn text(&self) -> String {
        match self {
            Seconds::Text(text) => text.clone(),
            Seconds::Number(n) => n.to_string(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reference {
    /// One of the caller's images (`POST /v1/images`), with or without a `file-` prefix.
    pub file_id: Option<String>,
    pub image_url: Option<String>,
}

/// Creates a video job (200 with the video object).
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    ClientIp(ip): ClientIp,
    request: Request,
) -> Result<Response, ApiError> {
    let meta = metadata(Some(&principal), ip, user_agent(request.headers()));
    let (body, file) = read(&state, request).await?;
    let file_id = reference(&body, file.is_some())?;

    let catalog = &state.config.catalog;
    let (provider, model) = mapping::model(catalog, body.model.as_deref())?;
    let seconds = body.seconds.as_ref().map(Seconds::text);
    let duration_seconds = mapping::seconds(catalog, provider, &model, seconds.as_deref())?;
    let (aspect_ratio, resolution) = mapping::size(body.size.as_deref())?;
    let mut request = VideoRequestBody {
        prompt: body.prompt,
        negative_prompt: None,
        provider: provider.to_string(),
        model: Some(model),
        duration_seconds,
        aspect_ratio: aspect_ratio.to_owned(),
        resolution: resolution.to_owned(),
        // Priced as a request with an image when it carries one; the id is known below.
        image_id: (file.is_some() || file_id.is_some()).then(Uuid::nil),
        seed: None,
        external_id: None,
        webhook_url: None,
        webhook_events_filter: None,
        // The Videos API has no switch: Sora 2's videos come with sound, and so does any
        // model here of a provider that makes audio.
        generate_audio: provider.makes_audio(),
    };
    if file.is_some() {
        // An uploaded reference is an image upload: the key must be allowed to make one.
        principal
            .check_access(Access::Scope("images:write"))
            .map_err(in_openai_terms)?;
    }
    let (preference, quote) = price(&state, &request).await.map_err(in_openai_terms)?;

    let image_id = match (file, file_id) {
        (Some(bytes), _) => Some(
            record_upload(&state, &principal, &meta, bytes)
                .await
                .map_err(|e| in_openai_terms(name_reference(e)))?
                .image_id(),
        ),
        (None, Some(id)) => Some(
            usable_image(&state, &principal, id)
                .await
                .map_err(in_openai_terms)?,
        ),
        (None, None) => None,
    };
    request.image_id = image_id.as_ref().map(ImageId::as_uuid);
    let video_id = VideoId::from_uuid(Uuid::now_v7());
    let spec = VideoSpec {
        owner: principal.user_id,
        prompt: request.prompt,
        negative_prompt: None,
        provider: preference,
        model: Some(quote.model),
        duration_seconds,
        aspect_ratio: request.aspect_ratio,
        resolution: request.resolution,
        image_id,
        seed: None,
        estimated_cost: quote.cost,
        generate_audio: request.generate_audio,
        external_id: None,
        webhook: None,
    };
    let render: video_requests::Render = |row| Ok(serde_json::to_vec(&Video::from(row))?);
    video_requests::submit(&state, video_id, spec, &meta, StatusCode::OK, render).await
}

/// An upload refused for what the file is (type, size, moderation) names `input_reference`.
fn name_reference(error: ApiError) -> ApiError {
    match error {
        ApiError::BadRequest { code, message, .. } | ApiError::Unprocessable { code, message } => {
            ApiError::field("input_reference", code, message)
        }
        other => other,
    }
}

/// The image id a JSON `input_reference` names; `image_url` is not taken (we fetch no URLs
/// on a caller's behalf), and a reference and a file together are refused.
fn reference(body: &CreateBody, with_file: bool) -> Result<Option<Uuid>, ApiError> {
    let Some(reference) = &body.input_reference else {
        return Ok(None);
    };
    let refuse = |code: &str, message: &str| ApiError::field("input_reference", code, message);
    if with_file {
        return Err(refuse(
            "duplicate_reference",
            "send a file or a file_id, not both",
        ));
    }
    match (&reference.file_id, &reference.image_url) {
        (Some(id), None) => id
            .strip_prefix("file-")
            .unwrap_or(id)
            .parse()
            .map(Some)
            .map_err(|_| refuse("image_not_found", "no such image: file_id is an image id from POST /v1/images")),
        (None, Some(_)) => Err(refuse(
            "unsupported_reference",
            "image_url is not supported: upload the image as a file, or pass file_id (an image id from POST /v1/images)",
        )),
        _ => Err(refuse("invalid_reference", "provide exactly one of image_url or file_id")),
    }
}

/// The parameters and the uploaded file (multipart only), from either kind of body.
async fn read(state: &AppState, request: Request) -> Result<(CreateBody, Option<Bytes>), ApiError> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if content_type.starts_with("multipart/form-data") {
        let multipart = Multipart::from_request(request, state)
            .await
            .map_err(|e| malformed(&e.body_text()))?;
        return read_form(multipart).await;
    }
    let ApiJson(body) = ApiJson::<CreateBody>::from_request(request, state).await?;
    Ok((body, None))
}

/// The form's text parts as the JSON body they stand for (checked like one: control
/// characters, unknown or repeated parameters), and its file part.
async fn read_form(mut multipart: Multipart) -> Result<(CreateBody, Option<Bytes>), ApiError> {
    let mut fields = Map::new();
    let mut reference = Map::new();
    let mut file = None;
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| malformed(&e.body_text()))?
    {
        let name = field.name().unwrap_or_default().to_owned();
        let repeated = || ApiError::field(&name, "duplicate_part", "send this parameter once");
        if name == "input_reference" && field.file_name().is_some() {
            if file.is_some() {
                return Err(repeated());
            }
            file = Some(field.bytes().await.map_err(|e| malformed(&e.body_text()))?);
            continue;
        }
        let text = field.text().await.map_err(|e| malformed(&e.body_text()))?;
        let (into, key) = match name.as_str() {
            "input_reference[file_id]" => (&mut reference, "file_id"),
            "input_reference[image_url]" => (&mut reference, "image_url"),
            "input_reference" => {
                let value: Value = from_json_slice(text.as_bytes())?;
                if fields.insert(name.clone(), value).is_some() {
                    return Err(repeated());
                }
                continue;
            }
            other => (&mut fields, other),
        };
        if into.insert(key.to_owned(), Value::String(text)).is_some() {
            return Err(repeated());
        }
    }
    if !reference.is_empty()
        && fields
            .insert("input_reference".to_owned(), Value::Object(reference))
            .is_some()
    {
        return Err(ApiError::field(
            "input_reference",
            "duplicate_part",
            "send this parameter once",
        ));
    }
    let json = serde_json::to_vec(&Value::Object(fields)).map_err(ApiError::internal)?;
    Ok((from_json_slice(&json)?, file))
}

fn malformed(detail: &str) -> ApiError {
    ApiError::BadRequest {
        status: StatusCode::BAD_REQUEST,
        code: "malformed_multipart",
        message: format!("the multipart body cannot be read: {detail}"),
    }
}
