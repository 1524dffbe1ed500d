//! systemd in memory: units with a state a test sets, restarts recorded (a restart makes
//! the unit active/running unless the test armed it to fail), CPU weights kept.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

use super::{BoxFuture, Reloads, ServiceManager, SystemdError, UnitFollow, UnitMemory, UnitStateText, CPU_WEIGHT_UNSET};

struct FakeUnit {
    state: watch::Sender<UnitStateText>,
    restarts_itself: bool,
    /// What the next restarts answer (and the unit's state is left as it was).
    fail_restart: Option<SystemdError>,
    cpu_weight: u64,
    memory: UnitMemory,
}

#[derive(Default)]
struct State {
    units: BTreeMap<String, FakeUnit>,
    restarts: Vec<String>,
    /// When each restart was asked for, on tokio's clock (a paused test's time).
    restart_times: Vec<tokio::time::Instant>,
    unreachable: Option<String>,
    /// Calls of `connect`, answered or not.
    connects: usize,
    /// Units removed: their followers are kept (systemd's signals for a unit it no longer
    /// knows just stop; the following does not end).
    removed: Vec<FakeUnit>,
    /// How many daemon-reloads there have been (made at the first use).
    reloads: Option<watch::Sender<u64>>,
}

#[derive(Default)]
pub struct FakeServiceManager {
    state: Mutex<State>,
}

fn text(active: &str, sub: &str) -> UnitStateText {
    (active.to_string(), sub.to_string())
}

impl FakeServiceManager {
    pub fn new() -> Arc<FakeServiceManager> {
        Arc::new(FakeServiceManager::default())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A unit in the given state ("active", "running").
    pub fn add_unit(&self, name: &str, active: &str, sub: &str) {
        let (state, _) = watch::channel(text(active, sub));
        self.lock().units.insert(
            name.into(),
            FakeUnit { state, restarts_itself: false, fail_restart: None, cpu_weight: CPU_WEIGHT_UNSET, memory: UnitMemory::default() },
        );
    }

    /// The unit is gone (its package removed): systemd no longer knows it. Its followers hear
    /// nothing more, as from systemd, until they look again (at a [`Self::daemon_reload`]).
    pub fn remove_unit(&self, name: &str) {
        let mut st = self.lock();
        if let Some(u) = st.units.remove(name) {
            st.removed.push(u);
        }
    }

    /// `systemctl daemon-reload` has run (as a package's maintainer script does): announced
    /// to every [`ServiceManager::reloads`] asked for before.
    pub fn daemon_reload(&self) {
        Self::reload_count(&mut self.lock()).send_modify(|n| *n += 1);
    }

    fn reload_count(st: &mut State) -> &watch::Sender<u64> {
        st.reloads.get_or_insert_with(|| watch::channel(0).0)
    }

    /// The unit changes state, as systemd would announce it.
    pub fn set_state(&self, name: &str, active: &str, sub: &str) {
        if let Some(u) = self.lock().units.get(name) {
            u.state.send_replace(text(active, sub));
        }
    }

    pub fn state_of(&self, name: &str) -> Option<UnitStateText> {
        self.lock().units.get(name).map(|u| u.state.borrow().clone())
    }

    /// Every restart asked for, in order.
    pub fn restarts(&self) -> Vec<String> {
        self.lock().restarts.clone()
    }

    /// When each restart was asked for (tokio's clock), in order.
    pub fn restart_times(&self) -> Vec<tokio::time::Instant> {
        self.lock().restart_times.clone()
    }

    /// Restarts of `name` fail with `e` until `None`.
    pub fn fail_restarts(&self, name: &str, e: Option<SystemdError>) {
        if let Some(u) = self.lock().units.get_mut(name) {
            u.fail_restart = e;
        }
    }

    /// The unit's `MemoryMax=`, `MemoryHigh=` and cgroup, as the test sets them.
    pub fn set_memory(&self, name: &str, memory: UnitMemory) {
        if let Some(u) = self.lock().units.get_mut(name) {
            u.memory = memory;
        }
    }

    pub fn cpu_weight_of(&self, name: &str) -> Option<u64> {
        self.lock().units.get(name).map(|u| u.cpu_weight)
    }

    /// The bus cannot be reached (`Some(why)`) or can again (`None`).
    pub fn set_unreachable(&self, why: Option<&str>) {
        self.lock().unreachable = why.map(String::from);
    }

    /// How many times `connect` was called, answered or not (how often the bus was asked).
    pub fn connects(&self) -> usize {
        self.lock().connects
    }

    fn reachable(&self) -> Result<(), SystemdError> {
        match &self.lock().unreachable {
            Some(why) => Err(SystemdError::Unreachable(why.clone())),
            None => Ok(()),
        }
    }

    fn not_found(name: &str) -> SystemdError {
        SystemdError::Refused(format!("Unit {name} not found."))
    }
}

struct FakeReloads(watch::Receiver<u64>);

impl Reloads for FakeReloads {
    fn next(&mut self) -> BoxFuture<'_, Result<(), SystemdError>> {
        Box::pin(async move { self.0.changed().await.map_err(|_| SystemdError::Bus("the bus connection closed".into())) })
    }
}

