//! Which server a command talks to, and what the user should hear about it: the server named
//! by `--server` / `FRAMEGATE_SERVER`, else the last login's, else `framegate dev`'s.
//!
//! `FRAMEGATE_API_KEY` is meant for the server the script names; when none is named it goes
//! to the last login's server, which may not be the one the key belongs to, so the client says
//! where it is sending it. A login over plain http to another machine sends a password or a
//! key in clear text: the client warns about that too.

use std::net::IpAddr;

use super::config::CredentialsFile;
use super::error::ClientError;

/// Where the client goes when neither `--server`, `FRAMEGATE_SERVER` nor a login says
/// otherwise: `framegate dev`'s default address.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

/// Where the chosen server came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// `--server` or `FRAMEGATE_SERVER`.
    Named,
    /// The credentials file's default: the server of the last login.
    LastLogin,
    /// [`DEFAULT_SERVER`].
    BuiltIn,
}

/// The server a command talks to (normalised) and where that choice came from.
pub fn choose(flag: Option<&str>, file: &CredentialsFile) -> Result<(String, Source), ClientError> {
    let (server, source) = match (flag, &file.default_server) {
        (Some(flag), _) => (flag.to_owned(), Source::Named),
        (None, Some(last)) => (last.clone(), Source::LastLogin),
        (None, None) => (DEFAULT_SERVER.to_owned(), Source::BuiltIn),
    };
    Ok((normalise(&server)?, source))
}

/// The one-line note for stderr when `FRAMEGATE_API_KEY` is about to go to the last login's
/// server because no server was named; `None` when the user chose the server.
pub fn env_key_note(source: Source, server: &str) -> Option<String> {
    (source == Source::LastLogin).then(|| {
        format!(
            "note: sending FRAMEGATE_API_KEY to {server}, the server of the last login \
             (name one with --server or FRAMEGATE_SERVER)"
        )
    })
}

/// The warning for a login to `server` over plain http to a host that is not this machine.
pub fn plain_http_warning(server: &str) -> Option<String> {
    let url = reqwest::Url::parse(server).ok()?;
    if url.scheme() != "http" {
        return None;
    }
    let host = url.host_str()?;
    let loopback = match host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    };
    (!loopback).then(|| {
        format!(
            "warning: {server} is plain http: your credentials cross the network unencrypted \
             (use https)"
        )
    })
}

/// `http(s)://host[:port][/prefix]` without a trailing slash.
pub fn normalise(server: &str) -> Result<String, ClientError> {
    let trimmed = server.trim().trim_end_matches('/');
    let url = reqwest::Url::parse(trimmed)
        .map_err(|e| ClientError::Usage(format!("--server {server:?} is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(ClientError::Usage(format!(
            "--server {server:?}: expected http://host:port or https://host"
        )));
    }
    // Credentials in the URL would be printed and stored as the file's key; a query or a
    // fragment would break every path appended to it.
    if !url.username().is_empty()
        || url.password().is_some()
        || url.query().is_some()
        || url.fragment().is_some()
    {
        return Err(ClientError::Usage(format!(
            "--server: expected scheme://host[:port][/prefix], without user, password, query or fragment (got {}://{}…)",
            url.scheme(),
            url.host_str().unwrap_or_default()
        )));
    }
    Ok(trimmed.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with_login(server: &str) -> CredentialsFile {
        CredentialsFile {
            default_server: Some(server.to_owned()),
            ..CredentialsFile::default()
        }
    }

    #[test]
    fn a_named_server_wins_over_the_last_login_and_the_built_in_default() {
        let file = file_with_login("https://last.example.com/");
        assert_eq!(
            choose(Some("https://named.example.com/"), &file).expect("named"),
            ("https://named.example.com".to_owned(), Source::Named)
        );
        assert_eq!(
            choose(None, &file).expect("last login"),
            ("https://last.example.com".to_owned(), Source::LastLogin)
        );
        assert_eq!(
            choose(None, &CredentialsFile::default()).expect("built in"),
            (DEFAULT_SERVER.to_owned(), Source::BuiltIn)
        );
    }

    #[test]
    fn the_env_key_going_to_the_last_logins_server_is_noted_naming_it() {
        let note = env_key_note(Source::LastLogin, "https://last.example.com").expect("note");
        assert!(note.contains("https://last.example.com"), "{note}");
        assert!(!note.contains('\n'), "one line: {note}");
        assert_eq!(
            env_key_note(Source::Named, "https://named.example.com"),
            None
        );
        assert_eq!(env_key_note(Source::BuiltIn, DEFAULT_SERVER), None);
    }

    #[test]
    fn plain_http_is_warned_about_only_off_this_machine() {
        for remote in [
            "http://api.example.com",
            "http://10.0.0.5:8080",
            "http://[2001:db8::1]:8080",
            "http://localhost.example.com",
        ] {
            let warning = plain_http_warning(remote).expect(remote);
            assert!(warning.contains(remote), "{warning}");
        }
        for safe in [
            "https://api.example.com",
            "http://127.0.0.1:8080",
            "http://127.8.9.10",
            "http://localhost:8080",
            "http://LOCALHOST",
            "http://[::1]:8080",
        ] {
            assert_eq!(plain_http_warning(safe), None, "{safe}");
        }
    }

    #[test]
    fn servers_are_urls_without_a_trailing_slash() {
        assert_eq!(
            normalise("http://127.0.0.1:8080/").expect("ok"),
            "http://127.0.0.1:8080"
        );
        assert!(matches!(
            normalise("127.0.0.1:8080"),
            Err(ClientError::Usage(_))
        ));
        assert!(matches!(normalise("ftp://x"), Err(ClientError::Usage(_))));
        for bad in [
            "http://user:secret@example.com",
            "https://example.com/?a=1",
            "https://example.com/#x",
        ] {
            assert!(
                matches!(normalise(bad), Err(ClientError::Usage(_))),
                "{bad}"
            );
        }
    }
}
