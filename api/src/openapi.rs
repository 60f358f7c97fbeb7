//! The OpenAPI 3.1 document (`/openapi.json`); the browsable page reading it (`/docs`) is
//! one of the `console` files.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::error::{FieldError, Problem};
use crate::handlers;

#[derive(OpenApi)]
#[openapi(
    info(title = "Framegate API", description = "Event-sourced AI video generation backend. Errors are RFC 9457 problem+json documents with a stable `code`."),
    paths(
        handlers::auth::register, handlers::auth::verify_email, handlers::auth::login,
        handlers::auth::refresh_tokens, handlers::auth::logout, handlers::auth::logout_all, handlers::auth::request_password_reset,
        handlers::auth::confirm_password_reset, handlers::auth::me, handlers::auth::update_me, handlers::auth::delete_me,
        handlers::api_keys::create, handlers::api_keys::list, handlers::api_keys::revoke,
        handlers::credits::balance, handlers::credits::ledger,
        handlers::billing::packs, handlers::billing::checkout, handlers::billing::purchases,
        handlers::billing::stripe_webhook,
        handlers::admin::list_users, handlers::admin::grant_credits, handlers::admin::change_role,
        handlers::admin::disable, handlers::admin::erase, handlers::audit::list, handlers::audit::stream,
        handlers::health::live, handlers::health::ready,
        handlers::videos::create, handlers::videos::estimate, handlers::videos::get,
        handlers::videos::list, handlers::videos::cancel, handlers::videos::providers,
        handlers::videos::content, handlers::videos::event_stream::events,
        handlers::images::upload, handlers::images::list, handlers::images::get,
        handlers::images::delete,
        handlers::blobs::download,
        handlers::webhooks::endpoints::create, handlers::webhooks::endpoints::list,
        handlers::webhooks::endpoints::get, handlers::webhooks::endpoints::update,
        handlers::webhooks::endpoints::delete, handlers::webhooks::endpoints::rotate_secret,
        handlers::webhooks::endpoints::default_secret,
        handlers::webhooks::deliveries::list, handlers::webhooks::deliveries::attempts,
        handlers::webhooks::deliveries::retry, handlers::webhooks::deliveries::test,
    ),
    components(schemas(Problem, FieldError)),
    modifiers(&BearerAuth),
    tags(
        (name = "auth", description = "Accounts and sessions"),
        (name = "api-keys", description = "API keys (`Authorization: Bearer fg_...`)"),
        (name = "credits", description = "Balance and ledger"),
        (name = "billing", description = "Credit packs, Stripe Checkout, purchases and Stripe's webhook"),
        (name = "admin", description = "Administration (role admin)"),
        (name = "videos", description = "Video requests, credits reservation and providers"),
        (name = "images", description = "Reference images: upload, list, signed links, delete"),
        (name = "blobs", description = "Signed download links (filesystem blob store)"),
        (name = "health", description = "Liveness and readiness"),
        (name = "webhooks", description = "Webhook endpoints: Standard Webhooks signed deliveries of video and credit events"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An access token (JWT) from /v1/auth/login, or an API key fg_...",
                    ))
                    .build(),
            ),
        );
    }
}

pub async fn document() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(ApiDoc::openapi())
}
