//! `keys create|list|revoke`: API keys for scripts and servers. Creating and revoking keys
//! needs a login or a key holding every scope.

use reqwest::Method;
use serde_json::json;

use super::api::Api;
use super::error::{ClientError, Exit};
use super::output::{cell, table, Output};
use super::videos::path_id;

#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Create a key; its secret is shown this once.
    Create {
        #[arg(long)]
        name: String,
        /// videos:read, videos:write, images:read, images:write or credits:read; repeat for
        /// several [default: all].
        #[arg(long = "scope")]
        scopes: Vec<String>,
    },
    /// Your keys, revoked ones included (never their secrets).
    List,
    /// Revoke a key: it stops working at once.
    Revoke { id: String },
}

pub async fn run(command: KeysCommand, api: &mut Api, output: Output) -> Result<Exit, ClientError> {
    match command {
        KeysCommand::Create { name, scopes } => {
            let key = api
                .call(
                    Method::POST,
                    "/v1/api-keys",
                    Some(&json!({ "name": name, "scopes": scopes })),
                )
                .await?;
            output.result(&key, |key| {
                format!(
                    "Key {} ({}) created with scopes {}.\nSecret (shown this once): {}",
                    cell(key, "id"),
                    cell(key, "name"),
                    scope_list(key),
                    cell(key, "secret")
                )
            });
        }
        KeysCommand::List => {
            let keys = api.get("/v1/api-keys").await?;
            output.result(&keys, |keys| {
                let rows: Vec<Vec<String>> = keys
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|k| {
                        vec![
                            cell(k, "id"),
                            cell(k, "name"),
                            cell(k, "prefix"),
                            scope_list(k),
                            cell(k, "created_at").chars().take(19).collect(),
                            cell(k, "last_used_at").chars().take(19).collect(),
                            cell(k, "revoked_at").chars().take(19).collect(),
                        ]
                    })
                    .collect();
                table(
                    &[
                        "ID",
                        "NAME",
                        "PREFIX",
                        "SCOPES",
                        "CREATED",
                        "LAST USED",
                        "REVOKED",
                    ],
                    &rows,
                )
            });
        }
        KeysCommand::Revoke { id } => {
            let id = path_id(&id)?;
            api.call(Method::DELETE, &format!("/v1/api-keys/{id}"), None)
                .await?;
            output.result(&json!({ "id": id, "revoked": true }), |_| {
                format!("Revoked key {id}.")
            });
        }
    }
    Ok(Exit::Success)
}

fn scope_list(key: &serde_json::Value) -> String {
    let scopes: Vec<&str> = key["scopes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str())
        .collect();
    scopes.join(",")
}
