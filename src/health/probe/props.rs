//! Property tests: the answers the probes read from peers (a Dask scheduler's identity, a
//! container's state), on any body and on answers of the right shape with any values.

use proptest::prelude::*;

use super::*;
use crate::testing::{json, peak_heap, text_like};

const IDENTITY: &str = r#"{"type":"Scheduler","id":"Scheduler-1","address":"tcp://127.0.0.1:8786","workers":{"tcp://127.0.0.1:40001":{"type":"Worker","id":"w1","host":"127.0.0.1","name":"w1","nthreads":1,"memory_limit":1073741824},"tcp://127.0.0.1:40002":{"type":"Worker","id":"x","name":0,"nthreads":1}}}"#;
const INSPECT: &str = r#"{"Id":"4fa6e0f0c678","Name":"/open-webui","State":{"Status":"running","Running":true,"Paused":false,"OOMKilled":false,"Pid":4242,"ExitCode":0,"Health":{"Status":"healthy","FailingStreak":0,"Log":[]}},"Config":{"Image":"ghcr.io/open-webui/open-webui:main"}}"#;

/// The most an identity answer of `len` bytes may hold while read: the strings kept are parts
/// of it, and at most MAX_WORKERS entries of the map.
fn within(len: usize, peak: usize) -> bool {
    peak <= 2 * len + MAX_WORKERS * 192
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_identity_is_workers_or_an_error_within_bounds(body in prop_oneof![text_like(IDENTITY), json()]) {
        let (r, peak) = peak_heap(|| parse_identity(body.as_bytes()));
        prop_assert!(within(body.len(), peak), "{peak} bytes held for {}", body.len());
        if let Ok(w) = r {
            prop_assert!(w.len() <= MAX_WORKERS);
        }
    }

    /// Each worker by its address, named by its name when that is text or a number, else by
    /// its address.
    #[test]
    fn workers_are_named_by_their_names_or_addresses(workers in prop::collection::btree_map("tcp://[0-9.]{1,15}:[0-9]{1,5}", json(), 0..12)) {
        let listed: Vec<String> = workers.iter().map(|(a, name)| format!("\"{a}\":{{\"type\":\"Worker\",\"name\":{name},\"nthreads\":1}}")).collect();
        let body = format!("{{\"type\":\"Scheduler\",\"workers\":{{{}}}}}", listed.join(","));
        let got = parse_identity(body.as_bytes()).unwrap();
        let want: BTreeMap<String, String> = workers
            .iter()
            .map(|(a, name)| {
                let v: serde_json::Value = serde_json::from_str(name).unwrap();
                let name = match v {
                    serde_json::Value::String(s) => s,
                    serde_json::Value::Number(n) => n.to_string(),
                    _ => a.clone(),
                };
                (a.clone(), name)
            })
            .collect();
        prop_assert_eq!(got, want);
    }

    /// Healthy only when running and not unhealthy; the detail on one line, short, whatever
    /// Docker's words are.
    #[test]
    fn a_container_is_healthy_only_when_running_and_not_unhealthy(
        body in prop_oneof![
            text_like(INSPECT),
            json(),
            (json(), json(), prop::option::of(json()))
                .prop_map(|(status, running, health)| {
                    let health = health.map(|h| format!(",\"Health\":{{\"Status\":{h}}}")).unwrap_or_default();
                    format!("{{\"State\":{{\"Status\":{status},\"Running\":{running}{health}}}}}")
                }),
        ],
    ) {
        let r = container_state("web", body.as_bytes());
        let detail = match &r {
            Ok(d) | Err(d) => d,
        };
        prop_assert!(!detail.contains(char::is_control), "{detail:?}");
        if r.is_ok() {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            prop_assert_eq!(v["State"]["Running"].as_bool(), Some(true));
            prop_assert!(v["State"]["Health"]["Status"].as_str() != Some("unhealthy"));
        }
    }
}

/// The identity answers that cost most per byte at MAX_BODY: a worker per seven bytes, a name
/// that is a deep array of arrays. Refused past MAX_WORKERS, within bounds either way.
#[test]
fn the_largest_identities_are_read_within_bounds() {
    let max = crate::sys::http::MAX_BODY;
    let mut many = String::from("{\"workers\":{");
    let mut i = 0u64;
    while many.len() < max - 16 {
        many += &format!("\"{i:x}\":{{}},");
        i += 1;
    }
    let many = many.trim_end_matches(',').to_string() + "}}";
    let nested = format!("{{\"workers\":{{\"tcp://a:1\":{{\"name\":[{}]}}}}}}", vec!["[]"; (max - 64) / 3].join(","));
    for (body, ok) in [(many, false), (nested, true)] {
        let (r, peak) = peak_heap(|| parse_identity(body.as_bytes()));
        assert_eq!(r.is_ok(), ok, "{:?}", r.map(|w| w.len()));
        assert!(within(body.len(), peak), "{} MiB held for {} MiB", peak >> 20, body.len() >> 20);
    }
}
