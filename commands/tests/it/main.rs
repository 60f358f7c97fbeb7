//! The crate's integration tests, one binary (linking one test binary per file cost more
//! than running them; issue 14): each module is one former test file.

mod blobs;
mod crypto_shredding;
mod event_store;
mod snapshots;
mod state_cache;
mod webhook_signature;
