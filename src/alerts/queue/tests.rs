use super::*;
use crate::alerts::{AlertKey, Severity};

fn delivery(channel: Channel, key: &str, at: u64) -> Delivery {
    let mut d = Delivery::new(channel, Alert::firing(AlertKey::Other(key.into()), Severity::Critical, key));
    d.next_try_unix_ms = at;
    d
}

fn keys(q: &Queue) -> Vec<&str> {
    q.iter().map(|d| d.alert.key.as_str()).collect()
}

#[test]
fn bounded_ordered_per_channel_and_kept_across_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    let (mut q, problem) = Queue::load(Some(path.clone()), 3);
    assert_eq!(problem, None);
    q.push(delivery(Channel::Webhook, "a", 0));
    q.push(delivery(Channel::Alertmanager, "b", 0));
    q.push(delivery(Channel::Webhook, "c", 0));
    let shed = q.push(delivery(Channel::Webhook, "d", 0));
    assert_eq!(shed.len(), 1);
    assert_eq!(shed[0].alert.key, "a", "the oldest goes");
    assert_eq!((q.len(), q.dropped), (3, 1));
    // The webhook's first is "c": it fails and waits 5 s; "d" waits behind it.
    let c = q.due(Channel::Webhook, 0).unwrap().id;
    q.failed(c, "down".into(), 0, Duration::from_secs(60));
    assert_eq!(q.due(Channel::Webhook, 4_999), None);
    assert_eq!(q.due(Channel::Webhook, 5_000).map(|d| d.id), Some(c));
    assert_eq!(q.due(Channel::Alertmanager, 0).map(|d| d.alert.key.as_str()), Some("b"), "Alertmanager's own first is due now");
    q.failed(c, "down\nforged".into(), 5_000, Duration::from_secs(60));
    let d = q.iter().find(|d| d.id == c).unwrap();
    assert_eq!(d.next_try_unix_ms, 15_000, "then 10 s");
    assert_eq!(d.last_error.as_deref(), Some("down\\nforged"), "a peer's text stays on one line");
    q.save().unwrap();
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let (again, _) = Queue::load(Some(path.clone()), 3);
    assert_eq!(keys(&again), ["b", "c", "d"]);
    // A retry time far in the future (a clock that was wrong) is held to a day from now.
    let mut far = delivery(Channel::Webhook, "far", u64::MAX);
    far.id = 7;
    std::fs::write(&path, serde_json::to_vec(&[far]).unwrap()).unwrap();
    let (far, _) = Queue::load(Some(path.clone()), 3);
    assert!(far.iter().next().unwrap().next_try_unix_ms <= crate::sys::unix_ms() + 86_400_000);
    let mut ids: Vec<u64> = again.iter().map(|d| d.id).collect();
    ids.dedup();
    assert_eq!(ids.len(), 3, "ids are unique after a reload");
}

#[test]
fn notices_are_shed_before_incidents() {
    let (mut q, _) = Queue::load(None, 3);
    q.push(delivery(Channel::Webhook, "service/a", 0));
    q.push(Delivery::new(Channel::Webhook, Alert::notice(AlertKey::Emergency("x".into()), Severity::Warning, "x")));
    q.push(Delivery::new(Channel::Webhook, Alert::notice(AlertKey::TaskFailed, Severity::Critical, "y")));
    let shed = q.push(delivery(Channel::Webhook, "service/b", 0));
    assert_eq!(shed[0].alert.key, "emergency/x");
    assert_eq!(keys(&q), ["service/a", "task/failed", "service/b"]);
    let shed = q.push(delivery(Channel::Webhook, "service/c", 0));
    assert_eq!(shed[0].alert.key, "service/a", "then the oldest of all");
    assert_eq!(q.dropped, 2);
}

#[test]
fn the_file_stays_within_what_is_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    let (mut q, _) = Queue::load(Some(path.clone()), 100_000);
    // Alerts as large as the task lets them be (bounded()), far more than fit.
    let big = "w".repeat(4 * super::super::MAX_SUMMARY);
    let mut n = 0;
    while q.dropped == 0 {
        q.push(Delivery::new(
            Channel::Webhook,
            Alert::firing(AlertKey::WorkersLow(n.to_string()), Severity::Warning, big.clone()).bounded(),
        ));
        n += 1;
    }
    q.save().unwrap();
    let len = std::fs::metadata(&path).unwrap().len();
    assert!(len <= MAX_BYTES as u64, "{len}");
    let (again, problem) = Queue::load(Some(path), 100_000);
    assert_eq!(problem, None);
    assert_eq!(again.len(), q.len());
}

