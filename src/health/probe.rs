//! The probes: an HTTP GET with an expected status and body, a TCP connect, Docker's `/_ping`,
//! and the Dask scheduler's list of workers. Each has a deadline; none blocks the runtime.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use serde::{Deserialize, Serialize};

use crate::config::Probe;
use crate::sys::http::{self, Endpoint};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeResult {
    pub ok: bool,
    /// "200 ok", "no answer within 5s", "cannot connect: Connection refused".
    pub detail: String,
    pub latency_ms: f64,
    pub at_unix_ms: u64,
    /// The probe could not be made for want of this process's own resources (every file
    /// descriptor taken: [`http::is_own_shortage`]); `ok` is false but says nothing of the
    /// service, which is not judged by it (Kubernetes's Unknown result: no action is taken).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unknown: bool,
}

pub async fn run(probe: &Probe, timeout: Duration) -> ProbeResult {
    let start = Instant::now();
    let outcome = match probe {
        Probe::Http { url, status, body } => http_probe(url, *status, body.as_deref(), timeout).await,
        Probe::Tcp { addr } => match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr.as_str())).await {
            Err(_) => Err(format!("no connection within {}", crate::config::format_duration(timeout)).into()),
            Ok(Err(e)) => Err(http::connect_error(e).into()),
            Ok(Ok(_)) => Ok("connected".to_string()),
        },
        Probe::Docker { socket } => match http::request(&Endpoint::Unix(socket.clone()), "GET", "/_ping", None, timeout).await {
            Ok(r) if r.status == 200 && &r.body[..] == b"OK" => Ok("OK".to_string()),
            Ok(r) => Err(format!("{} {}", r.status, r.snippet()).into()),
            Err(e) => Err(e.into()),
        },
        Probe::Container { name, socket } => container(socket, name, timeout).await,
    };
    let latency_ms = start.elapsed().as_secs_f64() * 1000.0;
    let at_unix_ms = crate::sys::unix_ms();
    match outcome {
        Ok(detail) => ProbeResult { ok: true, detail, latency_ms, at_unix_ms, unknown: false },
        Err(Failed { detail, unknown }) => ProbeResult { ok: false, detail, latency_ms, at_unix_ms, unknown },
    }
}

/// A probe that did not pass: why, and whether it says nothing of the service
/// ([`ProbeResult::unknown`]).
struct Failed {
    detail: String,
    unknown: bool,
}

impl From<String> for Failed {
    fn from(detail: String) -> Failed {
        Failed { detail, unknown: false }
    }
}

impl From<http::HttpError> for Failed {
    fn from(e: http::HttpError) -> Failed {
        Failed { unknown: matches!(e, http::HttpError::Local(_)), detail: e.to_string() }
    }
}

async fn http_probe(url: &str, status: u16, body: Option<&str>, timeout: Duration) -> Result<String, Failed> {
    let ep = Endpoint::parse_url(url)?;
    let r = http::request(&ep, "GET", "", None, timeout).await?;
    if r.status != status {
        return Err(format!("status {} (expected {status}): {}", r.status, r.snippet()).into());
    }
    if let Some(want) = body {
        if !String::from_utf8_lossy(&r.body).contains(want) {
            return Err(format!("the answer does not contain {want:?}: {}", r.snippet()).into());
        }
    }
    Ok(format!("{} {}", r.status, r.snippet().chars().take(40).collect::<String>()))
}

/// A container's state from `GET /containers/NAME/json`: ok when running and not "unhealthy"
/// by its own health check ("starting" counts as ok: its check has not decided yet).
async fn container(socket: &std::path::Path, name: &str, timeout: Duration) -> Result<String, Failed> {
    let ep = Endpoint::Unix(socket.to_path_buf());
    let r = http::request(&ep, "GET", &format!("/containers/{name}/json"), None, timeout).await?;
    if r.status == 404 {
        return Err(format!("no container named {name}").into());
    }
    if !r.ok() {
        return Err(format!("{} {}", r.status, r.snippet()).into());
    }
    Ok(container_state(name, &r.body)?)
}

