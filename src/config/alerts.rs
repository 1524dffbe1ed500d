//! `[alerts]`: where alerts go (each channel optional, several at once) and how hard the daemon
//! tries: a bounded queue in the state directory, retried with a backoff, across restarts.

use std::path::PathBuf;
use std::time::Duration;

use super::check::{as_text, count_between, duration_between, http_url, list_of, optional_path, Checker};
use super::{format_duration, KeyDoc};

/// `[alerts]`'s keys: name, default, one line of doc.
pub(super) const KEYS: &[KeyDoc] = &[
    KeyDoc::new("alerts", "node", r#""""#, "The node's name in every alert; \"\" = the hostname."),
    KeyDoc::new("alerts", "webhook", r#""""#, "A JSON webhook's http:// or https:// URL (Slack reads its \"text\"); \"\" = off."),
    KeyDoc::new("alerts", "alertmanager", r#""""#, "Prometheus Alertmanager's base URL (POST /api/v2/alerts); \"\" = off."),
    KeyDoc::new("alerts", "alertmanager_resend", r#""1m""#, "A firing alert goes to Alertmanager again this often (10s to 1h)."),
    KeyDoc::new("alerts", "queue_max", "1000", "Deliveries kept while a channel is down (1-100000); beyond it the oldest is dropped."),
    KeyDoc::new("alerts", "retry_max", r#""5m""#, "A failed delivery is retried after 5 s, doubling up to this (5s to 1d)."),
    KeyDoc::new("alerts", "per_minute", "20", "Per channel, at most this many messages a minute (1-10000)."),
    KeyDoc::new("alerts", "smtp_server", r#""""#, "Email: the SMTP server as \"host\" or \"host:port\"; \"\" = no email."),
    KeyDoc::new(
        "alerts",
        "smtp_security",
        r#""starttls""#,
        "\"starttls\" (port 587), \"tls\" (465) or \"none\" (25, a relay on this machine).",
    ),
    KeyDoc::new("alerts", "smtp_from", r#""""#, "The sender's address."),
    KeyDoc::new("alerts", "smtp_to", "[]", "The recipients' addresses."),
    KeyDoc::new("alerts", "smtp_credentials_file", r#""""#, "A root-only (0600) file holding user:password on one line; \"\" = none."),
    KeyDoc::new("alerts", "ca_file", r#""""#, "A PEM file of CA certificates trusted besides the system's, for every TLS channel."),
];

/// Keys whose URL may carry a secret (a Slack webhook's token is its path; an Alertmanager
/// behind a proxy may take a token): shown only through [`crate::sys::redact::url`].
pub const SECRET_URLS: &[&str] = &["alerts.webhook", "alerts.alertmanager"];

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
    /// Email: the SMTP server as `host` or `host:port`; `None`: no email.
    pub smtp_server: Option<String>,
    pub smtp_security: SmtpSecurity,
    pub smtp_from: Option<String>,
    pub smtp_to: Vec<String>,
    /// `user:password` (one line), in a file only root may read; never in this file.
    pub smtp_credentials_file: Option<PathBuf>,
    /// A PEM file of certificate authorities to trust besides the system's (a private CA), for
    /// every channel over TLS: an https:// webhook or Alertmanager, and SMTP.
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS, which must succeed (port 587 by default).
    StartTls,
    /// TLS from the first byte (port 465 by default).
    Tls,
    /// No TLS at all: a relay on this machine (port 25 by default).
    None,
}

impl SmtpSecurity {
    pub fn as_str(self) -> &'static str {
        match self {
            SmtpSecurity::StartTls => "starttls",
            SmtpSecurity::Tls => "tls",
            SmtpSecurity::None => "none",
        }
    }

    pub fn default_port(self) -> u16 {
        match self {
            SmtpSecurity::StartTls => 587,
            SmtpSecurity::Tls => 465,
            SmtpSecurity::None => 25,
        }
    }
}

impl Default for AlertsConfig {
    fn default() -> Self {
        super::Config::default().alerts
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
            ("alerts.smtp_server", opt(&self.smtp_server)),
            ("alerts.smtp_security", self.smtp_security.as_str().into()),
            ("alerts.smtp_from", opt(&self.smtp_from)),
            ("alerts.smtp_to", format!("[{}]", self.smtp_to.iter().map(|t| format!("{t:?}")).collect::<Vec<_>>().join(", "))),
            ("alerts.smtp_credentials_file", self.smtp_credentials_file.as_ref().map(|p| p.display().to_string()).unwrap_or_default()),
            ("alerts.ca_file", self.ca_file.as_ref().map(|p| p.display().to_string()).unwrap_or_default()),
        ]
    }

    /// Whether any channel is configured.
    pub fn any(&self) -> bool {
        self.webhook.is_some() || self.alertmanager.is_some() || self.smtp_server.is_some()
    }
}

impl AlertsConfig {
    pub(super) fn validate(c: &mut Checker<'_>) -> AlertsConfig {
        let secs = Duration::from_secs;
        let (node, _) = c.field("alerts.node", |v| {
            let s = as_text(v, "a node name in quotes, or \"\" for the hostname")?;
            if s.chars().any(char::is_control) || s.len() > 253 {
                return Err(format!("{s:?} is not a node name; expected at most 253 printable characters"));
            }
            Ok((!s.is_empty()).then(|| s.to_string()))
        });
        let (webhook, _) = c.field("alerts.webhook", http_url);
        let (alertmanager, _) = c.field("alerts.alertmanager", http_url);
        let (alertmanager_resend, _) = c.field("alerts.alertmanager_resend", duration_between(secs(10), secs(3600)));
        let (queue_max, _) = c.field("alerts.queue_max", count_between(1, 100_000));
        let (retry_max, _) = c.field("alerts.retry_max", duration_between(secs(5), secs(86400)));
        let (per_minute, _) = c.field("alerts.per_minute", count_between(1, 10_000));
        let (smtp_server, server_span) = c.field("alerts.smtp_server", |v| {
            let s = as_text(v, "an SMTP server as \"host\" or \"host:port\", or \"\" for no email")?;
            if s.is_empty() {
                return Ok(None);
            }
            if s.contains('@') || s.contains("://") {
                // Never quoted back: it may hold a password.
                return Err(format!(
                    "{:?} is a URL or has user:password@; expected host or host:port (e.g. \"mail.example.org:587\"), with the \
                     credentials in alerts.smtp_credentials_file",
                    crate::sys::redact::url(s)
                ));
            }
            let (host, port) = s.rsplit_once(':').map_or((s, None), |(h, p)| (h, Some(p)));
            let host_ok = !host.is_empty() && host.chars().all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c));
            if !host_ok || port.is_some_and(|p| p.parse::<u16>().map_or(true, |p| p == 0)) {
                return Err(format!("{:?} is not host or host:port; expected e.g. \"mail.example.org:587\"", crate::sys::one_line(s, 200)));
            }
            Ok(Some(s.to_string()))
        });
        let (smtp_security, security_span) = c.field("alerts.smtp_security", |v| match as_text(v, "\"starttls\", \"tls\" or \"none\"")? {
            "starttls" => Ok(SmtpSecurity::StartTls),
            "tls" => Ok(SmtpSecurity::Tls),
            "none" => Ok(SmtpSecurity::None),
            s => Err(format!("{s:?} is not one of \"starttls\", \"tls\", \"none\"")),
        });
        let address = |s: &str| {
            s.parse::<lettre::message::Mailbox>().map(|_| s.to_string()).map_err(|e| format!("{s:?} is not an email address ({e})"))
        };
        let (smtp_from, _) = c.field("alerts.smtp_from", |v| {
            let s = as_text(v, "an address such as \"cluster-ai@example.org\"")?;
            if s.is_empty() {
                Ok(None)
            } else {
                address(s).map(Some)
            }
        });
        let (smtp_to, _) = c.field("alerts.smtp_to", |v| list_of(v, "a list of addresses such as [\"ops@example.org\"]", address));
        let (smtp_credentials_file, _) = c.field("alerts.smtp_credentials_file", optional_path);
        let (ca_file, _) = c.field("alerts.ca_file", optional_path);
        if smtp_server.is_some() && (smtp_from.is_none() || smtp_to.is_empty()) {
            c.report(server_span, "alerts.smtp_server", "email needs alerts.smtp_from and at least one address in alerts.smtp_to".into());
        }
        if let (SmtpSecurity::None, Some(server), Some(_)) = (smtp_security, &smtp_server, &smtp_credentials_file) {
            let host = server.rsplit_once(':').map_or(server.as_str(), |(h, _)| h);
            if !is_loopback(host) {
                c.report(
                    security_span,
                    "alerts.smtp_security",
                    format!(
                        "\"none\" would send the password of alerts.smtp_credentials_file in clear text to {host}, which is not \
                         this machine; set smtp_security = \"starttls\" (port 587) or \"tls\" (port 465), or relay through an \
                         SMTP server on 127.0.0.1 or localhost"
                    ),
                );
            }
        }
        AlertsConfig {
            node,
            webhook,
            alertmanager,
            alertmanager_resend,
            queue_max,
            retry_max,
            per_minute,
            smtp_server,
            smtp_security,
            smtp_from,
            smtp_to,
            smtp_credentials_file,
            ca_file,
        }
    }
}

/// This machine, whatever the server's name resolves to elsewhere: `localhost`, 127.0.0.0/8,
/// `::1` (with or without brackets). Only there may a password cross without TLS.
fn is_loopback(host: &str) -> bool {
    let host = host.trim_end_matches('.');
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    host.eq_ignore_ascii_case("localhost") || bare.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::super::Config;

    #[test]
    fn a_password_in_clear_text_goes_only_to_this_machine() {
        let cfg = |server: &str, security: &str, creds: bool| {
            let creds = if creds { "smtp_credentials_file = \"/etc/cluster-ai/smtp\"\n" } else { "" };
            format!(
                "[alerts]\nsmtp_server = \"{server}\"\nsmtp_security = \"{security}\"\nsmtp_from = \"n@x.org\"\nsmtp_to = [\"ops@x.org\"]\n{creds}"
            )
        };
        let e = Config::parse(&cfg("mail.example.org:25", "none", true)).unwrap_err();
        assert_eq!(e.len(), 1, "{e:?}");
        let e = e[0].to_string();
        assert!(e.starts_with("3:17: alerts.smtp_security: \"none\" would send the password"), "{e}");
        assert!(e.contains("mail.example.org") && e.contains("\"starttls\"") && e.contains("127.0.0.1 or localhost"), "{e}");
        assert!(Config::parse(&cfg("10.0.0.5", "none", true)).is_err(), "a LAN address is not this machine");
        for host in ["127.0.0.1:25", "127.3.2.1", "localhost:2525", "LOCALHOST"] {
            assert!(Config::parse(&cfg(host, "none", true)).is_ok(), "{host} is this machine");
        }
        assert!(Config::parse(&cfg("mail.example.org:25", "none", false)).is_ok(), "no credentials: no password to leak");
        assert!(Config::parse(&cfg("mail.example.org", "starttls", true)).is_ok());
        assert!(super::is_loopback("::1") && super::is_loopback("[::1]") && !super::is_loopback("[::2]"));
    }

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
        assert!(e[0].to_string().starts_with("2:11: alerts.webhook: \"ftp://x\" is not an http:// or https:// URL"), "{e:?}");
        assert!(!Config::parse("").unwrap().alerts.any(), "no channel by default");
        let e = Config::parse("[alerts]\nsmtp_server = \"mail:587\"\n").unwrap_err();
        assert!(e[0].to_string().contains("email needs alerts.smtp_from and at least one address in alerts.smtp_to"), "{e:?}");
        let e = Config::parse("[alerts]\nsmtp_server = \"mail\"\nsmtp_from = \"a@b\"\nsmtp_to = [\"not an address\"]\n").unwrap_err();
        assert!(e.iter().any(|p| p.to_string().contains("alerts.smtp_to: \"not an address\" is not an email address")), "{e:?}");
        let ok = Config::parse(
            "[alerts]\nsmtp_server = \"127.0.0.1:2525\"\nsmtp_security = \"none\"\nsmtp_from = \"n@x.org\"\nsmtp_to = [\"ops@x.org\"]\n",
        )
        .unwrap()
        .alerts;
        assert_eq!(ok.smtp_security, super::SmtpSecurity::None);
    }
}
