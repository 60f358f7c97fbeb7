//! Outgoing email: verification and password-reset messages.
//!
//! Mail a request must not wait for (or whose cost must not tell anything) goes through the
//! outbox (`outbox`): the request records it and answers, and the sender delivers it.
//!
//! With an SMTP URL configured, `Mailer` sends through lettre's async SMTP transport. Without
//! one (development and tests) every message is written as an RFC 5322 `.eml` file into a
//! mailbox directory instead, so a developer can open it and a test can read the one-time
//! token back with `read_mailbox`. Message bodies carry secrets (tokens), so they are never
//! logged; only the recipient and the file or transport are.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor};
use tracing::info;
use uuid::Uuid;

pub mod outbox;

/// Where mail goes and who it is from.
#[derive(Clone, Debug)]
pub struct MailConfig {
    /// lettre's connection URL: `smtps://user:pass@host:465` (implicit TLS) or
    /// `smtp://user:pass@host:587?tls=required` (STARTTLS). A bare `smtp://host` is
    /// unencrypted, for a local relay only. `None` writes `.eml` files into `mailbox_dir`.
    pub smtp_url: Option<String>,
    /// The `From` mailbox, e.g. `Framegate <no-reply@framegate.local>`.
    pub from: String,
    /// The development mailbox directory (created on first use).
    pub mailbox_dir: PathBuf,
}

