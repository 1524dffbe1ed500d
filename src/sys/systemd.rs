//! systemd's D-Bus API, for the few calls the daemon makes: restart a unit and wait for its job,
//! set a unit's CPU weight at run time (and put it back), and follow a unit's state as systemd
//! announces it (no polling). The system bus is
//! `DBUS_SYSTEM_BUS_ADDRESS` when set (zbus honours it), else `/run/dbus/system_bus_socket`.
//!
//! [`ServiceManager`] is the seam the tasks use: [`SystemBus`] is one connection to the
//! system bus, made when first needed and shared by every task; [`fake::FakeServiceManager`]
//! (tests, and `tests/` with the `fakes` feature) keeps units in memory.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::StreamExt;
use zbus::zvariant::{OwnedObjectPath, Value};

/// A restart whose job has not finished by then is reported as failed (systemd goes on).
pub const JOB_TIMEOUT: Duration = Duration::from_secs(90);
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// `CPUWeight=` unset ("[not set]" in `systemctl show`): the default weight.
pub const CPU_WEIGHT_UNSET: u64 = u64::MAX;

/// A future the seam's methods return (boxed, so the traits can be used as `dyn`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why systemd did not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SystemdError {
    /// The system bus cannot be reached (no D-Bus, a container without systemd).
    #[error("cannot reach systemd on the system bus: {0}")]
    Unreachable(String),
    /// systemd did not answer within the call's deadline.
    #[error("{0}")]
    TimedOut(String),
    /// systemd refused, in its own words ("Unit x.service not found.").
    #[error("{0}")]
    Refused(String),
    /// A restart job ended other than "done" (`failed`, `canceled`, `timeout`, …).
    #[error("its restart job ended {result:?} (see journalctl -u {unit})")]
    JobFailed { unit: String, result: String },
    /// Anything else the bus said.
    #[error("{0}")]
    Bus(String),
}

impl From<String> for SystemdError {
    fn from(s: String) -> Self {
        SystemdError::Bus(s)
    }
}

/// A unit's memory limits as systemd holds them (`systemctl show -p MemoryMax,MemoryHigh,ControlGroup`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitMemory {
    /// `MemoryMax=` in bytes; `None`: "infinity" (systemd's `u64::MAX`).
    pub memory_max: Option<u64>,
    /// `MemoryHigh=` in bytes (the throttling point, below `MemoryMax=`); `None`: "infinity".
    pub memory_high: Option<u64>,
    /// The unit's cgroup, e.g. `/system.slice/dask-worker.service`; `None` while it has none
    /// (not running).
    pub control_group: Option<String>,
}

/// `(ActiveState, SubState)` as systemd names them ("active", "running").
pub type UnitStateText = (String, String);

/// What the tasks ask of systemd: restart a unit and wait for its job, follow a unit's state,
/// read and set its CPU weight at run time.
pub trait ServiceManager: Send + Sync + 'static {
    /// Makes sure systemd can be reached (connecting once, shared by every caller).
    fn connect(&self) -> BoxFuture<'_, Result<(), SystemdError>>;
    /// `systemctl restart UNIT`, waiting for the job (at most [`JOB_TIMEOUT`]); `Ok` only
    /// when it ended "done".
    fn restart<'a>(&'a self, unit: &'a str) -> BoxFuture<'a, Result<(), SystemdError>>;
    /// A unit to follow, or `None` when systemd has no such unit.
    fn unit<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<Box<dyn UnitFollow>>, SystemdError>>;
    /// The unit's `CPUWeight` ([`CPU_WEIGHT_UNSET`] when not set).
    fn cpu_weight<'a>(&'a self, unit: &'a str) -> BoxFuture<'a, Result<u64, SystemdError>>;
    /// `systemctl set-property --runtime UNIT CPUWeight=W` ([`CPU_WEIGHT_UNSET`] unsets it).
    fn set_cpu_weight<'a>(&'a self, unit: &'a str, weight: u64) -> BoxFuture<'a, Result<(), SystemdError>>;
    /// The unit's `MemoryMax=`, `MemoryHigh=` and cgroup; `None` when systemd has no such unit.
    fn memory<'a>(&'a self, unit: &'a str) -> BoxFuture<'a, Result<Option<UnitMemory>, SystemdError>>;
    /// systemd's daemon-reloads from now on (`systemctl daemon-reload`, which a package that
    /// installs or removes a unit runs in its maintainer scripts): what is known of a unit may
    /// have changed at each.
    fn reloads(&self) -> BoxFuture<'_, Result<Box<dyn Reloads>, SystemdError>>;
}

