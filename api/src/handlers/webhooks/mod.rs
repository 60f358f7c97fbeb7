//! Webhooks: the endpoints a user registers (`endpoints`) and what was delivered to them
//! (`deliveries`).

pub mod deliveries;
pub mod endpoints;
