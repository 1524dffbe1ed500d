//! `/metrics`: the daemon's state in the Prometheus/OpenMetrics text format, for a Prometheus
//! server that scrapes every node (the seed's central monitor, on the engines users already
//! run). A scrape encodes what the tasks already publish (the sampler's snapshot, the swap
//! task's counters, the health, alert and emergency reports, the heartbeats); the only thing it
//! reads itself is the daemon's own `/proc/self` for the standard `process_*` metrics. Names
//! follow Prometheus's conventions: `cluster_ai_` prefix, base units, `_total` counters, raw
//! counters rather than rates, timestamps rather than ages; docs/metrics.md lists them.

pub mod server;
pub mod web_config;

use std::collections::BTreeMap;

use crate::health::{ServiceReport, ServiceState};
use crate::report::NodeReport;
pub use crate::swap::metrics::{Histogram, SwapMetrics, EXPAND_BUCKETS};

/// What one scrape shows.
#[derive(Debug, Clone)]
pub struct View {
    pub status: NodeReport,
    pub swap: SwapMetrics,
    /// The daemon's own process (`None` when `/proc/self` could not be read; logged).
    pub process: Option<crate::sys::proc_self::ProcessStats>,
    /// The scrape's time, as a Unix time in seconds (heartbeats are exported as timestamps).
    pub now_unix: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    Counter,
    Histogram,
    Info,
}

/// One metric family: its name without the `_total`/`_info` ending, and its samples.
#[derive(Debug, Clone)]
pub struct Family {
    pub name: String,
    pub help: &'static str,
    pub kind: Kind,
    /// The base unit the name ends with ("bytes", "seconds", "ratio").
    pub unit: Option<&'static str>,
    pub samples: Vec<Sample>,
}

#[derive(Debug, Clone)]
pub struct Sample {
    /// "", "_total", "_info", "_bucket", "_sum", "_count".
    pub suffix: &'static str,
    pub labels: Vec<(&'static str, String)>,
    pub value: f64,
}

/// The exposition, in OpenMetrics (what Prometheus asks for) or in Prometheus's classic text
/// format (what `promtool check metrics`, curl and older scrapers read). Hand-written rather
/// than with prometheus-client, which writes OpenMetrics only.
pub fn encode(families: &[Family], openmetrics: bool) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(16 << 10);
    for f in families {
        let (typed, kind) = match (f.kind, openmetrics) {
            (Kind::Gauge, _) => (f.name.clone(), "gauge"),
            (Kind::Histogram, _) => (f.name.clone(), "histogram"),
            (Kind::Counter, true) => (f.name.clone(), "counter"),
            (Kind::Counter, false) => (format!("{}_total", f.name), "counter"),
            (Kind::Info, true) => (f.name.clone(), "info"),
            (Kind::Info, false) => (format!("{}_info", f.name), "gauge"),
        };
        let _ = writeln!(out, "# HELP {typed} {}", f.help);
        let _ = writeln!(out, "# TYPE {typed} {kind}");
        if let (Some(unit), true) = (f.unit, openmetrics) {
            let _ = writeln!(out, "# UNIT {typed} {unit}");
        }
        for s in &f.samples {
            out += &f.name;
            out += s.suffix;
            if !s.labels.is_empty() {
                out.push('{');
                for (i, (k, v)) in s.labels.iter().enumerate() {
                    let v = v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
                    let _ = write!(out, "{}{k}=\"{v}\"", if i > 0 { "," } else { "" });
                }
                out.push('}');
            }
            let _ = writeln!(out, " {}", value(s.value));
        }
    }
    if openmetrics {
        out += "# EOF\n";
    }
    out
}

fn value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

/// Builds the families, prefixing `cluster_ai_`.
struct Out(Vec<Family>);

