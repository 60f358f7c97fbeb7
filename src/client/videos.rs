//! `videos create|list|get|cancel|download`. Waiting for a video (`--wait`) and what Ctrl-C
//! does meanwhile is `wait`; following its event stream is `follow`.

use std::path::PathBuf;

use reqwest::Method;
use serde_json::{json, Map, Value};

use super::api::Api;
use super::download;
use super::error::{ClientError, Exit};
use super::images;
use super::output::{cell, shorten, table, Output};
use super::wait::{self, WaitArgs};

#[derive(Debug, clap::Subcommand)]
pub enum VideosCommand {
    /// Request a video, reserving its estimated cost in credits; with --wait, follow it to
    /// the end and download the MP4.
    Create(Box<CreateArgs>),
    /// Your videos, newest first.
    List(ListArgs),
    /// One video; with --wait, follow it to the end and download the MP4.
    Get {
        id: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Cancel a video that has not finished (its reserved credits are released).
    Cancel {
        id: String,
        /// Why (kept with the video's history).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Download a completed video's MP4 (or its poster or thumbnail).
    Download {
        id: String,
        /// Where to write it [default: <id>.mp4, <id>.poster.jpg or <id>.thumbnail.jpg].
        #[arg(long, short)]
        output: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = Variant::Video)]
        variant: Variant,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Variant {
    Video,
    Poster,
    Thumbnail,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Video => "video",
            Variant::Poster => "poster",
            Variant::Thumbnail => "thumbnail",
        }
    }

    fn default_file(self, id: &str) -> PathBuf {
        PathBuf::from(match self {
            Variant::Video => format!("{id}.mp4"),
            Variant::Poster => format!("{id}.poster.jpg"),
            Variant::Thumbnail => format!("{id}.thumbnail.jpg"),
        })
    }
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// What the video shows.
    #[arg(long)]
    prompt: String,
    /// What the video should not show.
    #[arg(long)]
    negative_prompt: Option<String>,
    /// A start image: uploaded first (the same file again is the same image).
    #[arg(long, conflicts_with = "image_id")]
    image: Option<PathBuf>,
    /// A start image uploaded before (`images upload`).
    #[arg(long)]
    image_id: Option<String>,
    /// auto, veo, sora, kling or simulator.
    #[arg(long, default_value = "auto")]
    provider: String,
    /// A model of that provider [default: the provider's default].
    #[arg(long)]
    model: Option<String>,
    /// Seconds [default: the model's shortest].
    #[arg(long)]
    duration: Option<u32>,
    /// 16:9, 9:16 or 1:1 [default: 16:9 where the model has it].
    #[arg(long)]
    aspect_ratio: Option<String>,
    /// 480p, 720p, 1080p or 4k [default: 720p where the model has it].
    #[arg(long)]
    resolution: Option<String>,
    /// 0 to 4294967295, for providers that take one.
    #[arg(long)]
    seed: Option<u64>,
    /// Your own reference for this request.
    #[arg(long)]
    external_id: Option<String>,
    #[command(flatten)]
    wait: WaitArgs,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// queued, submitted, running, completed, failed or cancelled.
    #[arg(long)]
    status: Option<String>,
    #[arg(long)]
    provider: Option<String>,
    #[arg(long)]
    limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    #[arg(long)]
    cursor: Option<String>,
}

pub async fn run(
    command: VideosCommand,
    api: &mut Api,
    output: Output,
) -> Result<Exit, ClientError> {
    match command {
        VideosCommand::Create(args) => create(*args, api, output).await,
        VideosCommand::List(args) => list(args, api, output).await,
        VideosCommand::Get { id, wait } => {
            let video = api.get(&format!("/v1/videos/{}", path_id(&id)?)).await?;
            if wait.wait {
                return wait::follow(api, video, &wait, output).await;
            }
            output.result(&video, describe);
            Ok(Exit::Success)
        }
        VideosCommand::Cancel { id, reason } => {
            let body = reason.map(|reason| json!({ "reason": reason }));
            let video = api
                .call(
                    Method::POST,
                    &format!("/v1/videos/{}/cancel", path_id(&id)?),
                    Some(&body.unwrap_or_else(|| json!({}))),
                )
                .await?;
            output.result(&video, |video| {
                format!("{}: {}", cell(video, "id"), wait::cancel_outcome(video))
            });
            Ok(Exit::Success)
        }
        VideosCommand::Download {
            id,
            output: target,
            variant,
        } => {
            let id = path_id(&id)?.to_owned();
            let target = target.unwrap_or_else(|| variant.default_file(&id));
            let bytes = download::fetch(api, &id, variant.name(), &target, output).await?;
            let result = json!({ "id": id, "variant": variant.name(), "output": target.display().to_string(), "bytes": bytes });
            output.result(&result, |_| {
                format!("Saved {} ({bytes} bytes).", target.display())
            });
            Ok(Exit::Success)
        }
    }
}

