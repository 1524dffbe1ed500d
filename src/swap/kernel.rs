//! Opt-in kernel tuning for the kind of disk under `swap.dir` (the seed's values): SSD
//! `vm.swappiness=10`, `vm.vfs_cache_pressure=50`; HDD 30 and 100. The values found before the
//! first change are kept in the state directory and put back by `swap clean`.

pub use crate::sys::sysctl::Tunables;

pub fn target(rotational: bool) -> Tunables {
    if rotational {
        Tunables { swappiness: 30, vfs_cache_pressure: 100 }
    } else {
        Tunables { swappiness: 10, vfs_cache_pressure: 50 }
    }
}
