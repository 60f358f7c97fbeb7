//! Workers: the processes that react to the ordered log outside the database.
//!
//! `settlement` makes credits follow each video; `image_cleanup` and `video_cleanup` remove a
//! deleted image's or video's files; `media` renders the simulator's MP4s and validates and post-processes every
//! generated video with ffmpeg; `provider` is the port adapters implement, `simulator` the
//! local one, and `pipeline` the dispatcher and poller.

pub mod erasure_cleanup;
pub mod health;
pub mod image_cleanup;
pub mod kafka;
pub mod media;
pub mod pipeline;
pub mod provider;
pub mod providers;
pub mod settlement;
pub mod simulator;
pub mod video_cleanup;
pub mod webhooks;
