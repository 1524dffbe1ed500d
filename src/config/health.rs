//! `[health]` and its `[[health.service]]` entries: what the health task checks, how, and how it
//! restarts. Without any `[[health.service]]` the seed's four services are checked (Docker,
//! the Dask scheduler, Ollama, Open WebUI); one that is not installed is shown as such and never
//! probed, so the defaults are safe on any node.
//!
//! The list is built file by file: the main file's entries replace the built-in list; each
//! drop-in's entries add to the list so far, an entry named like one already there replacing
//! it whole; `remove_services` in a file drops services from the list so far.

use std::path::PathBuf;
use std::time::Duration;

use super::check::{absolute_path, as_text, boolean, count_between, duration_between, kind, list_of, optional_unit, Checker};
use super::layers::{Entry, Loc, REMOVE_SERVICES};
use super::{format_duration, KeyDoc, Origin};

/// `[health]`'s keys: name, default, one line of doc.
pub(super) const KEYS: &[KeyDoc] = &[
    KeyDoc::new("health", "enabled", "true", "Off: no health task at all."),
    KeyDoc::new(
        "health",
        "backoff_initial",
        r#""1s""#,
        "The wait before an incident's second restart, doubling up to backoff_max (100ms to 1h).",
    ),
    KeyDoc::new("health", "backoff_max", r#""1m""#, "The longest wait between two restarts (1s to 1d, at least backoff_initial)."),
    KeyDoc::new("health", "flap_restarts", "5", "More restarts (or incidents) than this within flap_window: flapping (1-1000)."),
    KeyDoc::new("health", "flap_window", r#""10m""#, "The window flap_restarts counts in (1s to 1d)."),
    KeyDoc::new("health", "flap_hold", r#""15m""#, "A flapping service is not restarted for this long, then tried again (1s to 7d)."),
    KeyDoc::new("health", "reset_after", r#""5m""#, "Healthy this long: the backoff starts again from backoff_initial (1s to 1d)."),
    KeyDoc::new(
        "health",
        "remove_services",
        "[]",
        "Names of services dropped from the list built so far (the built-in one, or the files before).",
    ),
];

/// The keys of one `[[health.service]]` entry. A default of "" (no text) means required.
pub(super) const SERVICE_KEYS: &[KeyDoc] = &[
    KeyDoc::new("health.service", "name", "", "The service's name (letters, digits, - _ .; at most 64); required."),
    KeyDoc::new("health.service", "unit", r#""""#, "The systemd unit that runs it and that a restart restarts; \"\" = none (probed only)."),
    KeyDoc::new(
        "health.service",
        "probe",
        r#""""#,
        "\"http(s)://host:port/path\", \"tcp://host:port\", \"docker:/path.sock\", \"container:NAME\", or \"\" (the unit's state).",
    ),
    KeyDoc::new("health.service", "expect_status", "200", "The HTTP status an http probe expects (100-599)."),
    KeyDoc::new("health.service", "expect_body", r#""""#, "Text the answer of an http probe must contain; \"\" = any."),
    KeyDoc::new("health.service", "docker_socket", r#""/var/run/docker.sock""#, "Docker Engine's socket, for a container: probe."),
    KeyDoc::new(
        "health.service",
        "interval",
        r#""10s""#,
        "Time between probes (1s to 1h); after a failed one, the next starts 1 s after it started (at once after a timeout).",
    ),
    KeyDoc::new("health.service", "timeout", r#""3s""#, "A probe's deadline (100ms to 10m, at most interval)."),
    KeyDoc::new("health.service", "fail_after", "2", "Failed probes in a row that make it unhealthy (1-100)."),
    KeyDoc::new("health.service", "pass_after", "2", "Passed probes in a row that make it healthy again (1-100)."),
    KeyDoc::new(
        "health.service",
        "restart",
        r#""on-failure""#,
        "\"on-failure\", \"always\" (also when stopped) or \"never\" (alert only).",
    ),
    KeyDoc::new("health.service", "min_workers", r#""""#, "A Dask scheduler: fewer workers than this is an incident; \"\" = not checked."),
    KeyDoc::new("health.service", "local_worker", "false", "A Dask scheduler's probe also needs a worker of this node among its workers."),
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    /// Off: no health task at all.
    pub enabled: bool,
    /// The wait before the second restart of an incident (the first is at once), doubling
    /// up to `backoff_max`.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// More than `flap_restarts` restarts within `flap_window`: the service is flapping; it is
    /// not restarted for `flap_hold` (one alert), then tried again.
    pub flap_restarts: u32,
    pub flap_window: Duration,
    pub flap_hold: Duration,
    /// Healthy this long: the backoff starts again from `backoff_initial`.
    pub reset_after: Duration,
    pub services: Vec<ServiceConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceConfig {
    pub name: String,
    /// The systemd unit that runs it: its state is followed over D-Bus and it is what a restart
    /// restarts. `None`: probed only, never restarted.
    pub unit: Option<String>,
    /// What proves it answers; `None`: the unit's state alone.
    pub probe: Option<Probe>,
    pub interval: Duration,
    pub timeout: Duration,
    /// Failed probes in a row that make it unhealthy, and passed ones that make it healthy.
    pub fail_after: u32,
    pub pass_after: u32,
    pub restart: RestartPolicy,
    /// A Dask scheduler's workers (from `/json/identity.json` at the probe's address): fewer
    /// than this is an incident that names the workers that left. `None`: not checked.
    pub min_workers: Option<u32>,
    /// A Dask scheduler's probe also proves that a worker of this node (its address one of this
    /// machine's, or its name the hostname) is among the scheduler's workers; on a worker node,
    /// with the worker's unit, a worker that lost its scheduler is restarted.
    pub local_worker: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// GET `url`; healthy when the status is `status` and the body contains `body`.
    Http { url: String, status: u16, body: Option<String> },
    /// A TCP connect to `host:port`.
    Tcp { addr: String },
    /// Docker Engine's `GET /_ping` on its unix socket → `OK`.
    Docker { socket: PathBuf },
    /// A container, through the Docker Engine API on `socket`: running, and not "unhealthy" by
    /// its own health check. A service without a unit whose probe is a container is restarted
    /// through the same API.
    Container { name: String, socket: PathBuf },
}

/// A probe URL as it may be shown (`config show`, a reload's log, a probe's detail): whole,
/// unless it carries `user:password@`, a query or a fragment (an `?api_key=`), which only
/// [`crate::sys::redact::url`]'s `scheme://host:port/…` is shown of.
fn shown_url(url: &str) -> String {
    let authority = url.split_once("://").map_or(url, |(_, r)| r).split('/').next().unwrap_or("");
    if authority.contains('@') || url.contains(['?', '#']) {
        crate::sys::redact::url(url)
    } else {
        url.to_string()
    }
}

impl std::fmt::Display for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Probe::Http { url, .. } => write!(f, "{}", shown_url(url)),
            Probe::Tcp { addr } => write!(f, "tcp://{addr}"),
            Probe::Docker { socket } => write!(f, "docker:{}", socket.display()),
            Probe::Container { name, .. } => write!(f, "container:{name}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    /// When its unit fails, or its probe keeps failing while the unit is active; not when
    /// someone stopped it.
    OnFailure,
    /// Also when its unit is stopped.
    Always,
    /// Alert only.
    Never,
}

impl RestartPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::Always => "always",
            RestartPolicy::Never => "never",
        }
    }
}

/// A service's probe cycle on defaults (issue 18 §7: hang → restarted median ≤ 15 s, a
/// service merely slow once not restarted). A hang is seen at the next probe (`interval`/2 =
/// 5 s away on average), which fails after its 3 s `timeout`, and is confirmed by a second
/// probe started at once (one second, [`crate::health::task::FAST_PROBE`], after the first
/// one started, which a timeout has passed), another 3 s: restarted about 11 s after it starts
/// (6–16 s by where the hang falls in the interval), against monit's 27–50 s on its 30 s cycle
/// (bench/restart.sh). A service must stay silent for 3 + 3 = 6 s in a row to be restarted.
/// Probing each service every 10 s is within the idle CPU budget with four services
/// (bench/footprint.sh).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);
pub const DEFAULT_FAIL_AFTER: u32 = 2;

impl ServiceConfig {
    fn seed(name: &str, unit: &str, probe: Probe) -> ServiceConfig {
        ServiceConfig {
            name: name.into(),
            unit: Some(unit.into()),
            probe: Some(probe),
            interval: DEFAULT_INTERVAL,
            timeout: DEFAULT_TIMEOUT,
            fail_after: DEFAULT_FAIL_AFTER,
            pass_after: 2,
            restart: RestartPolicy::OnFailure,
            min_workers: None,
            local_worker: false,
        }
    }

    /// One line that holds every setting, for `Config::entries` (a reload logs what changed).
    pub(super) fn summary(&self) -> String {
        let probe = match &self.probe {
            Some(Probe::Http { url, status, body }) => {
                format!("{} {status}{}", shown_url(url), body.as_ref().map(|b| format!(" {b:?}")).unwrap_or_default())
            }
            Some(p) => p.to_string(),
            None => "unit only".into(),
        };
        format!(
            "{} (unit {}, probe {probe}, every {}, timeout {}, {} fail / {} pass, restart {}{})",
            self.name,
            self.unit.as_deref().unwrap_or("none"),
            format_duration(self.interval),
            format_duration(self.timeout),
            self.fail_after,
            self.pass_after,
            self.restart.as_str(),
            self.min_workers.map(|n| format!(", min {n} workers")).unwrap_or_default()
                + if self.local_worker { ", this node's worker" } else { "" }
        )
    }
}

/// The seed's four services on their usual units and ports: the list when no file has one.
fn builtin_services() -> Vec<ServiceConfig> {
    let http = |url: &str, body: Option<&str>| Probe::Http { url: url.into(), status: 200, body: body.map(Into::into) };
    let mut dask = ServiceConfig::seed("dask-scheduler", "dask-scheduler.service", http("http://127.0.0.1:8787/health", Some("ok")));
    dask.min_workers = Some(1);
    vec![
        ServiceConfig::seed("docker", "docker.service", Probe::Docker { socket: "/var/run/docker.sock".into() }),
        dask,
        ServiceConfig::seed("ollama", "ollama.service", http("http://127.0.0.1:11434/api/version", None)),
        ServiceConfig::seed("open-webui", "open-webui.service", http("http://127.0.0.1:8080/health", Some("\"status\":true"))),
    ]
}

impl Default for HealthConfig {
    /// The documented defaults and the seed's four services.
    fn default() -> Self {
        super::Config::default().health
    }
}

impl HealthConfig {
    pub(super) fn entries(&self) -> Vec<(&'static str, String)> {
        vec![
            ("health.enabled", self.enabled.to_string()),
            ("health.backoff_initial", format_duration(self.backoff_initial)),
            ("health.backoff_max", format_duration(self.backoff_max)),
            ("health.flap_restarts", self.flap_restarts.to_string()),
            ("health.flap_window", format_duration(self.flap_window)),
            ("health.flap_hold", format_duration(self.flap_hold)),
            ("health.reset_after", format_duration(self.reset_after)),
            ("health.service", self.services.iter().map(ServiceConfig::summary).collect::<Vec<_>>().join("; ")),
        ]
    }

    pub(super) fn validate(c: &mut Checker<'_>) -> HealthConfig {
        let secs = Duration::from_secs;
        let (enabled, _) = c.field("health.enabled", boolean);
        let (backoff_initial, initial_at) = c.field("health.backoff_initial", duration_between(Duration::from_millis(100), secs(3600)));
        let (backoff_max, max_at) = c.field("health.backoff_max", duration_between(secs(1), secs(86400)));
        let (flap_restarts, _) = c.field("health.flap_restarts", count_between(1, 1000));
        let (flap_window, _) = c.field("health.flap_window", duration_between(secs(1), secs(86400)));
        let (flap_hold, _) = c.field("health.flap_hold", duration_between(secs(1), secs(7 * 86400)));
        let (reset_after, _) = c.field("health.reset_after", duration_between(secs(1), secs(86400)));
        if backoff_max < backoff_initial {
            c.report_between(
                (max_at, "health.backoff_max"),
                (initial_at, "health.backoff_initial"),
                format!(
                    "{} is below health.backoff_initial {}; expected backoff_max >= backoff_initial",
                    format_duration(backoff_max),
                    format_duration(backoff_initial)
                ),
            );
        }
        let services = services(c);
        HealthConfig { enabled, backoff_initial, backoff_max, flap_restarts, flap_window, flap_hold, reset_after, services }
    }
}

/// The service list, file by file (see the module's doc); each service's origin is recorded
/// as `health.service.NAME`.
fn services(c: &mut Checker<'_>) -> Vec<ServiceConfig> {
    let merged = c.merged;
    let mut list: Vec<(ServiceConfig, Origin)> = builtin_services().into_iter().map(|s| (s, Origin::Default)).collect();
    for layer in &merged.services {
        if let Some(remove) = &layer.remove {
            let names = |v: &toml::Value| list_of(v, "a list of service names such as [\"open-webui\"]", |s| Ok(s.to_string()));
            let (names, at) = c.entry_field(REMOVE_SERVICES, Some(remove), names);
            let mut removed: Vec<String> = Vec::new();
            for name in names {
                if removed.contains(&name) {
                    c.report(at.clone(), REMOVE_SERVICES, format!("{name:?} is named twice; once removes it"));
                    continue;
                }
                match list.iter().position(|(s, _)| s.name == name) {
                    Some(i) => {
                        list.remove(i);
                        removed.push(name);
                    }
                    None => {
                        let have: Vec<&str> = list.iter().map(|(s, _)| s.name.as_str()).collect();
                        let message = format!(
                            "{name:?} is not among the services so far ({}); nothing to remove",
                            if have.is_empty() { "none".to_string() } else { have.join(", ") }
                        );
                        c.report(at.clone(), REMOVE_SERVICES, message);
                    }
                }
            }
        }
        // The main file's own entries replace the list (after its remove_services, which
        // therefore speaks of the built-in services).
        if layer.main && !layer.entries.is_empty() {
            list.clear();
        }
        let mut named: Vec<String> = Vec::new();
        for entry in &layer.entries {
            let Some(s) = service(c, entry) else { continue };
            if named.contains(&s.name) {
                c.report(
                    Some(entry.at.clone()),
                    "health.service.name",
                    format!("{:?} is named twice; each service needs its own name", s.name),
                );
                continue;
            }
            named.push(s.name.clone());
            let origin = Origin::File { path: merged.path(entry.at.layer), line: merged.line(&entry.at) };
            match list.iter().position(|(o, _)| o.name == s.name) {
                Some(i) => list[i] = (s, origin),
                None => list.push((s, origin)),
            }
        }
    }
    list.into_iter()
        .map(|(s, origin)| {
            c.origins.set(&format!("health.service.{}", s.name), origin);
            s
        })
        .collect()
}

/// One `[[health.service]]` entry; `None` when it is unusable (reported); the other entries
/// are still checked.
fn service(c: &mut Checker<'_>, entry: &Entry) -> Option<ServiceConfig> {
    let secs = Duration::from_secs;
    let f = |key: &str| entry.fields.get(key);
    let table: Loc = entry.at.clone();
    let Some(raw_name) = f("name") else {
        c.report(Some(table), "health.service", "an entry without a name; add name = \"...\" (e.g. \"ollama\")".into());
        return None;
    };
    let name = {
        let s = raw_name.value.as_str();
        let ok = s.is_some_and(|s| !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)));
        match s {
            Some(s) if ok => s.to_string(),
            Some(s) => {
                let message = format!("{s:?} is not a service name; expected letters, digits, - _ . (at most 64)");
                c.report(Some(raw_name.at.clone()), "health.service.name", message);
                return None;
            }
            None => {
                let message = format!("expected a name in quotes such as \"ollama\", found {}", kind(&raw_name.value));
                c.report(Some(raw_name.at.clone()), "health.service.name", message);
                return None;
            }
        }
    };
    let (unit, _) = c.entry_field("health.service.unit", f("unit"), optional_unit);
    let (status, _) = c.entry_field("health.service.expect_status", f("expect_status"), |v| count_between(100, 599)(v).map(|n| n as u16));
    let (body, _) = c.entry_field("health.service.expect_body", f("expect_body"), |v| {
        as_text(v, "text the answer must contain, such as \"ok\"").map(|s| (!s.is_empty()).then(|| s.to_string()))
    });
    let (socket, _) = c.entry_field("health.service.docker_socket", f("docker_socket"), absolute_path);
    let probe_at = f("probe").map(|s| s.at.clone());
    let (probe, _) = c.entry_field("health.service.probe", f("probe"), |v| probe(v, status, body.clone(), &socket));
    let (interval, interval_at) = c.entry_field("health.service.interval", f("interval"), duration_between(secs(1), secs(3600)));
    let (timeout, timeout_at) =
        c.entry_field("health.service.timeout", f("timeout"), duration_between(Duration::from_millis(100), secs(600)));
    let (fail_after, _) = c.entry_field("health.service.fail_after", f("fail_after"), count_between(1, 100));
    let (pass_after, _) = c.entry_field("health.service.pass_after", f("pass_after"), count_between(1, 100));
    let (restart, _) =
        c.entry_field("health.service.restart", f("restart"), |v| match as_text(v, "\"on-failure\", \"always\" or \"never\"")? {
            "on-failure" => Ok(RestartPolicy::OnFailure),
            "always" => Ok(RestartPolicy::Always),
            "never" => Ok(RestartPolicy::Never),
            s => Err(format!("{s:?} is not a restart policy; expected \"on-failure\", \"always\" or \"never\"")),
        });
    let (min_workers, workers_at) = c.entry_field("health.service.min_workers", f("min_workers"), |v| {
        if v.as_str() == Some("") {
            return Ok(None);
        }
        count_between(0, 100_000)(v).map(Some).map_err(|e| format!("{e}; or \"\" for not checked"))
    });
    let (local_worker, local_at) = c.entry_field("health.service.local_worker", f("local_worker"), boolean);
    if unit.is_none() && probe.is_none() {
        c.report(probe_at.or(Some(table)), "health.service", format!("{name:?} has neither a unit nor a probe; give it at least one"));
        return None;
    }
    if timeout > interval {
        // At whichever of the two was written (the later one when both were): a short interval
        // under the default timeout is the interval's line, not the top of the file.
        c.report_between(
            (timeout_at, "health.service.timeout"),
            (interval_at, "health.service.interval"),
            format!("{} is longer than its interval {}; expected timeout <= interval", format_duration(timeout), format_duration(interval)),
        );
    }
    if min_workers.is_some() && !matches!(probe, Some(Probe::Http { .. })) {
        c.report(workers_at, "health.service.min_workers", "needs an http:// probe of the Dask scheduler (its dashboard address)".into());
    }
    if local_worker && !matches!(probe, Some(Probe::Http { .. })) {
        c.report(local_at, "health.service.local_worker", "needs an http:// probe of the Dask scheduler (its dashboard address)".into());
    }
    Some(ServiceConfig { name, unit, probe, interval, timeout, fail_after, pass_after, restart, min_workers, local_worker })
}

/// `http://host:port/path` (or `https://`), `tcp://host:port`, `docker:/path/to/docker.sock`,
/// `container:NAME` (through `socket`).
fn probe(v: &toml::Value, status: u16, body: Option<String>, socket: &std::path::Path) -> Result<Option<Probe>, String> {
    const EXPECTED: &str = "\"http://127.0.0.1:8787/health\", \"tcp://127.0.0.1:5432\", \"docker:/var/run/docker.sock\", \"container:open-webui\", or \"\" for the unit's state only";
    let s = v.as_str().ok_or_else(|| format!("expected a probe such as {EXPECTED}, found {}", kind(v)))?;
    if s.is_empty() {
        return Ok(None);
    }
    if s.starts_with("http://") || s.starts_with("https://") {
        // The error quotes the URL back: shown as any probe URL is (a password or a query hidden).
        crate::sys::http::Endpoint::parse_url(s).map_err(|e| format!("{}; expected e.g. {EXPECTED}", e.replace(s, &shown_url(s))))?;
        return Ok(Some(Probe::Http { url: s.to_string(), status, body }));
    }
    if let Some(addr) = s.strip_prefix("tcp://") {
        let ok = addr.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
        return ok
            .then(|| Some(Probe::Tcp { addr: addr.to_string() }))
            .ok_or_else(|| format!("{s:?} has no host:port; expected e.g. {EXPECTED}"));
    }
    if let Some(name) = s.strip_prefix("container:") {
        let ok = !name.is_empty() && name.len() <= 128 && name.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        return ok
            .then(|| Some(Probe::Container { name: name.to_string(), socket: socket.to_path_buf() }))
            .ok_or_else(|| format!("{s:?}: expected container: and a container's name or id such as \"container:open-webui\""));
    }
    if let Some(path) = s.strip_prefix("docker:") {
        let socket = absolute_path(&toml::Value::String(path.to_string()))
            .map_err(|_| format!("{s:?}: expected docker: and an absolute socket path"))?;
        return Ok(Some(Probe::Docker { socket }));
    }
    Err(format!("{s:?} is not a probe; expected {EXPECTED}"))
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        Config::parse(text).unwrap_err().iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn the_seed_services_are_the_default_and_a_list_replaces_them() {
        let d = Config::parse("").unwrap().health;
        let names: Vec<&str> = d.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["docker", "dask-scheduler", "ollama", "open-webui"]);
        let c = Config::parse(
            r#"
[health]
backoff_max = "2m"
[[health.service]]
name = "api"
unit = "api.service"
probe = "http://127.0.0.1:9000/ready"
expect_status = 204
expect_body = "yes"
interval = "5s"
timeout = "1s"
fail_after = 2
pass_after = 1
restart = "always"
[[health.service]]
name = "db"
probe = "tcp://127.0.0.1:5432"
restart = "never"
"#,
        )
        .unwrap()
        .health;
        assert_eq!(c.backoff_max, Duration::from_secs(120));
        assert_eq!(c.services.len(), 2);
        let api = &c.services[0];
        assert_eq!(api.probe, Some(Probe::Http { url: "http://127.0.0.1:9000/ready".into(), status: 204, body: Some("yes".into()) }));
        assert_eq!((api.interval, api.timeout, api.fail_after, api.pass_after), (Duration::from_secs(5), Duration::from_secs(1), 2, 1));
        assert_eq!(api.restart, RestartPolicy::Always);
        assert_eq!(c.services[1].probe, Some(Probe::Tcp { addr: "127.0.0.1:5432".into() }));
        assert_eq!(c.services[1].unit, None);
    }

    #[test]
    fn bad_entries_name_the_key_and_the_fix() {
        let p = problems("[[health.service]]\nname = \"x\"\nprobe = \"ftp://a\"\n");
        assert!(p[0].starts_with("3:9: health.service.probe: \"ftp://a\" is not a probe"), "{p:?}");
        let p = problems("[[health.service]]\nname = \"x\"\n");
        assert!(p[0].contains("\"x\" has neither a unit nor a probe"), "{p:?}");
        let p = problems("[[health.service]]\nunit = \"a.service\"\n");
        assert!(p[0].contains("an entry without a name"), "{p:?}");
        let p =
            problems("[[health.service]]\nname = \"a\"\nunit = \"a.service\"\n[[health.service]]\nname = \"a\"\nunit = \"b.service\"\n");
        assert!(p[0].contains("\"a\" is named twice"), "{p:?}");
        let p = problems("[[health.service]]\nname = \"a\"\nprobe = \"tcp://h:1\"\ninterval = \"2s\"\ntimeout = \"5s\"\n");
        assert!(p[0].starts_with("5:11: health.service.timeout: 5s is longer than its interval 2s"), "{p:?}");
        // The default timeout (3 s) over a short interval: the interval's line, not 1:1.
        let p = problems("[[health.service]]\nname = \"a\"\nprobe = \"tcp://h:1\"\ninterval = \"1s\"\n");
        assert!(p[0].starts_with("4:12: health.service.interval: health.service.timeout 3s is longer than its interval 1s"), "{p:?}");
        let p = problems("[[health.service]]\nname = \"a\"\nprobe = \"tcp://h:1\"\nmin_workers = 2\n");
        assert!(p[0].contains("min_workers: needs an http:// probe"), "{p:?}");
        let p = problems("[[health.service]]\nname = \"a\"\nprobe = \"tcp://h:1\"\nlocal_worker = true\n");
        assert!(p[0].contains("local_worker: needs an http:// probe"), "{p:?}");
        let p = problems("[[health.service]]\nname = \"a\"\nunit = \"a.service\"\nrestart = \"sometimes\"\n");
        assert!(p[0].contains("\"sometimes\" is not a restart policy"), "{p:?}");
        let p = problems("[[health.service]]\nname = \"a\"\nunit = \"a.service\"\nintervall = \"5s\"\n");
        assert!(p[0].contains("unknown key `intervall`; did you mean `interval`?"), "{p:?}");
        let p = problems("[health]\nbackoff_initial = \"2m\"\nbackoff_max = \"1m\"\n");
        assert!(p[0].contains("backoff_max: 1m is below health.backoff_initial 2m"), "{p:?}");
    }
}
