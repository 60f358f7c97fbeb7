//! The REST API as the client calls it: the server's address, the caller's credentials
//! (refreshed when the access token has expired), and the server's problem+json turned into
//! [`ClientError::Api`].
//!
//! The client talks HTTP only, never to the database. It follows no redirects itself:
//! `/content` answers 302 to a signed link, fetched without our credentials
//! (`download::fetch`).

use std::time::Duration;

use chrono::Utc;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{json, Value};

use super::config::{Credentials, CredentialsFile, Store};
use super::error::ClientError;

/// How long before its expiry an access token is renewed rather than sent.
const EXPIRY_MARGIN: chrono::TimeDelta = chrono::TimeDelta::seconds(30);

/// How long one ordinary call may take (streams and downloads have none).
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Api {
    http: reqwest::Client,
    base: String,
    credentials: Option<Credentials>,
    /// Where refreshed tokens are saved; `None` when the key came from the environment.
    store: Option<Store>,
}

pub fn http_client() -> Result<reqwest::Client, ClientError> {
    reqwest::Client::builder()
        .user_agent(concat!("framegate-cli/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| ClientError::network(&e))
}

/// The key in `FRAMEGATE_API_KEY`, if one is set: it overrides the stored credentials.
pub fn env_api_key() -> Option<Credentials> {
    std::env::var("FRAMEGATE_API_KEY")
        .ok()
        .filter(|key| !key.trim().is_empty())
        .map(|key| Credentials::ApiKey {
            key: key.trim().to_owned(),
        })
}

impl Api {
    /// A client for `base` with no credentials (login, registration).
    pub fn anonymous(base: String) -> Result<Api, ClientError> {
        Ok(Api {
            http: http_client()?,
            base,
            credentials: None,
            store: None,
        })
    }

    /// A client for `base` with the credentials `FRAMEGATE_API_KEY` or the login gave.
    pub fn authenticated(
        base: String,
        store: Option<Store>,
        file: &CredentialsFile,
    ) -> Result<Api, ClientError> {
        let (credentials, store) = match env_api_key() {
            Some(credentials) => (credentials, None),
            None => match file.servers.get(&base) {
                Some(credentials) => (credentials.clone(), store),
                None => return Err(ClientError::NotLoggedIn { server: base }),
            },
        };
        Ok(Api {
            http: http_client()?,
            base,
            credentials: Some(credentials),
            store,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Sends the request `build` makes (again after a refresh if the server says the access
    /// token has expired) and returns the response if it is a success.
    pub async fn send(
        &mut self,
        build: impl Fn(&reqwest::Client) -> RequestBuilder,
    ) -> Result<Response, ClientError> {
        let response = self.send_once(&build).await?;
        match check(response).await {
            Err(error) if error.code() == Some("token_expired") && self.can_refresh() => {
                self.refresh().await?;
                check(self.send_once(&build).await?).await
            }
            other => other,
        }
    }

    async fn send_once(
        &mut self,
        build: &impl Fn(&reqwest::Client) -> RequestBuilder,
    ) -> Result<Response, ClientError> {
        let mut request = build(&self.http);
        if let Some(token) = self.bearer().await? {
            request = request.bearer_auth(token);
        }
        request.send().await.map_err(|e| ClientError::network(&e))
    }

    /// A JSON call: `body` as the request, the answer's JSON (`null` for 204).
    pub async fn call(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let url = self.url(path);
        let response = self
            .send(|http| {
                let request = http.request(method.clone(), &url).timeout(CALL_TIMEOUT);
                match body {
                    Some(body) => request.json(body),
                    None => request,
                }
            })
            .await?;
        read_json(response).await
    }

    pub async fn get(&mut self, path: &str) -> Result<Value, ClientError> {
        self.call(Method::GET, path, None).await
    }

    /// The token to send, renewed first if it is about to expire.
    async fn bearer(&mut self) -> Result<Option<String>, ClientError> {
        let expired = match &self.credentials {
            None => return Ok(None),
            Some(Credentials::ApiKey { key }) => return Ok(Some(key.clone())),
            Some(Credentials::Tokens {
                access_expires_at, ..
            }) => *access_expires_at - EXPIRY_MARGIN <= Utc::now(),
        };
        if expired {
            self.refresh().await?;
        }
        Ok(match &self.credentials {
            Some(Credentials::Tokens { access_token, .. }) => Some(access_token.clone()),
            Some(Credentials::ApiKey { key }) => Some(key.clone()),
            None => None,
        })
    }

    fn can_refresh(&self) -> bool {
        matches!(self.credentials, Some(Credentials::Tokens { .. }))
    }

    /// Renews the access token with the refresh token and saves both (the refresh token
    /// rotates). Under the store's lock: if another command refreshed meanwhile, its tokens
    /// are taken instead of spending ours a second time.
    pub async fn refresh(&mut self) -> Result<(), ClientError> {
        let Some(Credentials::Tokens {
            access_token,
            refresh_token,
            email,
            ..
        }) = self.credentials.clone()
        else {
            return Ok(());
        };
        let Some(store) = self.store.clone() else {
            return Err(ClientError::NotLoggedIn {
                server: self.base.clone(),
            });
        };
        let _lock = store.lock()?;
        let mut file = store.load()?;
        let mut refresh_token = refresh_token;
        if let Some(
            stored @ Credentials::Tokens {
                access_token: stored_access,
                refresh_token: stored_refresh,
                access_expires_at,
                ..
            },
        ) = file.servers.get(&self.base)
        {
            if *stored_access != access_token && *access_expires_at - EXPIRY_MARGIN > Utc::now() {
                self.credentials = Some(stored.clone());
                return Ok(());
            }
            // Another command rotated ours: ours is spent (sending it again would end the
            // session everywhere), the file's is the live one.
            if *stored_refresh != refresh_token {
                refresh_token = stored_refresh.clone();
            }
        }
        let url = self.url("/v1/auth/refresh");
        let response = self
            .http
            .post(&url)
            .timeout(CALL_TIMEOUT)
            .json(&json!({ "refresh_token": refresh_token }))
            .send()
            .await
            .map_err(|e| ClientError::network(&e))?;
        let tokens = match check(response).await {
            Ok(response) => read_json(response).await?,
            Err(ClientError::Api {
                status: 401,
                code,
                detail,
                ..
            }) => {
                // The session is over (logged out elsewhere, expired): the file's entry is
                // no use any more, unless it has been replaced meanwhile (a new login).
                let spent = matches!(
                    file.servers.get(&self.base),
                    Some(Credentials::Tokens { refresh_token: stored, .. }) if *stored == refresh_token
                );
                if spent {
                    file.servers.remove(&self.base);
                    store.save(&file)?;
                }
                return Err(ClientError::Api {
                    status: 401,
                    detail: format!(
                        "{detail}; log in again with `framegate client login --server {}`",
                        self.base
                    ),
                    code,
                    errors: Vec::new(),
                    request_id: None,
                });
            }
            Err(other) => return Err(other),
        };
        let credentials = tokens_from(&tokens, email)?;
        file.servers.insert(self.base.clone(), credentials.clone());
        store.save(&file)?;
        self.credentials = Some(credentials);
        Ok(())
    }
}

/// The credentials a login or refresh answer (`TokenResponse`) holds.
pub fn tokens_from(tokens: &Value, email: Option<String>) -> Result<Credentials, ClientError> {
    let field = |name: &str| {
        tokens[name]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| ClientError::Network(format!("the token answer has no {name}")))
    };
    let expires_in = tokens["expires_in"].as_i64().unwrap_or(0);
    Ok(Credentials::Tokens {
        access_token: field("access_token")?,
        refresh_token: field("refresh_token")?,
        access_expires_at: Utc::now() + chrono::TimeDelta::seconds(expires_in),
        email,
    })
}

/// `response` if it is a success, else its problem as an error.
pub async fn check(response: Response) -> Result<Response, ClientError> {
    let status = response.status();
    if status.is_success() || status.is_redirection() {
        return Ok(response);
    }
    let body = response.bytes().await.unwrap_or_default();
    Err(problem(status, &body))
}

/// The server's problem+json, or what can be said about an answer that is not one.
fn problem(status: StatusCode, body: &[u8]) -> ClientError {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let text = |value: &Value, name: &str| value[name].as_str().map(str::to_owned);
    match parsed.filter(|p| p["code"].is_string()) {
        Some(problem) => ClientError::Api {
            status: status.as_u16(),
            code: text(&problem, "code").unwrap_or_default(),
            detail: text(&problem, "detail")
                .or_else(|| text(&problem, "title"))
                .unwrap_or_else(|| status.to_string()),
            errors: serde_json::from_value(problem["errors"].clone()).unwrap_or_default(),
            request_id: text(&problem, "request_id"),
        },
        None => ClientError::Api {
            status: status.as_u16(),
            code: format!("http_{}", status.as_u16()),
            detail: format!(
                "the server answered {status}{}",
                if body.is_empty() {
                    ""
                } else {
                    " without a problem document"
                }
            ),
            errors: Vec::new(),
            request_id: None,
        },
    }
}

pub async fn read_json(response: Response) -> Result<Value, ClientError> {
    if response.status() == StatusCode::NO_CONTENT {
        return Ok(Value::Null);
    }
    let bytes = response
        .bytes()
        .await
        .map_err(|e| ClientError::network(&e))?;
    if bytes.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| ClientError::Network(format!("the server's answer is not JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_document_keeps_its_code_detail_and_fields() {
        let body = br#"{"type":"x","title":"Unprocessable Entity","status":422,"detail":"the request is invalid","code":"validation_failed","errors":[{"field":"prompt","code":"required","message":"describe the video"}],"request_id":"r1"}"#;
        let error = problem(StatusCode::UNPROCESSABLE_ENTITY, body);
        let ClientError::Api {
            status,
            code,
            errors,
            request_id,
            ..
        } = &error
        else {
            panic!("{error:?}");
        };
        assert_eq!((*status, code.as_str()), (422, "validation_failed"));
        assert_eq!(errors[0].field, "prompt");
        assert_eq!(request_id.as_deref(), Some("r1"));
        assert_eq!(error.exit(), super::super::error::Exit::Error);
    }

    #[test]
    fn an_answer_without_a_problem_is_named_by_its_status() {
        let error = problem(StatusCode::BAD_GATEWAY, b"<html>");
        assert_eq!(error.code(), Some("http_502"));
        let unauthorised = problem(StatusCode::UNAUTHORIZED, br#"{"code":"token_expired"}"#);
        assert_eq!(unauthorised.exit(), super::super::error::Exit::Auth);
    }
}
