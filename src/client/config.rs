//! Where the client keeps what `login` gave it: `credentials.json` in the user's config
//! directory (`$XDG_CONFIG_HOME/framegate/`, else `~/.config/framegate/`), one entry per
//! server, readable by its owner only.
//!
//! The file is written whole to a temporary file created with mode 0600 in the same
//! directory (itself 0700) and renamed over the old one, so no reader sees half a file and
//! the secret is never on disk with wider permissions. Token refreshes take a lock file
//! first: refresh tokens rotate and the server ends a session whose token is used twice, so
//! two commands refreshing at once must not both spend the same one.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::error::ClientError;

/// The file's name in the config directory.
const FILE_NAME: &str = "credentials.json";

/// What one server's login left.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Credentials {
    /// An API key (`fg_...`), sent as a bearer token as is.
    ApiKey { key: String },
    /// A login session: a short-lived access token and the refresh token that renews it.
    Tokens {
        access_token: String,
        refresh_token: String,
        access_expires_at: DateTime<Utc>,
        #[serde(default)]
        email: Option<String>,
    },
}

impl std::fmt::Debug for Credentials {
    // Secrets stay out of debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::ApiKey { .. } => f.write_str("ApiKey(..)"),
            Credentials::Tokens { email, .. } => write!(f, "Tokens({email:?})"),
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct CredentialsFile {
    /// The server of the last login: commands go there unless told otherwise.
    #[serde(default)]
    pub default_server: Option<String>,
    #[serde(default)]
    pub servers: BTreeMap<String, Credentials>,
}

/// The credentials file of this user.
#[derive(Debug, Clone)]
pub struct Store {
    path: PathBuf,
}

impl Store {
    /// `$XDG_CONFIG_HOME/framegate/credentials.json`, else `$HOME/.config/framegate/...`.
    pub fn locate() -> Result<Store, ClientError> {
        let base = std::env::var_os("XDG_CONFIG_HOME")
            .filter(|dir| !dir.is_empty())
            .map(PathBuf::from)
            .filter(|dir| dir.is_absolute())
            .or_else(|| {
                std::env::var_os("HOME")
                    .filter(|dir| !dir.is_empty())
                    .map(|home| PathBuf::from(home).join(".config"))
            })
            .ok_or_else(|| {
                ClientError::Local(
                    "no config directory: set XDG_CONFIG_HOME or HOME, or use FRAMEGATE_API_KEY"
                        .to_owned(),
                )
            })?;
        Ok(Store {
            path: base.join("framegate").join(FILE_NAME),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn dir(&self) -> &Path {
        self.path.parent().unwrap_or_else(|| Path::new("."))
    }

    /// The file's contents; an absent file is an empty one.
    pub fn load(&self) -> Result<CredentialsFile, ClientError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                ClientError::local(
                    format_args!("{} is not a credentials file", self.path.display()),
                    e,
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(CredentialsFile::default()),
            Err(e) => Err(ClientError::local(self.path.display(), e)),
        }
    }

    /// Replaces the file with `file`, mode 0600, atomically.
    pub fn save(&self, file: &CredentialsFile) -> Result<(), ClientError> {
        let dir = self.dir();
        create_private_dir(dir)?;
        let body =
            serde_json::to_vec_pretty(file).map_err(|e| ClientError::local("credentials", e))?;
        let temporary = dir.join(format!(".{FILE_NAME}.{}", uuid::Uuid::new_v4().simple()));
        let written = (|| {
            let mut out = private_file(&temporary)?;
            out.write_all(&body)?;
            out.sync_all()?;
            std::fs::rename(&temporary, &self.path)
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&temporary);
            return Err(ClientError::local(self.path.display(), e));
        }
        Ok(())
    }

    /// Holds the refresh lock until the returned file is dropped.
    pub fn lock(&self) -> Result<File, ClientError> {
        create_private_dir(self.dir())?;
        let path = self.dir().join(".credentials.lock");
        let file = private_file_keep(&path).map_err(|e| ClientError::local(path.display(), e))?;
        file.lock()
            .map_err(|e| ClientError::local(path.display(), e))?;
        Ok(file)
    }
}

fn create_private_dir(dir: &Path) -> Result<(), ClientError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .map_err(|e| ClientError::local(dir.display(), e))
}

/// A new file only its owner may read or write.
fn private_file(path: &Path) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

/// The lock file, created 0600 if absent, kept if present.
fn private_file_keep(path: &Path) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_credentials_are_private_and_read_back() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store {
            path: dir.path().join("framegate").join(FILE_NAME),
        };
        let mut file = CredentialsFile::default();
        file.servers.insert(
            "http://127.0.0.1:8080".to_owned(),
            Credentials::ApiKey {
                key: "fg_secret".to_owned(),
            },
        );
        store.save(&file).expect("save");
        store.save(&file).expect("save over");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
            assert_eq!(mode(store.path()), 0o600);
            assert_eq!(mode(store.dir()), 0o700);
        }
        let back = store.load().expect("load");
        assert_eq!(back.servers, file.servers);
        // Only the file itself is left in the directory (no temporaries).
        let names: Vec<_> = std::fs::read_dir(store.dir())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, [FILE_NAME]);
        assert!(!format!("{back:?}").contains("fg_secret"));
    }
}
