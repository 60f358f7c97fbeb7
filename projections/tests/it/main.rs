//! The crate's integration tests, one binary (linking one test binary per file cost more
//! than running them; issue 14): each module is one former test file.

mod copies;
mod support;

mod audit_plans;
mod batch_plans;
mod batch_projection;
mod batch_unusual_orders;
mod credentials_announcements;
mod erasure_replay;
mod healing;
mod images_read_model;
mod notification_rules;
mod ordered_log;
mod read_model_runner;
mod read_models;
mod reads;
mod replay;
mod seal_in_place;
mod upcast_replay;
