use super::*;
use std::os::unix::fs::MetadataExt;

#[test]
fn swaps_table_with_escaped_paths() {
    let text = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n/dev/vda2                               partition\t1048572\t\t0\t\t-2\n/var/lib/my\\040swap/cluster-ai-000001.swap file\t\t2097148\t\t1024\t\t50\n";
    let e = parse_swaps(text).unwrap();
    assert_eq!(e.len(), 2);
    assert_eq!(
        e[0],
        SwapEntry { path: "/dev/vda2".into(), kind: "partition".into(), size_bytes: 1_048_572 * 1024, used_bytes: 0, priority: -2 }
    );
    assert_eq!(e[1].path, PathBuf::from("/var/lib/my swap/cluster-ai-000001.swap"));
    assert_eq!((e[1].used_bytes, e[1].priority), (1024 * 1024, 50));
    assert!(parse_swaps("Filename Type Size Used Priority\n").unwrap().is_empty());
    for bad in ["h\n/x file 1 2\n", "h\n/x file a 0 0\n", "h\n/x file 1 0 high\n"] {
        assert!(parse_swaps(bad).is_err(), "{bad:?}");
    }
    assert_eq!(unmangle("a\\134b\\011c\\0"), "a\\b\tc\\0");
}

#[test]
fn header_is_what_mkswap_writes() {
    let uuid = *b"0123456789abcdef";
    let h = swap_header(1 << 30, 4096, uuid, "cluster-ai").unwrap();
    assert_eq!(h.len(), 4096);
    assert!(h[..1024].iter().all(|b| *b == 0));
    assert_eq!(u32::from_ne_bytes(h[1024..1028].try_into().unwrap()), 1);
    assert_eq!(u32::from_ne_bytes(h[1028..1032].try_into().unwrap()), (1 << 30) / 4096 - 1);
    assert_eq!(&h[1036..1052], &uuid);
    assert_eq!(&h[1052..1062], b"cluster-ai");
    assert_eq!(&h[4086..], b"SWAPSPACE2");
    assert!(swap_header(9 * 4096, 4096, uuid, "x").unwrap_err().contains("too small"));
    assert!(swap_header(1 << 60, 4096, uuid, "x").unwrap_err().contains("too large"));
}

#[test]
fn the_header_is_accepted_by_blkid_like_mkswap_output() {
    // util-linux's own prober reads our header: TYPE=swap with our label and UUID. blkid lives
    // in /usr/sbin, which is not on a normal user's PATH.
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join("blkid"))
        .find(|p| p.is_file());
    let Some(blkid) = found else {
        if std::env::var("CLUSTER_AI_SKIP_PRIVILEGED").as_deref() == Ok("1") {
            eprintln!("SKIPPED (no blkid, CLUSTER_AI_SKIP_PRIVILEGED=1): install util-linux to run this test");
            return;
        }
        panic!("blkid (util-linux) is needed for this test and is in neither PATH nor /usr/sbin, /sbin; install util-linux, or set CLUSTER_AI_SKIP_PRIVILEGED=1 to skip it");
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let mut f = create_exclusive(&path).unwrap();
    allocate(&f, 1 << 20).unwrap();
    let uuid = random_uuid().unwrap();
    write_header(&mut f, &swap_header(1 << 20, page_size(), uuid, "cluster-ai").unwrap()).unwrap();
    let out = std::process::Command::new(&blkid).args(["-p", "-o", "export"]).arg(&path).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("TYPE=swap") && text.contains("LABEL=cluster-ai"), "{text}");
    let hex: String = uuid.iter().map(|b| format!("{b:02x}")).collect();
    let dashed = format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..]);
    assert!(text.contains(&format!("UUID={dashed}")), "{text}");
    assert!(create_exclusive(&path).is_err(), "O_EXCL: never reuse an existing file");
}

#[test]
fn exclusive_create_refuses_symlinks_and_is_private() {
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(dir.path().join("target"), dir.path().join("link")).unwrap();
    assert!(create_exclusive(&dir.path().join("link")).is_err());
    assert!(!dir.path().join("target").exists());
    create_exclusive(&dir.path().join("new")).unwrap();
    assert_eq!(std::fs::metadata(dir.path().join("new")).unwrap().mode() & 0o777, 0o600);
}

#[test]
fn filesystems_by_magic() {
    assert_eq!(classify_fs(0xEF53), Ok(SwapFs::Ext));
    assert_eq!(classify_fs(0x9123_683E), Ok(SwapFs::Btrfs));
    assert!(classify_fs(0x0102_1994).unwrap_err().starts_with("tmpfs"));
    assert!(classify_fs(0x6969).unwrap_err().contains("NFS"));
    assert!(classify_fs(0x1234).unwrap_err().contains("0x1234"));
}

#[test]
fn rotational_from_a_sysfs_fixture() {
    let t = tempfile::tempdir().unwrap();
    let dev = std::fs::metadata(t.path()).unwrap().dev();
    let (maj, min) = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
    let sys = t.path().join("sysroot");
    assert_eq!(rotational_of(&sys, dev), None);
    // A partition: sys/dev/block/M:m is the partition, its parent the disk with queue/.
    let disk = sys.join("sys/devices/disk");
    std::fs::create_dir_all(disk.join("part/")).unwrap();
    std::fs::create_dir_all(disk.join("queue")).unwrap();
    std::fs::write(disk.join("queue/rotational"), "1\n").unwrap();
    std::fs::create_dir_all(sys.join("sys/dev/block")).unwrap();
    std::os::unix::fs::symlink(disk.join("part"), sys.join(format!("sys/dev/block/{maj}:{min}"))).unwrap();
    assert_eq!(rotational_of(&sys, dev), Some(true));
    std::fs::create_dir_all(disk.join("part/queue")).unwrap();
    std::fs::write(disk.join("part/queue/rotational"), "0\n").unwrap();
    assert_eq!(rotational_of(&sys, dev), Some(false), "a whole disk's own queue wins");
}

#[test]
fn capability_from_status_text() {
    let t = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(t.path().join("proc/self")).unwrap();
    std::fs::write(t.path().join("proc/self/status"), "Name: x\nCapEff:\t000001fffeffffff\n").unwrap();
    assert!(has_cap_sys_admin(t.path()));
    std::fs::write(t.path().join("proc/self/status"), "CapEff:\t0000000000000000\n").unwrap();
    assert!(!has_cap_sys_admin(t.path()));
    // Unreadable (here: not there at all) tells nothing: swapon will say.
    std::fs::remove_file(t.path().join("proc/self/status")).unwrap();
    assert!(has_cap_sys_admin(t.path()));
}
