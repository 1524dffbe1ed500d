//! The cluster's services as the emergency measures talk to them, each through its own
//! documented HTTP API: the Dask scheduler's `/api/v1` routes, Ollama's `/api/ps` and
//! `/api/generate`, the Docker Engine's prune endpoints on its unix socket. Every call has a
//! deadline; every answer is checked before it is believed.

use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

use crate::sys::http::{request, Endpoint, HttpError, Response};
use crate::sys::json::{each_element, each_entry};

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

/// An answer as `T`, or garbage with the start of what was said.
fn json<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, PeerError> {
    serde_json::from_slice(body)
        .map_err(|e| PeerError::Garbage(format!("{}; began {:?}", crate::sys::json::error_text(&e), crate::sys::http::snippet(body))))
}

/// A JSON array read one element at a time, each checked as a `T` and dropped: how many of
/// them [`Counted::counts`]. An answer of a million elements costs no more memory than one.
struct Count<T>(usize, std::marker::PhantomData<T>);

trait Counted: for<'de> Deserialize<'de> {
    fn counts(&self) -> bool {
        true
    }
}

impl<'de, T: Counted> Deserialize<'de> for Count<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = each_element(d, 0usize, |n, e: T| {
            *n += usize::from(e.counts());
            Ok(())
        })?;
        Ok(Count(n, std::marker::PhantomData))
    }
}

impl Counted for serde::de::IgnoredAny {}

/// How many workers the scheduler lists (`GET /api/v1/get_workers`).
pub async fn dask_worker_count(scheduler: &Endpoint) -> Result<usize, PeerError> {
    let r = request(scheduler, "GET", "/api/v1/get_workers", None, PEER_TIMEOUT).await?;
    if r.status == 404 {
        return Err(PeerError::RouteOff);
    }
    parse_worker_count(&checked(r)?.body)
}

/// `{"workers": [{"address": "tcp://…", …}, …]}`: each worker must have an address.
pub fn parse_worker_count(body: &[u8]) -> Result<usize, PeerError> {
    #[derive(Deserialize)]
    struct Workers {
        workers: Count<Worker>,
    }
    #[derive(Deserialize)]
    struct Worker {
        #[serde(rename = "address")]
        _address: String,
    }
    impl Counted for Worker {}
    Ok(json::<Workers>(body)?.workers.0)
}

/// What a retire answer says: how many workers went, and the first few addresses (escaped
/// and cut, for a log line and an alert).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Retired {
    pub count: usize,
    pub shown: Vec<String>,
}

/// Addresses shown of those retired; the rest are counted.
pub const RETIRED_SHOWN: usize = 8;

/// Retires one worker, the scheduler's choice (`POST /api/v1/retire_workers {"n": 1}`).
pub async fn dask_retire_one(scheduler: &Endpoint) -> Result<Retired, PeerError> {
    let body = json!({"n": 1});
    let r = request(scheduler, "POST", "/api/v1/retire_workers", Some(&body), PEER_TIMEOUT * 6).await?;
    if r.status == 404 {
        return Err(PeerError::RouteOff);
    }
    parse_retired(&checked(r)?.body)
}

impl<'de> Deserialize<'de> for Retired {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        each_entry(d, Retired::default(), |r, address: String, _: serde::de::IgnoredAny| {
            r.count += 1;
            if r.shown.len() < RETIRED_SHOWN {
                r.shown.push(crate::sys::one_line(&address, 120));
            }
            Ok(())
        })
    }
}

/// `{"tcp://…": {worker info}, …}`: the addresses retired.
pub fn parse_retired(body: &[u8]) -> Result<Retired, PeerError> {
    json(body)
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

/// The models Ollama has loaded: how many, and the largest few.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Loaded {
    pub total: usize,
    /// At most [`MODELS_KEPT`], the most system RAM first (`size - size_vram`: a model held
    /// wholly in GPU memory frees none); among equals the one that expires soonest (least
    /// recently used).
    pub largest: Vec<OllamaModel>,
}

