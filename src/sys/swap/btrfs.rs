//! Whether btrfs will take a swap file in a directory: only a filesystem on one device whose
//! data profile is `single` (btrfs-progs#840; RAID1 and DUP answer swapon with EINVAL). Read from
//! `/proc/self/mountinfo` (the mount that holds the directory, and its device) and
//! `/sys/fs/btrfs/<uuid>/` (its devices and its data profiles), both under a root directory.

use std::path::Path;

use crate::sys::fs::read_text;

/// What to do about a [`refusal`].
pub const FIX: &str = "choose a swap.dir on another filesystem (ext4, XFS), or a btrfs on one device with the single data profile \
                       (btrfs balance start -dconvert=single converts one)";

/// Why btrfs will refuse swap files in `dir` (see [`FIX`]); `None` when it will take them or
/// it cannot be told (then the first swapon says so).
pub fn refusal(root: &Path, dir: &Path) -> Option<String> {
    let mountinfo = read_text(&root.join("proc/self/mountinfo"), crate::sys::fs::LARGE_FILE).ok()?;
    let source = mount_source(&mountinfo, dir)?;
    let device = device_name(root, &source)?;
    let fs = std::fs::read_dir(root.join("sys/fs/btrfs"))
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.join("devices").join(&device).exists())?;
    let devices = std::fs::read_dir(fs.join("devices")).ok()?.count();
    let profiles: Vec<String> = std::fs::read_dir(fs.join("allocation/data"))
        .ok()?
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let mut why = Vec::new();
    if devices > 1 {
        why.push(format!("spans {devices} devices"));
    }
    let other: Vec<&str> = profiles.iter().map(String::as_str).filter(|p| *p != "single").collect();
    if !other.is_empty() {
        why.push(format!("its data profile is {}, not single", other.join(", ")));
    }
    (!why.is_empty()).then(|| {
        format!("is on a btrfs that {}: the kernel takes swap files only on one device with the single profile", why.join(" and "))
    })
}

/// The source of the btrfs mount that holds `dir` (the longest mount point that is a prefix),
/// e.g. "/dev/vdb"; `None` when that mount is not btrfs.
fn mount_source(mountinfo: &str, dir: &Path) -> Option<String> {
    let mut best: Option<(usize, Option<String>)> = None;
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else { continue };
        let Some(mount_point) = left.split(' ').nth(4).map(unescape) else { continue };
        if !dir.starts_with(&mount_point) {
            continue;
        }
        let mut r = right.split(' ');
        let (Some(fstype), Some(source)) = (r.next(), r.next()) else { continue };
        let depth = Path::new(&mount_point).components().count();
        if best.as_ref().is_none_or(|(d, _)| depth >= *d) {
            best = Some((depth, (fstype == "btrfs").then(|| unescape(source))));
        }
    }
    best?.1
}

/// mountinfo escapes space, tab, newline and backslash as octal (`\040`).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            let v = b[i + 1..i + 4].iter().fold(0u32, |v, c| v * 8 + u32::from(c - b'0'));
            if let Ok(byte) = u8::try_from(v) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The kernel's name of a mount's device ("/dev/mapper/vg-swap" → "dm-0"), as sysfs lists it.
fn device_name(root: &Path, source: &str) -> Option<String> {
    let rel = source.strip_prefix('/')?;
    let resolved = std::fs::canonicalize(root.join(rel)).unwrap_or_else(|_| root.join(rel));
    resolved.file_name().map(|n| n.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A root with one btrfs mounted at /srv from /dev/vdb, its data profiles and devices.
    fn root(profiles: &[&str], devices: &[&str]) -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        std::fs::create_dir_all(r.join("proc/self")).unwrap();
        std::fs::write(
            r.join("proc/self/mountinfo"),
            "22 1 252:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw\n\
             40 22 0:35 / /srv rw,relatime shared:20 - btrfs /dev/vdb rw,space_cache=v2,subvolid=5,subvol=/\n\
             41 22 0:36 / /srv/my\\040dir rw - ext4 /dev/vdc rw\n",
        )
        .unwrap();
        let fs = r.join("sys/fs/btrfs/0a1b2c3d-0000-4000-8000-000000000000");
        std::fs::create_dir_all(r.join("sys/fs/btrfs/features")).unwrap();
        for p in profiles {
            std::fs::create_dir_all(fs.join("allocation/data").join(p)).unwrap();
        }
        std::fs::create_dir_all(fs.join("allocation/data")).unwrap();
        std::fs::write(fs.join("allocation/data/total_bytes"), "1\n").unwrap();
        std::fs::create_dir_all(fs.join("devices")).unwrap();
        for d in devices {
            std::fs::write(fs.join("devices").join(d), "").unwrap();
        }
        std::fs::create_dir_all(r.join("dev")).unwrap();
        std::fs::write(r.join("dev/vdb"), "").unwrap();
        t
    }

    #[test]
    fn only_single_profile_on_one_device_takes_swap_files() {
        let dir = Path::new("/srv/swap");
        assert_eq!(refusal(root(&["single"], &["vdb"]).path(), dir), None);
        let raid1 = refusal(root(&["raid1"], &["vdb"]).path(), dir).unwrap();
        assert!(raid1.contains("data profile is raid1, not single"), "{raid1}");
        let two = refusal(root(&["single"], &["vdb", "vdc"]).path(), dir).unwrap();
        assert!(two.contains("spans 2 devices") && !two.contains("profile is"), "{two}");
        let both = refusal(root(&["raid1"], &["vdb", "vdc"]).path(), dir).unwrap();
        assert!(both.contains("spans 2 devices and its data profile is raid1"), "{both}");
        assert!(refusal(root(&["dup"], &["vdb"]).path(), dir).unwrap().contains("dup"));
        // A directory on the ext4 mounted below /srv (an escaped space in its mount point), or
        // on the root ext4: not btrfs.
        assert_eq!(refusal(root(&["raid1"], &["vdb"]).path(), Path::new("/srv/my dir/swap")), None);
        assert_eq!(refusal(root(&["raid1"], &["vdb"]).path(), Path::new("/var/lib/cluster-ai/swap")), None);
        // Nothing to read: cannot be told.
        assert_eq!(refusal(tempfile::tempdir().unwrap().path(), dir), None);
    }
}
