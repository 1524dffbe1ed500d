//! Property tests: Prometheus's answers to the status queries, and the table made of them.

use proptest::prelude::*;

use super::*;
use crate::testing::{json, text_like};

const VECTOR: &str = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"__name__":"up","instance":"gpu-1:9464","job":"cluster-ai"},"value":[1717000000.123,"1"]}]}}"#;
const MATRIX: &str = r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"instance":"gpu-1:9464"},"values":[[1717000000,"1"],[1717000015,"0"]]}]}}"#;
const ERROR: &str = r#"{"status":"error","errorType":"bad_data","error":"invalid parameter \"query\": 1:1: parse error"}"#;

/// A sample's value as Prometheus writes it (a string), or anything else.
fn sample() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec!["1", "0", "0.42", "NaN", "+Inf", "-Inf", "-1", "1e309", ""]).prop_map(|v| format!("\"{v}\"")),
        1 => json(),
    ]
}

fn node() -> impl Strategy<Value = Node> {
    let f = || prop::option::of(prop_oneof![any::<f64>(), Just(f64::NAN), Just(f64::INFINITY), -1.0..2.0f64]);
    let text = || prop_oneof!["[a-z0-9.:-]{1,20}", "\\PC{0,12}", "[\\x00-\\x1f\u{2028}a-z]{1,6}"];
    (
        text(),
        prop::option::of(text()),
        any::<bool>(),
        f(),
        f(),
        f(),
        prop::collection::vec(text(), 0..3),
        f(),
        prop::collection::vec(text(), 0..3),
    )
        .prop_map(
            |(instance, node, up, memory_used_ratio, swap_used_bytes, swap_total_bytes, services_down, last_seen_unix, alerts_firing)| {
                Node {
                    instance,
                    node,
                    version: None,
                    up,
                    memory_used_ratio,
                    swap_used_bytes,
                    swap_total_bytes,
                    services_down,
                    last_seen_unix,
                    alerts_firing,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_answer_is_results_or_an_error_on_one_line(body in prop_oneof![text_like(VECTOR), text_like(MATRIX), text_like(ERROR), json()]) {
        if let Err(e) = parse_query("up{job=\"cluster-ai\"}", body.as_bytes()) {
            prop_assert!(!e.contains('\n'), "{e}");
        }
    }

    /// Vectors and matrices with any labels and samples: one result each, its labels the text
    /// ones, its value the sample's number (NaN when it has none).
    #[test]
    fn results_carry_their_labels_and_values(results in prop::collection::vec((prop::collection::btree_map("[a-z_]{1,8}", json(), 0..4), sample(), any::<bool>()), 0..8)) {
        let listed: Vec<String> = results
            .iter()
            .map(|(labels, value, matrix)| {
                let metric = labels.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect::<Vec<_>>().join(",");
                if *matrix {
                    format!("{{\"metric\":{{{metric}}},\"values\":[[1717000000,{value}]]}}")
                } else {
                    format!("{{\"metric\":{{{metric}}},\"value\":[1717000000.5,{value}]}}")
                }
            })
            .collect();
        let body = format!("{{\"status\":\"success\",\"data\":{{\"resultType\":\"vector\",\"result\":[{}]}}}}", listed.join(","));
        let got = parse_query("q", body.as_bytes()).unwrap();
        prop_assert_eq!(got.len(), results.len());
        for ((labels, value, matrix), (got_labels, got_value)) in results.iter().zip(&got) {
            prop_assert_eq!(got_labels.len(), labels.len());
            let v: serde_json::Value = serde_json::from_str(value).unwrap();
            let n = v.as_str().and_then(|s| s.parse::<f64>().ok());
            let want = if *matrix { if n == Some(1.0) { Some(1717000000.0) } else { None } } else { n };
            match want {
                Some(w) if !w.is_nan() => prop_assert_eq!(*got_value, w),
                _ => prop_assert!(got_value.is_nan()),
            }
        }
    }

    /// Whatever the nodes say, the table is a header and one line per node, every cell
    /// printable: a percentage where there is a finite ratio, a size where there is one.
    #[test]
    fn the_table_is_one_line_per_node(nodes in prop::collection::vec(node(), 0..6), now in any::<f64>()) {
        let t = table(&nodes, now);
        let lines: Vec<&str> = t.lines().collect();
        prop_assert_eq!(lines.len(), 1 + nodes.len().max(1));
        prop_assert!(!t.trim_end().contains(|c: char| c.is_control() && c != '\n'), "{t:?}");
        for not_a_number in ["NaN%", "inf%", "NaNs ago", "infs ago"] {
            prop_assert!(!t.contains(not_a_number), "{t}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Prometheus's own error, whatever its words, is said on one line.
    #[test]
    fn an_error_answer_is_one_line(error_type in "[\\x00-\\x1f\\u{2028} a-z]{0,10}", error in "[\\x00-\\x1f\\u{2028} a-z\"]{0,30}") {
        let body = serde_json::json!({"status": "error", "errorType": error_type, "error": error}).to_string();
        let e = parse_query("up", body.as_bytes()).unwrap_err();
        prop_assert!(!e.contains(char::is_control), "{e:?}");
    }
}
