//! The helper tasks that follow what the health task cannot poll cheaply: a unit's state
//! through systemd's D-Bus signals, a container's through Docker's event stream.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::policy::UnitState;
use super::service::Msg;
use crate::sys::systemd::{unit_file_exists, ServiceManager, SystemdError};

/// A unit whose following ended on an error (the bus restarted, a descriptor refused) is
/// followed again this long after, doubling while it fails, up to [`UNIT_RETRY_MAX`].
const UNIT_RETRY: Duration = Duration::from_secs(10);
const UNIT_RETRY_MAX: Duration = Duration::from_secs(300);

/// How one following of a unit ended.
enum Ended {
    /// The config generation is over.
    ForGood,
    /// systemd reloaded its units: look at the unit again at once.
    Reloaded,
    /// On an error (said as the unit's state); `followed`: it had been followed.
    Failed { followed: bool },
}

/// Follows one unit for as long as the config generation lives: again [`UNIT_RETRY`] after an
/// error (each failed try says so once, as the unit's state), so a unit's state is never left
/// unknown for good by a moment's trouble on the bus; and again at each daemon-reload, so a
/// unit installed after the daemon started is followed from then on (and one removed is "not
/// installed", a `Restart=` added or removed is known).
pub(super) async fn follow(
    systemd: Arc<dyn ServiceManager>,
    unit: String,
    i: usize,
    generation: u64,
    tx: mpsc::Sender<(u64, Msg)>,
    cancel: CancellationToken,
) {
    let mut wait = UNIT_RETRY;
    loop {
        match follow_once(&*systemd, &unit, i, generation, &tx, &cancel).await {
            Ended::ForGood => return,
            Ended::Reloaded => wait = UNIT_RETRY,
            Ended::Failed { followed } => {
                if followed {
                    wait = UNIT_RETRY;
                }
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
                wait = (wait * 2).min(UNIT_RETRY_MAX);
            }
        }
    }
}

/// One following of `unit`, until the generation is over, systemd reloads, or an error.
async fn follow_once(
    systemd: &dyn ServiceManager,
    unit: &str,
    i: usize,
    generation: u64,
    tx: &mpsc::Sender<(u64, Msg)>,
    cancel: &CancellationToken,
) -> Ended {
    let send = |m: Msg| {
        let tx = tx.clone();
        async move {
            let _ = tx.send((generation, m)).await;
        }
    };
    let cannot_tell = |e: SystemdError| async move {
        // Judge by the unit file, and say why the state is unknown.
        send(Msg::Installed(i, unit_file_exists(unit))).await;
        send(Msg::Unit(i, Err(e.to_string()))).await;
        Ended::Failed { followed: false }
    };
    // Asked for before the unit is looked at, so a reload between the two is not missed.
    let mut reloads = match systemd.reloads().await {
        Ok(r) => r,
        Err(e) => return cannot_tell(e).await,
    };
    let mut watch = match systemd.unit(unit).await {
        Ok(Some(w)) => w,
        Ok(None) => {
            send(Msg::Installed(i, false)).await;
            // A package that installs the unit runs `systemctl daemon-reload`: look again then.
            return tokio::select! {
                _ = cancel.cancelled() => Ended::ForGood,
                r = reloads.next() => match r {
                    Ok(()) => Ended::Reloaded,
                    Err(e) => {
                        send(Msg::Unit(i, Err(e.to_string()))).await;
                        Ended::Failed { followed: false }
                    }
                },
            };
        }
        Err(e) => return cannot_tell(e).await,
    };
    send(Msg::Installed(i, true)).await;
    send(Msg::RestartsItself(i, watch.restarts_itself().await)).await;
    let first = watch.state().await.map(|(a, s)| UnitState::from_systemd(&a, &s)).map_err(|e| e.to_string());
    send(Msg::Unit(i, first)).await;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return Ended::ForGood,
            changed = watch.changed() => {
                let end = changed.is_err();
                send(Msg::Unit(i, changed.map(|(a, s)| UnitState::from_systemd(&a, &s)).map_err(|e| e.to_string()))).await;
                if end {
                    return Ended::Failed { followed: true };
                }
            }
            // Its unit file may be gone, or say otherwise now (`Restart=`): look again.
            r = reloads.next() => return match r {
                Ok(()) => Ended::Reloaded,
                Err(e) => {
                    send(Msg::Unit(i, Err(e.to_string()))).await;
                    Ended::Failed { followed: true }
                }
            },
        }
    }
}

