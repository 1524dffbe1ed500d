//! Property tests: the queue file read back whatever it holds. A file that is a queue gives a
//! bounded queue of bounded alerts; any other is set aside byte for byte (or left where it is),
//! never overwritten; reading holds at most a few times the file in memory.

use proptest::prelude::*;

use super::*;
use crate::alerts::{AlertKey, Severity};
use crate::testing::{peak_heap, piece, scratch_dir, text, text_like};

fn alert() -> impl Strategy<Value = Alert> {
    let state = prop::sample::select(vec![AlertState::Firing, AlertState::Resolved, AlertState::Notice]);
    let labels =
        prop_oneof![4 => prop::collection::btree_map(piece(), piece(), 0..4), 1 => prop::collection::btree_map(piece(), piece(), 16..40)];
    (piece(), state, piece(), text(), piece(), any::<u64>(), prop::option::of(any::<u64>()), labels).prop_map(
        |(key, state, severity, summary, node, starts_at_unix_ms, ends_at_unix_ms, labels)| Alert {
            key,
            state,
            severity,
            summary,
            node,
            starts_at_unix_ms,
            ends_at_unix_ms,
            labels,
        },
    )
}

fn delivery() -> impl Strategy<Value = Delivery> {
    let channel = prop::sample::select(vec![Channel::Webhook, Channel::Alertmanager, Channel::Email]);
    (any::<u64>(), channel, alert(), any::<u32>(), any::<u64>(), prop::option::of(text())).prop_map(
        |(id, channel, alert, attempts, next_try_unix_ms, last_error)| Delivery {
            id,
            channel,
            alert,
            attempts,
            next_try_unix_ms,
            last_error,
        },
    )
}

/// A queue file as the daemon writes it.
fn queue_file() -> impl Strategy<Value = String> {
    prop::collection::vec(delivery(), 0..6).prop_map(|d| serde_json::to_string(&d).unwrap())
}

/// What may be found at the queue's path.
#[derive(Debug, Clone)]
enum Found {
    Nothing,
    File(Vec<u8>),
    /// Something that is not a file and cannot be moved aside with a hard link.
    Directory,
}

