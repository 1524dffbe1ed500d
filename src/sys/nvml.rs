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

/// At most this many GPUs are asked about: more than any machine holds (NVML's own tools
/// stop at 64), so a count past it is a broken library, not 4 billion calls.
pub const MAX_GPUS: u32 = 64;

/// A GPU memory size above this is not one (the largest cards hold well under 1 TiB): it is
/// taken as unknown, as is 0, and said.
const MAX_VRAM: u64 = 64 << 40;

/// What follows the driver version in `Found::driver` when NVML answered something that was
/// not taken as it was (a count past [`MAX_GPUS`], a memory size of 0).
pub const NOTE: &str = "; NVML answered ";

/// What NVML said: the driver version and the GPUs, or why there is no answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Nvml {
    /// No libnvidia-ml.so.1 on this machine: no NVIDIA driver.
    Absent,
    Failed(String),
    Found {
        /// The driver's version, then any answer not taken as given ([`NOTE`]).
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
        // SAFETY: dlerror after the failed dlopen on this thread; the text is copied at once.
        let why = unsafe { libc::dlerror() };
        let why = if why.is_null() { String::new() } else { unsafe { CStr::from_ptr(why) }.to_string_lossy().into_owned() };
        return absent_or_broken(&why);
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

/// dlopen's failure: no such library anywhere is a machine without the driver; any other (a
/// 0-byte or truncated file, not ELF, the wrong architecture) is a broken install, and said.
fn absent_or_broken(dlerror: &str) -> Nvml {
    if dlerror.is_empty() || dlerror.ends_with("No such file or directory") {
        Nvml::Absent
    } else {
        Nvml::Failed(format!(
            "{} cannot be loaded: {}; reinstall the NVIDIA driver's libnvidia-ml (or remove the file)",
            LIBRARY.to_string_lossy(),
            super::one_line(dlerror, 300)
        ))
    }
}

/// A NUL-terminated string NVML wrote into `buf`, up to the buffer's end if it wrote no NUL;
/// bytes that are not UTF-8 become U+FFFD, and control characters are escaped, so a name
/// cannot move the cursor or break a line of `check`'s output.
fn text(buf: &[c_char]) -> String {
    let bytes: Vec<u8> = buf.iter().take_while(|c| **c != 0).map(|c| *c as u8).collect();
    super::one_line(&String::from_utf8_lossy(&bytes), buf.len() * 10)
}

/// NVML's memory total, if it is one: 0 or more than [`MAX_VRAM`] is unknown, and noted.
fn vram(total: u64, gpu: &str, notes: &mut Vec<String>) -> Option<u64> {
    if total == 0 || total > MAX_VRAM {
        notes.push(format!("{total} bytes of memory for {gpu}, taken as unknown"));
        None
    } else {
        Some(total)
    }
}

/// The entry points looked up, in the order `query` takes them.
const FUNCTIONS: [&CStr; 7] = [
    c"nvmlInit_v2",
    c"nvmlShutdown",
    c"nvmlDeviceGetCount_v2",
    c"nvmlDeviceGetHandleByIndex_v2",
    c"nvmlDeviceGetName",
    c"nvmlDeviceGetMemoryInfo",
    c"nvmlSystemGetDriverVersion",
];

#[allow(unsafe_code)]
unsafe fn query(lib: *mut c_void) -> Nvml {
    // SAFETY: see `probe`; every out-pointer points at a live local of the documented type.
    unsafe {
        let (Some(init), Some(shutdown), Some(count), Some(handle), Some(name), Some(memory), Some(driver)) = (
            symbol::<Init>(lib, FUNCTIONS[0]),
            symbol::<Init>(lib, FUNCTIONS[1]),
            symbol::<GetCount>(lib, FUNCTIONS[2]),
            symbol::<GetHandle>(lib, FUNCTIONS[3]),
            symbol::<GetName>(lib, FUNCTIONS[4]),
            symbol::<GetMemory>(lib, FUNCTIONS[5]),
            symbol::<DriverVersion>(lib, FUNCTIONS[6]),
        ) else {
            let missing = FUNCTIONS.iter().filter(|f| symbol::<Init>(lib, f).is_none()).map(|f| f.to_string_lossy()).collect::<Vec<_>>();
            return Nvml::Failed(format!(
                "libnvidia-ml.so.1 lacks {}; it is not NVIDIA's library or too old (reinstall the driver)",
                missing.join(", ")
            ));
        };
        let rc = init();
        if rc != 0 {
            return Nvml::Failed(format!("nvmlInit_v2 returned {rc} ({})", init_error(rc)));
        }
        let mut version = [0 as c_char; 96];
        let driver_version = if driver(version.as_mut_ptr(), version.len() as c_uint) == 0 { text(&version) } else { String::new() };
        let mut n: c_uint = 0;
        let mut gpus = Vec::new();
        let mut notes = Vec::new();
        let rc = count(&mut n);
        if rc != 0 {
            notes.push(format!("nvmlDeviceGetCount_v2 {rc} ({})", error_name(rc)));
        } else {
            if n > MAX_GPUS {
                notes.push(format!("{n} GPUs, of which the first {MAX_GPUS} are listed"));
            }
            for i in 0..n.min(MAX_GPUS) {
                let mut dev: Device = std::ptr::null_mut();
                if handle(i, &mut dev) != 0 {
                    continue;
                }
                let mut buf = [0 as c_char; 96];
                let gpu_name = if name(dev, buf.as_mut_ptr(), buf.len() as c_uint) == 0 { text(&buf) } else { format!("GPU {i}") };
                let mut mem = Memory::default();
                let vram = match memory(dev, &mut mem) {
                    0 => vram(mem.total, &format!("GPU {i} ({gpu_name})"), &mut notes),
                    _ => None,
                };
                gpus.push(Gpu { vendor: "nvidia".into(), name: gpu_name, vram_bytes: vram, source: "nvml".into() });
            }
        }
        shutdown();
        let driver = if notes.is_empty() { driver_version } else { format!("{driver_version}{NOTE}{}", notes.join("; ")) };
        Nvml::Found { driver, gpus }
    }
}

/// What `nvmlInit_v2`'s return code means (`nvmlReturn_t` in nvml.h) and, for the two a
/// service meets, what to do.
fn init_error(rc: c_int) -> &'static str {
    match rc {
        4 => "NVML_ERROR_NO_PERMISSION: the GPU's device nodes cannot be opened; under systemd, a driver loaded after cluster-ai started needs `systemctl restart cluster-ai` (DeviceAllow= is resolved at start)",
        9 => "NVML_ERROR_DRIVER_NOT_LOADED: no NVIDIA kernel driver, or its /dev/nvidia* nodes are not visible here (a unit with PrivateDevices=yes)",
        18 => "NVML_ERROR_LIB_RM_VERSION_MISMATCH: the driver and libnvidia-ml differ in version; reboot after a driver upgrade",
        other => error_name(other),
    }
}

