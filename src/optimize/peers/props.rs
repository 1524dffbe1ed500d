//! Property tests: each peer answer's parser on any body, on mutations of real answers, and on
//! answers of the right shape with any values; never more than twice the body in memory (the
//! answers come while memory is short, from a port any local user may have bound).

use proptest::prelude::*;

use super::*;
use crate::sys::http::MAX_BODY;
use crate::testing::{json, peak_heap, text_like};

const WORKERS: &str = r#"{"workers":[{"name":"tcp://127.0.0.1:40001","address":"tcp://127.0.0.1:40001","nthreads":2,"memory_limit":4294967296},{"name":0,"address":"tcp://10.0.0.5:40002","nthreads":1}]}"#;
const RETIRED: &str =
    r#"{"tcp://127.0.0.1:40001":{"type":"Worker","id":"w1","host":"127.0.0.1","name":0,"nthreads":1,"memory_limit":1073741824}}"#;
const PS: &str = r#"{"models":[{"name":"llama3:8b","model":"llama3:8b","size":5137025024,"digest":"365c0bd3c000","details":{"format":"gguf","families":["llama"],"parameter_size":"8.0B"},"expires_at":"2024-06-04T14:38:31.83753-07:00","size_vram":5137025024}]}"#;
const IMAGES: &str = r#"{"ImagesDeleted":[{"Untagged":"x:latest"},{"Deleted":"sha256:3f57d9401f8d42f986df300f0c69192fc41da28ccc8d797829467780db3dd741"}],"SpaceReclaimed":1234}"#;
const CACHE: &str = r#"{"CachesDeleted":["ujpxmm7prcnw9n2hxn6ey8e","kq2m0w2t4o0x1d3f"],"SpaceReclaimed":2048}"#;

/// Each parser on `body`, with the most heap it held (the body itself not counted).
fn every_parser(body: &[u8]) -> Vec<(&'static str, bool, usize)> {
    let mut out = Vec::new();
    let (r, peak) = peak_heap(|| parse_worker_count(body));
    out.push(("workers", r.is_ok(), peak));
    let (r, peak) = peak_heap(|| parse_retired(body));
    out.push(("retired", r.is_ok(), peak));
    let (r, peak) = peak_heap(|| parse_loaded(body));
    out.push(("loaded", r.is_ok(), peak));
    let (r, peak) = peak_heap(|| parse_pruned_images(body));
    out.push(("images", r.is_ok(), peak));
    let (r, peak) = peak_heap(|| parse_pruned_cache(body));
    out.push(("cache", r.is_ok(), peak));
    out
}

/// What a parser may hold for a body of `len` bytes: the strings it keeps are parts of it.
fn within(len: usize, peak: usize) -> bool {
    peak <= 2 * len + (64 << 10)
}

fn any_answer() -> impl Strategy<Value = String> {
    prop_oneof![text_like(WORKERS), text_like(RETIRED), text_like(PS), text_like(IMAGES), text_like(CACHE), json()]
}

