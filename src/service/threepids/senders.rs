//! Sending codes: by SMS through a provider's HTTP API (or the log), by email through an
//! SMTP server (or the log). A send runs in the background, retried with backoff; the
//! user asks for another code if none arrives.

use std::{sync::Arc, time::Duration};

use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor, message::header::ContentType};

use crate::config::{Email, EmailDriver, Sms, SmsDriver, Webhook};

/// A way to send codes to one medium.
pub enum Sender {
    /// Writes what would be sent to the log (development only).
    Log,
    Webhook(Arc<WebhookSender>),
    Smtp(Arc<SmtpSender>),
}

/// What is sent: to whom, the code, the text around it.
pub struct Outgoing {
    /// E.164 with `+` for phones, the address for email.
    pub to: String,
    pub code: String,
    pub subject: String,
    pub text: String,
}

impl Sender {
    /// The SMS sender the configuration names, if any.
    pub fn sms(config: &Sms) -> Result<Option<Self>, String> {
        Ok(match config.driver {
            SmsDriver::None => None,
            SmsDriver::Log => Some(Self::Log),
            SmsDriver::Webhook => Some(Self::Webhook(Arc::new(WebhookSender::new(
                &config.webhook,
            )?))),
        })
    }

    /// The email sender the configuration names, if any.
    pub fn email(config: &Email) -> Result<Option<Self>, String> {
        Ok(match config.driver {
            EmailDriver::None => None,
            EmailDriver::Log => Some(Self::Log),
            EmailDriver::Smtp => Some(Self::Smtp(Arc::new(SmtpSender::new(config)?))),
        })
    }

    /// Sends in the background.
    pub fn send(&self, outgoing: Outgoing) {
        match self {
            Self::Log => {
                tracing::warn!(
                    to = %outgoing.to,
                    code = %outgoing.code,
                    text = %outgoing.text,
                    "verification code not sent (log driver)"
                );
            }
            Self::Webhook(webhook) => {
                let webhook = webhook.clone();
                tokio::spawn(async move { webhook.send(&outgoing).await });
            }
            Self::Smtp(smtp) => {
                let smtp = smtp.clone();
                tokio::spawn(async move { smtp.send(&outgoing).await });
            }
        }
    }
}

/// An SMS provider's HTTP API.
pub struct WebhookSender {
    client: reqwest::Client,
    config: Webhook,
    method: reqwest::Method,
}

impl WebhookSender {
    fn new(config: &Webhook) -> Result<Self, String> {
        if config.url.is_empty() {
            return Err("threepids.sms.webhook.url is needed by the webhook driver".to_owned());
        }
        url::Url::parse(&config.url)
            .map_err(|error| format!("threepids.sms.webhook.url: {error}"))?;
        let method = reqwest::Method::from_bytes(config.method.to_ascii_uppercase().as_bytes())
            .map_err(|error| format!("threepids.sms.webhook.method: {error}"))?;
        let tls = palisade_federation::tls::web_client_config().map_err(|e| e.to_string())?;
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(Duration::from_secs(config.timeout_secs.max(1)))
            .build()
            .map_err(|error| error.to_string())?;
        Ok(Self {
            client,
            config: config.clone(),
            method,
        })
    }

    /// The body with the message's values filled in, escaped for the content type.
    fn body(&self, outgoing: &Outgoing) -> String {
        let content_type = self.config.content_type.to_ascii_lowercase();
        let escape = |value: &str| -> String {
            if content_type.contains("json") {
                let quoted = serde_json::to_string(value).unwrap_or_default();
                quoted[1..quoted.len() - 1].to_owned()
            } else if content_type.contains("x-www-form-urlencoded") {
                url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
            } else {
                value.to_owned()
            }
        };
        fill(
            &self.config.body,
            &[
                ("to", &escape(&outgoing.to)),
                ("to_digits", &escape(outgoing.to.trim_start_matches('+'))),
                ("code", &escape(&outgoing.code)),
                ("message", &escape(&outgoing.text)),
            ],
        )
    }

