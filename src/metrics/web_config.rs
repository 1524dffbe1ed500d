//! `[metrics] web_config_file`: TLS and basic auth for `/metrics`, in the web configuration
//! file format of Prometheus's exporter-toolkit (the `--web.config.file` of node_exporter and
//! Prometheus itself), so a file written for them works here:
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: server.crt        # PEM; relative paths are relative to this file's directory
//!   key_file: server.key
//!   client_auth_type: RequireAndVerifyClientCert   # optional, with client_ca_file
//!   client_ca_file: clients.crt
//!   min_version: TLS12           # TLS12 (default) or TLS13
//!   max_version: TLS13
//! basic_auth_users:
//!   prometheus: $2y$10$...       # bcrypt hash (htpasswd -nBC 10 "" | tr -d ':\n')
//! ```
//!
//! exporter-toolkit keys that cluster-ai does not implement (`cipher_suites`,
//! `curve_preferences`, `prefer_server_cipher_suites`, `client_allowed_sans`, inline `cert`
//! and `key`, `http_server_config`) are errors that say so, not silently ignored settings.
//! Errors name the file, the key and what would be right.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;

/// The file and the certificates it names are read whole, up to this size each.
const MAX_FILE: u64 = 1 << 20;

/// A verified password is remembered this long after its last use, so a scrape every 15 s costs
/// one bcrypt, not one per scrape (exporter-toolkit caches the same way); a password no longer
/// used is forgotten after it.
pub const AUTH_CACHE_TTL: Duration = Duration::from_secs(300);
/// At most this many remembered verifications (one per user in practice).
const AUTH_CACHE_MAX: usize = 64;