impl Default for MailConfig {
    fn default() -> Self {
        Self {
            smtp_url: None,
            from: "Framegate <no-reply@framegate.local>".to_owned(),
            mailbox_dir: PathBuf::from(".framegate/mailbox"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("invalid email address {address:?}: {source}")]
    InvalidAddress {
        address: String,
        #[source]
        source: lettre::address::AddressError,
    },
    #[error("cannot build the message: {0}")]
    Build(#[from] lettre::error::Error),
    #[error("SMTP: {0}")]
    Smtp(#[from] lettre::transport::smtp::Error),
    #[error("cannot write to the mailbox directory: {0}")]
    Mailbox(#[from] std::io::Error),
}

enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Mailbox(PathBuf),
}

/// Sends plain-text mail through SMTP or into the development mailbox.
pub struct Mailer {
    from: Mailbox,
    transport: Transport,
}

impl fmt::Debug for Mailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the SMTP URL: it may carry a password.
        let transport = match &self.transport {
            Transport::Smtp(_) => "smtp".to_owned(),
            Transport::Mailbox(dir) => format!("mailbox {}", dir.display()),
        };
        f.debug_struct("Mailer")
            .field("from", &self.from.to_string())
            .field("transport", &transport)
            .finish()
    }
}

impl Mailer {
    /// Validates the sender and the SMTP URL; connects lazily on the first send.
    pub fn new(config: &MailConfig) -> Result<Mailer, MailError> {
        let from = parse_mailbox(&config.from)?;
        let transport = match config.smtp_url.as_deref() {
            Some(url) => {
                Transport::Smtp(AsyncSmtpTransport::<Tokio1Executor>::from_url(url)?.build())
            }
            None => Transport::Mailbox(config.mailbox_dir.clone()),
        };
        Ok(Mailer { from, transport })
    }

    /// Sends one plain-text message to `to`.
    #[tracing::instrument(skip_all, fields(%to))]
    pub async fn send(&self, to: &str, subject: &str, text_body: &str) -> Result<(), MailError> {
        let recipient = parse_mailbox(to)?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(recipient)
            .subject(subject)
            // The relay would add one, but mail with a Message-ID in our own domain is less
            // likely to be treated as spam.
            .message_id(Some(format!(
                "<{}@{}>",
                Uuid::new_v4(),
                self.from.email.domain()
            )))
            .header(ContentType::TEXT_PLAIN)
            .body(text_body.to_owned())?;
        match &self.transport {
            Transport::Smtp(smtp) => {
                smtp.send(message).await?;
                info!(%to, "mail sent via SMTP");
            }
            Transport::Mailbox(dir) => {
                let path = write_to_mailbox(dir, &message.formatted()).await?;
                info!(%to, file = %path.display(), "mail written to the development mailbox");
            }
        }
        Ok(())
    }
}

fn parse_mailbox(address: &str) -> Result<Mailbox, MailError> {
    address
        .parse::<Mailbox>()
        .map_err(|source| MailError::InvalidAddress {
            address: address.to_owned(),
            source,
        })
}

/// Writes under a temporary name and renames, so a reader never sees half a message. The
/// name starts with a UTC timestamp and a v7 uuid, so names sort in sending order.
async fn write_to_mailbox(dir: &Path, formatted: &[u8]) -> std::io::Result<PathBuf> {
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

    fn mailbox_config(dir: &Path) -> MailConfig {
        MailConfig {
            mailbox_dir: dir.to_owned(),
            ..MailConfig::default()
        }
    }

    fn temp_mailbox() -> PathBuf {
        std::env::temp_dir().join(format!("framegate-mail-test-{}", Uuid::new_v4()))
    }

    #[tokio::test]
    async fn a_sent_message_can_be_read_back_from_the_mailbox() {
        let dir = temp_mailbox();
        let mailer = Mailer::new(&mailbox_config(&dir)).expect("mailer");
        let token = format!("{}.s3cr3t-token_value", Uuid::new_v4());
        let body = format!("Confirm your email address with this token:\n\n{token}\n\nThanks.\n");
        mailer
            .send("alice@example.com", "Confirm your email address", &body)
            .await
            .expect("sent");

        let mails = read_mailbox(&dir).expect("mailbox");
        assert_eq!(mails.len(), 1);
        assert_eq!(mails[0].to, "alice@example.com");
        assert_eq!(mails[0].subject, "Confirm your email address");
        assert_eq!(mails[0].body, body);
        assert!(mails[0].body.lines().any(|line| line == token));
        let raw = std::fs::read_to_string(&mails[0].path).expect("eml");
        assert!(
            raw.contains("Message-ID: <") && raw.contains("@framegate.local>"),
            "{raw}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn long_lines_and_non_ascii_text_survive_the_round_trip() {
        let dir = temp_mailbox();
        let mailer = Mailer::new(&mailbox_config(&dir)).expect("mailer");
        let long = "x".repeat(300);
        let body = format!("Grüße, Zoë — naïve café\n{long}\nend=of=line\n");
        mailer
            .send(
                "Zoë <zoe@example.com>",
                "Réinitialiser le mot de passe",
                &body,
            )
            .await
            .expect("sent");

        let mails = read_mailbox(&dir).expect("mailbox");
        assert_eq!(mails.len(), 1);
        assert_eq!(mails[0].subject, "Réinitialiser le mot de passe");
        assert!(mails[0].to.contains("zoe@example.com"), "{}", mails[0].to);
        assert_eq!(mails[0].body, body);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn the_mailbox_lists_messages_oldest_first() {
        let dir = temp_mailbox();
        let mailer = Mailer::new(&mailbox_config(&dir)).expect("mailer");
        for n in 0..5 {
            mailer
                .send("bob@example.com", &format!("message {n}"), "hello")
                .await
                .expect("sent");
        }
        let subjects: Vec<String> = read_mailbox(&dir)
            .expect("mailbox")
            .into_iter()
            .map(|mail| mail.subject)
            .collect();
        assert_eq!(
            subjects,
            (0..5).map(|n| format!("message {n}")).collect::<Vec<_>>()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn an_invalid_recipient_is_refused_and_nothing_is_written() {
        let dir = temp_mailbox();
        let mailer = Mailer::new(&mailbox_config(&dir)).expect("mailer");
        let error = mailer
            .send("not an address", "Hello", "body")
            .await
            .expect_err("refused");
        assert!(
            matches!(error, MailError::InvalidAddress { .. }),
            "{error:?}"
        );
        assert!(read_mailbox(&dir).expect("mailbox").is_empty());
    }

    #[test]
    fn an_invalid_sender_is_refused_at_start_up() {
        let config = MailConfig {
            from: "nobody".to_owned(),
            ..MailConfig::default()
        };
        let error = Mailer::new(&config).expect_err("refused");
        assert!(
            matches!(error, MailError::InvalidAddress { .. }),
            "{error:?}"
        );
    }

    #[test]
    fn an_unsupported_smtp_url_is_refused_at_start_up() {
        let config = MailConfig {
            smtp_url: Some("ftp://mail.example.com".to_owned()),
            ..MailConfig::default()
        };
        let error = Mailer::new(&config).expect_err("refused");
        assert!(matches!(error, MailError::Smtp(_)), "{error:?}");
    }

    /// A one-connection SMTP relay speaking the RFC 5321 dialogue lettre needs; answers
    /// `rcpt_reply` to RCPT TO and returns the transcript of what the client sent.
    async fn fake_relay(rcpt_reply: &'static str) -> (u16, tokio::task::JoinHandle<String>) {
        use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let relay = tokio::spawn(async move {
            let (socket, _) = listener.accept().await.expect("accept");
            let (read, mut write) = socket.into_split();
            let mut lines = BufReader::new(read).lines();
            let mut transcript = String::new();
            write
                .write_all(b"220 relay.test ESMTP\r\n")
                .await
                .expect("greet");
            let mut in_data = false;
            while let Ok(Some(line)) = lines.next_line().await {
                transcript.push_str(&line);
                transcript.push('\n');
                let reply: &str = if in_data {
                    if line != "." {
                        continue;
                    }
                    in_data = false;
                    "250 queued\r\n"
                } else {
                    let verb = line.split([' ', ':']).next().unwrap_or_default();
                    match verb.to_ascii_uppercase().as_str() {
                        "EHLO" | "HELO" => "250-relay.test\r\n250 8BITMIME\r\n",
                        "MAIL" => "250 ok\r\n",
                        "RCPT" => rcpt_reply,
                        "DATA" => {
                            in_data = true;
                            "354 go ahead\r\n"
                        }
                        "RSET" | "NOOP" => "250 ok\r\n",
                        "QUIT" => {
                            let _ = write.write_all(b"221 bye\r\n").await;
                            break;
                        }
                        _ => "502 not implemented\r\n",
                    }
                };
                write.write_all(reply.as_bytes()).await.expect("reply");
            }
            transcript
        });
        (port, relay)
    }

    fn relay_config(port: u16) -> MailConfig {
        MailConfig {
            smtp_url: Some(format!("smtp://127.0.0.1:{port}")),
            ..MailConfig::default()
        }
    }

    #[tokio::test]
    async fn with_an_smtp_url_mail_goes_to_the_relay_not_the_mailbox() {
        let dir = temp_mailbox();
        let (port, relay) = fake_relay("250 ok\r\n").await;
        let config = MailConfig {
            mailbox_dir: dir.clone(),
            ..relay_config(port)
        };
        let mailer = Mailer::new(&config).expect("mailer");
        mailer
            .send("ada@example.com", "Verify your email", "token: abc.def")
            .await
            .expect("sent");
        drop(mailer);
        let transcript = relay.await.expect("relay");
        assert!(
            transcript.contains("MAIL FROM:<no-reply@framegate.local>"),
            "{transcript}"
        );
        assert!(
            transcript.contains("RCPT TO:<ada@example.com>"),
            "{transcript}"
        );
        assert!(
            transcript.contains("Subject: Verify your email"),
            "{transcript}"
        );
        assert!(transcript.contains("token: abc.def"), "{transcript}");
        assert!(!dir.exists(), "nothing goes to the development mailbox");
    }

    #[tokio::test]
    async fn a_recipient_the_relay_refuses_is_an_smtp_error() {
        let (port, relay) = fake_relay("550 5.1.1 no such user\r\n").await;
        let mailer = Mailer::new(&relay_config(port)).expect("mailer");
        let error = mailer
            .send("nobody@example.com", "Hello", "body")
            .await
            .expect_err("refused");
        assert!(matches!(error, MailError::Smtp(_)), "{error:?}");
        drop(mailer);
        relay.abort();
    }

    #[test]
    fn an_smtp_url_builds_a_transport_without_connecting() {
        let config = MailConfig {
            smtp_url: Some("smtp://user:pass@127.0.0.1:2525".to_owned()),
            ..MailConfig::default()
        };
        let mailer = Mailer::new(&config).expect("mailer");
        let shown = format!("{mailer:?}");
        assert!(!shown.contains("pass"), "{shown}");
    }

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
