//! `images upload|list|delete`: reference images for image-to-video requests.

use std::path::{Path, PathBuf};

use reqwest::Method;
use serde_json::{json, Value};

use super::api::{read_json, Api};
use super::error::{ClientError, Exit};
use super::output::{cell, table, Output};
use super::videos::path_id;

#[derive(Debug, clap::Subcommand)]
pub enum ImagesCommand {
    /// Upload a JPEG, PNG or WEBP (the same file again is the same image).
    Upload { file: PathBuf },
    /// Your images, newest first.
    List {
        #[arg(long)]
        limit: Option<u32>,
        /// The `next_cursor` of the previous page.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Delete an image (its files are removed shortly after).
    Delete { id: String },
}

pub async fn run(
    command: ImagesCommand,
    api: &mut Api,
    output: Output,
) -> Result<Exit, ClientError> {
    match command {
        ImagesCommand::Upload { file } => {
            let image = upload(api, &file).await?;
            output.result(&image, |image| {
                format!(
                    "Image {} ({}, {}x{}, {} bytes).",
                    cell(image, "id"),
                    cell(image, "content_type"),
                    cell(image, "width"),
                    cell(image, "height"),
                    cell(image, "bytes")
                )
            });
        }
        ImagesCommand::List { limit, cursor } => {
            let mut query = Vec::new();
            if let Some(limit) = limit {
                query.push(("limit", limit.to_string()));
            }
            if let Some(cursor) = cursor {
                query.push(("cursor", cursor));
            }
            let url = reqwest::Url::parse_with_params(&api.url("/v1/images"), &query)
                .map_err(|e| ClientError::Usage(e.to_string()))?;
            let page = read_json(api.send(|http| http.get(url.clone())).await?).await?;
            output.result(&page, |page| {
                let rows: Vec<Vec<String>> = page["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|i| {
                        vec![
                            cell(i, "id"),
                            cell(i, "status"),
                            cell(i, "content_type"),
                            format!("{}x{}", cell(i, "width"), cell(i, "height")),
                            cell(i, "bytes"),
                            cell(i, "created_at").chars().take(19).collect(),
                        ]
                    })
                    .collect();
                let mut text = table(&["ID", "STATUS", "TYPE", "SIZE", "BYTES", "CREATED"], &rows);
                if let Some(cursor) = page["next_cursor"].as_str() {
                    text.push_str(&format!("\nmore: --cursor {cursor}"));
                }
                text
            });
        }
        ImagesCommand::Delete { id } => {
            let id = path_id(&id)?;
            api.call(Method::DELETE, &format!("/v1/images/{id}"), None)
                .await?;
            output.result(&json!({ "id": id, "deleted": true }), |_| {
                format!("Deleted image {id}.")
            });
        }
    }
    Ok(Exit::Success)
}

/// `POST /v1/images` with `file` as the `file` part; the server tells its type from its bytes.
pub async fn upload(api: &mut Api, file: &Path) -> Result<Value, ClientError> {
    let bytes = std::fs::read(file).map_err(|e| ClientError::local(file.display(), e))?;
    let name = file
        .file_name()
        .map_or_else(|| "image".to_owned(), |n| n.to_string_lossy().into_owned());
    let url = api.url("/v1/images");
    let response = api
        .send(|http| {
            let part = reqwest::multipart::Part::bytes(bytes.clone()).file_name(name.clone());
            http.post(&url)
                .multipart(reqwest::multipart::Form::new().part("file", part))
        })
        .await?;
    read_json(response).await
}