struct FakeFollow {
    state: watch::Receiver<UnitStateText>,
    restarts_itself: bool,
}

impl UnitFollow for FakeFollow {
    fn restarts_itself(&self) -> BoxFuture<'_, bool> {
        Box::pin(async move { self.restarts_itself })
    }
    fn state(&self) -> BoxFuture<'_, Result<UnitStateText, SystemdError>> {
        Box::pin(async move { Ok(self.state.borrow().clone()) })
    }
    fn changed(&mut self) -> BoxFuture<'_, Result<UnitStateText, SystemdError>> {
        Box::pin(async move {
            self.state.changed().await.map_err(|_| SystemdError::Bus("the bus connection closed".into()))?;
            Ok(self.state.borrow_and_update().clone())
        })
    }
}

impl ServiceManager for FakeServiceManager {
    fn connect(&self) -> BoxFuture<'_, Result<(), SystemdError>> {
        Box::pin(async move {
            self.lock().connects += 1;
            self.reachable()
        })
    }
    fn restart<'a>(&'a self, unit: &'a str) -> BoxFuture<'a, Result<(), SystemdError>> {
        Box::pin(async move {
            self.reachable()?;
            let mut st = self.lock();
            st.restarts.push(unit.to_string());
            st.restart_times.push(tokio::time::Instant::now());
            let u = st.units.get(unit).ok_or_else(|| Self::not_found(unit))?;
            if let Some(e) = &u.fail_restart {
                return Err(e.clone());
            }
            u.state.send_replace(text("active", "running"));
            Ok(())
        })
    }
    fn unit<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<Box<dyn UnitFollow>>, SystemdError>> {
        Box::pin(async move {
            self.reachable()?;
            Ok(self
                .lock()
                .units
                .get(name)
                .map(|u| Box::new(FakeFollow { state: u.state.subscribe(), restarts_itself: u.restarts_itself }) as Box<dyn UnitFollow>))
        })
    }
    fn cpu_weight<'a>(&'a self, unit: &'a str) -> BoxFuture<'a, Result<u64, SystemdError>> {
        Box::pin(async move {
            self.reachable()?;
            self.lock().units.get(unit).map(|u| u.cpu_weight).ok_or_else(|| Self::not_found(unit))
        })
    }
    fn set_cpu_weight<'a>(&'a self, unit: &'a str, weight: u64) -> BoxFuture<'a, Result<(), SystemdError>> {
        Box::pin(async move {
            self.reachable()?;
            let mut st = self.lock();
            let u = st.units.get_mut(unit).ok_or_else(|| Self::not_found(unit))?;
            u.cpu_weight = weight;
            Ok(())
        })
    }
    fn memory<'a>(&'a self, unit: &'a str) -> BoxFuture<'a, Result<Option<UnitMemory>, SystemdError>> {
        Box::pin(async move {
            self.reachable()?;
            Ok(self.lock().units.get(unit).map(|u| u.memory.clone()))
        })
    }
    fn reloads(&self) -> BoxFuture<'_, Result<Box<dyn Reloads>, SystemdError>> {
        Box::pin(async move {
            self.reachable()?;
            Ok(Box::new(FakeReloads(Self::reload_count(&mut self.lock()).subscribe())) as Box<dyn Reloads>)
        })
    }
}