/// Docker's event stream is opened again this long after it ended (dockerd stopped or
/// restarted; its own probe says so meanwhile).
const EVENTS_RETRY: Duration = Duration::from_secs(30);

/// Events of one container closer together than this are one probe (a container that dies and
/// is restarted in a loop sends a few a second; a hostile socket, thousands).
const EVENT_DEBOUNCE: Duration = Duration::from_secs(1);
/// Lines read at most per debounce window; the rest wait in the stream.
const EVENT_BURST: usize = 256;

/// What a Docker event says happened ("die", "health_status: unhealthy"), for a log line.
fn event_action(line: &[u8]) -> String {
    let event: serde_json::Value = serde_json::from_slice(line).unwrap_or_default();
    let said = |key: &str| event[key].as_str().filter(|a| !a.trim().is_empty());
    let action = said("Action").or(said("status")).unwrap_or("an event");
    crate::sys::one_line(action, 60)
}

/// Follows a container through Docker's event stream (`GET /events`, filtered to that container
/// and the events that change whether it runs or is healthy), so a container that dies is
/// probed at once rather than at its next interval. One idle connection; no polling.
pub(super) async fn follow_container(
    socket: std::path::PathBuf,
    name: String,
    i: usize,
    generation: u64,
    tx: mpsc::Sender<(u64, Msg)>,
    cancel: CancellationToken,
) {
    let filters = serde_json::json!({
        "type": ["container"],
        "container": [name],
        "event": ["die", "kill", "oom", "stop", "start", "restart", "pause", "unpause", "health_status"],
    });
    let path = format!("/events?filters={}", crate::sys::http::percent_encode(&filters.to_string()));
    loop {
        let opened = tokio::select! {
            _ = cancel.cancelled() => return,
            s = crate::sys::http::stream_lines(&socket, &path, Duration::from_secs(5)) => s,
        };
        match opened {
            Ok(mut lines) => loop {
                let line = tokio::select! {
                    _ = cancel.cancelled() => return,
                    l = lines.next_line() => l,
                };
                let Ok(Some(line)) = line else { break };
                let _ = tx.send((generation, Msg::ContainerEvent(i, event_action(&line)))).await;
                // Whatever comes within the next EVENT_DEBOUNCE is one more probe at most: the
                // stream is not read meanwhile (Docker holds the events), then what has arrived
                // is read (at most EVENT_BURST lines) and stands as its last event.
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(EVENT_DEBOUNCE) => {}
                }
                let (mut last, mut ended) = (None, false);
                for _ in 0..EVENT_BURST {
                    match tokio::time::timeout(Duration::ZERO, lines.next_line()).await {
                        Ok(Ok(Some(l))) => last = Some(l),
                        Ok(_) => {
                            ended = true;
                            break;
                        }
                        Err(_) => break,
                    }
                }
                if let Some(l) = last {
                    let _ = tx.send((generation, Msg::ContainerEvent(i, event_action(&l)))).await;
                }
                if ended {
                    break;
                }
            },
            Err(e) => tracing::debug!("health: Docker's events for container {name}: {e}"),
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(EVENTS_RETRY) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_docker_says_reaches_a_log_line_on_one_line() {
        assert_eq!(event_action(br#"{"Action":"die\nforged","status":"x"}"#), "die\\nforged");
        assert_eq!(event_action(br#"{"status":"health_status: unhealthy"}"#), "health_status: unhealthy");
        assert_eq!(event_action(b"not json"), "an event");
    }

    mod props {
        use proptest::prelude::*;

        use super::super::event_action;
        use crate::testing::{json, text_like};

        const EVENT: &str = r#"{"status":"die","id":"4fa6e0f0c678","from":"ghcr.io/open-webui/open-webui:main","Type":"container","Action":"die","Actor":{"ID":"4fa6e0f0c678","Attributes":{"exitCode":"137","name":"open-webui"}},"scope":"local","time":1717000000,"timeNano":1717000000000000000}"#;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Any line of Docker's event stream names what happened in a few words on one line.
            #[test]
            fn any_event_line_is_a_short_action(line in prop_oneof![text_like(EVENT), json(), json().prop_map(|a| format!("{{\"Action\":{a},\"status\":{a}}}"))]) {
                let a = event_action(line.as_bytes());
                prop_assert!(!a.is_empty() && a.chars().count() <= 61 * 10 && !a.contains(char::is_control), "{a:?}");
            }
        }
    }
}