/// An id as a path segment: refused here if it could change the path.
pub fn path_id(id: &str) -> Result<&str, ClientError> {
    let id = id.trim();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(ClientError::Usage(format!("{id:?} is not an id")));
    }
    Ok(id)
}

async fn create(args: CreateArgs, api: &mut Api, output: Output) -> Result<Exit, ClientError> {
    let image_id = match (&args.image, &args.image_id) {
        (Some(file), _) => {
            let image = images::upload(api, file).await?;
            let id = cell(&image, "id");
            output.note(format_args!("Uploaded {} as image {id}.", file.display()));
            Some(id)
        }
        (None, Some(id)) => Some(path_id(id)?.to_owned()),
        (None, None) => None,
    };
    let mut body = Map::new();
    body.insert("prompt".into(), json!(args.prompt));
    body.insert("provider".into(), json!(args.provider));
    let optional = [
        ("negative_prompt", args.negative_prompt.map(Value::from)),
        ("model", args.model.clone().map(Value::from)),
        ("image_id", image_id.map(Value::from)),
        ("seed", args.seed.map(Value::from)),
        ("external_id", args.external_id.map(Value::from)),
    ];
    for (name, value) in optional {
        if let Some(value) = value {
            body.insert(name.into(), value);
        }
    }
    let shape = shape(
        api,
        &args.provider,
        args.model.as_deref(),
        args.duration,
        args.aspect_ratio,
        args.resolution,
    )
    .await?;
    body.insert("duration_seconds".into(), json!(shape.0));
    body.insert("aspect_ratio".into(), json!(shape.1));
    body.insert("resolution".into(), json!(shape.2));
    let body = Value::Object(body);
    // One key for the request and its retries: a retry after a lost answer replays the
    // video made, never makes a second one.
    let key = uuid::Uuid::new_v4().to_string();
    let url = api.url("/v1/videos");
    let mut attempt = 0;
    let response = loop {
        attempt += 1;
        let sent = api
            .send(|http| http.post(&url).header("Idempotency-Key", &key).json(&body))
            .await;
        match sent {
            Err(ClientError::Network(_)) if attempt < 3 => {
                tokio::time::sleep(std::time::Duration::from_millis(500 * attempt)).await;
            }
            other => break other?,
        }
    };
    let video = super::api::read_json(response).await?;
    if args.wait.wait {
        return wait::follow(api, video, &args.wait, output).await;
    }
    output.result(&video, |video| {
        let id = cell(video, "id");
        format!(
            "Video {id} {}: {} {}, {} s, {} credits reserved.\nFollow it with `framegate client videos get {id} --wait`.",
            cell(video, "status"),
            cell(video, "provider"),
            cell(video, "model"),
            cell(video, "duration_seconds"),
            cell(video, "estimated_cost"),
        )
    });
    Ok(Exit::Success)
}

