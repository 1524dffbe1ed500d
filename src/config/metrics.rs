//! `[metrics]`: the Prometheus endpoint.

use std::path::PathBuf;

use super::check::{as_text, optional_path, Checker};
use super::KeyDoc;

/// The port `/metrics` is served on by default (127.0.0.1 only).
pub const METRICS_PORT: u16 = 9464;

/// `[metrics]`'s keys: name, default, one line of doc.
pub(super) const KEYS: &[KeyDoc] = &[
    KeyDoc::new(
        "metrics",
        "listen",
        r#""127.0.0.1:9464""#,
        "Where GET /metrics is served, as ip:port (loopback by default); \"\" = not served.",
    ),
    KeyDoc::new(
        "metrics",
        "web_config_file",
        r#""""#,
        "TLS and basic auth for /metrics: an exporter-toolkit web config file (docs/metrics.md); \"\" = plain HTTP.",
    ),
];

/// `[metrics]`: the Prometheus endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    /// Where `/metrics` is served (`None`: not served). Loopback by default: the numbers say
    /// what runs on this node and how full it is.
    pub listen: Option<std::net::SocketAddr>,
    /// TLS and basic auth for `/metrics`, in exporter-toolkit's web configuration format
    /// (`metrics::web_config`; `None`: plain HTTP, no authentication). Re-read on each reload.
    pub web_config_file: Option<PathBuf>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        super::Config::default().metrics
    }
}

impl MetricsConfig {
    pub(super) fn entries(&self) -> Vec<(&'static str, String)> {
        vec![
            ("metrics.listen", self.listen.map(|a| a.to_string()).unwrap_or_default()),
            ("metrics.web_config_file", self.web_config_file.as_ref().map(|p| p.display().to_string()).unwrap_or_default()),
        ]
    }

    pub(super) fn validate(c: &mut Checker<'_>) -> MetricsConfig {
        let (listen, _) = c.field("metrics.listen", |v| {
            let s = as_text(v, "an address such as \"127.0.0.1:9464\", or \"\" for no /metrics")?;
            if s.is_empty() {
                return Ok(None);
            }
            s.parse::<std::net::SocketAddr>()
                .map(Some)
                .map_err(|_| format!("{s:?} is not ip:port; expected e.g. \"127.0.0.1:9464\" (or \"0.0.0.0:9464\" for a Prometheus server elsewhere), or \"\""))
        });
        let (web_config_file, _) = c.field("metrics.web_config_file", optional_path);
        MetricsConfig { listen, web_config_file }
    }
}