/// Docker's inspect answer: ok when running and not unhealthy, with its status (and health)
/// said in a few escaped words.
fn container_state(name: &str, body: &[u8]) -> Result<String, String> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("not Docker's answer: {}", crate::sys::json::error_text(&e)))?;
    let state = &v["State"];
    let status = state["Status"].as_str().unwrap_or("unknown");
    let health = state["Health"]["Status"].as_str();
    // Docker's words go into the probe's detail, so into logs and alerts: one line, short.
    let word = |w: &str| crate::sys::one_line(w, 40);
    let text = match health {
        Some(h) => format!("{}, health {}", word(status), word(h)),
        None => word(status),
    };
    if state["Running"].as_bool() == Some(true) && health != Some("unhealthy") {
        Ok(text)
    } else {
        Err(format!("container {name} is {text}"))
    }
}

/// A service's probe, and what the scheduler says of its workers when `workers` (min_workers)
/// or `local_worker` asks: a scheduler that answers but lists no worker of this node fails the
/// probe (so the policy restarts the service's unit: the worker, on a worker node).
pub async fn run_with_workers(
    probe: &Probe,
    timeout: Duration,
    workers: bool,
    local_worker: bool,
) -> (ProbeResult, Option<Result<BTreeMap<String, String>, String>>) {
    let mut r = run(probe, timeout).await;
    let Probe::Http { url, .. } = probe else { return (r, None) };
    if !r.ok || !(workers || local_worker) {
        return (r, None);
    }
    let w = match dask_workers(url, timeout).await {
        // Not asked at all (the daemon's own shortage): the probe says nothing either.
        Err(Failed { detail, unknown: true }) => {
            return (ProbeResult { ok: false, detail, unknown: true, ..r }, None);
        }
        w => w.map_err(|f| f.detail),
    };
    if local_worker {
        let verdict = match &w {
            Ok(all) if all.iter().any(|(addr, name)| ThisNode::of(&crate::sys::node::RealNode).has(addr, name)) => None,
            Ok(all) => Some(format!("no worker of this node among the scheduler's {} worker(s)", all.len())),
            Err(e) => Some(format!("cannot read the scheduler's workers: {e}")),
        };
        if let Some(detail) = verdict {
            r.ok = false;
            r.detail = detail;
        }
    }
    (r, workers.then_some(w))
}

/// This machine as a Dask worker's address may name it: every interface's address, and the
/// hostname.
pub struct ThisNode {
    addrs: Vec<std::net::IpAddr>,
    hostname: String,
}

impl ThisNode {
    /// What `node` says of itself.
    pub fn of(node: &dyn crate::sys::node::Node) -> ThisNode {
        ThisNode { addrs: node.local_addresses(), hostname: node.hostname() }
    }

    /// Whether the worker at `address` ("tcp://10.0.0.5:40001") named `name` runs here.
    pub fn has(&self, address: &str, name: &str) -> bool {
        let rest = address.split_once("://").map_or(address, |(_, r)| r);
        let host = rest.rsplit_once(':').map_or(rest, |(h, _)| h).trim_start_matches('[').trim_end_matches(']');
        let short = |h: &str| h.split('.').next().unwrap_or(h).to_string();
        let by_address = match host.parse::<std::net::IpAddr>() {
            Ok(ip) => self.addrs.contains(&ip),
            Err(_) => !host.is_empty() && short(host) == short(&self.hostname),
        };
        by_address || (!name.is_empty() && name == self.hostname)
    }
}

/// `POST /containers/NAME/restart` (Docker stops it, waiting up to 10 s, and starts it).
pub async fn restart_container(socket: &std::path::Path, name: &str) -> Result<(), String> {
    let ep = Endpoint::Unix(socket.to_path_buf());
    let r = http::request(&ep, "POST", &format!("/containers/{name}/restart?t=10"), None, Duration::from_secs(30))
        .await
        .map_err(|e| e.to_string())?;
    if r.ok() {
        Ok(())
    } else {
        Err(format!("{} {}", r.status, r.snippet()))
    }
}

/// The scheduler's workers, name by address, from `/json/identity.json` (always served).
async fn dask_workers(url: &str, timeout: Duration) -> Result<BTreeMap<String, String>, Failed> {
    let origin = Endpoint::parse_url(url)?.origin();
    let r = http::request(&origin, "GET", "/json/identity.json", None, timeout).await?;
    if !r.ok() {
        return Err(format!("/json/identity.json: status {}: {}", r.status, r.snippet()).into());
    }
    Ok(parse_identity(&r.body)?)
}

