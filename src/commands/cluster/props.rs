//! Property tests: Prometheus's answers to the status queries.

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
