//! The memory measure: the swap task expands now, the Ollama models with the most system RAM
//! are unloaded (ranked by `ollama`), and the page cache is dropped when opted in.

use super::*;

impl Emergency {
    /// The memory measures; also `cluster-ai free-memory` (measure "free-memory").
    pub async fn memory_act(&mut self, measure: &str, why: &str) -> Vec<Action> {
        self.collected = Some(Vec::new());
        if let Some(swap) = &self.swap {
            if self.act {
                let sent = swap.try_send(SwapCommand::Expand { size: None, reply: None }).is_ok();
                let detail = if sent { "asked the swap task to expand now" } else { "the swap task is busy; it expands on its own check" };
                self.record(measure, "expand_swap", why, detail.into(), None, sent);
            } else {
                self.record(measure, "expand_swap", why, "ask the swap task to expand now".into(), None, false);
            }
        }
        if let Some(url) = self.cfg.ollama.clone() {
            if let Ok(ollama) = Endpoint::parse_url(&url) {
                self.unload_ollama(measure, why, &url, &ollama).await;
            }
        }
        if self.cfg.drop_page_cache {
            if self.act {
                let node = self.node.clone();
                match tokio::task::spawn_blocking(move || node.drop_page_cache()).await {
                    Ok(Ok(freed)) => self.record(measure, "drop_page_cache", why, "dropped the clean page cache".into(), Some(freed), true),
                    Ok(Err(e)) => self.record(measure, "drop_page_cache", why, format!("drop the page cache: {e}"), None, false),
                    Err(e) => self.record(measure, "drop_page_cache", why, format!("drop the page cache: {e}"), None, false),
                }
            } else {
                self.record(measure, "drop_page_cache", why, "drop the clean page cache".into(), None, false);
            }
        }
        self.collected.take().unwrap_or_default()
    }

    /// Unloads the model with the most system RAM (a pressure step) or up to [`MAX_UNLOADS`]
    /// of them (`free-memory`), ranked by `ollama::rank`, within [`OLLAMA_BUDGET`] for the whole
    /// step: an `/api/ps` listing thousands of models, or an Ollama that answers each request
    /// after a minute, costs one bounded step, and the CPU and disk measures still run after it.
    /// Only `/api/ps` is believed: after each unload it is read again, and a model still listed
    /// is said once, not counted, and not asked again while it stays loaded; the next one is
    /// tried in the same step.
    pub(super) async fn unload_ollama(&mut self, measure: &str, why: &str, url: &str, ollama: &Endpoint) {
        let deadline = Instant::now() + OLLAMA_BUDGET;
        let out_of_time = || format!("the step's {}s for Ollama ran out; the rest wait for the next step", OLLAMA_BUDGET.as_secs());
        let loaded = match tokio::time::timeout_at(deadline, peers::ollama_loaded(ollama)).await {
            Ok(Ok(m)) => {
                self.problem("ollama", None);
                m
            }
            Ok(Err(e)) => return self.problem("ollama", Some(format!("{url}: {e} (retried at the next step)"))),
            Err(_) => return self.problem("ollama", Some(format!("{url}: {}", out_of_time()))),
        };
        let (listed, models) = (loaded.total, loaded.largest);
        // Only names still listed stay set aside (an Ollama with more than MODELS_KEPT models
        // lists some beyond what is read: those are kept set aside too).
        if listed <= peers::MODELS_KEPT {
            self.ollama_unreleased.retain(|n| models.iter().any(|m| m.name == *n));
        }
        let ranked = ollama::rank(models, &self.cfg.keep_models, &self.ollama_unreleased);
        self.report.ollama_models = ranked.iter().take(RANKED_SHOWN).map(|(m, v)| ollama::view(m, *v)).collect();
        // One released per step on pressure; a bounded number for free-memory.
        let want = if measure == "memory" { 1 } else { MAX_UNLOADS };
        if listed > MAX_UNLOADS && measure != "memory" {
            tracing::warn!(
                measure,
                "emergency: Ollama lists {listed} models; unloading at most the {MAX_UNLOADS} with the most RAM in this step"
            );
        }
        let (mut released, mut tried, mut still_listed) = (0, 0, listed);
        for (m, _) in ranked.into_iter().filter(|(_, v)| *v == ollama::Verdict::Unload) {
            if released >= want || tried >= MAX_UNLOADS {
                break;
            }
            tried += 1;
            let name = crate::sys::one_line(&m.name, 120);
            let ram = m.ram_bytes();
            if !self.act {
                self.record(measure, "unload_ollama_model", why, format!("unload Ollama model {name}"), Some(ram), false);
                released += 1;
                continue;
            }
            match tokio::time::timeout_at(deadline, peers::ollama_unload(ollama, &m.name)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    self.record(measure, "unload_ollama_model", why, format!("unload Ollama model {name}: {e}"), None, false);
                    continue;
                }
                Err(_) => {
                    self.record(measure, "unload_ollama_model", why, format!("unload Ollama model {name}: {}", out_of_time()), None, false);
                    break;
                }
            }
            // Gone means: no longer among the models read, and one model fewer listed.
            match tokio::time::timeout_at(deadline, peers::ollama_loaded(ollama)).await {
                Ok(Ok(after)) if after.total >= still_listed || after.largest.iter().any(|a| a.name == m.name) => {
                    still_listed = after.total;
                    self.ollama_unreleased.insert(m.name.clone());
                    let detail = format!(
                        "unload Ollama model {name}: Ollama acknowledged it but still lists it (ollama#7606); not counted, and not asked again while it stays loaded"
                    );
                    self.record(measure, "unload_ollama_model", why, detail, None, false);
                }
                Ok(Ok(after)) => {
                    still_listed = after.total;
                    released += 1;
                    self.record(measure, "unload_ollama_model", why, format!("unloaded Ollama model {name}"), Some(ram), true);
                }
                Ok(Err(e)) => {
                    // Acknowledged, not confirmed: done, but nothing counted as freed.
                    released += 1;
                    let detail = format!("unloaded Ollama model {name} (not confirmed: /api/ps: {e})");
                    self.record(measure, "unload_ollama_model", why, detail, None, true);
                }
                Err(_) => {
                    let detail = format!("unloaded Ollama model {name} (not confirmed: {})", out_of_time());
                    self.record(measure, "unload_ollama_model", why, detail, None, true);
                    break;
                }
            }
        }
        if tried == 0 && measure != "memory" {
            tracing::info!(measure, "emergency: no Ollama model to unload ({listed} loaded: kept, in GPU memory, or not released)");
        }
    }
}
