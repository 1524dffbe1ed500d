//! NVIDIA GPUs through NVML, loaded at run time with dlopen(3): the binary has no link-time
//! dependency on the driver, and runs (and reports "no NVML") where there is none. Only the
//! few stable entry points the resource checker needs are looked up.

use std::ffi::{c_char, c_int, c_uint, c_void, CStr};

use super::hardware::Gpu;

/// `nvmlMemory_t`.
#[repr(C)]
#[derive(Default)]
struct Memory {
    total: u64,
    free: u64,
    used: u64,
}

type Device = *mut c_void;
type Init = unsafe extern "C" fn() -> c_int;
type GetCount = unsafe extern "C" fn(*mut c_uint) -> c_int;
type GetHandle = unsafe extern "C" fn(c_uint, *mut Device) -> c_int;
type GetName = unsafe extern "C" fn(Device, *mut c_char, c_uint) -> c_int;
type GetMemory = unsafe extern "C" fn(Device, *mut Memory) -> c_int;
type DriverVersion = unsafe extern "C" fn(*mut c_char, c_uint) -> c_int;

const LIBRARY: &CStr = c"libnvidia-ml.so.1";

/// What NVML said: the driver version and the GPUs, or why there is no answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Nvml {
    /// No libnvidia-ml.so.1 on this machine: no NVIDIA driver.
    Absent,
    Failed(String),
    Found {
        driver: String,
        gpus: Vec<Gpu>,
    },
}

/// Loads NVML, lists every GPU with its name and memory, and unloads it again.
#[allow(unsafe_code)]
pub fn probe() -> Nvml {
    // SAFETY: dlopen with a NUL-terminated name; the handle is closed below on every path.
    let lib = unsafe { libc::dlopen(LIBRARY.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if lib.is_null() {
        return Nvml::Absent;
    }
    // SAFETY: `lib` is a live handle; each symbol is cast to the C signature NVML documents
    // for it (nvml.h), and used only while `lib` stays open.
    let result = unsafe { query(lib) };
    // SAFETY: closing the handle opened above, after the last use of its symbols.
    unsafe { libc::dlclose(lib) };
    result
}

#[allow(unsafe_code)]
unsafe fn symbol<T>(lib: *mut c_void, name: &CStr) -> Option<T> {
    // SAFETY (caller): `lib` is open and T is the function pointer type of `name`.
    let p = unsafe { libc::dlsym(lib, name.as_ptr()) };
    (!p.is_null()).then(|| unsafe { std::mem::transmute_copy::<*mut c_void, T>(&p) })
}

fn text(buf: &[c_char]) -> String {
    let bytes: Vec<u8> = buf.iter().take_while(|c| **c != 0).map(|c| *c as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[allow(unsafe_code)]
unsafe fn query(lib: *mut c_void) -> Nvml {
    // SAFETY: see `probe`; every out-pointer points at a live local of the documented type.
    unsafe {
        let (Some(init), Some(shutdown), Some(count), Some(handle), Some(name), Some(memory), Some(driver)) = (
            symbol::<Init>(lib, c"nvmlInit_v2"),
            symbol::<Init>(lib, c"nvmlShutdown"),
            symbol::<GetCount>(lib, c"nvmlDeviceGetCount_v2"),
            symbol::<GetHandle>(lib, c"nvmlDeviceGetHandleByIndex_v2"),
            symbol::<GetName>(lib, c"nvmlDeviceGetName"),
            symbol::<GetMemory>(lib, c"nvmlDeviceGetMemoryInfo"),
            symbol::<DriverVersion>(lib, c"nvmlSystemGetDriverVersion"),
        ) else {
            return Nvml::Failed("libnvidia-ml.so.1 lacks an expected function".into());
        };
        let rc = init();
        if rc != 0 {
            return Nvml::Failed(format!("nvmlInit_v2 returned {rc} ({})", init_error(rc)));
        }
        let mut version = [0 as c_char; 96];
        let driver_version = if driver(version.as_mut_ptr(), version.len() as c_uint) == 0 { text(&version) } else { String::new() };
        let mut n: c_uint = 0;
        let mut gpus = Vec::new();
        if count(&mut n) == 0 {
            for i in 0..n {
                let mut dev: Device = std::ptr::null_mut();
                if handle(i, &mut dev) != 0 {
                    continue;
                }
                let mut buf = [0 as c_char; 96];
                let gpu_name = if name(dev, buf.as_mut_ptr(), buf.len() as c_uint) == 0 { text(&buf) } else { format!("GPU {i}") };
                let mut mem = Memory::default();
                let vram = (memory(dev, &mut mem) == 0).then_some(mem.total);
                gpus.push(Gpu { vendor: "nvidia".into(), name: gpu_name, vram_bytes: vram, source: "nvml".into() });
            }
        }
        shutdown();
        Nvml::Found { driver: driver_version, gpus }
    }
}

/// What `nvmlInit_v2`'s return code means (`nvmlReturn_t` in nvml.h) and, for the two a
/// service meets, what to do.
fn init_error(rc: c_int) -> &'static str {
    match rc {
        4 => "NVML_ERROR_NO_PERMISSION: the GPU's device nodes cannot be opened; under systemd, a driver loaded after cluster-ai started needs `systemctl restart cluster-ai` (DeviceAllow= is resolved at start)",
        9 => "NVML_ERROR_DRIVER_NOT_LOADED: no NVIDIA kernel driver, or its /dev/nvidia* nodes are not visible here (a unit with PrivateDevices=yes)",
        12 => "NVML_ERROR_LIBRARY_NOT_FOUND",
        15 => "NVML_ERROR_GPU_IS_LOST",
        18 => "NVML_ERROR_LIB_RM_VERSION_MISMATCH: the driver and libnvidia-ml differ in version; reboot after a driver upgrade",
        _ => "see nvmlReturn_t in nvml.h",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_init_errors_a_service_meets_say_what_to_do() {
        assert!(init_error(9).contains("PrivateDevices=yes"));
        assert!(init_error(4).contains("systemctl restart cluster-ai"));
        assert_eq!(init_error(999), "see nvmlReturn_t in nvml.h");
    }

    #[test]
    fn no_driver_means_absent_not_an_error() {
        // This machine kind has no NVIDIA driver; on a machine with one (a lent GPU machine)
        // the same path is checked through `cluster-ai check --json`.
        if std::path::Path::new("/proc/driver/nvidia").exists() {
            assert!(matches!(probe(), Nvml::Found { .. }), "{:?}", probe());
        } else {
            assert_eq!(probe(), Nvml::Absent);
        }
    }
}