/// Models kept of an `/api/ps` answer: far more than one step unloads (8), so models that are
/// kept or in GPU memory still leave enough to choose from, and `status` can show them.
pub const MODELS_KEPT: usize = 64;

/// The models Ollama has loaded (`GET /api/ps`).
pub async fn ollama_loaded(ollama: &Endpoint) -> Result<Loaded, PeerError> {
    let r = checked(request(ollama, "GET", "/api/ps", None, PEER_TIMEOUT).await?)?;
    parse_loaded(&r.body)
}

impl<'de> Deserialize<'de> for Loaded {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut loaded = each_element(d, Loaded::default(), |l, m: OllamaModel| {
            l.total += 1;
            l.largest.push(m);
            // Cut now and then, not at each model: at most twice the kept ones are held.
            if l.largest.len() >= 2 * MODELS_KEPT {
                l.keep_largest();
            }
            Ok(())
        })?;
        loaded.keep_largest();
        Ok(loaded)
    }
}

impl Loaded {
    /// Orders `largest` (a stable sort: among equals, the order Ollama listed them) and keeps
    /// [`MODELS_KEPT`].
    fn keep_largest(&mut self) {
        self.largest.sort_by(|a, b| b.ram_bytes().cmp(&a.ram_bytes()).then_with(|| a.expires_at.cmp(&b.expires_at)));
        self.largest.truncate(MODELS_KEPT);
    }
}

/// `{"models": [{"name": …, "size": …, "expires_at": …}, …]}`, read one model at a time, only
/// the largest kept: the answer comes when memory is short.
pub fn parse_loaded(body: &[u8]) -> Result<Loaded, PeerError> {
    #[derive(Deserialize)]
    struct Ps {
        models: Loaded,
    }
    Ok(json::<Ps>(body)?.models)
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
    let path = "/images/prune?filters=%7B%22dangling%22%3A%5B%22true%22%5D%7D";
    parse_pruned_images(&checked(request(docker, "POST", path, None, PRUNE_TIMEOUT).await?)?.body)
}

/// `{"ImagesDeleted": [{"Untagged": …} or {"Deleted": …}, …] or null, "SpaceReclaimed": n}`:
/// what was deleted is counted.
pub fn parse_pruned_images(body: &[u8]) -> Result<Pruned, PeerError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Reply {
        images_deleted: Option<Count<Entry>>,
        space_reclaimed: u64,
    }
    #[derive(Deserialize)]
    struct Entry {
        /// Whether the entry has the key, whatever its value.
        #[serde(rename = "Deleted", default, deserialize_with = "present")]
        deleted: bool,
    }
    fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
        serde::de::IgnoredAny::deserialize(d).map(|_| true)
    }
    impl Counted for Entry {
        fn counts(&self) -> bool {
            self.deleted
        }
    }
    let r: Reply = json(body)?;
    Ok(Pruned { items: r.images_deleted.map_or(0, |c| c.0), bytes: r.space_reclaimed })
}

/// Removes the builder's cache that no image uses (`POST /build/prune`).
pub async fn docker_prune_build_cache(docker: &Endpoint) -> Result<Pruned, PeerError> {
    parse_pruned_cache(&checked(request(docker, "POST", "/build/prune", None, PRUNE_TIMEOUT).await?)?.body)
}

/// `{"CachesDeleted": [id, …] or null, "SpaceReclaimed": n}`.
pub fn parse_pruned_cache(body: &[u8]) -> Result<Pruned, PeerError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Reply {
        caches_deleted: Option<Count<serde::de::IgnoredAny>>,
        space_reclaimed: u64,
    }
    let r: Reply = json(body)?;
    Ok(Pruned { items: r.caches_deleted.map_or(0, |c| c.0), bytes: r.space_reclaimed })
}

#[cfg(test)]
mod props;
