//! systemd's D-Bus API, for the few calls the optimize task makes: restart a unit and wait for
//! its job, and set a unit's CPU weight at run time (and put it back). The system bus is
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

/// A connection to systemd, made when first needed.
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

    /// `systemctl restart UNIT`, waiting for the job to finish; `Ok` only when it ended "done".
    pub async fn restart(&self, unit: &str) -> Result<(), String> {
        let call = async {
            self.manager.subscribe().await.map_err(|e| e.to_string())?;
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

    /// The unit's `CPUWeight` (`CPU_WEIGHT_UNSET` when not set).
    pub async fn cpu_weight(&self, unit: &str) -> Result<u64, String> {
        let call = async {
            let path = self.manager.load_unit(unit).await.map_err(|e| describe(&e))?;
            let props = zbus::fdo::PropertiesProxy::builder(self.manager.inner().connection())
                .destination("org.freedesktop.systemd1")
                .map_err(|e| e.to_string())?
                .path(path)
                .map_err(|e| e.to_string())?
                .build()
                .await
                .map_err(|e| e.to_string())?;
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