// Described as the file's keys in serde's messages, never by these types' names.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a web config: a mapping with tls_server_config and basic_auth_users")]
struct RawWebConfig {
    tls_server_config: Option<RawTls>,
    http_server_config: Option<serde_yaml_ng::Value>,
    basic_auth_users: Option<Users>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping of tls_server_config's keys (cert_file, key_file, ...)")]
struct RawTls {
    cert_file: Option<String>,
    key_file: Option<String>,
    client_auth_type: Option<String>,
    client_ca_file: Option<String>,
    min_version: Option<String>,
    max_version: Option<String>,
    cert: Option<serde_yaml_ng::Value>,
    key: Option<serde_yaml_ng::Value>,
    cipher_suites: Option<serde_yaml_ng::Value>,
    curve_preferences: Option<serde_yaml_ng::Value>,
    prefer_server_cipher_suites: Option<serde_yaml_ng::Value>,
    client_allowed_sans: Option<serde_yaml_ng::Value>,
}

/// `basic_auth_users` as written, every entry in order: a map type would keep only the last of
/// a user written twice, and which password holds would be a guess.
struct Users(Vec<(String, String)>);

impl<'de> Deserialize<'de> for Users {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Users, D::Error> {
        crate::sys::json::each_entry(d, Vec::new(), |users: &mut Vec<(String, String)>, user: String, hash: String| {
            users.push((user, hash));
            Ok(())
        })
        .map(Users)
    }
}

/// A validated web configuration (certificates not yet read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebConfig {
    pub tls: Option<TlsSettings>,
    /// User name → bcrypt hash. Empty: no authentication.
    pub users: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub client_auth: ClientAuth,
    pub min_version: TlsVersion,
    pub max_version: TlsVersion,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientAuth {
    /// `NoClientCert` (the default).
    None,
    /// `VerifyClientCertIfGiven`: a certificate is optional but must chain to the CA file.
    IfGiven(PathBuf),
    /// `RequireAndVerifyClientCert`.
    Required(PathBuf),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

/// Parses the file's text; `path` names it in errors and anchors relative paths. Errors:
/// every problem found, one per line, each as `FILE: KEY: what is wrong and what is right`
/// (a YAML syntax error stops at the first, with its line and column).
pub fn parse(path: &Path, text: &str) -> Result<WebConfig, String> {
    let shown = crate::sys::display_path(path);
    let mut problems: Vec<String> = Vec::new();
    // One line each, of a bounded length: a key or a value quoted back may hold a terminal's
    // escape sequence, a line break or a megabyte.
    let mut at = |key: &str, msg: String| problems.push(crate::sys::one_line(&format!("{shown}: {key}: {msg}"), MAX_PROBLEM));
    // An empty file is exporter-toolkit's "no TLS, no authentication".
    let raw: RawWebConfig = if text.trim().is_empty() {
        RawWebConfig::default()
    } else {
        if let Some(line) = too_deep(text) {
            return Err(format!(
                "{shown}: line {line}: nested deeper than {MAX_DEPTH} levels of [ and {{; a web config is a few levels deep (see docs/metrics.md)"
            ));
        }
        serde_yaml_ng::from_str(text).map_err(|e| crate::sys::one_line(&format!("{shown}: {e}"), MAX_PROBLEM))?
    };
    let unsupported = "exporter-toolkit's key, which cluster-ai does not implement; remove it (docs/metrics.md lists the keys it reads)";
    if raw.http_server_config.is_some() {
        at("http_server_config", unsupported.into());
    }
    let dir = path.parent().unwrap_or(Path::new("/"));
    let file = |v: Option<&str>| v.filter(|s| !s.is_empty()).map(|s| dir.join(s));
    let missing = || "missing; expected the path of a PEM file".to_string();
    let mut tls = None;
    if let Some(t) = raw.tls_server_config {
        for (key, v) in [
            ("cert", &t.cert),
            ("key", &t.key),
            ("cipher_suites", &t.cipher_suites),
            ("curve_preferences", &t.curve_preferences),
            ("prefer_server_cipher_suites", &t.prefer_server_cipher_suites),
            ("client_allowed_sans", &t.client_allowed_sans),
        ] {
            if v.is_some() {
                at(&format!("tls_server_config.{key}"), unsupported.into());
            }
        }
        let version = |v: Option<&str>, default: TlsVersion| match v {
            None | Some("") => Ok(default),
            Some("TLS12") => Ok(TlsVersion::Tls12),
            Some("TLS13") => Ok(TlsVersion::Tls13),
            Some(o @ ("TLS10" | "TLS11")) => Err(format!("{o:?} is too old for cluster-ai (rustls); expected TLS12 or TLS13")),
            Some(o) => Err(format!("{o:?} is not a TLS version; expected TLS12 or TLS13")),
        };
        let min_version = version(t.min_version.as_deref(), TlsVersion::Tls12)
            .unwrap_or_else(|e| (at("tls_server_config.min_version", e), TlsVersion::Tls12).1);
        let max_version = version(t.max_version.as_deref(), TlsVersion::Tls13)
            .unwrap_or_else(|e| (at("tls_server_config.max_version", e), TlsVersion::Tls13).1);
        if min_version > max_version {
            at("tls_server_config.max_version", "is below min_version".into());
        }
        let ca = file(t.client_ca_file.as_deref());
        let needs_ca = |ca: Option<PathBuf>, at: &mut dyn FnMut(&str, String)| {
            ca.unwrap_or_else(|| {
                at("tls_server_config.client_ca_file", missing());
                PathBuf::new()
            })
        };
        let client_auth = match t.client_auth_type.as_deref() {
            None | Some("") | Some("NoClientCert") => {
                if ca.is_some() {
                    at(
                        "tls_server_config.client_ca_file",
                        "is set but client_auth_type is NoClientCert; set client_auth_type to RequireAndVerifyClientCert".into(),
                    );
                }
                ClientAuth::None
            }
            Some("VerifyClientCertIfGiven") => ClientAuth::IfGiven(needs_ca(ca, &mut at)),
            Some("RequireAndVerifyClientCert") => ClientAuth::Required(needs_ca(ca, &mut at)),
            Some(o @ ("RequestClientCert" | "RequireAnyClientCert")) => {
                at(
                    "tls_server_config.client_auth_type",
                    format!("{o:?} accepts unverified certificates, which cluster-ai does not; use VerifyClientCertIfGiven or RequireAndVerifyClientCert with client_ca_file"),
                );
                ClientAuth::None
            }
            Some(o) => {
                at(
                    "tls_server_config.client_auth_type",
                    format!(
                        "{o:?} is not a client auth type; expected NoClientCert, VerifyClientCertIfGiven or RequireAndVerifyClientCert"
                    ),
                );
                ClientAuth::None
            }
        };
        let cert_file = file(t.cert_file.as_deref()).unwrap_or_else(|| (at("tls_server_config.cert_file", missing()), PathBuf::new()).1);
        let key_file = file(t.key_file.as_deref()).unwrap_or_else(|| (at("tls_server_config.key_file", missing()), PathBuf::new()).1);
        tls = Some(TlsSettings { cert_file, key_file, client_auth, min_version, max_version });
    }
    let mut users = BTreeMap::new();
    for (user, hash) in raw.basic_auth_users.map(|u| u.0).unwrap_or_default() {
        let key = format!("basic_auth_users.{user}");
        if user.is_empty() || user.contains(':') {
            at(&key, "a user name must be non-empty and hold no ':' (basic auth splits on it)".into());
        } else if let Err(e) = hash.parse::<bcrypt::HashParts>() {
            at(&key, format!("not a bcrypt hash ({e}); expected e.g. the output of htpasswd -nBC 10 \"\" | tr -d ':\\n'"));
        } else if users.insert(user.clone(), hash).is_some() {
            at(&key, "written twice; keep one entry per user (which password would hold is a guess)".into());
        }
    }
    if problems.is_empty() {
        Ok(WebConfig { tls, users })
    } else {
        Err(problems.join("\n"))
    }
}

/// One problem's line at most, in characters.
const MAX_PROBLEM: usize = 1000;

/// Flow collections (`[`, `{`) nested deeper than this are refused before the YAML parser
/// sees them: it would refuse them too (past 128 levels), but only after building every one,
/// seconds and a hundred MiB for a 1 MiB file of `[`, on the daemon's one thread at a reload.
const MAX_DEPTH: usize = 64;

/// The line where `[` and `{` first nest deeper than [`MAX_DEPTH`], outside quotes and
/// comments; `None` when they never do.
fn too_deep(text: &str) -> Option<usize> {
    let (mut depth, mut line, mut quote, mut comment, mut prev) = (0usize, 1, None, false, ' ');
    for c in text.chars() {
        match (c, quote) {
            ('\n', _) => {
                line += 1;
                comment = false;
            }
            _ if comment => {}
            (c, Some(q)) if c == q => quote = None,
            (_, Some(_)) => {}
            ('\'' | '"', None) => quote = Some(c),
            ('#', None) if prev.is_whitespace() => comment = true,
            ('[' | '{', None) => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Some(line);
                }
            }
            (']' | '}', None) => depth = depth.saturating_sub(1),
            _ => {}
        }
        prev = c;
    }
    None
}