/// systemd's daemon-reloads, from when they were asked for.
pub trait Reloads: Send {
    /// Waits for the end of the next daemon-reload (the Manager's `Reloading` signal with
    /// `false`); `Err` when the connection is gone.
    fn next(&mut self) -> BoxFuture<'_, Result<(), SystemdError>>;
}

/// One followed unit.
pub trait UnitFollow: Send {
    /// Whether the unit has a `Restart=` of its own (then nobody else should restart it).
    fn restarts_itself(&self) -> BoxFuture<'_, bool>;
    /// Its state now.
    fn state(&self) -> BoxFuture<'_, Result<UnitStateText, SystemdError>>;
    /// Waits for its next change of state; `Err` when the connection is gone.
    fn changed(&mut self) -> BoxFuture<'_, Result<UnitStateText, SystemdError>>;
}

/// The system bus: one connection, made on first use and shared by every task. A call that
/// fails on the connection itself (closed, timed out; dbus-daemon restarted) drops it, so the
/// next call connects again; systemd's own refusals keep it.
#[derive(Default)]
pub struct SystemBus {
    conn: tokio::sync::Mutex<Option<Systemd>>,
}

impl SystemBus {
    /// One for the whole process. Drop it inside the tokio runtime that used it: zbus
    /// unregisters its signal matches on drop, on that runtime.
    pub fn shared() -> Arc<dyn ServiceManager> {
        Arc::new(SystemBus::default())
    }

    async fn get(&self) -> Result<Systemd, SystemdError> {
        let mut conn = self.conn.lock().await;
        if let Some(s) = conn.as_ref() {
            return Ok(s.clone());
        }
        let s = Systemd::connect().await?;
        *conn = Some(s.clone());
        Ok(s)
    }

    /// `r`, forgetting the connection when the failure was the connection's.
    async fn checked<T>(&self, r: Result<T, SystemdError>) -> Result<T, SystemdError> {
        if matches!(r, Err(SystemdError::Bus(_) | SystemdError::TimedOut(_) | SystemdError::Unreachable(_))) {
            *self.conn.lock().await = None;
        }
        r
    }
}

impl ServiceManager for SystemBus {
    fn connect(&self) -> BoxFuture<'_, Result<(), SystemdError>> {
        Box::pin(async move { self.get().await.map(|_| ()) })
    }
    fn restart<'a>(&'a self, unit: &'a str) -> BoxFuture<'a, Result<(), SystemdError>> {
        Box::pin(async move {
            let r = self.get().await?.restart(unit).await;
            self.checked(r).await
        })
    }
    fn unit<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<Box<dyn UnitFollow>>, SystemdError>> {
        Box::pin(async move {
            let r = self.get().await?.unit(name).await;
            Ok(self.checked(r).await?.map(|w| Box::new(w) as Box<dyn UnitFollow>))
        })
    }
    fn cpu_weight<'a>(&'a self, unit: &'a str) -> BoxFuture<'a, Result<u64, SystemdError>> {
        Box::pin(async move {
            let r = self.get().await?.cpu_weight(unit).await;
            self.checked(r).await
        })
    }
    fn set_cpu_weight<'a>(&'a self, unit: &'a str, weight: u64) -> BoxFuture<'a, Result<(), SystemdError>> {
        Box::pin(async move {
            let r = self.get().await?.set_cpu_weight(unit, weight).await;
            self.checked(r).await
        })
    }
    fn memory<'a>(&'a self, unit: &'a str) -> BoxFuture<'a, Result<Option<UnitMemory>, SystemdError>> {
        Box::pin(async move {
            let r = self.get().await?.memory(unit).await;
            self.checked(r).await
        })
    }
    fn reloads(&self) -> BoxFuture<'_, Result<Box<dyn Reloads>, SystemdError>> {
        Box::pin(async move {
            let r = self.get().await?.reloads().await;
            Ok(Box::new(self.checked(r).await?) as Box<dyn Reloads>)
        })
    }
}

/// The Manager's `Reloading` signals on one connection.
struct ReloadWatch {
    signals: ReloadingStream,
}