/// Workers read of one identity answer at most. A real worker's entry is hundreds of bytes
/// (its host, resources, metrics, services), so a scheduler's answer within MAX_BODY lists far
/// fewer; a longer list is not a scheduler's, and is refused rather than kept.
const MAX_WORKERS: usize = 16_384;

#[derive(Deserialize)]
struct Identity {
    #[serde(default)]
    workers: Workers,
}

/// The workers, name by address.
#[derive(Default)]
struct Workers(BTreeMap<String, String>);

impl<'de> Deserialize<'de> for Workers {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let workers = crate::sys::json::each_entry(d, BTreeMap::new(), |workers, address: String, w: WorkerIdentity| {
            let name = w.name.0.unwrap_or_else(|| address.clone());
            workers.insert(address, name);
            if workers.len() > MAX_WORKERS {
                return Err(format!("more than {MAX_WORKERS} workers"));
            }
            Ok(())
        })?;
        Ok(Workers(workers))
    }
}

#[derive(Deserialize)]
struct WorkerIdentity {
    #[serde(default)]
    name: Name,
}

/// A worker's name as text: Dask names a worker with a string or a number. Anything else is
/// skipped as it is read, never built, and the worker goes by its address.
#[derive(Default)]
struct Name(Option<String>);

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Text;
        impl<'de> serde::de::Visitor<'de> for Text {
            type Value = Name;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a worker's name")
            }

            fn visit_str<E>(self, v: &str) -> Result<Name, E> {
                Ok(Name(Some(v.to_string())))
            }

            fn visit_u64<E>(self, v: u64) -> Result<Name, E> {
                Ok(Name(Some(v.to_string())))
            }

            fn visit_i64<E>(self, v: i64) -> Result<Name, E> {
                Ok(Name(Some(v.to_string())))
            }

            fn visit_f64<E>(self, v: f64) -> Result<Name, E> {
                Ok(Name(serde_json::Number::from_f64(v).map(|n| n.to_string())))
            }

            fn visit_bool<E>(self, _: bool) -> Result<Name, E> {
                Ok(Name(None))
            }

            fn visit_unit<E>(self) -> Result<Name, E> {
                Ok(Name(None))
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Name, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(Name(None))
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Name, A::Error> {
                while map.next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?.is_some() {}
                Ok(Name(None))
            }
        }
        d.deserialize_any(Text)
    }
}

fn parse_identity(body: &[u8]) -> Result<BTreeMap<String, String>, String> {
    let id: Identity = serde_json::from_slice(body)
        .map_err(|e| format!("/json/identity.json is not what a Dask scheduler sends: {}", crate::sys::json::error_text(&e)))?;
    Ok(id.workers.0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_worker_of_this_node_by_address_or_name() {
        let here = super::ThisNode { addrs: vec!["10.0.0.5".parse().unwrap(), "::1".parse().unwrap()], hostname: "gpu-1".into() };
        assert!(here.has("tcp://10.0.0.5:40001", "w"));
        assert!(here.has("tls://[::1]:40001", "w"));
        assert!(here.has("tcp://gpu-1.lan:40001", "w"));
        assert!(here.has("tcp://10.0.0.9:40001", "gpu-1"));
        assert!(!here.has("tcp://10.0.0.9:40001", "gpu-2"));
        assert!(!here.has("tcp://gpu-2:40001", "w"));
        assert!(super::ThisNode::of(&crate::sys::node::RealNode).has("tcp://127.0.0.1:1", ""), "loopback is this machine's");
    }

    #[test]
    fn dask_identity_names_workers_by_address() {
        let body = br#"{"type":"Scheduler","id":"Scheduler-1","address":"tcp://127.0.0.1:8786","workers":{
            "tcp://127.0.0.1:40001":{"type":"Worker","id":"w1","host":"127.0.0.1","name":"w1","nthreads":1,"memory_limit":1073741824},
            "tcp://127.0.0.1:40002":{"type":"Worker","id":"x","host":"127.0.0.1","name":0,"nthreads":1}}}"#;
        let w = super::parse_identity(body).unwrap();
        assert_eq!(w["tcp://127.0.0.1:40001"], "w1");
        assert_eq!(w["tcp://127.0.0.1:40002"], "0");
        assert!(super::parse_identity(b"<html>").unwrap_err().contains("not what a Dask scheduler sends"));
    }
}

#[cfg(test)]
mod props;