/// Reads and parses the file.
pub fn read(path: &Path) -> Result<WebConfig, String> {
    let text = crate::sys::fs::read_text(path, MAX_FILE).map_err(|e| format!("{}: {e}", crate::sys::display_path(path)))?;
    parse(path, &text)
}

/// What the server uses: the TLS acceptor (certificates read) and the authenticator.
#[derive(Clone)]
pub struct Web {
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub auth: Option<Arc<Authenticator>>,
}

impl Web {
    /// Plain HTTP, no authentication (no web_config_file).
    pub fn open() -> Web {
        Web { tls: None, auth: None }
    }

    /// Reads the file and the certificates it names; errors name the file and the key.
    pub fn load(path: &Path) -> Result<Web, String> {
        let config = read(path)?;
        // The certificates' errors name their key; say which web-config file it is in.
        let shown = crate::sys::display_path(path);
        let tls =
            config.tls.as_ref().map(acceptor).transpose().map_err(|e| if e.starts_with(&shown) { e } else { format!("{shown}: {e}") })?;
        let auth = (!config.users.is_empty()).then(|| Arc::new(Authenticator::new(config.users)));
        Ok(Web { tls, auth })
    }
}

fn acceptor(t: &TlsSettings) -> Result<tokio_rustls::TlsAcceptor, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let read = |key: &str, p: &Path| {
        crate::sys::fs::read_regular_file(p, MAX_FILE).map_err(|e| format!("tls_server_config.{key}: {}: {e}", crate::sys::display_path(p)))
    };
    let bad = |key: &str, p: &Path, e: String| format!("tls_server_config.{key}: {}: {e}", crate::sys::display_path(p));
    let certs = |key: &str, p: &Path| -> Result<Vec<CertificateDer<'static>>, String> {
        let pem = read(key, p)?;
        let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem).collect::<Result<_, _>>().map_err(|e| bad(key, p, e.to_string()))?;
        if certs.is_empty() {
            return Err(bad(key, p, "holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into()));
        }
        Ok(certs)
    };
    let chain = certs("cert_file", &t.cert_file)?;
    let key = PrivateKeyDer::from_pem_slice(&read("key_file", &t.key_file)?)
        .map_err(|e| bad("key_file", &t.key_file, format!("no PEM private key ({e})")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: Vec<&'static rustls::SupportedProtocolVersion> =
        [(TlsVersion::Tls12, &rustls::version::TLS12), (TlsVersion::Tls13, &rustls::version::TLS13)]
            .into_iter()
            .filter(|(v, _)| (t.min_version..=t.max_version).contains(v))
            .map(|(_, p)| p)
            .collect();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| format!("tls_server_config.min_version/max_version: {e}"))?;
    let builder = match &t.client_auth {
        ClientAuth::None => builder.with_no_client_auth(),
        ClientAuth::IfGiven(ca) | ClientAuth::Required(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certs("client_ca_file", ca)? {
                roots.add(c).map_err(|e| bad("client_ca_file", ca, e.to_string()))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if matches!(t.client_auth, ClientAuth::IfGiven(_)) { verifier.allow_unauthenticated() } else { verifier };
            builder.with_client_cert_verifier(verifier.build().map_err(|e| bad("client_ca_file", ca, e.to_string()))?)
        }
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        format!(
            "tls_server_config: {} and {} do not make a certificate and its key: {e}",
            crate::sys::display_path(&t.cert_file),
            crate::sys::display_path(&t.key_file)
        )
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Basic auth against bcrypt hashes, remembering recent successes ([`AUTH_CACHE_TTL`]).
pub struct Authenticator {
    users: BTreeMap<String, String>,
    /// User → (SHA-256 of the password that verified, when it was last used).
    verified: Mutex<HashMap<String, ([u8; 32], Instant)>>,
}

impl Authenticator {
    pub fn new(users: BTreeMap<String, String>) -> Authenticator {
        Authenticator { users, verified: Mutex::new(HashMap::new()) }
    }

    /// Whether an `Authorization` header's value (`Basic base64(user:password)`) names a user
    /// with that password. A bcrypt runs (blocking, 10–100 ms at the usual costs) unless the
    /// same user and password verified within [`AUTH_CACHE_TTL`]; run it off the runtime thread.
    /// An unknown user costs a bcrypt too, so the answer's timing does not tell which users exist.
    pub fn check(&self, authorization: Option<&[u8]>) -> bool {
        let Some((user, password)) = authorization.and_then(decode_basic) else { return false };
        let digest = sha256(password.as_bytes());
        let now = Instant::now();
        if let Ok(mut cache) = self.verified.lock() {
            if let Some((d, used)) = cache.get_mut(&user) {
                if *d == digest && now.duration_since(*used) < AUTH_CACHE_TTL {
                    *used = now;
                    return true;
                }
            }
        }
        let (hash, known) = match self.users.get(&user) {
            Some(h) => (h, true),
            // Any configured hash: the same cost as a real user's, and the answer is "no".
            None => match self.users.values().next() {
                Some(h) => (h, false),
                None => return false,
            },
        };
        let ok = bcrypt::verify(password.as_bytes(), hash).unwrap_or(false) && known;
        if ok {
            if let Ok(mut cache) = self.verified.lock() {
                cache.retain(|_, (_, used)| now.duration_since(*used) < AUTH_CACHE_TTL);
                if cache.len() < AUTH_CACHE_MAX || cache.contains_key(&user) {
                    cache.insert(user, (digest, now));
                }
            }
        }
        ok
    }
}

fn sha256(b: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, b);
    let mut out = [0; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// `Basic dXNlcjpwYXNz` → `("user", "pass")`; `None` for any other scheme or a malformed value.
fn decode_basic(v: &[u8]) -> Option<(String, String)> {
    use base64::Engine;
    let v = std::str::from_utf8(v).ok()?.trim();
    let (scheme, rest) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD.decode(rest.trim()).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests;
