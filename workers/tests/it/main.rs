//! The crate's integration tests, one binary (linking one test binary per file cost more
//! than running them; issue 14): each module is one former test file.

mod cancellation;
mod downloads;
mod fair_poller;
mod kling;
mod late_delivery;
mod media;
mod pipeline;
mod routing;
mod sora;
mod veo;
mod webhooks;
