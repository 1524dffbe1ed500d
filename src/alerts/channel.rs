//! The channels an alert is delivered to, each one HTTP request with a deadline.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{rfc3339, Alert, AlertState};
use crate::config::AlertsConfig;
use crate::sys::http::{self, Endpoint};
use crate::sys::redact;

pub use super::DELIVERY_TIMEOUT;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Webhook,
    Alertmanager,
    Email,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Webhook => "webhook",
            Channel::Alertmanager => "alertmanager",
            Channel::Email => "email",
        }
    }

    /// The configured channels.
    pub fn configured(cfg: &AlertsConfig) -> Vec<Channel> {
        let mut out = Vec::new();
        if cfg.webhook.is_some() {
            out.push(Channel::Webhook);
        }
        if cfg.alertmanager.is_some() {
            out.push(Channel::Alertmanager);
        }
        if cfg.smtp_server.is_some() {
            out.push(Channel::Email);
        }
        out
    }

    /// The channel's address as it may be shown (`status`, `alert test`, logs): a webhook's or
    /// Alertmanager's URL without its path, query or userinfo (sys/redact.rs); the SMTP server's
    /// host:port as it is.
    pub fn shown_url(self, cfg: &AlertsConfig) -> String {
        match self {
            Channel::Email => self.url(cfg).unwrap_or_default().to_string(),
            _ => redact::url(self.url(cfg).unwrap_or_default()),
        }
    }

    /// The channel's address, as configured: for sending only, never for showing.
    pub fn url(self, cfg: &AlertsConfig) -> Option<&str> {
        match self {
            Channel::Webhook => cfg.webhook.as_deref(),
            Channel::Alertmanager => cfg.alertmanager.as_deref(),
            Channel::Email => cfg.smtp_server.as_deref(),
        }
    }
}

/// Why a delivery did not go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub text: String,
    /// The channel refused this alert for good: an HTTP 4xx other than 408 (timeout) and 429
    /// (rate limit) says the payload is wrong for that receiver, and sending it again gets the
    /// same answer (Alertmanager does not retry a 4xx either, alertmanager#2286). Anything else
    /// (no answer, 5xx, 408, 429) may pass later and is retried.
    pub permanent: bool,
}