impl Reloads for ReloadWatch {
    fn next(&mut self) -> BoxFuture<'_, Result<(), SystemdError>> {
        Box::pin(async move {
            while let Some(signal) = self.signals.next().await {
                // `true` as it starts, `false` once it is done: the units are read anew then.
                if signal.args().is_ok_and(|a| !a.active) {
                    return Ok(());
                }
            }
            Err(SystemdError::Bus("the bus connection closed".into()))
        })
    }
}

impl UnitFollow for UnitWatch {
    fn restarts_itself(&self) -> BoxFuture<'_, bool> {
        Box::pin(UnitWatch::restarts_itself(self))
    }
    fn state(&self) -> BoxFuture<'_, Result<UnitStateText, SystemdError>> {
        Box::pin(UnitWatch::state(self))
    }
    fn changed(&mut self) -> BoxFuture<'_, Result<UnitStateText, SystemdError>> {
        Box::pin(UnitWatch::changed(self))
    }
}

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1"
)]
trait Manager {
    fn subscribe(&self) -> zbus::Result<()>;
    fn restart_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn load_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    fn set_unit_properties(&self, name: &str, runtime: bool, properties: &[(&str, Value<'_>)]) -> zbus::Result<()>;
    #[zbus(signal)]
    fn reloading(&self, active: bool) -> zbus::Result<()>;
    #[zbus(signal)]
    fn job_removed(&self, id: u32, job: OwnedObjectPath, unit: String, result: String) -> zbus::Result<()>;
}

#[zbus::proxy(interface = "org.freedesktop.systemd1.Unit", default_service = "org.freedesktop.systemd1")]
trait Unit {
    #[zbus(property)]
    fn active_state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn sub_state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn load_state(&self) -> zbus::Result<String>;
}

/// A connection to systemd.
#[derive(Clone)]
struct Systemd {
    manager: ManagerProxy<'static>,
}

impl Systemd {
    async fn connect() -> Result<Systemd, SystemdError> {
        let conn = tokio::time::timeout(CALL_TIMEOUT, zbus::Connection::system())
            .await
            .map_err(|_| SystemdError::Unreachable("the system bus did not answer within 10 s".into()))?
            .map_err(|e| SystemdError::Unreachable(e.to_string()))?;
        let manager = ManagerProxy::new(&conn).await.map_err(|e| SystemdError::Unreachable(e.to_string()))?;
        Ok(Systemd { manager })
    }

    /// The standard Properties interface of one of systemd's objects.
    async fn properties(&self, path: OwnedObjectPath) -> Result<zbus::fdo::PropertiesProxy<'static>, SystemdError> {
        zbus::fdo::PropertiesProxy::builder(self.manager.inner().connection())
            .destination("org.freedesktop.systemd1")
            .map_err(|e| e.to_string())?
            .path(path)
            .map_err(|e| e.to_string())?
            .build()
            .await
            .map_err(|e| SystemdError::Bus(e.to_string()))
    }

    /// Asks systemd to send its signals to this connection. Once per connection is enough;
    /// systemd 252 answers a second call with `AlreadySubscribed`, which is success here.
    async fn subscribe(&self) -> Result<(), SystemdError> {
        match self.manager.subscribe().await {
            Ok(()) => Ok(()),
            Err(zbus::Error::MethodError(name, _, _)) if name.as_str() == "org.freedesktop.systemd1.AlreadySubscribed" => Ok(()),
            Err(e) => Err(SystemdError::Bus(e.to_string())),
        }
    }

    /// `systemctl restart UNIT`, waiting for the job to finish; `Ok` only when it ended "done".
    async fn restart(&self, unit: &str) -> Result<(), SystemdError> {
        let call = async {
            self.subscribe().await?;
            let mut removed = self.manager.receive_job_removed().await.map_err(|e| e.to_string())?;
            let job = self.manager.restart_unit(unit, "replace").await.map_err(|e| describe(&e))?;
            while let Some(signal) = removed.next().await {
                let Ok(args) = signal.args() else { continue };
                if args.job == job {
                    return match args.result.as_str() {
                        "done" => Ok(()),
                        other => Err(SystemdError::JobFailed { unit: unit.to_string(), result: other.to_string() }),
                    };
                }
            }
            Err(SystemdError::Bus("the bus connection closed".into()))
        };
        tokio::time::timeout(JOB_TIMEOUT, call)
            .await
            .map_err(|_| SystemdError::TimedOut(format!("its restart did not finish within {JOB_TIMEOUT:?}")))?
    }

    /// A unit to follow, or `None` when systemd has no such unit (`LoadState` "not-found").
    /// Subscribes first, so systemd sends its property changes.
    async fn unit(&self, name: &str) -> Result<Option<UnitWatch>, SystemdError> {
        let call = async {
            self.subscribe().await?;
            let path = self.manager.load_unit(name).await.map_err(|e| describe(&e))?;
            let unit = UnitProxy::builder(self.manager.inner().connection())
                .path(path.clone())
                .map_err(|e| e.to_string())?
                .cache_properties(zbus::proxy::CacheProperties::No)
                .build()
                .await
                .map_err(|e| e.to_string())?;
            if unit.load_state().await.map_err(|e| e.to_string())? == "not-found" {
                return Ok(None);
            }
            let props = self.properties(path).await?;
            let changes = props.receive_properties_changed().await.map_err(|e| e.to_string())?;
            Ok(Some(UnitWatch { unit, props, changes }))
        };
        tokio::time::timeout(CALL_TIMEOUT, call).await.map_err(|_| timed_out())?
    }

    /// The Manager's `Reloading` signals from now on. Subscribes first: systemd sends its
    /// signals on the system bus only to subscribed clients.
    async fn reloads(&self) -> Result<ReloadWatch, SystemdError> {
        let call = async {
            self.subscribe().await?;
            let signals = self.manager.receive_reloading().await.map_err(|e| e.to_string())?;
            Ok(ReloadWatch { signals })
        };
        tokio::time::timeout(CALL_TIMEOUT, call).await.map_err(|_| timed_out())?
    }

    /// The unit's `CPUWeight` (`CPU_WEIGHT_UNSET` when not set).
    async fn cpu_weight(&self, unit: &str) -> Result<u64, SystemdError> {
        let call = async {
            let path = self.manager.load_unit(unit).await.map_err(|e| describe(&e))?;
            let props = self.properties(path).await?;
            let iface = unit_interface(unit)?;
            let iface = zbus::names::InterfaceName::try_from(iface).map_err(|e| e.to_string())?;
            let v = props.get(iface, "CPUWeight").await.map_err(|e| e.to_string())?;
            u64::try_from(v).map_err(|e| SystemdError::Bus(format!("CPUWeight is not a number: {e}")))
        };
        tokio::time::timeout(CALL_TIMEOUT, call).await.map_err(|_| timed_out())?
    }

    /// The unit's `MemoryMax`, `MemoryHigh` and `ControlGroup`; `None` for a unit systemd
    /// does not know (`LoadState` "not-found").
    async fn memory(&self, unit: &str) -> Result<Option<UnitMemory>, SystemdError> {
        let call = async {
            let path = self.manager.load_unit(unit).await.map_err(|e| describe(&e))?;
            let props = self.properties(path).await?;
            let name = |n: &'static str| zbus::names::InterfaceName::try_from(n).map_err(|e| SystemdError::Bus(e.to_string()));
            let load = props.get(name("org.freedesktop.systemd1.Unit")?, "LoadState").await.map_err(|e| e.to_string())?;
            if String::try_from(load).is_ok_and(|s| s == "not-found") {
                return Ok(None);
            }
            let iface = name(unit_interface(unit)?)?;
            let bytes = |v: zbus::zvariant::OwnedValue| u64::try_from(v).ok().filter(|n| *n != u64::MAX);
            let max = props.get(iface.clone(), "MemoryMax").await.map_err(|e| e.to_string())?;
            let high = props.get(iface.clone(), "MemoryHigh").await.map_err(|e| e.to_string())?;
            let cgroup = props.get(iface, "ControlGroup").await.map_err(|e| e.to_string())?;
            Ok(Some(UnitMemory {
                memory_max: bytes(max),
                memory_high: bytes(high),
                control_group: String::try_from(cgroup).ok().filter(|c| !c.is_empty()),
            }))
        };
        tokio::time::timeout(CALL_TIMEOUT, call).await.map_err(|_| timed_out())?
    }

    /// `systemctl set-property --runtime UNIT CPUWeight=W` (`CPU_WEIGHT_UNSET` unsets it).
    async fn set_cpu_weight(&self, unit: &str, weight: u64) -> Result<(), SystemdError> {
        let properties = [("CPUWeight", Value::U64(weight))];
        let call = self.manager.set_unit_properties(unit, true, &properties);
        tokio::time::timeout(CALL_TIMEOUT, call).await.map_err(|_| timed_out())?.map_err(|e| describe(&e))
    }
}

/// A unit whose state changes arrive as systemd's `PropertiesChanged` signals.
pub struct UnitWatch {
    unit: UnitProxy<'static>,
    props: zbus::fdo::PropertiesProxy<'static>,
    changes: zbus::fdo::PropertiesChangedStream,
}

impl UnitWatch {
    /// Whether the unit has a `Restart=` of its own (a service whose `Restart` is not "no"):
    /// systemd then restarts it after a failure, and nobody else should.
    async fn restarts_itself(&self) -> bool {
        let Ok(iface) = zbus::names::InterfaceName::try_from("org.freedesktop.systemd1.Service") else { return false };
        match tokio::time::timeout(CALL_TIMEOUT, self.props.get(iface, "Restart")).await {
            Ok(Ok(v)) => String::try_from(v).is_ok_and(|r| r != "no"),
            _ => false,
        }
    }

    /// `(ActiveState, SubState)` now.
    async fn state(&self) -> Result<UnitStateText, SystemdError> {
        let call = async {
            let active = self.unit.active_state().await.map_err(|e| e.to_string())?;
            let sub = self.unit.sub_state().await.map_err(|e| e.to_string())?;
            Ok((active, sub))
        };
        tokio::time::timeout(CALL_TIMEOUT, call).await.map_err(|_| timed_out())?
    }

    /// Waits for the next change of the unit's state and returns the new one; `Err` when the
    /// bus connection is gone.
    async fn changed(&mut self) -> Result<UnitStateText, SystemdError> {
        loop {
            let signal = self.changes.next().await.ok_or_else(|| SystemdError::Bus("the bus connection closed".into()))?;
            let Ok(args) = signal.args() else { continue };
            if args.interface_name.as_str() != "org.freedesktop.systemd1.Unit" {
                continue;
            }
            let text = |key: &str| args.changed_properties.get(key).and_then(|v| String::try_from(v.try_clone().ok()?).ok());
            match (text("ActiveState"), text("SubState")) {
                (Some(a), Some(s)) => return Ok((a, s)),
                (None, None) if !args.invalidated_properties.iter().any(|p| *p == "ActiveState" || *p == "SubState") => continue,
                _ => return self.state().await,
            }
        }
    }
}

/// Whether a unit file of that name is installed where systemd looks for them (for when systemd
/// itself cannot be asked).
pub fn unit_file_exists(name: &str) -> bool {
    ["/etc/systemd/system", "/run/systemd/system", "/usr/local/lib/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system"]
        .iter()
        .any(|d| std::path::Path::new(d).join(name).exists())
}

/// The D-Bus interface that carries a unit's cgroup properties.
fn unit_interface(unit: &str) -> Result<&'static str, SystemdError> {
    match unit.rsplit_once('.').map(|(_, t)| t) {
        Some("service") => Ok("org.freedesktop.systemd1.Service"),
        Some("scope") => Ok("org.freedesktop.systemd1.Scope"),
        Some("slice") => Ok("org.freedesktop.systemd1.Slice"),
        Some("socket") => Ok("org.freedesktop.systemd1.Socket"),
        Some("mount") => Ok("org.freedesktop.systemd1.Mount"),
        Some("swap") => Ok("org.freedesktop.systemd1.Swap"),
        _ => Err(SystemdError::Refused(format!("{unit:?} is not a unit with a CPU weight (expected a name such as ollama.service)"))),
    }
}

/// systemd's error in its own words ("Unit x.service not found.").
fn describe(e: &zbus::Error) -> SystemdError {
    match e {
        zbus::Error::MethodError(_, Some(text), _) => SystemdError::Refused(text.clone()),
        other => SystemdError::Bus(other.to_string()),
    }
}

fn timed_out() -> SystemdError {
    SystemdError::TimedOut("systemd did not answer within 10 s".into())
}

#[cfg(any(test, feature = "fakes"))]
pub mod fake;

#[cfg(test)]
mod tests {
    #[test]
    fn interfaces_by_unit_type() {
        assert_eq!(super::unit_interface("ollama.service"), Ok("org.freedesktop.systemd1.Service"));
        assert_eq!(super::unit_interface("user.slice"), Ok("org.freedesktop.systemd1.Slice"));
        assert!(super::unit_interface("ollama").unwrap_err().to_string().contains("ollama.service"));
    }
}
