//! The crate's integration tests, one binary (linking one test binary per file cost more
//! than running them; issue 14): each module is one former test file.

mod common;

mod accounts;
mod audit;
mod billing;
mod billing_signature;
mod billing_webhook;
mod client_ip;
mod console;
mod control_characters;
mod credentials_cache;
mod erasure;
mod erasure_in_flight;
mod generate_audio;
mod image_restrip;
mod images;
mod login_throttle;
mod middleware_idempotency;
mod middleware_rate_limit;
mod notification_preferences;
mod notifications;
mod openai;
mod openai_content;
mod password_reset;
mod security;
mod server_shutdown;
mod sessions;
mod slow_clients;
mod video_requests;
mod video_streams;
mod videos;
mod webhook_deliveries;
mod webhook_endpoints;