impl Failure {
    pub fn transient(text: String) -> Failure {
        Failure { text, permanent: false }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// Whether an HTTP status refuses a payload for good (see [`Failure::permanent`]).
pub fn refuses_for_good(status: u16) -> bool {
    (400..500).contains(&status) && status != 408 && status != 429
}

/// Sends one alert; `Ok` with the answer's status line when the channel took it.
pub async fn deliver(channel: Channel, cfg: &AlertsConfig, alert: &Alert) -> Result<String, Failure> {
    let url = channel.url(cfg).ok_or_else(|| Failure::transient(format!("{} is not configured", channel.as_str())))?;
    match channel {
        Channel::Webhook => post(cfg, url, "", &webhook_body(alert)).await,
        Channel::Alertmanager => post(cfg, url, "/api/v2/alerts", &alertmanager_body(alert)).await,
        Channel::Email => super::email::send(cfg, alert).await.map_err(Failure::transient),
    }
}

/// Every alert of `alerts` to Alertmanager again, in one request (its API takes a list).
pub async fn resend_to_alertmanager(cfg: &AlertsConfig, alerts: &[Alert]) -> Result<String, Failure> {
    let url = cfg.alertmanager.as_deref().ok_or_else(|| Failure::transient("alertmanager is not configured".into()))?;
    let body = alerts.iter().flat_map(|a| alertmanager_body(a).as_array().cloned().unwrap_or_default()).collect();
    post(cfg, url, "/api/v2/alerts", &serde_json::Value::Array(body)).await
}

/// One JSON POST to a channel's `url` + `path`; `Ok` with the status when it was taken. An
/// error never holds the URL's secret part, even where the server's answer quotes it back: it
/// goes to the log, `status` and the queue file.
async fn post(cfg: &AlertsConfig, url: &str, path: &str, body: &serde_json::Value) -> Result<String, Failure> {
    exchange(cfg, url, path, body).await.map_err(|f| Failure { text: redact::in_text(&f.text, url), permanent: f.permanent })
}

async fn exchange(cfg: &AlertsConfig, url: &str, path: &str, body: &serde_json::Value) -> Result<String, Failure> {
    let endpoint = Endpoint::parse_url(url).map_err(Failure::transient)?;
    let r = http::request_trusting(&endpoint, "POST", path, Some(body), DELIVERY_TIMEOUT, cfg.ca_file.as_deref())
        .await
        .map_err(|e| Failure::transient(e.to_string()))?;
    if r.ok() {
        Ok(format!("{}", r.status))
    } else {
        Err(Failure { text: format!("answered {}: {}", r.status, r.snippet()), permanent: refuses_for_good(r.status) })
    }
}

/// `{"text": …}` (what Slack's incoming webhooks read) and the alert's fields beside it.
pub fn webhook_body(a: &Alert) -> serde_json::Value {
    json!({
        "text": a.text(),
        "node": a.node,
        "key": a.key,
        "state": a.state,
        "severity": a.severity,
        "summary": a.summary,
        "starts_at": rfc3339(a.starts_at_unix_ms),
        "ends_at": a.ends_at_unix_ms.map(rfc3339),
        "labels": a.labels,
    })
}

/// Alertmanager's API v2: a list of alerts, identified by their labels. A firing alert has no
/// `endsAt` (Alertmanager resolves it if it stops being sent); a resolved one has its end; a
/// notice ends when it starts.
pub fn alertmanager_body(a: &Alert) -> serde_json::Value {
    let mut labels = a.labels.clone();
    labels.insert("alertname".into(), a.alertname());
    labels.insert("node".into(), a.node.clone());
    labels.insert("severity".into(), a.severity.clone());
    labels.insert("key".into(), a.key.clone());
    let mut alert = json!({
        "labels": labels,
        "annotations": {"summary": a.summary},
        "startsAt": rfc3339(a.starts_at_unix_ms),
    });
    let ends = match a.state {
        AlertState::Firing => None,
        AlertState::Resolved => a.ends_at_unix_ms,
        AlertState::Notice => Some(a.starts_at_unix_ms.saturating_add(1000).min(super::MAX_UNIX_MS.max(a.starts_at_unix_ms))),
    };
    if let Some(end) = ends {
        alert["endsAt"] = json!(rfc3339(end));
    }
    json!([alert])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::{AlertKey, Severity};

    #[test]
    fn a_4xx_but_408_and_429_refuses_for_good() {
        assert!(refuses_for_good(400) && refuses_for_good(404) && refuses_for_good(413) && refuses_for_good(422));
        assert!(!refuses_for_good(408) && !refuses_for_good(429) && !refuses_for_good(500) && !refuses_for_good(503));
        assert!(!refuses_for_good(200) && !refuses_for_good(302));
    }

    /// Times at the bounds (a queue file edited by hand): no overflow, and after `bounded()` an
    /// RFC 3339 time the receivers parse.
    #[test]
    fn an_alert_at_the_end_of_time_is_sent_as_the_last_rfc3339_instant() {
        for state in [AlertState::Firing, AlertState::Resolved, AlertState::Notice] {
            let mut a = Alert::firing(super::super::AlertKey::ServiceDown("x".into()), super::super::Severity::Critical, "down");
            a.state = state;
            a.starts_at_unix_ms = u64::MAX;
            a.ends_at_unix_ms = Some(u64::MAX);
            let raw = alertmanager_body(&a);
            assert!(raw[0]["startsAt"].is_string(), "{raw}");
            let a = a.bounded();
            let body = alertmanager_body(&a);
            assert_eq!(body[0]["startsAt"], "9999-12-31T23:59:59.999Z", "{body}");
            if state != AlertState::Firing {
                assert_eq!(body[0]["endsAt"].as_str().map(|t| &t[..4]), Some("9999"), "{body}");
            }
            assert_eq!(webhook_body(&a)["starts_at"], "9999-12-31T23:59:59.999Z");
        }
    }

    #[test]
    fn bodies_follow_each_api() {
        let mut a = Alert::resolved(AlertKey::ServiceDown("ollama".into()), Severity::Critical, "ollama is healthy again after 42s", 1_000)
            .label("service", "ollama");
        a.node = "gpu-1".into();
        let w = webhook_body(&a);
        assert_eq!(w["text"], "[gpu-1] RESOLVED ollama is healthy again after 42s");
        assert_eq!(w["state"], "resolved");
        let am = alertmanager_body(&a);
        assert_eq!(am[0]["labels"]["alertname"], "ClusterAiServiceDown");
        assert_eq!(am[0]["labels"]["service"], "ollama");
        assert_eq!(am[0]["startsAt"], "1970-01-01T00:00:01.000Z");
        assert!(am[0]["endsAt"].is_string());
        let f = Alert::firing(AlertKey::ServiceDown("ollama".into()), Severity::Critical, "down");
        assert!(alertmanager_body(&f)[0].get("endsAt").is_none(), "firing: no end");
    }

    /// A webhook whose answer quotes its own URL back (as a proxy's error page may): neither
    /// the error nor the address shown holds the token.
    #[tokio::test]
    async fn a_webhook_token_is_in_no_error_and_no_shown_address() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let hook = format!("http://127.0.0.1:{port}/services/T000/B000/s3cretToken");
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let _ = s.read(&mut buf).await;
            let body = "no such hook: /services/T000/B000/s3cretToken";
            let answer = format!("HTTP/1.1 404 Not Found\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
            s.write_all(answer.as_bytes()).await.unwrap();
        });
        let cfg = AlertsConfig { webhook: Some(hook.clone()), ..AlertsConfig::default() };
        let e = deliver(Channel::Webhook, &cfg, &Alert::notice(AlertKey::Test, Severity::Info, "x")).await.unwrap_err().text;
        assert!(e.contains("404") && !e.contains("s3cret"), "{e}");
        assert_eq!(Channel::Webhook.shown_url(&cfg), format!("http://127.0.0.1:{port}/…"));
        assert_eq!(Channel::Webhook.url(&cfg), Some(hook.as_str()), "sent to the whole URL");
    }
}
