//! The cluster's services as the emergency measures talk to them, each through its own
//! documented HTTP API: the Dask scheduler's `/api/v1` routes, Ollama's `/api/ps` and
//! `/api/generate`, the Docker Engine's prune endpoints on its unix socket. Every call has a
//! deadline; every answer is checked before it is believed.

use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

use crate::sys::http::{request, Endpoint, HttpError, Response};

pub const PEER_TIMEOUT: Duration = Duration::from_secs(5);
/// Pruning walks the image store; it may take longer than a question.
pub const PRUNE_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PeerError {
    #[error("{0}")]
    Http(#[from] HttpError),
    #[error("answered {status}: {snippet}")]
    Status { status: u16, snippet: String },
    #[error("answered something that is not its API ({0})")]
    Garbage(String),
    /// The Dask scheduler answers, but not on `/api/v1`.
    #[error(
        "the scheduler's HTTP API is off: add \"distributed.http.scheduler.api\" to its \
         distributed.scheduler.http.routes (DASK_DISTRIBUTED__SCHEDULER__HTTP__ROUTES) to let cluster-ai retire workers"
    )]
    RouteOff,
}

fn checked(r: Response) -> Result<Response, PeerError> {
    if r.ok() {
        Ok(r)
    } else {
        Err(PeerError::Status { status: r.status, snippet: r.snippet() })
    }
}

fn json<T: for<'de> Deserialize<'de>>(r: &Response) -> Result<T, PeerError> {
    serde_json::from_slice(&r.body).map_err(|e| PeerError::Garbage(format!("{e}; began {:?}", r.snippet())))
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct DaskWorker {
    #[serde(default)]
    pub name: serde_json::Value,
    pub address: String,
}

/// The scheduler's workers (`GET /api/v1/get_workers`).
pub async fn dask_workers(scheduler: &Endpoint) -> Result<Vec<DaskWorker>, PeerError> {
    #[derive(Deserialize)]
    struct Workers {
        workers: Vec<DaskWorker>,
    }
    let r = request(scheduler, "GET", "/api/v1/get_workers", None, PEER_TIMEOUT).await?;
    if r.status == 404 {
        return Err(PeerError::RouteOff);
    }
    Ok(json::<Workers>(&checked(r)?)?.workers)
}

/// Retires one worker, the scheduler's choice (`POST /api/v1/retire_workers {"n": 1}`);
/// returns the addresses it retired.
pub async fn dask_retire_one(scheduler: &Endpoint) -> Result<Vec<String>, PeerError> {
    let body = json!({"n": 1});
    let r = request(scheduler, "POST", "/api/v1/retire_workers", Some(&body), PEER_TIMEOUT * 6).await?;
    if r.status == 404 {
        return Err(PeerError::RouteOff);
    }
    let retired: serde_json::Map<String, serde_json::Value> = json(&checked(r)?)?;
    Ok(retired.keys().cloned().collect())
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct OllamaModel {
    pub name: String,
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub size_vram: u64,
    #[serde(default)]
    pub expires_at: String,
}

impl OllamaModel {
    /// The part of the model in system RAM: Ollama's `size` less what it holds in GPU memory.
    pub fn ram_bytes(&self) -> u64 {
        self.size.saturating_sub(self.size_vram)
    }
}

/// The models Ollama has loaded (`GET /api/ps`), largest first.
pub async fn ollama_loaded(ollama: &Endpoint) -> Result<Vec<OllamaModel>, PeerError> {
    #[derive(Deserialize)]
    struct Ps {
        models: Vec<OllamaModel>,
    }
    let r = checked(request(ollama, "GET", "/api/ps", None, PEER_TIMEOUT).await?)?;
    let mut models = json::<Ps>(&r)?.models;
    // Largest first; among equals the one that expires soonest (least recently used).
    models.sort_by(|a, b| b.size.cmp(&a.size).then_with(|| a.expires_at.cmp(&b.expires_at)));
    Ok(models)
}

/// Unloads one model now (`POST /api/generate {"model": m, "keep_alive": 0}`).
pub async fn ollama_unload(ollama: &Endpoint, model: &str) -> Result<(), PeerError> {
    let body = json!({"model": model, "keep_alive": 0, "stream": false});
    checked(request(ollama, "POST", "/api/generate", Some(&body), PEER_TIMEOUT * 6).await?)?;
    Ok(())
}

/// What a Docker prune removed: images (or layers) deleted, or build cache records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pruned {
    pub items: usize,
    pub bytes: u64,
}

/// Removes dangling images (`POST /images/prune?filters={"dangling":["true"]}`), never
/// images in use, volumes or containers. Unversioned paths: the engine answers in its own
/// API version (Debian 12's speaks 1.41 only).
pub async fn docker_prune_images(docker: &Endpoint) -> Result<Pruned, PeerError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Reply {
        images_deleted: Option<Vec<serde_json::Value>>,
        space_reclaimed: u64,
    }
    let path = "/images/prune?filters=%7B%22dangling%22%3A%5B%22true%22%5D%7D";
    let r: Reply = json(&checked(request(docker, "POST", path, None, PRUNE_TIMEOUT).await?)?)?;
    // Each entry is {"Untagged": …} or {"Deleted": …}; count what was deleted.
    let deleted = r.images_deleted.unwrap_or_default().iter().filter(|e| e.get("Deleted").is_some()).count();
    Ok(Pruned { items: deleted, bytes: r.space_reclaimed })
}

/// Removes the builder's cache that no image uses (`POST /build/prune`).
pub async fn docker_prune_build_cache(docker: &Endpoint) -> Result<Pruned, PeerError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Reply {
        caches_deleted: Option<Vec<serde_json::Value>>,
        space_reclaimed: u64,
    }
    let r: Reply = json(&checked(request(docker, "POST", "/build/prune", None, PRUNE_TIMEOUT).await?)?)?;
    Ok(Pruned { items: r.caches_deleted.map_or(0, |v| v.len()), bytes: r.space_reclaimed })
}