type Labels = Vec<(&'static str, String)>;

impl Out {
    fn family(&mut self, name: &str, help: &'static str, kind: Kind, unit: Option<&'static str>, samples: Vec<(Labels, f64)>) {
        let suffix = match kind {
            Kind::Counter => "_total",
            Kind::Info => "_info",
            _ => "",
        };
        let name = format!("cluster_ai_{name}{}", unit.map(|u| format!("_{u}")).unwrap_or_default());
        let samples = samples.into_iter().map(|(labels, value)| Sample { suffix, labels, value }).collect();
        self.0.push(Family { name, help, kind, unit, samples });
    }

    fn gauge(&mut self, name: &str, help: &'static str, unit: Option<&'static str>, v: f64) {
        self.family(name, help, Kind::Gauge, unit, vec![(Vec::new(), v)]);
    }

    fn counter(&mut self, name: &str, help: &'static str, v: u64) {
        self.family(name, help, Kind::Counter, None, vec![(Vec::new(), v as f64)]);
    }
}

fn flag(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

fn label(k: &'static str, v: &str) -> Labels {
    vec![(k, v.to_string())]
}

const BYTES: Option<&str> = Some("bytes");
const SECONDS: Option<&str> = Some("seconds");

/// Every family a scrape shows.
pub fn families(view: &View) -> Vec<Family> {
    let mut o = Out(Vec::new());
    let st = &view.status;
    // The node's name as alerts give it ([alerts] node, else the hostname): what `cluster status`
    // and the rules show beside the scrape's instance.
    let node = st.alerts.as_ref().map(|a| a.node.clone()).filter(|n| !n.is_empty()).unwrap_or_else(crate::alerts::hostname);
    o.family(
        "build",
        "The daemon's version and this node's name.",
        Kind::Info,
        None,
        vec![(vec![("version", st.version.clone()), ("node", node)], 1.0)],
    );
    o.gauge("dry_run", "1 when the daemon only logs what it would do.", None, flag(st.dry_run));

    // The node's readings that the daemon's decisions use. node_exporter has the same numbers
    // under node_*; docs/metrics.md says why they are here too (the rules and `cluster status`
    // work on a node without node_exporter, and these are the very samples the policies saw).
    if let Some(s) = &st.snapshot {
        o.gauge("memory_total", "Memory installed (MemTotal of /proc/meminfo).", BYTES, s.memory_total_bytes as f64);
        o.gauge(
            "memory_available",
            "Memory available without swapping (MemAvailable of /proc/meminfo).",
            BYTES,
            s.memory_available_bytes as f64,
        );
        o.gauge("swap_total", "Swap of every kind on this node, ours and others' (SwapTotal).", BYTES, s.swap_total_bytes as f64);
        o.gauge("swap_used", "Swap in use on this node (SwapTotal - SwapFree).", BYTES, s.swap_used_bytes as f64);
        if let Some(c) = &s.cpu_seconds {
            o.family(
                "cpu",
                "CPU time of all CPUs since boot, split as the CPU emergency watch splits it (iowait counts as idle).",
                Kind::Counter,
                SECONDS,
                vec![(label("mode", "busy"), c.busy), (label("mode", "idle"), c.idle)],
            );
        }
        let disks: Vec<_> =
            [("root", &s.disk_root), ("swap_dir", &s.disk_swap_dir)].into_iter().filter_map(|(k, d)| d.as_ref().map(|d| (k, d))).collect();
        let size = disks.iter().map(|(k, d)| (label("disk", k), d.total_bytes as f64)).collect();
        o.family("filesystem_size", "Size of the file system holding / or swap.dir.", Kind::Gauge, BYTES, size);
        let avail = disks.iter().map(|(k, d)| (label("disk", k), d.available_bytes as f64)).collect();
        o.family(
            "filesystem_avail",
            "Space free to unprivileged users on the file system holding / or swap.dir (df's Avail).",
            Kind::Gauge,
            BYTES,
            avail,
        );
        if let Some(p) = &s.pressure {
            let us = |v: Option<u64>| v.map(|t| t as f64 / 1e6);
            for (resource, r) in [("cpu", p.cpu), ("memory", p.memory), ("io", p.io)] {
                if let Some(t) = us(r.some_total_us) {
                    o.family(
                        &format!("pressure_{resource}_waiting"),
                        pressure_help(resource, false),
                        Kind::Counter,
                        SECONDS,
                        vec![(Vec::new(), t)],
                    );
                }
                if let Some(t) = us(r.full_total_us) {
                    o.family(
                        &format!("pressure_{resource}_stalled"),
                        pressure_help(resource, true),
                        Kind::Counter,
                        SECONDS,
                        vec![(Vec::new(), t)],
                    );
                }
            }
        }
    }

    let sw = &view.swap;
    o.gauge("swap_managing", "1 when this daemon manages swap files here.", None, flag(sw.managing));
    o.gauge("swap_managed_files", "Swap files managed by cluster-ai.", None, sw.files as f64);
    o.gauge("swap_managed", "Size of the managed swap files.", BYTES, sw.managed_bytes as f64);
    o.gauge("swap_managed_used", "Managed swap in use.", BYTES, sw.managed_used_bytes as f64);
    o.gauge("swap_spare", "The spare swap file (made, not enabled: disk, not swap); 0: none.", BYTES, sw.spare_bytes as f64);
    o.gauge("swap_max_size", "swap.max_size.", BYTES, sw.max_size_bytes as f64);
    o.gauge("swap_at_max", "1 while swap is at max_size and memory still wants more.", None, flag(sw.at_max));
    o.gauge("swap_disk_guard", "1 while the disk guard keeps swap from growing.", None, flag(sw.disk_guard_active));
    o.counter("swap_expansions", "Swap files added.", sw.expansions);
    o.counter("swap_shrinks", "Swap files removed when calm.", sw.shrinks);
    o.counter("swap_disk_guard_episodes", "Times the disk guard started blocking growth.", sw.disk_guard_episodes);
    o.counter("swap_max_size_episodes", "Times swap reached max_size while memory still wanted more.", sw.max_size_episodes);
    let h = &sw.expand_seconds;
    let mut buckets: Vec<Sample> =
        h.cumulative().into_iter().map(|(le, n)| Sample { suffix: "_bucket", labels: vec![("le", value(le))], value: n as f64 }).collect();
    buckets.push(Sample { suffix: "_sum", labels: Vec::new(), value: h.sum });
    buckets.push(Sample { suffix: "_count", labels: Vec::new(), value: h.count as f64 });
    o.0.push(Family {
        name: "cluster_ai_swap_expand_duration_seconds".into(),
        help: "From the decision to grow to the new swap file being on.",
        kind: Kind::Histogram,
        unit: SECONDS,
        samples: buckets,
    });

    if let Some(h) = &st.health {
        let installed: Vec<&ServiceReport> = h.services.iter().filter(|s| s.state != ServiceState::NotInstalled).collect();
        let per = |f: &dyn Fn(&ServiceReport) -> Option<f64>| -> Vec<(Labels, f64)> {
            installed.iter().filter_map(|s| f(s).map(|v| (label("service", &s.name), v))).collect()
        };
        let up = per(&|s| match s.state {
            ServiceState::Healthy => Some(1.0),
            ServiceState::Unhealthy => Some(0.0),
            ServiceState::Starting | ServiceState::NotInstalled => None,
        });
        o.family(
            "service_up",
            "1 when the service is healthy, 0 when not (installed services that have been judged).",
            Kind::Gauge,
            None,
            up,
        );
        let latency = per(&|s| s.last_probe.as_ref().map(|p| p.latency_ms / 1000.0));
        o.family("service_probe_duration", "How long the service's last probe took.", Kind::Gauge, SECONDS, latency);
        o.family("service_restarts", "Restarts of the service made by cluster-ai.", Kind::Counter, None, per(&|s| Some(s.restarts as f64)));
        let now = crate::sys::unix_ms();
        let held = per(&|s| Some(flag(s.held_until_unix_ms.is_some_and(|t| t > now))));
        o.family("service_flapping", "1 while the flap guard holds the service's restarts off.", Kind::Gauge, None, held);
        let workers = per(&|s| s.workers.as_ref().filter(|w| w.error.is_none()).map(|w| w.count as f64));
        o.family("dask_workers", "Workers the Dask scheduler lists.", Kind::Gauge, None, workers);
        o.family(
            "dask_workers_min",
            "The configured minimum of workers.",
            Kind::Gauge,
            None,
            per(&|s| s.workers.as_ref().map(|w| w.min as f64)),
        );
    }

    if let Some(a) = &st.alerts {
        let per = |f: fn(&crate::alerts::task::ChannelReport) -> f64| -> Vec<(Labels, f64)> {
            a.channels.iter().map(|c| (label("channel", &c.channel), f(c))).collect()
        };
        o.family("alerts_sent", "Alert messages a channel took.", Kind::Counter, None, per(|c| c.sent as f64));
        o.family("alerts_failed", "Failed deliveries (each is retried).", Kind::Counter, None, per(|c| c.failed as f64));
        o.gauge("alerts_queued", "Deliveries waiting in the queue.", None, a.queued as f64);
        o.counter("alerts_dropped", "Deliveries dropped because the queue was full.", a.dropped);
        o.gauge("alerts_firing", "Alerts firing now.", None, a.firing.len() as f64);
    }

    if let Some(em) = &st.emergency {
        let by_action = |m: &BTreeMap<String, u64>| m.iter().map(|(k, v)| (label("action", k), *v as f64)).collect();
        o.family("emergency_actions", "Emergency measures carried out, by action.", Kind::Counter, None, by_action(&em.counts));
        o.family("emergency_freed", "Bytes the emergency measures freed, by action.", Kind::Counter, BYTES, by_action(&em.freed_bytes));
    }

    let beats = st.tasks.iter().map(|t| (label("task", &t.name), view.now_unix - t.last_heartbeat_seconds_ago)).collect();
    o.family(
        "task_last_heartbeat_timestamp",
        "When each task of the daemon last showed it was alive, as a Unix time.",
        Kind::Gauge,
        SECONDS,
        beats,
    );
    let up = st.tasks.iter().map(|t| (label("task", &t.name), flag(t.state == crate::runtime::TaskState::Running))).collect();
    o.family("task_up", "1 while the task runs.", Kind::Gauge, None, up);
    if let Some(p) = &view.process {
        process_families(&mut o.0, p);
    }
    o.0
}

fn pressure_help(resource: &str, full: bool) -> &'static str {
    match (resource, full) {
        ("cpu", false) => "PSI: time at least one task waited for CPU (some total of /proc/pressure/cpu).",
        ("cpu", true) => "PSI: time all non-idle tasks waited for CPU at once (full total of /proc/pressure/cpu).",
        ("memory", false) => "PSI: time at least one task waited for memory (some total of /proc/pressure/memory).",
        ("memory", true) => "PSI: time all non-idle tasks stalled on memory at once (full total of /proc/pressure/memory).",
        ("io", false) => "PSI: time at least one task waited for I/O (some total of /proc/pressure/io).",
        _ => "PSI: time all non-idle tasks stalled on I/O at once (full total of /proc/pressure/io).",
    }
}

/// The standard `process_*` families of client libraries (client_golang's process collector:
/// same names, types and units), for the daemon itself.
fn process_families(out: &mut Vec<Family>, p: &crate::sys::proc_self::ProcessStats) {
    let mut one = |name: &str, help: &'static str, kind: Kind, unit: Option<&'static str>, v: f64| {
        let suffix = if kind == Kind::Counter { "_total" } else { "" };
        out.push(Family { name: name.into(), help, kind, unit, samples: vec![Sample { suffix, labels: Vec::new(), value: v }] });
    };
    one("process_cpu_seconds", "Total user and system CPU time spent in seconds.", Kind::Counter, SECONDS, p.cpu_seconds);
    one("process_resident_memory_bytes", "Resident memory size in bytes.", Kind::Gauge, BYTES, p.resident_memory_bytes as f64);
    one("process_virtual_memory_bytes", "Virtual memory size in bytes.", Kind::Gauge, BYTES, p.virtual_memory_bytes as f64);
    one("process_open_fds", "Number of open file descriptors.", Kind::Gauge, None, p.open_fds as f64);
    if let Some(max) = p.max_fds {
        one("process_max_fds", "Maximum number of open file descriptors.", Kind::Gauge, None, max as f64);
    }
    one("process_start_time_seconds", "Start time of the process since unix epoch in seconds.", Kind::Gauge, SECONDS, p.start_time_seconds);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_formats_name_counters_units_and_info_as_each_expects() {
        let mut o = Out(Vec::new());
        o.counter("swap_expansions", "Swap files added.", 3);
        o.gauge("memory_total", "Memory.", BYTES, 1024.0);
        o.family("build", "Version.", Kind::Info, None, vec![(label("version", "1.\"2\""), 1.0)]);
        let om = encode(&o.0, true);
        assert!(om.contains("# TYPE cluster_ai_swap_expansions counter\ncluster_ai_swap_expansions_total 3\n"), "{om}");
        assert!(om.contains("# UNIT cluster_ai_memory_total_bytes bytes\ncluster_ai_memory_total_bytes 1024\n"), "{om}");
        assert!(om.contains("# TYPE cluster_ai_build info\ncluster_ai_build_info{version=\"1.\\\"2\\\"\"} 1\n"), "{om}");
        assert!(om.ends_with("# EOF\n"));
        let text = encode(&o.0, false);
        assert!(text.contains("# TYPE cluster_ai_swap_expansions_total counter\ncluster_ai_swap_expansions_total 3\n"), "{text}");
        assert!(text.contains("# TYPE cluster_ai_build_info gauge\n") && !text.contains("# UNIT") && !text.contains("# EOF"), "{text}");
        assert_eq!(value(f64::INFINITY), "+Inf");
        assert_eq!(value(0.25), "0.25");
    }

    #[test]
    fn a_histogram_is_cumulative_and_ends_at_inf() {
        let mut h = Histogram::default();
        for v in [0.004, 0.012, 0.012, 20.0] {
            h.observe(v);
        }
        let c = h.cumulative();
        assert_eq!(c[0], (0.005, 1));
        assert_eq!(c[2], (0.025, 3));
        assert_eq!(*c.last().unwrap(), (f64::INFINITY, 4));
        assert_eq!(h.count, 4);
    }
}
