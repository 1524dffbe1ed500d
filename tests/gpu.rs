//! A GPU node without a GPU: a fake NVML (tests/fixtures/fake-nvml/fake-nvml.c, built here with
//! gcc as `libnvidia-ml.so.1`) found by the binary's own `dlopen` through `LD_LIBRARY_PATH`,
//! answering one GPU of known name and memory. It proves GPU discovery (`check`), the GPU part
//! of the score, the GPU-layer plan (`optimize` and the daemon's optimize task, the same code)
//! and, on that node, the unload ranking by each model's RAM (`size - size_vram`).
//! On a machine with a real NVIDIA GPU, `cluster-ai check --json` without `LD_LIBRARY_PATH`
//! is the real-hardware fixture (docs/optimize.md, "Testing the GPU path").
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/peers.rs"]
mod peers;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use peers::{wait_until, OllamaFake};

const NAME: &str = "NVIDIA Fake A100-SXM4-40GB";
const GIB: u64 = 1 << 30;

/// The fake NVML in a tempdir: `LD_LIBRARY_PATH` points there.
fn fake_nvml() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    common::build_fake_nvml(dir.path());
    dir
}

fn config(dir: &Path) -> PathBuf {
    let p = dir.join("config.toml");
    let text = format!("[swap]\ndir = \"{0}/swap\"\n[optimize]\nenv_dir = \"{0}/env\"\n", dir.display());
    std::fs::write(&p, text).unwrap();
    p
}

