//! The development mailbox: messages written as `.eml` files (`Mailer` without SMTP), and
//! read back and decoded for developers' tools and tests.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use uuid::Uuid;

/// Writes under a temporary name and renames, so a reader never sees half a message. The
/// name starts with a UTC timestamp and a v7 uuid, so names sort in sending order.
pub(super) async fn write_to_mailbox(dir: &Path, formatted: &[u8]) -> std::io::Result<PathBuf> {
    tokio::fs::create_dir_all(dir).await?;
    let stem = format!(
        "{}-{}",
        chrono::Utc::now().format("%Y%m%dT%H%M%S%.6fZ"),
        Uuid::now_v7()
    );
    let partial = dir.join(format!("{stem}.eml.partial"));
    let path = dir.join(format!("{stem}.eml"));
    tokio::fs::write(&partial, formatted).await?;
    tokio::fs::rename(&partial, &path).await?;
    Ok(path)
}

/// One message of the development mailbox, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMail {
    /// The `To` header as written (e.g. `alice@example.com`).
    pub to: String,
    pub subject: String,
    /// The plain-text body with `\n` line endings.
    pub body: String,
    pub path: PathBuf,
}

/// Every `.eml` file in `dir`, oldest first. A missing directory is an empty mailbox.
pub fn read_mailbox(dir: &Path) -> std::io::Result<Vec<StoredMail>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error),
    };
    let mut paths = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|ext| ext == "eml") {
            paths.push(path);
        }
    }
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let raw = std::fs::read(&path)?;
            parse_message(&raw, path.clone()).ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{} is not a message this mailer wrote", path.display()),
                )
            })
        })
        .collect()
}

/// Parses what lettre's `Message::formatted` produced for a single-part text message.
fn parse_message(raw: &[u8], path: PathBuf) -> Option<StoredMail> {
    let text = std::str::from_utf8(raw).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let headers = unfold_headers(head);
    let header = |name: &str| {
        headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    };
    let to = decode_encoded_words(header("To")?);
    let subject = decode_encoded_words(header("Subject").unwrap_or(""));
    let encoding = header("Content-Transfer-Encoding")
        .unwrap_or("7bit")
        .trim()
        .to_ascii_lowercase();
    let decoded = match encoding.as_str() {
        "base64" => {
            let compact: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
            base64::engine::general_purpose::STANDARD
                .decode(compact)
                .ok()?
        }
        "quoted-printable" => decode_quoted_printable(body.as_bytes())?,
        _ => body.as_bytes().to_vec(),
    };
    let body = String::from_utf8(decoded).ok()?.replace("\r\n", "\n");
    Some(StoredMail {
        to,
        subject,
        body,
        path,
    })
}

/// Header lines with folded continuations joined (RFC 5322 §2.2.3).
fn unfold_headers(head: &str) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in head.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = headers.last_mut() {
                value.push_str(line);
            }
        } else if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_owned(), value.trim_start().to_owned()));
        }
    }
    headers
}

/// Quoted-printable (RFC 2045 §6.7): `=XX` escapes and `=` soft line breaks.
fn decode_quoted_printable(input: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'=' => match input.get(i + 1..i + 3) {
                Some(b"\r\n") => i += 3,
                _ if input.get(i + 1) == Some(&b'\n') => i += 2,
                Some(hex) => {
                    out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
                    i += 3;
                }
                None => return None,
            },
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    Some(out)
}

/// Decodes RFC 2047 encoded words (`=?utf-8?b?...?=` or `?q?`), as lettre writes non-ASCII
/// header text; whitespace between two adjacent encoded words is dropped.
fn decode_encoded_words(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    let mut after_word = false;
    while let Some(start) = rest.find("=?") {
        let (before, candidate) = rest.split_at(start);
        let Some((word, tail)) = decode_one_word(candidate) else {
            out.push_str(before);
            out.push_str("=?");
            rest = &candidate[2..];
            after_word = false;
            continue;
        };
        if !(after_word && before.trim().is_empty()) {
            out.push_str(before);
        }
        out.push_str(&word);
        rest = tail;
        after_word = true;
    }
    out.push_str(rest);
    out
}

/// One `=?charset?enc?text?=` at the start of `input`: the decoded text and what follows.
fn decode_one_word(input: &str) -> Option<(String, &str)> {
    let inner = input.strip_prefix("=?")?;
    let (charset, inner) = inner.split_once('?')?;
    let (encoding, inner) = inner.split_once('?')?;
    let end = inner.find("?=")?;
    let (text, tail) = (&inner[..end], &inner[end + 2..]);
    if !charset.eq_ignore_ascii_case("utf-8") && !charset.eq_ignore_ascii_case("us-ascii") {
        return None;
    }
    let bytes = match encoding {
        "b" | "B" => base64::engine::general_purpose::STANDARD
            .decode(text)
            .ok()?,
        "q" | "Q" => decode_quoted_printable(text.replace('_', " ").as_bytes())?,
        _ => return None,
    };
    Some((String::from_utf8(bytes).ok()?, tail))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_printable_soft_breaks_and_escapes_are_decoded() {
        let decoded = decode_quoted_printable(b"caf=C3=A9 au=\r\n lait =3D good").expect("valid");
        assert_eq!(
            String::from_utf8(decoded).expect("utf-8"),
            "café au lait = good"
        );
        assert_eq!(decode_quoted_printable(b"broken =Z"), None);
    }

    #[test]
    fn encoded_words_are_decoded_and_plain_text_is_kept() {
        assert_eq!(decode_encoded_words("plain subject"), "plain subject");
        assert_eq!(
            decode_encoded_words("=?utf-8?b?R3LDvMOfZQ==?= and more"),
            "Grüße and more"
        );
        assert_eq!(
            decode_encoded_words("=?utf-8?q?caf=C3=A9_au?= =?utf-8?q?_lait?="),
            "café au lait"
        );
        assert_eq!(decode_encoded_words("cost =?x"), "cost =?x");
    }
}
