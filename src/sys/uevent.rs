//! The kernel's device events (uevents) on a netlink socket: how the optimize task learns that
//! a GPU, a memory block or a CPU came or went without polling. Reading them needs no
//! privilege; only the kernel (sender port 0) is believed. Nothing arrives where the socket
//! is in a network namespace other than the host's (a container), which is harmless: the
//! task then re-plans on start, reload and memory size only, as before.

use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{bind, recvfrom, socket, AddressFamily, NetlinkAddr, SockFlag, SockProtocol, SockType};
use tokio::io::unix::AsyncFd;

/// One kernel uevent: `ACTION@DEVPATH` and its `KEY=VALUE` fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Uevent {
    pub action: String,
    pub devpath: String,
    pub subsystem: String,
    pub driver: Option<String>,
}

pub struct Uevents {
    fd: AsyncFd<OwnedFd>,
}

impl Uevents {
    /// Joins the kernel's uevent multicast group. Needs a tokio runtime.
    pub fn open() -> std::io::Result<Self> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Datagram,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkKObjectUEvent,
        )?;
        // Port 0: the kernel assigns one; group 1: the kernel's own events (udev's are 2).
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 1))?;
        register(fd).map(|fd| Self { fd })
    }

    /// The next uevent from the kernel (messages from anyone else, or that do not parse, are
    /// skipped).
    pub async fn next(&self) -> std::io::Result<Uevent> {
        // Made once an event is there: this future is made anew each time the task's other
        // branches fire (every snapshot), and an 8 KiB zeroed buffer each time was a tenth of
        // the idle daemon's instructions (callgrind).
        let mut buf = Vec::new();
        loop {
            let mut guard = self.fd.readable().await?;
            if buf.is_empty() {
                buf.resize(8192, 0u8);
            }
            match guard.try_io(|fd| recvfrom::<NetlinkAddr>(fd.get_ref().as_raw_fd(), &mut buf).map_err(std::io::Error::from)) {
                Err(_would_block) => continue,
                Ok(Err(e)) if e.raw_os_error() == Some(libc::ENOBUFS) => continue, // events were lost; the next one still counts
                Ok(Err(e)) => return Err(e),
                Ok(Ok((n, from))) => {
                    if from.map(|a| a.pid()) != Some(0) {
                        continue;
                    }
                    if let Some(e) = parse(&buf[..n]) {
                        return Ok(e);
                    }
                }
            }
        }
    }
}

#[allow(unsafe_code)]
fn register(fd: OwnedFd) -> std::io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the OwnedFd is moved into the AsyncFd and stays open, the same descriptor, for as
    // long as the AsyncFd lives; nothing else closes or replaces it.
    Ok(unsafe { AsyncFd::register(fd) }?)
}

/// `add@/devices/…\0ACTION=add\0DEVPATH=…\0SUBSYSTEM=drm\0…`
pub fn parse(msg: &[u8]) -> Option<Uevent> {
    let mut parts = msg.split(|b| *b == 0).filter(|p| !p.is_empty()).map(String::from_utf8_lossy);
    let header = parts.next()?;
    let (action, devpath) = header.split_once('@')?;
    let mut e = Uevent { action: action.into(), devpath: devpath.into(), subsystem: String::new(), driver: None };
    for field in parts {
        match field.split_once('=') {
            Some(("SUBSYSTEM", v)) => e.subsystem = v.into(),
            Some(("DRIVER", v)) => e.driver = Some(v.into()),
            Some(("ACTION", v)) => e.action = v.into(),
            _ => {}
        }
    }
    (!e.subsystem.is_empty()).then_some(e)
}

/// Kernel drivers of GPUs, as a PCI device's DRIVER names them when it binds.
const GPU_DRIVERS: [&str; 7] = ["nvidia", "amdgpu", "radeon", "i915", "xe", "nouveau", "nvidia-drm"];