fn run(nvml: &Path, env: &[(&str, &str)], args: &[&str], config: &Path) -> Output {
    let mut c = Command::new(common::BIN);
    c.args(args).arg("--config").arg(config).env("LD_LIBRARY_PATH", nvml);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn check_finds_the_gpu_through_nvml_and_scores_its_memory() {
    let nvml = fake_nvml();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let v = json(&run(nvml.path(), &[], &["check", "--json"], &cfg));
    let gpus = v["hardware"]["gpus"].as_array().unwrap();
    assert_eq!(gpus[0]["vendor"], "nvidia", "{v}");
    assert_eq!(gpus[0]["name"], NAME);
    assert_eq!(gpus[0]["vram_bytes"].as_u64(), Some(40 * GIB));
    assert_eq!(gpus[0]["source"], "nvml");
    assert!(gpus[1..].iter().all(|g| g["vendor"] != "nvidia"), "NVML's GPU replaces DRM's NVIDIA lines: {gpus:?}");
    assert_eq!(v["hardware"]["nvml"], "driver 550.54.15-fake");
    // gpu 15 * min(VRAM GiB, 16) / 16: full marks at 40 GiB.
    assert_eq!(v["score"]["gpu"].as_f64(), Some(15.0), "{}", v["score"]);
    assert_eq!(v["recommended"]["ollama_gpu_layers"].as_u64(), Some(999), "24 GiB or more: every layer");
    let human = String::from_utf8(run(nvml.path(), &[], &["check"], &cfg).stdout).unwrap();
    assert!(human.contains(&format!("gpu:       nvidia {NAME} (40.0 GiB, from nvml)")), "{human}");

    // Another card: the numbers follow what NVML says, not a constant.
    let v = json(&run(nvml.path(), &[("FAKE_NVML_VRAM_MIB", "8192"), ("FAKE_NVML_NAME", "NVIDIA Small")], &["check", "--json"], &cfg));
    assert_eq!(v["hardware"]["gpus"][0]["vram_bytes"].as_u64(), Some(8 * GIB), "{v}");
    assert_eq!(v["score"]["gpu"].as_f64(), Some(7.5));
    assert_eq!(v["recommended"]["ollama_gpu_layers"].as_u64(), Some(32), "4 layers per GiB");

    // The library there but the device node not (a unit with PrivateDevices=yes): NVML fails,
    // the check says why, and plans CPU only.
    let missing = dir.path().join("no-nvidiactl");
    let v = json(&run(nvml.path(), &[("FAKE_NVML_DEVICE", missing.to_str().unwrap())], &["check", "--json"], &cfg));
    let nvml = v["hardware"]["nvml"].as_str().unwrap();
    assert!(nvml.starts_with("failed: nvmlInit_v2 returned 9 (NVML_ERROR_DRIVER_NOT_LOADED:"), "{v}");
    assert!(nvml.contains("PrivateDevices=yes"), "the fix is named: {nvml}");
    assert!(v["hardware"]["gpus"].as_array().unwrap().iter().all(|g| g["source"] != "nvml"), "{v}");
    assert_eq!(v["recommended"]["ollama_gpu_layers"].as_u64(), Some(0));
    assert!(v["warnings"].to_string().contains("nvmlInit_v2 returned 9"), "the failure is a warning: {}", v["warnings"]);
}

#[test]
fn optimize_plans_gpu_layers_from_the_gpu_and_agrees_with_check() {
    let nvml = fake_nvml();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    for (mib, layers, why) in
        [("40960", 999, "40.0 GiB of GPU memory: every layer"), ("6144", 24, "4 layers per GiB of 6.0 GiB GPU memory")]
    {
        let env = [("FAKE_NVML_VRAM_MIB", mib)];
        let plan = json(&run(nvml.path(), &env, &["optimize", "--dry-run", "--json"], &cfg));
        assert_eq!(plan["plan"]["ollama_gpu_layers"]["value"].as_u64(), Some(layers), "{}", plan["plan"]);
        assert_eq!(plan["plan"]["ollama_gpu_layers"]["source"], "auto");
        assert_eq!(plan["plan"]["ollama_gpu_layers"]["why"], why);
        let check = json(&run(nvml.path(), &env, &["check", "--json"], &cfg));
        assert_eq!(check["recommended"]["ollama_gpu_layers"].as_u64(), Some(layers));
        assert_eq!(plan["plan"]["tier"], check["tier"], "one tier for both");
    }
    assert!(!dir.path().join("env").exists(), "a dry run writes nothing");
}

/// The daemon's optimize task reads the GPU through the same `gather` as `check`, and on that
/// node the models go by their RAM: the one wholly in VRAM stays.
#[test]
fn the_daemon_plans_for_the_gpu_and_unloads_by_ram_not_vram() {
    let nvml = fake_nvml();
    let ollama = OllamaFake::start_with_vram(&[("gpu:34b", 20 * GIB, 20 * GIB), ("half:13b", 8 * GIB, 4 * GIB), ("cpu:7b", 5 * GIB, 0)]);
    let b = common::daemon();
    let env = b.dir().join("env");
    let d = b
        .config(&format!(
            "[emergency]\ndask_scheduler = \"\"\nollama = \"{}\"\n[optimize]\nenv_dir = \"{}\"\n",
            ollama.url(),
            env.display()
        ))
        .env("LD_LIBRARY_PATH", nvml.path().to_str().unwrap())
        .spawn();
    d.wait_log("optimize (start)", Duration::from_secs(30));
    let layers = d.status_json()["optimize"]["plan"]["ollama_gpu_layers"].clone();
    assert_eq!(layers["value"].as_u64(), Some(999), "{layers}");
    assert_eq!(layers["why"], "40.0 GiB of GPU memory: every layer");

    let out = Command::new(common::BIN).args(["free-memory", "--json", "--socket"]).arg(d.socket()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let order: Vec<String> = ollama.unloads.lock().unwrap().iter().map(|(m, _)| m.clone()).collect();
    assert_eq!(order, ["cpu:7b", "half:13b"], "most RAM first (5 GiB, then 4 of 8 GiB); the one in VRAM left");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let freed: u64 = v.as_array().unwrap().iter().filter_map(|a| a["freed_bytes"].as_u64()).sum();
    assert_eq!(freed, 9 * GIB, "only the RAM part counts as freed: {v}");
    let models = wait_until("the ranking in status", Duration::from_secs(10), || {
        let m = d.status_json()["emergency"]["ollama_models"].clone();
        m.as_array().is_some_and(|a| !a.is_empty()).then_some(m)
    });
    let gpu = models.as_array().unwrap().iter().find(|m| m["name"] == "gpu:34b").unwrap();
    assert_eq!(gpu["verdict"], "in_gpu_memory", "{models}");
    assert_eq!(gpu["vram_bytes"].as_u64(), Some(20 * GIB));
}

/// The real-hardware fixture, for a machine with an NVIDIA GPU and its driver (CI has none,
/// hence `--ignored`): the real `libnvidia-ml.so.1` through the same dlopen, checked against
/// `nvidia-smi`. Run it with `cargo test --test gpu -- --ignored` (docs/optimize.md).
#[test]
#[ignore = "needs an NVIDIA GPU and its driver: cargo test --test gpu -- --ignored on such a machine"]
fn a_real_nvidia_gpu_matches_nvidia_smi() {
    common::require_tool("nvidia-smi", "NVIDIA's driver utilities");
    let smi = Command::new("nvidia-smi").args(["--query-gpu=name,memory.total", "--format=csv,noheader,nounits"]).output().unwrap();
    assert!(smi.status.success(), "nvidia-smi: {}", String::from_utf8_lossy(&smi.stderr));
    let smi = String::from_utf8(smi.stdout).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(common::BIN)
        .args(["check", "--json", "--config"])
        .arg(config(dir.path()))
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap();
    let v = json(&out);
    assert!(v["hardware"]["nvml"].as_str().unwrap().starts_with("driver "), "{}", v["hardware"]["nvml"]);
    let found: Vec<&serde_json::Value> = v["hardware"]["gpus"].as_array().unwrap().iter().filter(|g| g["source"] == "nvml").collect();
    assert_eq!(found.len(), smi.lines().count(), "one GPU per nvidia-smi line:\n{smi}\n{v}");
    for (gpu, line) in found.iter().zip(smi.lines()) {
        let (name, mib) = line.rsplit_once(',').unwrap();
        assert_eq!(gpu["name"], name.trim());
        let mib: u64 = mib.trim().parse().unwrap();
        // nvidia-smi rounds down to MiB.
        assert_eq!(gpu["vram_bytes"].as_u64().unwrap() >> 20, mib, "{gpu}");
    }
    let plan =
        json(&Command::new(common::BIN).args(["optimize", "--dry-run", "--json", "--config"]).arg(config(dir.path())).output().unwrap());
    assert!(plan["plan"]["ollama_gpu_layers"]["value"].as_u64().unwrap() > 0, "{}", plan["plan"]);
}

/// What a broken or hostile NVML answers: `check` (human and --json) and `optimize --dry-run`
/// run to the end, print one line of text per GPU, plan no GPU layers on memory that is not
/// one, and say what NVML answered.
#[test]
fn a_hostile_nvml_is_said_never_believed_or_printed_raw() {
    let nvml = fake_nvml();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let ok = |out: &Output| {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && !stderr.contains("panicked"), "{stderr}");
    };
    let check = |env: &[(&str, &str)]| {
        let out = run(nvml.path(), env, &["check", "--json"], &cfg);
        ok(&out);
        json(&out)
    };

    // Memory of 0 bytes, or more than any card holds: unknown, said, and no GPU layers or score.
    for bytes in ["0", "18446744073709551615"] {
        let env = [("FAKE_NVML_VRAM_BYTES", bytes)];
        let v = check(&env);
        assert_eq!(v["hardware"]["gpus"][0]["vram_bytes"], serde_json::Value::Null, "{v}");
        let said = v["hardware"]["nvml"].as_str().unwrap();
        assert!(said.contains(&format!("NVML answered {bytes} bytes of memory for GPU 0 ({NAME}), taken as unknown")), "{said}");
        assert_eq!(v["score"]["gpu"].as_f64(), Some(0.0));
        assert_eq!(v["recommended"]["ollama_gpu_layers"].as_u64(), Some(0));
        let plan = json(&run(nvml.path(), &env, &["optimize", "--dry-run", "--json"], &cfg));
        assert_eq!(plan["plan"]["ollama_gpu_layers"]["value"].as_u64(), Some(0), "{}", plan["plan"]);
        assert_eq!(plan["plan"]["ollama_gpu_layers"]["why"], "no GPU with known memory: CPU only");
        let human = run(nvml.path(), &env, &["check"], &cfg);
        ok(&human);
        let human = String::from_utf8(human.stdout).unwrap();
        assert!(human.contains(&format!("gpu:       nvidia {NAME} (memory unknown, from nvml)")), "{human}");
        assert!(human.contains(&format!("gpu:       NVML: driver 550.54.15-fake; NVML answered {bytes} bytes")), "{human}");
    }

    // Several cards of different sizes: each listed, the plan from the largest.
    let v = check(&[("FAKE_NVML_COUNT", "3"), ("FAKE_NVML_VRAM_MIB", "8192,24576,2048")]);
    let sizes: Vec<u64> = v["hardware"]["gpus"].as_array().unwrap().iter().filter_map(|g| g["vram_bytes"].as_u64()).collect();
    assert_eq!(sizes, [8 * GIB, 24 * GIB, 2 * GIB], "{v}");
    assert_eq!(v["recommended"]["ollama_gpu_layers"].as_u64(), Some(999));

    // A count no machine has: the first 64 asked about (not 4 billion calls), and said.
    let v = check(&[("FAKE_NVML_COUNT", "4294967295")]);
    assert_eq!(v["hardware"]["gpus"].as_array().unwrap().iter().filter(|g| g["source"] == "nvml").count(), 64);
    assert!(v["hardware"]["nvml"].as_str().unwrap().contains("NVML answered 4294967295 GPUs, of which the first 64 are listed"), "{v}");
    let v = check(&[("FAKE_NVML_COUNT", "0")]);
    assert_eq!(v["hardware"]["nvml"], "driver 550.54.15-fake", "{v}");

    // A name that is not UTF-8 and holds an escape sequence and a line break, or that fills
    // the whole buffer with no NUL: one line of text either way.
    let human = run(nvml.path(), &[("FAKE_NVML_NAME_HEX", "4e56ff41c3281b5b324a0d0a42")], &["check"], &cfg);
    ok(&human);
    let human = String::from_utf8(human.stdout).unwrap();
    assert!(!human.contains('\x1b') && !human.contains('\r'), "{human:?}");
    let line = human.lines().find(|l| l.starts_with("gpu:       nvidia")).unwrap();
    assert!(line.ends_with("(40.0 GiB, from nvml)"), "the name stays on its line: {human}");
    assert!(line.contains("\\u{1b}[2J\\r\\nB"), "{line}");
    let v = check(&[("FAKE_NVML_NAME_FILL", "41")]);
    assert_eq!(v["hardware"]["gpus"][0]["name"], "A".repeat(96), "{v}");

    // NVML's failures by their nvml.h names.
    let v = check(&[("FAKE_NVML_INIT_RC", "3")]);
    assert_eq!(v["hardware"]["nvml"], "failed: nvmlInit_v2 returned 3 (NVML_ERROR_NOT_SUPPORTED)");
    let v = check(&[("FAKE_NVML_INIT_RC", "-7")]);
    assert_eq!(v["hardware"]["nvml"], "failed: nvmlInit_v2 returned -7 (not a code nvml.h defines)");
    let v = check(&[("FAKE_NVML_COUNT_RC", "15")]);
    assert_eq!(v["hardware"]["nvml"], "driver 550.54.15-fake; NVML answered nvmlDeviceGetCount_v2 15 (NVML_ERROR_GPU_IS_LOST)");

    // An entry point missing: named.
    let lacking = tempfile::tempdir().unwrap();
    common::build_fake_nvml_with(lacking.path(), &["-DFAKE_NVML_OMIT_nvmlDeviceGetName"]);
    let out = run(lacking.path(), &[], &["check", "--json"], &cfg);
    ok(&out);
    let said = json(&out)["hardware"]["nvml"].as_str().unwrap().to_string();
    assert!(said.starts_with("failed: libnvidia-ml.so.1 lacks nvmlDeviceGetName;"), "{said}");

    // A file of that name that is no library (0 bytes, text): broken, not "absent".
    for (what, content) in [("empty", &b""[..]), ("text", &b"not a shared object\n"[..])] {
        let broken = tempfile::tempdir().unwrap();
        std::fs::write(broken.path().join("libnvidia-ml.so.1"), content).unwrap();
        let out = run(broken.path(), &[], &["check", "--json"], &cfg);
        ok(&out);
        let said = json(&out)["hardware"]["nvml"].as_str().unwrap().to_string();
        assert!(said.starts_with("failed: libnvidia-ml.so.1 cannot be loaded: ") && said.contains("reinstall"), "{what}: {said}");
        let plan = json(&run(broken.path(), &[], &["optimize", "--dry-run", "--json"], &cfg));
        assert_eq!(plan["plan"]["ollama_gpu_layers"]["value"].as_u64(), Some(0), "{what}");
    }
}