/// `nvmlReturn_t`'s name for a code (nvml.h), so a failure says what NVML answered.
fn error_name(rc: c_int) -> &'static str {
    match rc {
        0 => "NVML_SUCCESS",
        1 => "NVML_ERROR_UNINITIALIZED",
        2 => "NVML_ERROR_INVALID_ARGUMENT",
        3 => "NVML_ERROR_NOT_SUPPORTED",
        4 => "NVML_ERROR_NO_PERMISSION",
        5 => "NVML_ERROR_ALREADY_INITIALIZED",
        6 => "NVML_ERROR_NOT_FOUND",
        7 => "NVML_ERROR_INSUFFICIENT_SIZE",
        8 => "NVML_ERROR_INSUFFICIENT_POWER",
        9 => "NVML_ERROR_DRIVER_NOT_LOADED",
        10 => "NVML_ERROR_TIMEOUT",
        11 => "NVML_ERROR_IRQ_ISSUE",
        12 => "NVML_ERROR_LIBRARY_NOT_FOUND",
        13 => "NVML_ERROR_FUNCTION_NOT_FOUND",
        14 => "NVML_ERROR_CORRUPTED_INFOROM",
        15 => "NVML_ERROR_GPU_IS_LOST",
        16 => "NVML_ERROR_RESET_REQUIRED",
        17 => "NVML_ERROR_OPERATING_SYSTEM",
        18 => "NVML_ERROR_LIB_RM_VERSION_MISMATCH",
        19 => "NVML_ERROR_IN_USE",
        20 => "NVML_ERROR_MEMORY",
        21 => "NVML_ERROR_NO_DATA",
        22 => "NVML_ERROR_VGPU_ECC_NOT_SUPPORTED",
        23 => "NVML_ERROR_INSUFFICIENT_RESOURCES",
        24 => "NVML_ERROR_FREQ_NOT_SUPPORTED",
        25 => "NVML_ERROR_ARGUMENT_VERSION_MISMATCH",
        26 => "NVML_ERROR_DEPRECATED",
        27 => "NVML_ERROR_NOT_READY",
        28 => "NVML_ERROR_GPU_NOT_FOUND",
        29 => "NVML_ERROR_INVALID_STATE",
        999 => "NVML_ERROR_UNKNOWN",
        _ => "not a code nvml.h defines",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_init_errors_a_service_meets_say_what_to_do() {
        assert!(init_error(9).contains("PrivateDevices=yes"));
        assert!(init_error(4).contains("systemctl restart cluster-ai"));
        assert_eq!(init_error(999), "NVML_ERROR_UNKNOWN");
        assert_eq!(init_error(3), "NVML_ERROR_NOT_SUPPORTED");
        assert_eq!(init_error(-1), "not a code nvml.h defines");
    }

    #[test]
    fn a_library_that_does_not_load_is_broken_not_absent() {
        assert_eq!(absent_or_broken("libnvidia-ml.so.1: cannot open shared object file: No such file or directory"), Nvml::Absent);
        let Nvml::Failed(why) = absent_or_broken("/usr/lib/libnvidia-ml.so.1: file too short") else { panic!() };
        assert!(why.contains("file too short") && why.contains("reinstall"), "{why}");
    }

    #[test]
    fn a_name_is_one_line_of_text_within_its_buffer() {
        let buf: Vec<c_char> = b"NV\xffA\x1b[2J\r\nB".iter().map(|b| *b as c_char).collect();
        assert_eq!(text(&buf), "NV\u{fffd}A\\u{1b}[2J\\r\\nB");
        let full = [b'A' as c_char; 96];
        assert_eq!(text(&full), "A".repeat(96), "no NUL: the buffer's end stops it");
    }

    #[test]
    fn no_memory_or_impossible_memory_is_unknown_and_said() {
        let mut notes = Vec::new();
        assert_eq!(vram(0, "GPU 0", &mut notes), None);
        assert_eq!(vram(u64::MAX, "GPU 1", &mut notes), None);
        assert_eq!(vram(40 << 30, "GPU 2", &mut notes), Some(40 << 30));
        assert_eq!(
            notes,
            ["0 bytes of memory for GPU 0, taken as unknown", "18446744073709551615 bytes of memory for GPU 1, taken as unknown"]
        );
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
