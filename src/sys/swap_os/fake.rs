//! An in-memory [`SwapOs`] for unit tests of the engine and the swap task: files, a swap table
//! derived from them, memory and disk figures a test sets, and failures it arms.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::{DirFile, SwapOs};
use crate::sys::fs::DiskUsage;
use crate::sys::procfs::{MemInfo, ProcError};
use crate::sys::swap::{SwapDirError, SwapEntry, SwapFs};
use crate::sys::sysctl::{restore_plan, Restored, Tunables};

#[derive(Debug, Clone, Default)]
pub struct FakeFile {
    pub size: u64,
    /// Priority and used bytes while active.
    pub active: Option<(u16, u64)>,
}

#[derive(Debug)]
pub struct FakeState {
    pub mem_total: u64,
    pub mem_available: u64,
    pub page: u64,
    /// What the kernel leaves out of a file's size in `/proc/swaps` beyond the header page
    /// (ext4 with 1 KiB blocks loses a few pages to extent alignment).
    pub table_loss: u64,
    pub can_manage: bool,
    /// `open_dir` refuses with this reason.
    pub refuse_dir: Option<String>,
    pub dir: Option<PathBuf>,
    pub files: BTreeMap<String, FakeFile>,
    pub foreign: Vec<SwapEntry>,
    /// Size and available bytes of the directory's filesystem, and what it is.
    pub disk: (u64, u64),
    pub fs: SwapFs,
    /// The next call of this operation ("create", "allocate", "swapon", …) fails so.
    pub fail: Option<(&'static str, io::ErrorKind)>,
    pub tunables: Tunables,
    pub saved: Option<Tunables>,
    /// What `tune` set last (a test changes `tunables` after it to play someone else).
    pub set: Option<Tunables>,
    /// Every change made, in order, e.g. "swapon cluster-ai-000001.swap 50".
    pub ops: Vec<String>,
    /// swapon waits for a message here first (a test holds an operation mid-way).
    pub gate: Option<std::sync::mpsc::Receiver<()>>,
}

#[derive(Clone)]
pub struct FakeSwapOs(pub Arc<Mutex<FakeState>>);

pub const GIB: u64 = 1 << 30;

impl Default for FakeSwapOs {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeSwapOs {
    /// 16 GiB of RAM, 4 GiB in use; 100 GiB disk, half free; root.
    pub fn new() -> Self {
        FakeSwapOs(Arc::new(Mutex::new(FakeState {
            mem_total: 16 * GIB,
            mem_available: 12 * GIB,
            page: 4096,
            table_loss: 0,
            can_manage: true,
            refuse_dir: None,
            dir: None,
            files: BTreeMap::new(),
            foreign: Vec::new(),
            disk: (100 * GIB, 50 * GIB),
            fs: SwapFs::Ext,
            fail: None,
            tunables: Tunables { swappiness: 60, vfs_cache_pressure: 100 },
            saved: None,
            set: None,
            ops: Vec::new(),
            gate: None,
        })))
    }

    pub fn state(&self) -> MutexGuard<'_, FakeState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Memory use in percent (of 16 GiB unless changed).
    pub fn set_memory_used(&self, percent: f64) {
        let mut s = self.state();
        s.mem_available = (s.mem_total as f64 * (1.0 - percent / 100.0)) as u64;
    }

    /// Names of the active files, in name order.
    pub fn active(&self) -> Vec<String> {
        self.state().files.iter().filter(|(_, f)| f.active.is_some()).map(|(n, _)| n.clone()).collect()
    }

    fn step(&self, op: &'static str, name: &str) -> io::Result<MutexGuard<'_, FakeState>> {
        let mut s = self.state();
        if let Some((which, kind)) = s.fail {
            if which == op {
                s.fail = None;
                let dir = s.dir.clone().unwrap_or_default();
                return Err(io::Error::new(kind, format!("{op} {}: {kind}", dir.join(name).display())));
            }
        }
        if s.dir.is_none() {
            return Err(io::Error::other("the swap directory is not open"));
        }
        Ok(s)
    }
}

impl SwapOs for FakeSwapOs {
    fn meminfo(&mut self) -> Result<MemInfo, ProcError> {
        let s = self.state();
        let swap_total: u64 = s.files.values().filter_map(|f| f.active.map(|_| f.size)).sum();
        let swap_used: u64 = s.files.values().filter_map(|f| f.active.map(|a| a.1)).sum();
        Ok(MemInfo { total: s.mem_total, available: s.mem_available, swap_total, swap_free: swap_total.saturating_sub(swap_used) })
    }

    fn memory_pressure_file(&self) -> PathBuf {
        PathBuf::from("/nonexistent/pressure/memory")
    }