/// A model as Ollama lists it, its size any JSON number (or not a number).
fn model() -> impl Strategy<Value = (String, String, String)> {
    let size = prop_oneof![4 => any::<u64>().prop_map(|n| n.to_string()), 1 => json()];
    ("\\PC{0,12}", size, prop_oneof![Just(String::new()), "20[0-9]{2}-0[1-9]-1[0-9]T0[0-9]:00:00Z"])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_answer_is_read_or_garbage_within_twice_its_size(body in any_answer()) {
        for (parser, _, peak) in every_parser(body.as_bytes()) {
            prop_assert!(within(body.len(), peak), "{parser}: {peak} bytes held for {}", body.len());
        }
    }

    /// Workers are counted when every one has an address; any other field may hold anything.
    #[test]
    fn workers_are_counted(workers in prop::collection::vec((prop_oneof![3 => "\"tcp://[0-9.:]{1,20}\"".prop_map(String::from), 1 => json()], json()), 0..12)) {
        let listed: Vec<String> = workers.iter().map(|(address, name)| format!("{{\"name\":{name},\"address\":{address},\"nthreads\":2}}")).collect();
        let body = format!("{{\"workers\":[{}]}}", listed.join(","));
        let all_addressed = workers.iter().all(|(a, _)| serde_json::from_str::<String>(a).is_ok());
        match parse_worker_count(body.as_bytes()) {
            Ok(n) => prop_assert_eq!(n, workers.len()),
            Err(e) => prop_assert!(!all_addressed, "{e}: {body}"),
        }
    }

    /// What was retired is counted, and at most a few addresses are shown, each on one line.
    #[test]
    fn retired_workers_are_counted_and_a_few_shown(retired in prop::collection::btree_map(any::<String>(), json(), 0..12)) {
        let listed: Vec<String> = retired.iter().map(|(k, v)| format!("{}:{v}", serde_json::to_string(k).unwrap())).collect();
        let body = format!("{{{}}}", listed.join(","));
        let r = parse_retired(body.as_bytes()).unwrap();
        prop_assert_eq!(r.count, retired.len());
        prop_assert_eq!(r.shown.len(), retired.len().min(RETIRED_SHOWN));
        prop_assert!(r.shown.iter().all(|a| !a.contains(char::is_control) && a.chars().count() <= 10 * 121));
    }

    /// The largest models, as a full sort would give them: largest first, then soonest to expire.
    #[test]
    fn the_largest_models_are_kept(models in prop::collection::vec(model(), 0..20)) {
        let listed: Vec<String> = models
            .iter()
            .map(|(name, size, expires)| format!("{{\"name\":{},\"size\":{size},\"expires_at\":\"{expires}\",\"details\":{{}}}}", serde_json::to_string(name).unwrap()))
            .collect();
        let body = format!("{{\"models\":[{}]}}", listed.join(","));
        let sizes: Option<Vec<u64>> = models.iter().map(|(_, size, _)| serde_json::from_str::<u64>(size).ok()).collect();
        match (parse_loaded(body.as_bytes()), sizes) {
            (Ok(l), Some(sizes)) => {
                let mut all: Vec<(u64, &str, &str)> = models.iter().zip(&sizes).map(|((n, _, e), s)| (*s, e.as_str(), n.as_str())).collect();
                all.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
                let want: Vec<(u64, &str, &str)> = all.into_iter().take(MODELS_KEPT).collect();
                let got: Vec<(u64, &str, &str)> = l.largest.iter().map(|m| (m.size, m.expires_at.as_str(), m.name.as_str())).collect();
                prop_assert_eq!(l.total, models.len());
                prop_assert_eq!(got, want);
            }
            (Err(_), None) => {}
            (r, sizes) => prop_assert!(false, "{r:?} for sizes {sizes:?}"),
        }
    }

    /// Docker counts what it deleted: images with a "Deleted" entry, every cache record.
    #[test]
    fn prunes_count_what_was_deleted(entries in prop::collection::vec((any::<bool>(), json()), 0..12), bytes in any::<u64>(), null in any::<bool>()) {
        let listed: Vec<String> = entries.iter().map(|(deleted, v)| format!("{{\"{}\":{v}}}", if *deleted { "Deleted" } else { "Untagged" })).collect();
        let list = if null { "null".to_string() } else { format!("[{}]", listed.join(",")) };
        let images = parse_pruned_images(format!("{{\"ImagesDeleted\":{list},\"SpaceReclaimed\":{bytes}}}").as_bytes()).unwrap();
        let deleted = if null { 0 } else { entries.iter().filter(|(d, _)| *d).count() };
        prop_assert_eq!(images, Pruned { items: deleted, bytes });
        let cache = parse_pruned_cache(format!("{{\"CachesDeleted\":{list},\"SpaceReclaimed\":{bytes}}}").as_bytes()).unwrap();
        prop_assert_eq!(cache, Pruned { items: if null { 0 } else { entries.len() }, bytes });
    }
}

/// Answers of MAX_BODY in the shapes that cost most per byte (many tiny elements, names that
/// are deep arrays): each parser within twice the body.
#[test]
fn the_largest_answers_are_read_within_twice_their_size() {
    let many = |open: &str, item: &str, close: &str| {
        let n = (MAX_BODY - open.len() - close.len()) / (item.len() + 1);
        format!("{open}{}{close}", vec![item; n].join(","))
    };
    type Parses = fn(&[u8]) -> bool;
    let answers: [(String, Parses); 5] = [
        (many("{\"workers\":[", "{\"address\":\"\",\"name\":[[]]}", "]}"), |b| parse_worker_count(b).is_ok()),
        (many("{\"models\":[", "{\"name\":\"\"}", "]}"), |b| parse_loaded(b).is_ok()),
        (many("{\"ImagesDeleted\":[", "{}", "],\"SpaceReclaimed\":1}"), |b| parse_pruned_images(b).is_ok()),
        (many("{\"CachesDeleted\":[", "[]", "],\"SpaceReclaimed\":1}"), |b| parse_pruned_cache(b).is_ok()),
        (many("{", "\"\":{}", "}"), |b| parse_retired(b).is_ok()),
    ];
    for (body, parse) in answers {
        let (ok, peak) = peak_heap(|| parse(body.as_bytes()));
        assert!(ok && within(body.len(), peak), "{} MiB held for {} MiB", peak >> 20, body.len() >> 20);
    }
}
