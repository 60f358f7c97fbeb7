//! The OTLP exporter's HTTP client: the reqwest build the rest of the platform uses.
//!
//! opentelemetry-otlp ships clients only for reqwest 0.13 (a second copy of reqwest, hyper's
//! client stack and TLS in the build) or hyper without TLS; it also takes any
//! [`HttpClient`]. The SDK's batch span processor exports from a thread of its own, outside
//! the tokio runtime, where an async reqwest request cannot run: each export is spawned onto
//! the runtime the exporter was built on and awaited from there (a `JoinHandle` can be
//! awaited from any executor). Built inside the runtime (`Telemetry::init`), and the runtime
//! outlives the final flush (`Telemetry::shutdown` runs before `main` returns).

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use opentelemetry_http::{HttpClient, HttpError, Request, Response};

/// The most of a collector's answer that is read (the OTLP answer is a small status message;
/// opentelemetry-http's own clients stop at the same size).
const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct RuntimeClient {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

impl RuntimeClient {
    /// A client whose requests end after `timeout` (`OTEL_EXPORTER_OTLP_TIMEOUT`), run on
    /// the current tokio runtime.
    pub fn new(timeout: Duration) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!("framegate/", env!("CARGO_PKG_VERSION"), " otlp"))
            .build()?;
        Ok(Self {
            client,
            runtime: tokio::runtime::Handle::try_current()?,
        })
    }
}

#[async_trait]
impl HttpClient for RuntimeClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let request = reqwest::Request::try_from(request)?;
        let client = self.client.clone();
        self.runtime
            .spawn(async move {
                let mut answer = client.execute(request).await?;
                let mut body = Vec::new();
                while let Some(chunk) = answer.chunk().await? {
                    if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                        return Err("the collector's answer is larger than 4 MiB".into());
                    }
                    body.extend_from_slice(&chunk);
                }
                let mut response = Response::builder()
                    .status(answer.status())
                    .body(Bytes::from(body))?;
                *response.headers_mut() = std::mem::take(answer.headers_mut());
                Ok(response)
            })
            .await?
    }
}
