//! The crate's integration tests, one binary (linking one test binary per file cost more
//! than running them; issue 14): each module is one former test file.

mod catalog;
mod credit_account;
mod credit_revocation;
mod event_schemas;
mod events;
mod image;
mod user;
mod user_notifications;
mod values;
mod versions;
mod video;
mod webhook;