    fn swap_table(&mut self) -> Result<Vec<SwapEntry>, ProcError> {
        let s = self.state();
        let dir = s.dir.clone().unwrap_or_default();
        let mut table = s.foreign.clone();
        for (name, f) in &s.files {
            if let Some((priority, used)) = f.active {
                table.push(SwapEntry {
                    path: dir.join(name),
                    kind: "file".into(),
                    size_bytes: f.size.saturating_sub(s.page + s.table_loss),
                    used_bytes: used,
                    priority: i32::from(priority),
                });
            }
        }
        Ok(table)
    }

    fn can_manage_swap(&self) -> bool {
        self.state().can_manage
    }

    fn open_dir(&mut self, dir: &Path) -> Result<SwapFs, SwapDirError> {
        let mut s = self.state();
        if let Some(reason) = s.refuse_dir.clone() {
            return Err(SwapDirError::Refused { path: dir.to_path_buf(), reason, fix: "fix it" });
        }
        if s.dir.as_deref() != Some(dir) {
            s.dir = Some(dir.to_path_buf());
        }
        Ok(s.fs)
    }

    fn lock_dir(&mut self, _wait: Duration) -> Result<(), String> {
        Ok(())
    }

    fn list_dir(&mut self) -> io::Result<Vec<DirFile>> {
        let s = self.state();
        Ok(s.files.iter().map(|(name, f)| DirFile { name: name.clone(), size: f.size }).collect())
    }

    fn dir_usage(&self) -> Option<DiskUsage> {
        let s = self.state();
        let (total, available) = s.disk;
        let used_percent = 100.0 * (total - available) as f64 / total.max(1) as f64;
        s.dir.as_ref().map(|d| DiskUsage { path: d.clone(), total_bytes: total, available_bytes: available, used_percent })
    }

    fn rotational(&self) -> Option<bool> {
        Some(false)
    }

    fn is_active(&self, name: &str) -> bool {
        self.state().files.get(name).is_some_and(|f| f.active.is_some())
    }

    fn create_file(&mut self, name: &str, _nocow: bool) -> io::Result<()> {
        let mut s = self.step("create", name)?;
        if s.files.contains_key(name) {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("{name} exists")));
        }
        s.files.insert(name.into(), FakeFile::default());
        s.ops.push(format!("create {name}"));
        Ok(())
    }

    fn allocate(&mut self, name: &str, size: u64) -> io::Result<()> {
        let mut s = self.step("allocate", name)?;
        if s.disk.1 < size {
            return Err(io::Error::new(io::ErrorKind::StorageFull, "no space left on device"));
        }
        s.disk.1 -= size;
        s.files.get_mut(name).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?.size = size;
        Ok(())
    }

    fn format(&mut self, name: &str, _size: u64) -> io::Result<()> {
        drop(self.step("format", name)?);
        Ok(())
    }

    fn rename(&mut self, from: &str, to: &str) -> io::Result<()> {
        let mut s = self.step("rename", from)?;
        let f = s.files.remove(from).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        s.files.insert(to.into(), f);
        Ok(())
    }

    fn swapon(&mut self, name: &str, priority: u16) -> io::Result<()> {
        let gate = self.state().gate.take();
        if let Some(gate) = gate {
            let _ = gate.recv();
        }
        let mut s = self.step("swapon", name)?;
        let f = s.files.get_mut(name).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        if f.active.is_some() {
            return Err(io::Error::from(io::ErrorKind::ResourceBusy));
        }
        f.active = Some((priority, 0));
        s.ops.push(format!("swapon {name} {priority}"));
        Ok(())
    }

    fn swapoff(&mut self, name: &str) -> io::Result<()> {
        let mut s = self.step("swapoff", name)?;
        let f = s.files.get_mut(name).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        if f.active.take().is_none() {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        s.ops.push(format!("swapoff {name}"));
        Ok(())
    }

    fn delete(&mut self, name: &str) -> io::Result<()> {
        let mut s = self.step("delete", name)?;
        let f = s.files.remove(name).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        s.disk.1 += f.size;
        s.ops.push(format!("delete {name}"));
        Ok(())
    }

    fn tune(&mut self, want: Tunables) -> io::Result<Tunables> {
        let mut s = self.state();
        let was = s.tunables;
        s.saved.get_or_insert(was);
        s.set = Some(want);
        s.tunables = want;
        Ok(was)
    }

    fn restore_tuning(&mut self) -> io::Result<Option<Restored>> {
        let mut s = self.state();
        let Some(previous) = s.saved.take() else { return Ok(None) };
        let r = restore_plan(previous, s.set.take(), s.tunables);
        for (key, value) in &r.put_back {
            match *key {
                "vm.swappiness" => s.tunables.swappiness = *value,
                _ => s.tunables.vfs_cache_pressure = *value,
            }
        }
        Ok(Some(r))
    }
}
