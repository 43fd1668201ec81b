//! Delivering the outbox: each delivery is POSTed as JSON to its webhook, signed with
//! HMAC-SHA256 under the webhook secret, and retried with exponential back-off until the
//! receiver answers 2xx.
//!
//! Headers: `X-Patgate-Event` (the event type), `X-Patgate-Delivery` (the delivery id: the
//! same on every retry, so a receiver can drop a repeat), `X-Patgate-Timestamp` (Unix
//! seconds of this attempt) and `X-Patgate-Signature: sha256=<hex>` over
//! `"{timestamp}.{body}"`.

use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use patgate_core::Timestamp;
use patgate_store::{Delivery, DeliveryAttempt};
use sha2::Sha256;

/// The secret webhook bodies are signed with.
///
/// INVARIANT: `Debug` never shows it.
#[derive(Clone)]
pub struct WebhookSecret(Hmac<Sha256>);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(…)")
    }
}

impl WebhookSecret {
    /// A secret from at least 16 bytes.
    pub fn new(secret: &[u8]) -> Option<WebhookSecret> {
        if secret.len() < 16 {
            return None;
        }
        <Hmac<Sha256> as KeyInit>::new_from_slice(secret).ok().map(WebhookSecret)
    }

    /// `sha256=<hex>` of `"{timestamp}.{body}"`.
    pub fn sign(&self, timestamp: i64, body: &str) -> String {
        let mut mac = self.0.clone();
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body.as_bytes());
        let digest = mac.finalize().into_bytes();
        let mut hex = String::with_capacity(7 + 64);
        hex.push_str("sha256=");
        for byte in digest {
            hex.push_str(&format!("{byte:02x}"));
        }
        hex
    }
}

/// How long to wait before attempt `attempts + 1`: 10 s doubling to at most an hour.
pub fn backoff(attempts: u32) -> i64 {
    10_i64.saturating_mul(1_i64 << attempts.min(9)).min(3600)
}

/// A webhook URL as a log or `check-config` shows it: scheme, host and port, and `/…` when
/// there is more. Credentials, a secret path (Slack-style) or a query never show.
pub fn receiver(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(parsed) => {
            let host = parsed.host_str().unwrap_or_default();
            let port = parsed.port().map(|port| format!(":{port}")).unwrap_or_default();
            let more = if parsed.path().len() > 1 || parsed.query().is_some() { "/…" } else { "" };
            format!("{}://{host}{port}{more}", parsed.scheme())
        }
        Err(_) => "[not a URL]".to_owned(),
    }
}

/// `text` (an HTTP client's error) with `url` and its secret parts replaced by what
/// [`receiver`] shows: it is logged and stored with the delivery.
pub fn scrub(text: &str, url: &str) -> String {
    let mut text = text.replace(url, &receiver(url));
    if let Ok(parsed) = url::Url::parse(url) {
        let secrets = [parsed.password(), Some(parsed.username()), parsed.query()]
            .into_iter()
            .flatten()
            .chain((parsed.path().len() > 1).then(|| parsed.path()));
        for secret in secrets.filter(|secret| secret.len() > 1) {
            text = text.replace(secret, "[redacted]");
        }
    }
    text
}

/// How long one attempt may take.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends one delivery (blocking: run it off the async runtime) and says how it went.
pub fn send(
    agent: &ureq::Agent,
    secret: Option<&WebhookSecret>,
    delivery: &Delivery,
    now: Timestamp,
) -> DeliveryAttempt {
    let mut request = agent
        .post(&delivery.url)
        .header("content-type", "application/json")
        .header("user-agent", concat!("patgate/", env!("CARGO_PKG_VERSION")))
        .header("x-patgate-event", &delivery.event)
        .header("x-patgate-delivery", delivery.id.to_string())
        .header("x-patgate-timestamp", now.0.to_string());
    if let Some(secret) = secret {
        request = request.header("x-patgate-signature", secret.sign(now.0, &delivery.payload));
    }
    let retry_at = Timestamp(now.0.saturating_add(backoff(delivery.attempts)));
    match request.send(delivery.payload.as_bytes()) {
        Ok(response) => {
            let status = response.status().as_u16();
            let error = (!(200..300).contains(&status)).then(|| format!("the receiver answered {status}"));
            DeliveryAttempt { at: now, status: Some(status), error, retry_at }
        }
        Err(error) => {
            DeliveryAttempt { at: now, status: None, error: Some(scrub(&error.to_string(), &delivery.url)), retry_at }
        }
    }
}

/// An HTTP agent for deliveries: statuses are answers, not errors; every attempt is bounded.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(ATTEMPT_TIMEOUT)).build().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_receiver_shows_no_credentials_path_or_query() {
        assert_eq!(
            receiver("https://user:s3cret@hooks.example:8443/T00/B00/XXXX?token=abc"),
            "https://hooks.example:8443/…"
        );
        assert_eq!(receiver("http://hooks.example/"), "http://hooks.example");
        assert_eq!(receiver("not a url"), "[not a URL]");
        let url = "https://user:s3cret@hooks.example/T00/B00/XXXX?token=abc";
        let scrubbed = scrub(&format!("bad uri: {url}"), url);
        assert_eq!(scrubbed, "bad uri: https://hooks.example/…");
        let scrubbed = scrub("io: s3cret, /T00/B00/XXXX and token=abc", url);
        for secret in ["s3cret", "XXXX", "abc"] {
            assert!(!scrubbed.contains(secret), "{scrubbed}");
        }
    }
}