/// Duration, aspect ratio and resolution: as given, the rest from the model's capabilities
/// in `GET /v1/providers` (its shortest duration, 16:9 and 720p where it has them).
async fn shape(
    api: &mut Api,
    provider: &str,
    model: Option<&str>,
    duration: Option<u32>,
    aspect_ratio: Option<String>,
    resolution: Option<String>,
) -> Result<(u32, String, String), ClientError> {
    if let (Some(d), Some(a), Some(r)) = (duration, &aspect_ratio, &resolution) {
        return Ok((d, a.clone(), r.clone()));
    }
    let providers = api.get("/v1/providers").await?;
    let models: Vec<&Value> = providers
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["enabled"] == json!(true))
        .filter(|p| provider == "auto" || p["provider"] == json!(provider))
        .flat_map(|p| p["models"].as_array().into_iter().flatten())
        .collect();
    let chosen = models
        .iter()
        .find(|m| match model {
            Some(name) => m["model"] == json!(name),
            None => m["default"] == json!(true),
        })
        .ok_or_else(|| {
            ClientError::Usage(format!(
                "no enabled provider {provider:?} with {}: pass --duration, --aspect-ratio and --resolution",
                model.map_or("a default model".to_owned(), |m| format!("the model {m:?}"))
            ))
        })?;
    let texts = |name: &str| -> Vec<String> {
        chosen[name]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect()
    };
    let prefer = |values: Vec<String>, wanted: &str| {
        if values.iter().any(|v| v == wanted) {
            Some(wanted.to_owned())
        } else {
            values.into_iter().next()
        }
    };
    let shortest = chosen["durations"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d.as_u64().and_then(|d| u32::try_from(d).ok()))
        .min();
    let missing = |what: &str| ClientError::Usage(format!("the model lists no {what}; pass it"));
    Ok((
        duration.or(shortest).ok_or_else(|| missing("durations"))?,
        aspect_ratio
            .or_else(|| prefer(texts("aspect_ratios"), "16:9"))
            .ok_or_else(|| missing("aspect ratios"))?,
        resolution
            .or_else(|| prefer(texts("resolutions"), "720p"))
            .ok_or_else(|| missing("resolutions"))?,
    ))
}

async fn list(args: ListArgs, api: &mut Api, output: Output) -> Result<Exit, ClientError> {
    let mut query = Vec::new();
    for (name, value) in [
        ("status", args.status),
        ("provider", args.provider),
        ("limit", args.limit.map(|l| l.to_string())),
        ("cursor", args.cursor),
    ] {
        if let Some(value) = value {
            query.push((name, value));
        }
    }
    let url = reqwest::Url::parse_with_params(&api.url("/v1/videos"), &query)
        .map_err(|e| ClientError::Usage(e.to_string()))?;
    let response = api.send(|http| http.get(url.clone())).await?;
    let page = super::api::read_json(response).await?;
    output.result(&page, |page| {
        let rows: Vec<Vec<String>> = page["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| {
                vec![
                    cell(v, "id"),
                    cell(v, "status"),
                    format!("{}%", cell(v, "progress")),
                    cell(v, "provider"),
                    format!("{}s", cell(v, "duration_seconds")),
                    cell(v, "created_at").chars().take(19).collect(),
                    shorten(&cell(v, "prompt"), 40),
                ]
            })
            .collect();
        let mut text = table(
            &[
                "ID", "STATUS", "DONE", "PROVIDER", "LENGTH", "CREATED", "PROMPT",
            ],
            &rows,
        );
        if let Some(cursor) = page["next_cursor"].as_str() {
            text.push_str(&format!("\nmore: --cursor {cursor}"));
        }
        text
    });
    Ok(Exit::Success)
}

/// A video in a few lines.
pub fn describe(video: &Value) -> String {
    let mut lines = vec![
        format!("id        {}", cell(video, "id")),
        format!(
            "status    {} ({}%)",
            cell(video, "status"),
            cell(video, "progress")
        ),
        format!(
            "provider  {} {}",
            cell(video, "provider"),
            cell(video, "model")
        ),
        format!(
            "shape     {} s, {}, {}",
            cell(video, "duration_seconds"),
            cell(video, "aspect_ratio"),
            cell(video, "resolution")
        ),
        format!("prompt    {}", shorten(&cell(video, "prompt"), 70)),
        format!(
            "cost      {} estimated, {} final",
            cell(video, "estimated_cost"),
            cell(video, "final_cost")
        ),
        format!("created   {}", cell(video, "created_at")),
    ];
    if let Some(error) = video["error"].as_object() {
        lines.push(format!(
            "error     {} ({})",
            error.get("message").and_then(Value::as_str).unwrap_or("?"),
            error.get("code").and_then(Value::as_str).unwrap_or("?")
        ));
    }
    if let Some(url) = video["content"]["url"].as_str() {
        lines.push(format!("content   {url}"));
    }
    lines.join("\n")
}
