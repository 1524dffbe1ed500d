//! Property tests: the answers the probes read from peers (a container's state), on any body
//! and on answers of the right shape with any values.

use proptest::prelude::*;

use super::*;
use crate::testing::{json, text_like};

const INSPECT: &str = r#"{"Id":"4fa6e0f0c678","Name":"/open-webui","State":{"Status":"running","Running":true,"Paused":false,"OOMKilled":false,"Pid":4242,"ExitCode":0,"Health":{"Status":"healthy","FailingStreak":0,"Log":[]}},"Config":{"Image":"ghcr.io/open-webui/open-webui:main"}}"#;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

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