    async fn send(&self, outgoing: &Outgoing) {
        let body = self.body(outgoing);
        let mut delay = Duration::from_secs(1);
        for attempt in 0..=self.config.retries {
            let mut request = self
                .client
                .request(self.method.clone(), &self.config.url)
                .header(http::header::CONTENT_TYPE, &self.config.content_type)
                .body(body.clone());
            for (name, value) in &self.config.headers {
                request = request.header(name, value);
            }
            match request.send().await {
                Ok(response) if response.status().is_success() => {
                    tracing::info!(to = %outgoing.to, "verification code texted");
                    return;
                }
                Ok(response) => {
                    tracing::warn!(status = %response.status(), attempt, "the SMS provider refused a message");
                }
                Err(error) => {
                    tracing::warn!(%error, attempt, "the SMS provider could not be reached");
                }
            }
            if attempt < self.config.retries {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(60));
            }
        }
        tracing::error!(to = %outgoing.to, "a verification code could not be texted");
    }
}

/// Mail through an SMTP server.
pub struct SmtpSender {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: lettre::message::Mailbox,
}

impl SmtpSender {
    fn new(config: &Email) -> Result<Self, String> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(&config.smtp_url)
            .map_err(|error| format!("threepids.email.smtp_url: {error}"))?
            .timeout(Some(Duration::from_secs(30)))
            .build();
        let from = config
            .from
            .parse()
            .map_err(|error| format!("threepids.email.from: {error}"))?;
        Ok(Self { transport, from })
    }

    async fn send(&self, outgoing: &Outgoing) {
        let to = match outgoing.to.parse::<lettre::message::Mailbox>() {
            Ok(to) => to,
            Err(error) => {
                tracing::warn!(%error, "an email address the server accepted is not a mailbox");
                return;
            }
        };
        let message = lettre::Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(&outgoing.subject)
            .header(ContentType::TEXT_PLAIN)
            .body(outgoing.text.clone());
        let message = match message {
            Ok(message) => message,
            Err(error) => {
                tracing::error!(%error, "a verification mail could not be written");
                return;
            }
        };
        let mut delay = Duration::from_secs(1);
        for attempt in 0..4 {
            match self.transport.send(message.clone()).await {
                Ok(_) => {
                    tracing::info!(to = %outgoing.to, "verification code mailed");
                    return;
                }
                Err(error) => {
                    tracing::warn!(%error, attempt, "the SMTP server did not take a mail");
                    if error.is_permanent() {
                        break;
                    }
                }
            }
            tokio::time::sleep(delay).await;
            delay *= 2;
        }
        tracing::error!(to = %outgoing.to, "a verification code could not be mailed");
    }
}

/// `template` with each `{name}` replaced by its value.
pub fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut text = template.to_owned();
    for (name, value) in values {
        text = text.replace(&format!("{{{name}}}"), value);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outgoing() -> Outgoing {
        Outgoing {
            to: "+447400123123".to_owned(),
            code: "123456".to_owned(),
            subject: String::new(),
            text: "Your \"chat\" code is 123456 & more".to_owned(),
        }
    }

    #[test]
    fn webhook_bodies_escape_values_for_their_content_type() {
        let mut config = Webhook {
            url: "http://127.0.0.1:1/sms".to_owned(),
            ..Webhook::default()
        };
        let json = WebhookSender::new(&config).unwrap().body(&outgoing());
        let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(parsed["to"], "+447400123123");
        assert_eq!(parsed["message"], "Your \"chat\" code is 123456 & more");
        config.content_type = "application/x-www-form-urlencoded".to_owned();
        config.body = "To={to}&Body={message}&n={to_digits}".to_owned();
        let form = WebhookSender::new(&config).unwrap().body(&outgoing());
        assert_eq!(
            form,
            "To=%2B447400123123&Body=Your+%22chat%22+code+is+123456+%26+more&n=447400123123"
        );
    }
}
