//! Identifier newtypes for the aggregates and the things they reference.
//!
//! Distinct types stop a `VideoId` being passed where a `UserId` is expected, while the
//! transparent serde form keeps the stored JSON a plain UUID string. The domain never mints
//! ids: callers choose them (UUID v7 in production, fixed values in tests) so that command
//! handling stays deterministic and retries of one request can reuse one id.

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
            JsonSchema,
        )]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            pub const fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl From<Uuid> for $name {
            fn from(uuid: Uuid) -> Self {
                Self(uuid)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Self {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0.hyphenated(), f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

uuid_id!(
    /// A user; also the aggregate id of that user's credit account.
    UserId
);
uuid_id!(
    /// A video generation request.
    VideoId
);
uuid_id!(
    /// An uploaded reference image a video may be generated from.
    ImageId
);
uuid_id!(
    /// A URL a user asked us to push events to.
    WebhookEndpointId
);
uuid_id!(
    /// An API key; the secret part of the key is never stored, only its hash.
    ApiKeyId
);
