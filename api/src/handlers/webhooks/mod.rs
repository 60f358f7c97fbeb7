//! Webhooks: the endpoints a user registers (`endpoints`).

pub mod endpoints;
