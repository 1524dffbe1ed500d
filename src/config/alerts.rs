//! `[alerts]`: where alerts go (each channel optional, several at once) and how hard the daemon
//! tries: a bounded queue in the state directory, retried with a backoff, across restarts.

use std::time::Duration;

use serde::Deserialize;

use super::{as_text, count_between, duration_between, format_duration, Checker, Raw};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertsConfig {
    /// The node's name in every alert; `None`: the hostname.
    pub node: Option<String>,
    /// A generic JSON webhook (`{"text": …}` plus structured fields; Slack accepts it).
    pub webhook: Option<String>,
    /// Prometheus Alertmanager's base URL (`POST /api/v2/alerts`).
    pub alertmanager: Option<String>,
    /// A firing alert is sent to Alertmanager again this often (it resolves alerts that stop
    /// coming).
    pub alertmanager_resend: Duration,
    /// Deliveries kept when a channel is down; beyond it the oldest is dropped and counted.
    pub queue_max: u32,
    /// A failed delivery is retried after 5 s, doubling up to this.
    pub retry_max: Duration,
    /// Per channel: at most this many messages a minute; the rest wait their turn.
    pub per_minute: u32,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            node: None,
            webhook: None,
            alertmanager: None,
            alertmanager_resend: Duration::from_secs(60),
            queue_max: 1000,
            retry_max: Duration::from_secs(300),
            per_minute: 20,
        }
    }
}

impl AlertsConfig {
    pub(super) fn entries(&self) -> Vec<(&'static str, String)> {
        let opt = |v: &Option<String>| v.clone().unwrap_or_default();
        vec![
            ("alerts.node", opt(&self.node)),
            ("alerts.webhook", opt(&self.webhook)),
            ("alerts.alertmanager", opt(&self.alertmanager)),
            ("alerts.alertmanager_resend", format_duration(self.alertmanager_resend)),
            ("alerts.queue_max", self.queue_max.to_string()),
            ("alerts.retry_max", format_duration(self.retry_max)),
            ("alerts.per_minute", self.per_minute.to_string()),
        ]
    }

    /// Whether any channel is configured.
    pub fn any(&self) -> bool {
        self.webhook.is_some() || self.alertmanager.is_some()
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAlerts {
    node: Raw,
    webhook: Raw,
    alertmanager: Raw,
    alertmanager_resend: Raw,
    queue_max: Raw,
    retry_max: Raw,
    per_minute: Raw,
}

impl RawAlerts {
    pub(super) fn validate(self, c: &mut Checker<'_>, d: AlertsConfig) -> AlertsConfig {
        let secs = Duration::from_secs;
        let (node, _) = c.field("alerts.node", self.node, d.node, |v| {
            let s = as_text(v, "a node name in quotes, or \"\" for the hostname")?;
            if s.chars().any(char::is_control) || s.len() > 253 {
                return Err(format!("{s:?} is not a node name; expected at most 253 printable characters"));
            }
            Ok((!s.is_empty()).then(|| s.to_string()))
        });
        let (webhook, _) = c.field("alerts.webhook", self.webhook, d.webhook, super::http_url);
        let (alertmanager, _) = c.field("alerts.alertmanager", self.alertmanager, d.alertmanager, super::http_url);
        let (alertmanager_resend, _) =
            c.field("alerts.alertmanager_resend", self.alertmanager_resend, d.alertmanager_resend, duration_between(secs(10), secs(3600)));
        let (queue_max, _) = c.field("alerts.queue_max", self.queue_max, d.queue_max, count_between(1, 100_000));
        let (retry_max, _) = c.field("alerts.retry_max", self.retry_max, d.retry_max, duration_between(secs(5), secs(86400)));
        let (per_minute, _) = c.field("alerts.per_minute", self.per_minute, d.per_minute, count_between(1, 10_000));
        AlertsConfig { node, webhook, alertmanager, alertmanager_resend, queue_max, retry_max, per_minute }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;

    #[test]
    fn channels_are_read_and_checked() {
        let c = Config::parse(
            "[alerts]\nnode = \"gpu-1\"\nwebhook = \"http://127.0.0.1:9/hook\"\nalertmanager = \"http://127.0.0.1:9093\"\nqueue_max = 10\n",
        )
        .unwrap()
        .alerts;
        assert_eq!(c.node.as_deref(), Some("gpu-1"));
        assert_eq!(c.webhook.as_deref(), Some("http://127.0.0.1:9/hook"));
        assert_eq!(c.queue_max, 10);
        assert!(c.any());
        let e = Config::parse("[alerts]\nwebhook = \"ftp://x\"\n").unwrap_err();
        assert!(e[0].to_string().starts_with("2:11: alerts.webhook: \"ftp://x\" is not an http:// URL"), "{e:?}");
        assert!(!Config::parse("").unwrap().alerts.any(), "no channel by default");
    }
}