/// Whether the event can change the hardware profile the plan is made from, and if so, what
/// to call it in the log: a GPU (DRM device, or a GPU driver bound to a PCI device), a memory
/// block or a CPU coming or going.
pub fn hardware_change(e: &Uevent) -> Option<String> {
    let name = e.devpath.rsplit('/').next().unwrap_or(&e.devpath);
    let what = match (e.subsystem.as_str(), e.action.as_str()) {
        ("drm", "add" | "remove") => "GPU",
        ("pci", "bind" | "unbind") if e.driver.as_deref().is_some_and(|d| GPU_DRIVERS.contains(&d)) => "GPU driver",
        ("memory", "add" | "remove" | "online" | "offline") => "memory block",
        ("cpu", "add" | "remove" | "online" | "offline") => "CPU",
        _ => return None,
    };
    Some(format!("{what} {name} {}", e.action))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(action: &str, devpath: &str, subsystem: &str, driver: Option<&str>) -> Uevent {
        Uevent { action: action.into(), devpath: devpath.into(), subsystem: subsystem.into(), driver: driver.map(Into::into) }
    }

    #[test]
    fn kernel_messages_parse() {
        let msg = b"add@/devices/pci0000:00/0000:00:02.0/drm/card1\0ACTION=add\0DEVPATH=/devices/pci0000:00/0000:00:02.0/drm/card1\0SUBSYSTEM=drm\0MINOR=1\0SEQNUM=4711\0";
        assert_eq!(parse(msg), Some(event("add", "/devices/pci0000:00/0000:00:02.0/drm/card1", "drm", None)));
        let bind = b"bind@/devices/pci0000:00/0000:00:1e.0\0ACTION=bind\0SUBSYSTEM=pci\0DRIVER=nvidia\0";
        assert_eq!(parse(bind).unwrap().driver.as_deref(), Some("nvidia"));
        // udev's re-broadcast format and garbage are not kernel uevents.
        assert_eq!(parse(b"libudev\0\xfe\xed\xca\xfe"), None);
        assert_eq!(parse(b""), None);
        assert_eq!(parse(b"add@/devices/x\0ACTION=add\0"), None, "no subsystem");
    }

    #[test]
    fn only_gpus_memory_and_cpus_coming_or_going_count() {
        let yes = [
            (event("add", "/devices/pci0000:00/0000:01:00.0/drm/card1", "drm", None), "GPU card1 add"),
            (event("bind", "/devices/pci0000:00/0000:01:00.0", "pci", Some("nvidia")), "GPU driver 0000:01:00.0 bind"),
            (event("online", "/devices/system/memory/memory42", "memory", None), "memory block memory42 online"),
            (event("offline", "/devices/system/cpu/cpu3", "cpu", None), "CPU cpu3 offline"),
        ];
        for (e, text) in yes {
            assert_eq!(hardware_change(&e).as_deref(), Some(text));
        }
        let no = [
            event("change", "/devices/pci0000:00/0000:01:00.0/drm/card1", "drm", None), // a monitor plugged in
            event("bind", "/devices/pci0000:00/0000:00:1f.6", "pci", Some("e1000e")),
            event("add", "/devices/virtual/net/veth0", "net", None),
            event("change", "/devices/system/memory/memory42", "memory", None),
        ];
        for e in no {
            assert_eq!(hardware_change(&e), None, "{e:?}");
        }
    }

    mod props {
        use proptest::prelude::*;

        use super::super::*;
        use crate::testing::piece;

        /// A field's value: anything but NUL, the message's separator.
        fn value() -> impl Strategy<Value = String> {
            prop::collection::vec(piece(), 0..4).prop_map(|p| p.concat().replace('\0', ""))
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// A netlink message is any bytes (only the kernel is believed, but its text is
            /// still parsed as untrusted): an event or nothing, and then one with a subsystem.
            #[test]
            fn any_message_is_an_event_or_nothing(msg in prop::collection::vec(any::<u8>(), 0..600)) {
                if let Some(e) = parse(&msg) {
                    prop_assert!(!e.subsystem.is_empty());
                    let _ = hardware_change(&e);
                }
            }

            /// The kernel's layout, any values and any other fields: the event comes back, and
            /// its ACTION field is the one believed.
            #[test]
            fn kernel_messages_round_trip(
                action in "[a-z_]{1,10}",
                header_action in "[a-z]{1,10}",
                devpath in value(),
                subsystem in value().prop_filter("a subsystem", |s| !s.is_empty()),
                driver in prop::option::of(value()),
                other in prop::collection::vec(("[A-Z_]{1,12}", value()), 0..6),
                at in any::<prop::sample::Index>(),
            ) {
                let mut fields = vec![format!("ACTION={action}"), format!("DEVPATH={devpath}"), format!("SUBSYSTEM={subsystem}")];
                if let Some(d) = &driver {
                    fields.push(format!("DRIVER={d}"));
                }
                for (k, v) in other.iter().filter(|(k, _)| !matches!(k.as_str(), "ACTION" | "SUBSYSTEM" | "DRIVER")) {
                    fields.insert(at.index(fields.len() + 1), format!("{k}={v}"));
                }
                let msg = format!("{header_action}@{devpath}\0{}\0", fields.join("\0"));
                let e = parse(msg.as_bytes()).unwrap();
                prop_assert_eq!(e, Uevent { action, devpath, subsystem, driver });
            }
        }
    }
}
