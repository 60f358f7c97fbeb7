//! `credits`: the caller's balance, what videos in flight hold reserved, and what is left.

use super::api::Api;
use super::error::{ClientError, Exit};
use super::output::{cell, Output};

pub async fn run(api: &mut Api, output: Output) -> Result<Exit, ClientError> {
    let credits = api.get("/v1/credits").await?;
    output.result(&credits, |c| {
        format!(
            "{} credits available ({} balance, {} reserved by videos in flight).",
            cell(c, "available"),
            cell(c, "balance"),
            cell(c, "reserved")
        )
    });
    Ok(Exit::Success)
}
