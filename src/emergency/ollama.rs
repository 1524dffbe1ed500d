//! Which Ollama models the memory measure unloads, and in what order: the part of each model
//! held in system RAM (`size - size_vram` from `/api/ps`) decides, since a model held wholly in
//! GPU memory frees no RAM; models the user keeps (`keep_models`) and models Ollama would not
//! release last time are left alone.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::optimize::peers::OllamaModel;

/// Why a loaded model is or is not unloaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Unload,
    /// Named in `[emergency] keep_models`.
    Kept,
    /// Wholly in GPU memory: unloading it frees no system RAM.
    InGpuMemory,
    /// Ollama acknowledged an unload and still lists it (ollama#7606): not asked again while it
    /// stays loaded.
    NotReleased,
}

/// One loaded model as `status` shows it, in the order the measure would take them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RankedModel {
    pub name: String,
    pub ram_bytes: u64,
    pub vram_bytes: u64,
    pub verdict: Verdict,
}

/// `keep` as the user wrote it: "llama3" keeps every tag of llama3, "llama3:8b" that tag only.
pub fn kept(name: &str, keep: &[String]) -> bool {
    keep.iter().any(|k| k == name || (!k.contains(':') && name.split_once(':').is_some_and(|(base, _)| base == k)))
}

/// The models to unload first (most RAM first; among equals the one that expires soonest),
/// then those left alone, each with its verdict.
pub fn rank(models: Vec<OllamaModel>, keep: &[String], unreleased: &BTreeSet<String>) -> Vec<(OllamaModel, Verdict)> {
    let mut ranked: Vec<(OllamaModel, Verdict)> = models
        .into_iter()
        .map(|m| {
            let verdict = if kept(&m.name, keep) {
                Verdict::Kept
            } else if unreleased.contains(&m.name) {
                Verdict::NotReleased
            } else if m.ram_bytes() == 0 {
                Verdict::InGpuMemory
            } else {
                Verdict::Unload
            };
            (m, verdict)
        })
        .collect();
    ranked.sort_by(|(a, va), (b, vb)| {
        (*va != Verdict::Unload)
            .cmp(&(*vb != Verdict::Unload))
            .then_with(|| b.ram_bytes().cmp(&a.ram_bytes()))
            .then_with(|| a.expires_at.cmp(&b.expires_at))
    });
    ranked
}

pub fn view(m: &OllamaModel, verdict: Verdict) -> RankedModel {
    RankedModel { name: crate::sys::one_line(&m.name, 120), ram_bytes: m.ram_bytes(), vram_bytes: m.size_vram.min(m.size), verdict }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(name: &str, size: u64, vram: u64) -> OllamaModel {
        OllamaModel { name: name.into(), size, size_vram: vram, expires_at: String::new() }
    }

    #[test]
    fn ranked_by_the_part_in_ram_and_the_rest_left_alone() {
        const G: u64 = 1 << 30;
        let models = vec![
            model("gpu:70b", 10 * G, 10 * G),
            model("ram:3b", 3 * G, 0),
            model("part:13b", 8 * G, 6 * G),
            model("llama3:8b", 5 * G, 0),
            model("stuck:7b", 4 * G, 0),
            // A size_vram over size (a peer's mistake) frees nothing, and does not underflow.
            model("odd:1b", G, 2 * G),
        ];
        let unreleased = BTreeSet::from(["stuck:7b".to_string()]);
        let ranked = rank(models, &["llama3".to_string()], &unreleased);
        let order: Vec<(&str, Verdict)> = ranked.iter().map(|(m, v)| (m.name.as_str(), *v)).collect();
        assert_eq!(order[..3], [("ram:3b", Verdict::Unload), ("part:13b", Verdict::Unload), ("llama3:8b", Verdict::Kept)][..], "{order:?}");
        assert!(order.contains(&("gpu:70b", Verdict::InGpuMemory)) && order.contains(&("odd:1b", Verdict::InGpuMemory)));
        assert!(order.contains(&("stuck:7b", Verdict::NotReleased)));
    }

    #[test]
    fn keep_models_names_a_model_or_one_tag_of_it() {
        let keep = vec!["llama3".to_string(), "qwen2:7b".to_string()];
        assert!(kept("llama3:8b", &keep) && kept("llama3:latest", &keep) && kept("llama3", &keep));
        assert!(kept("qwen2:7b", &keep) && !kept("qwen2:72b", &keep) && !kept("llama3.1:8b", &keep));
    }
}