fn found() -> impl Strategy<Value = Found> {
    prop_oneof![
        1 => Just(Found::Nothing),
        1 => Just(Found::Directory),
        4 => queue_file().prop_map(|t| Found::File(t.into_bytes())),
        4 => queue_file().prop_flat_map(|t| text_like(&t)).prop_map(|t| Found::File(t.into_bytes())),
        2 => prop::collection::vec(any::<u8>(), 0..2000).prop_map(Found::File),
        1 => prop::sample::select(vec!["", "[]", "{}", "null", "[1]", "[{}]", "[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]", "[{\"id\":1}]"])
            .prop_map(|t| Found::File(t.as_bytes().to_vec())),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_queue_file_is_read_bounded_or_set_aside_never_overwritten(found in found(), max in prop_oneof![1usize..5, Just(1000)]) {
        let dir = scratch_dir();
        let path = dir.path().join(FILE_NAME);
        let len = match &found {
            Found::Nothing => 0,
            Found::File(bytes) => {
                std::fs::write(&path, bytes).unwrap();
                bytes.len()
            }
            Found::Directory => {
                std::fs::create_dir(&path).unwrap();
                0
            }
        };
        let ((mut q, problem), peak) = peak_heap(|| Queue::load(Some(path.clone()), max));
        prop_assert!(peak <= 4 * len + (64 << 10), "{peak} bytes held to read {len}");
        prop_assert!(q.len() <= max);
        let mut ids: Vec<u64> = q.iter().map(|d| d.id).collect();
        ids.sort_unstable();
        ids.dedup();
        prop_assert_eq!(ids.len(), q.len(), "ids are unique");
        for d in q.iter() {
            let a = &d.alert;
            prop_assert!(a.labels.len() <= super::super::MAX_LABELS, "{} labels", a.labels.len());
            let texts = [&a.key, &a.severity, &a.node, &a.summary].into_iter().chain(a.labels.keys()).chain(a.labels.values());
            for t in texts {
                prop_assert!(!t.contains(char::is_control) && t.len() <= 10 * super::super::MAX_SUMMARY + 3, "{t:?}");
            }
            if let Some(e) = &d.last_error {
                prop_assert!(!e.contains(char::is_control) && e.chars().count() <= super::super::MAX_ANSWER + 1, "{e:?}");
            }
        }
        match (&found, &problem) {
            (Found::Nothing, None) => prop_assert!(!path.exists()),
            (Found::File(bytes), None) => prop_assert_eq!(&std::fs::read(&path).unwrap(), bytes, "read, not rewritten"),
            (Found::File(bytes), Some(p)) => {
                prop_assert!(p.contains(".bad"), "{p}");
                prop_assert_eq!(&std::fs::read(dir.path().join(format!("{FILE_NAME}.bad"))).unwrap(), bytes, "set aside whole");
                if q.is_empty() {
                    prop_assert!(!path.exists());
                } else {
                    // The good entries beside the bad are kept, and written back at once.
                    prop_assert!(p.ends_with(&format!("the {} good one(s) kept in the queue", q.len())), "{p}");
                    q.save().unwrap();
                    let (again, problem) = Queue::load(Some(path.clone()), max);
                    prop_assert_eq!(problem, None);
                    prop_assert_eq!(again.iter().map(|d| &d.alert).collect::<Vec<_>>(), q.iter().map(|d| &d.alert).collect::<Vec<_>>());
                }
            }
            (Found::Directory, Some(p)) => prop_assert!(q.is_empty() && p.contains("kept in memory only"), "{p}"),
            (found, problem) => prop_assert!(false, "{found:?}: {problem:?}"),
        }
        // Saving afterwards never replaces what could not be read.
        q.push(Delivery::new(Channel::Webhook, Alert::firing(AlertKey::Test, Severity::Info, "x")));
        q.save().unwrap();
        if let Found::Directory = found {
            prop_assert!(path.is_dir());
        }
    }
}

/// Files at and around MAX_BYTES: a queue that fits is read (as bounded as any), one byte more
/// is set aside, whether it is a queue or not.
#[test]
fn files_at_the_size_limit() {
    let one =
        serde_json::to_string(&Delivery::new(Channel::Email, Alert::firing(AlertKey::Other("k".into()), Severity::Critical, "s"))).unwrap();
    for size in [MAX_BYTES - 1, MAX_BYTES, MAX_BYTES + 1] {
        for valid in [true, false] {
            let mut text = if valid { format!("[{one}]") } else { format!("[{one}") };
            text.push_str(&" ".repeat(size - text.len()));
            let dir = scratch_dir();
            let path = dir.path().join(FILE_NAME);
            std::fs::write(&path, &text).unwrap();
            let ((q, problem), peak) = peak_heap(|| Queue::load(Some(path.clone()), 10));
            assert!(peak <= 2 * size, "{peak} for {size}");
            if valid && size <= MAX_BYTES {
                assert_eq!((q.len(), problem), (1, None));
            } else {
                assert!(q.is_empty() && problem.as_deref().is_some_and(|p| p.contains("set aside")), "{size} {valid}: {problem:?}");
                assert_eq!(std::fs::read(dir.path().join(format!("{FILE_NAME}.bad"))).unwrap(), text.as_bytes());
            }
        }
    }
}

/// The largest queue files of the shapes that cost most to read: one alert with a label per few
/// bytes (a file edited by hand, or by another program), the smallest deliveries one after
/// another, and one string as large as the file (escapes in it, so the parser copies it). Read
/// in at most 4x the file, holding the labels and text kept, not the million in the file.
#[test]
fn the_largest_files_are_read_in_a_few_times_their_size() {
    let labels = {
        let mut text = String::from(
            r#"[{"channel":"email","alert":{"key":"k","state":"firing","severity":"info","summary":"s","starts_at_unix_ms":0,"labels":{"#,
        );
        let mut i = 0u64;
        while text.len() < MAX_BYTES - 100 {
            text += &format!("\"{i:x}\":\"\",");
            i += 1;
        }
        text.trim_end_matches(',').to_string() + r#"}},"attempts":0,"next_try_unix_ms":0}]"#
    };
    let least = r#"{"channel":"email","alert":{"key":"","state":"firing","severity":"","summary":"","starts_at_unix_ms":0},"attempts":0,"next_try_unix_ms":0}"#;
    let deliveries = format!("[{}]", vec![least; (MAX_BYTES - 2) / (least.len() + 1)].join(","));
    let string = {
        let head = r#"[{"channel":"email","attempts":0,"next_try_unix_ms":0,"alert":{"key":"k","state":"firing","severity":"info","summary":"s","starts_at_unix_ms":0},"last_error":""#;
        let piece = "\\u001b[2J\\n\\u00e9x";
        head.to_string() + &piece.repeat((MAX_BYTES - head.len() - 10) / piece.len()) + r#""}]"#
    };
    for (text, max, kept) in [(labels, 10, 1), (deliveries, 1000, 1000), (string, 10, 1)] {
        let dir = scratch_dir();
        let path = dir.path().join(FILE_NAME);
        std::fs::write(&path, &text).unwrap();
        let ((q, problem), peak) = peak_heap(|| Queue::load(Some(path), max));
        assert_eq!((q.len(), problem), (kept, None));
        assert!(q.iter().all(|d| d.alert.labels.len() <= super::super::MAX_LABELS));
        assert!(peak <= 4 * text.len(), "{} MiB held to read {} MiB", peak >> 20, text.len() >> 20);
    }
}
