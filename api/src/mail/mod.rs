//! Outgoing email: verification and password-reset messages, and the notifications users
//! opt into (`notices`).
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
use std::path::PathBuf;

use framegate_commands::deployment::Secret;
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor};
use tracing::info;
use uuid::Uuid;

mod mailbox;
pub mod notices;
pub mod outbox;
mod webhook_disabled;

use mailbox::write_to_mailbox;
pub use mailbox::{read_mailbox, StoredMail};

/// Where mail goes and who it is from.
#[derive(Clone, Debug)]
pub struct MailConfig {
    /// lettre's connection URL: `smtps://user:pass@host:465` (implicit TLS) or
    /// `smtp://user:pass@host:587?tls=required` (STARTTLS). A bare `smtp://host` is
    /// unencrypted, for a local relay only. `None` writes `.eml` files into `mailbox_dir`.
    /// A secret: it holds the SMTP password.
    pub smtp_url: Option<Secret<String>>,
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
        let transport = match config.smtp_url.as_ref().map(|url| url.expose().as_str()) {
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

#[cfg(test)]
mod tests {
    use std::path::Path;

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
            smtp_url: Some(Secret::new("ftp://mail.example.com".to_owned())),
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
            smtp_url: Some(Secret::new(format!("smtp://127.0.0.1:{port}"))),
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
            smtp_url: Some(Secret::new("smtp://user:pass@127.0.0.1:2525".to_owned())),
            ..MailConfig::default()
        };
        assert!(!format!("{config:?}").contains("pass"), "{config:?}");
        let mailer = Mailer::new(&config).expect("mailer");
        let shown = format!("{mailer:?}");
        assert!(!shown.contains("pass"), "{shown}");
    }
}