#[test]
fn a_file_that_cannot_be_read_is_set_aside_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    std::fs::write(&path, b"{not json").unwrap();
    let (empty, problem) = Queue::load(Some(path.clone()), 3);
    assert!(empty.is_empty());
    assert!(problem.unwrap().contains("is not an alert queue"));
    assert_eq!(std::fs::read(dir.path().join("alerts-queue.json.bad")).unwrap(), b"{not json");
    // A second bad file does not replace the first; an oversized one is set aside too.
    std::fs::write(&path, vec![b' '; MAX_BYTES + 1]).unwrap();
    let (empty, problem) = Queue::load(Some(path.clone()), 3);
    assert!(empty.is_empty());
    assert!(problem.as_deref().unwrap().contains("alerts-queue.json.bad.1"), "{problem:?}");
    assert_eq!(std::fs::read(dir.path().join("alerts-queue.json.bad")).unwrap(), b"{not json");
    assert_eq!(std::fs::metadata(dir.path().join("alerts-queue.json.bad.1")).unwrap().len(), MAX_BYTES as u64 + 1);
    assert!(!path.exists());
}

#[test]
fn a_file_that_cannot_be_set_aside_is_not_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    // A directory in the queue's place: not readable as a file, and no hard link can be made.
    let path = dir.path().join(FILE_NAME);
    std::fs::create_dir(&path).unwrap();
    std::fs::write(path.join("x"), b"keep").unwrap();
    let (mut q, problem) = Queue::load(Some(path.clone()), 3);
    assert!(problem.unwrap().contains("kept in memory only"));
    q.push(delivery(Channel::Webhook, "a", 0));
    q.save().unwrap();
    assert_eq!(std::fs::read(path.join("x")).unwrap(), b"keep");
}

/// A file not read for a reason of the moment (its directory is a file: ENOTDIR; as EMFILE
/// when every descriptor is taken) is left as it is and never written over; once it can be read,
/// its deliveries come first and those queued meanwhile after them, within the queue's bound.
#[test]
fn a_file_unreadable_for_the_moment_is_left_as_it_is_and_read_again_later() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::write(&state, b"a file where the directory goes").unwrap();
    let path = state.join(FILE_NAME);
    let (mut q, problem) = Queue::load(Some(path.clone()), 3);
    let problem = problem.unwrap();
    assert!(problem.contains("Not a directory") && problem.contains("left as it is and read again"), "{problem}");
    assert!(q.unread());
    q.push(delivery(Channel::Webhook, "meanwhile-1", 0));
    q.push(delivery(Channel::Webhook, "meanwhile-2", 0));
    q.save().unwrap();
    let (q, said) = q.read_again();
    assert_eq!((said, q.unread(), keys(&q)), (None, true, vec!["meanwhile-1", "meanwhile-2"]), "still unreadable: as it was, nothing said");
    assert_eq!(std::fs::read(&state).unwrap(), b"a file where the directory goes", "nothing set aside or written");

    std::fs::remove_file(&state).unwrap();
    std::fs::create_dir(&state).unwrap();
    let mut before = Queue::load(Some(path.clone()), 3).0;
    before.push(delivery(Channel::Webhook, "before-1", 0));
    before.push(delivery(Channel::Webhook, "before-2", 0));
    before.save().unwrap();
    let (q, said) = q.read_again();
    assert!(!q.unread());
    assert!(said.unwrap().ends_with("read after all, 3 deliveries in the queue"));
    assert_eq!(keys(&q), ["before-2", "meanwhile-1", "meanwhile-2"], "the file's first; past the bound of 3 the oldest goes");
    assert_eq!(q.dropped, 1);
    q.save().unwrap();
    assert_eq!(keys(&Queue::load(Some(path), 3).0), keys(&q), "written from then on");
}

/// One entry that is not a delivery (a channel this version does not know, a number): the
/// whole file is set aside as it was, and the good deliveries beside it are kept, in order (the
/// task writes them back at its first flush: alerts::task's tests).
#[test]
fn one_bad_entry_sets_the_file_aside_not_the_good_deliveries() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    let good = |key| serde_json::to_string(&delivery(Channel::Webhook, key, 0)).unwrap();
    let text = format!(r#"[{},{{"channel":"pager","alert":{{}}}},{},17]"#, good("service/a"), good("service/b"));
    std::fs::write(&path, &text).unwrap();
    let (q, problem) = Queue::load(Some(path.clone()), 10);
    assert_eq!(keys(&q), ["service/a", "service/b"]);
    let p = problem.unwrap();
    assert!(p.contains("alerts-queue.json: 2 entries are not a delivery (the first, entry 2: unknown variant `pager`"), "{p}");
    assert!(p.contains("set aside as") && p.ends_with("the 2 good one(s) kept in the queue"), "{p}");
    assert_eq!(std::fs::read_to_string(dir.path().join(format!("{FILE_NAME}.bad"))).unwrap(), text, "set aside as it was");
    q.save().unwrap();
    let (again, problem) = Queue::load(Some(path), 10);
    assert_eq!((keys(&again), problem), (vec!["service/a", "service/b"], None));
}

/// A file that is one string of megabytes: refused in a line of bounded length (serde's text
/// quotes the string whole).
#[test]
fn a_file_that_is_one_huge_string_is_refused_in_a_short_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    std::fs::write(&path, format!("\"{}\"", "x".repeat(4 << 20))).unwrap();
    let (q, problem) = Queue::load(Some(path), 10);
    let p = problem.unwrap();
    assert!(q.is_empty() && p.contains("is not an alert queue (invalid type: string") && p.contains("set aside as"), "{}", p.len());
    assert!(p.len() < 2000, "{} bytes", p.len());
}
