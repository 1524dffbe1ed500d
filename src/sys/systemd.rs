//! systemd's D-Bus API, for the few calls the daemon makes: restart a unit and wait for its job,
//! set a unit's CPU weight at run time (and put it back), and follow a unit's state as systemd
//! announces it (no polling). The system bus is
//! `DBUS_SYSTEM_BUS_ADDRESS` when set (zbus honours it), else `/run/dbus/system_bus_socket`.

use std::time::Duration;

use futures_lite::StreamExt;
use zbus::zvariant::{OwnedObjectPath, Value};

/// A restart whose job has not finished by then is reported as failed (systemd goes on).
pub const JOB_TIMEOUT: Duration = Duration::from_secs(90);
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// `CPUWeight=` unset ("[not set]" in `systemctl show`): the default weight.
pub const CPU_WEIGHT_UNSET: u64 = u64::MAX;

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

/// A connection to systemd, made when first needed.
#[derive(Clone)]
pub struct Systemd {
    manager: ManagerProxy<'static>,
}

impl Systemd {
    pub async fn connect() -> Result<Systemd, String> {
        let conn = tokio::time::timeout(CALL_TIMEOUT, zbus::Connection::system())
            .await
            .map_err(|_| "the system bus did not answer within 10 s".to_string())?
            .map_err(|e| format!("cannot reach systemd on the system bus: {e}"))?;
        let manager = ManagerProxy::new(&conn).await.map_err(|e| e.to_string())?;
        Ok(Systemd { manager })
    }

    /// The standard Properties interface of one of systemd's objects.
    async fn properties(&self, path: OwnedObjectPath) -> Result<zbus::fdo::PropertiesProxy<'static>, String> {
        zbus::fdo::PropertiesProxy::builder(self.manager.inner().connection())
            .destination("org.freedesktop.systemd1")
            .map_err(|e| e.to_string())?
            .path(path)
            .map_err(|e| e.to_string())?
            .build()
            .await
            .map_err(|e| e.to_string())
    }

    /// Asks systemd to send its signals to this connection. Once per connection is enough;
    /// systemd 252 answers a second call with `AlreadySubscribed`, which is success here.
    async fn subscribe(&self) -> Result<(), String> {
        match self.manager.subscribe().await {
            Ok(()) => Ok(()),
            Err(zbus::Error::MethodError(name, _, _)) if name.as_str() == "org.freedesktop.systemd1.AlreadySubscribed" => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// `systemctl restart UNIT`, waiting for the job to finish; `Ok` only when it ended "done".
    pub async fn restart(&self, unit: &str) -> Result<(), String> {
        let call = async {
            self.subscribe().await?;
            let mut removed = self.manager.receive_job_removed().await.map_err(|e| e.to_string())?;
            let job = self.manager.restart_unit(unit, "replace").await.map_err(|e| describe(&e))?;
            while let Some(signal) = removed.next().await {
                let Ok(args) = signal.args() else { continue };
                if args.job == job {
                    return match args.result.as_str() {
                        "done" => Ok(()),
                        other => Err(format!("its restart job ended {other:?} (see journalctl -u {unit})")),
                    };
                }
            }
            Err("the bus connection closed".to_string())
        };
        tokio::time::timeout(JOB_TIMEOUT, call).await.map_err(|_| format!("its restart did not finish within {JOB_TIMEOUT:?}"))?
    }

    /// A unit to follow, or `None` when systemd has no such unit (`LoadState` "not-found").
    /// Subscribes first, so systemd sends its property changes.
    pub async fn unit(&self, name: &str) -> Result<Option<UnitWatch>, String> {
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
        tokio::time::timeout(CALL_TIMEOUT, call).await.map_err(|_| "systemd did not answer within 10 s".to_string())?
    }

    /// The unit's `CPUWeight` (`CPU_WEIGHT_UNSET` when not set).
    pub async fn cpu_weight(&self, unit: &str) -> Result<u64, String> {
        let call = async {
            let path = self.manager.load_unit(unit).await.map_err(|e| describe(&e))?;
            let props = self.properties(path).await?;
            let iface = unit_interface(unit)?;
            let iface = zbus::names::InterfaceName::try_from(iface).map_err(|e| e.to_string())?;
            let v = props.get(iface, "CPUWeight").await.map_err(|e| e.to_string())?;
            u64::try_from(v).map_err(|e| format!("CPUWeight is not a number: {e}"))
        };
        tokio::time::timeout(CALL_TIMEOUT, call).await.map_err(|_| "systemd did not answer within 10 s".to_string())?
    }

    /// `systemctl set-property --runtime UNIT CPUWeight=W` (`CPU_WEIGHT_UNSET` unsets it).
    pub async fn set_cpu_weight(&self, unit: &str, weight: u64) -> Result<(), String> {
        let properties = [("CPUWeight", Value::U64(weight))];
        let call = self.manager.set_unit_properties(unit, true, &properties);
        tokio::time::timeout(CALL_TIMEOUT, call)
            .await
            .map_err(|_| "systemd did not answer within 10 s".to_string())?
            .map_err(|e| describe(&e))
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
    pub async fn restarts_itself(&self) -> bool {
        let Ok(iface) = zbus::names::InterfaceName::try_from("org.freedesktop.systemd1.Service") else { return false };
        match tokio::time::timeout(CALL_TIMEOUT, self.props.get(iface, "Restart")).await {
            Ok(Ok(v)) => String::try_from(v).is_ok_and(|r| r != "no"),
            _ => false,
        }
    }

    /// `(ActiveState, SubState)` now.
    pub async fn state(&self) -> Result<(String, String), String> {
        let call = async {
            let active = self.unit.active_state().await.map_err(|e| e.to_string())?;
            let sub = self.unit.sub_state().await.map_err(|e| e.to_string())?;
            Ok((active, sub))
        };
        tokio::time::timeout(CALL_TIMEOUT, call).await.map_err(|_| "systemd did not answer within 10 s".to_string())?
    }

    /// Waits for the next change of the unit's state and returns the new one; `Err` when the
    /// bus connection is gone.
    pub async fn changed(&mut self) -> Result<(String, String), String> {
        loop {
            let signal = self.changes.next().await.ok_or_else(|| "the bus connection closed".to_string())?;
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
fn unit_interface(unit: &str) -> Result<&'static str, String> {
    match unit.rsplit_once('.').map(|(_, t)| t) {
        Some("service") => Ok("org.freedesktop.systemd1.Service"),
        Some("scope") => Ok("org.freedesktop.systemd1.Scope"),
        Some("slice") => Ok("org.freedesktop.systemd1.Slice"),
        Some("socket") => Ok("org.freedesktop.systemd1.Socket"),
        Some("mount") => Ok("org.freedesktop.systemd1.Mount"),
        Some("swap") => Ok("org.freedesktop.systemd1.Swap"),
        _ => Err(format!("{unit:?} is not a unit with a CPU weight (expected a name such as ollama.service)")),
    }
}

/// systemd's error in its own words ("Unit x.service not found.").
fn describe(e: &zbus::Error) -> String {
    match e {
        zbus::Error::MethodError(_, Some(text), _) => text.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn interfaces_by_unit_type() {
        assert_eq!(super::unit_interface("ollama.service"), Ok("org.freedesktop.systemd1.Service"));
        assert_eq!(super::unit_interface("user.slice"), Ok("org.freedesktop.systemd1.Slice"));
        assert!(super::unit_interface("ollama").unwrap_err().contains("ollama.service"));
    }
}
