//! The HTTP adapters of the real providers. Each speaks one API exactly as documented in
//! docs/providers.md and maps every answer onto the shared error model.

pub mod download;
pub mod http;
pub mod kling;
pub mod metered;
pub mod sora;
pub mod veo;
