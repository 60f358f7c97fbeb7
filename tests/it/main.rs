//! The crate's integration tests, one binary (linking one test binary per file cost more
//! than running them; issue 14): each module is one former test file.

mod common;

mod audit;
mod cli;
mod cli_personal_data;
mod client;
mod connections;
mod console;
mod crash_idempotency;
mod dev;
mod healing;
mod kafka;
mod observability;
mod openai_sdk;
mod providers;
mod traces;
mod webhook_chaos;
mod worker;
