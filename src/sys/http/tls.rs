//! `https://`: rustls with the system's CA bundle (else the built-in Mozilla roots), plus an
//! optional CA file.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use tokio::net::TcpStream;

use super::HttpError;

/// The CA bundle Debian keeps (update-ca-certificates), trusted for `https://` when present.
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// A CA bundle is a few hundred KiB; more is not one.
const MAX_CA_FILE: u64 = 4 << 20;

/// The TLS handshake on a connected stream, for `authority`'s host name.
pub async fn connect(
    stream: TcpStream,
    authority: &str,
    ca_file: Option<&Path>,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, HttpError> {
    // Reading and parsing the CA bundle is file I/O: off the runtime (once, or per alert
    // delivery with a CA file).
    let ca = ca_file.map(Path::to_path_buf);
    let config = tokio::task::spawn_blocking(move || tls_config(ca.as_deref()))
        .await
        .map_err(|e| HttpError::Tls(format!("loading the CA certificates: {e}")))??;
    let name = server_name(authority)?;
    tokio_rustls::TlsConnector::from(config).connect(name, stream).await.map_err(|e| HttpError::Tls(e.to_string()))
}

pub(super) fn server_name(authority: &str) -> Result<rustls::pki_types::ServerName<'static>, HttpError> {
    let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    rustls::pki_types::ServerName::try_from(host.to_string()).map_err(|e| HttpError::Tls(format!("{host:?}: {e}")))
}

/// The client's TLS settings: built once for the usual roots; with a CA file, built per call
/// (alert deliveries only, which are rare).
/// Whether `ca_file` can be trusted as it would be at the first delivery (`config check`): its
/// error, naming the file.
pub fn check_ca_file(ca_file: &Path) -> Result<(), String> {
    build_tls(Some(ca_file)).map(|_| ()).map_err(|e| match e {
        HttpError::Tls(why) => why,
        other => other.to_string(),
    })
}

fn tls_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, HttpError> {
    static USUAL: OnceLock<Result<Arc<rustls::ClientConfig>, HttpError>> = OnceLock::new();
    match ca_file {
        None => USUAL.get_or_init(|| build_tls(None)).clone(),
        Some(f) => build_tls(Some(f)),
    }
}

fn build_tls(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, HttpError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    if let Ok(pem) = crate::sys::fs::read_regular_file(Path::new(SYSTEM_CA_BUNDLE), MAX_CA_FILE) {
        roots.add_parsable_certificates(CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok));
    }
    if roots.is_empty() {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    if let Some(f) = ca_file {
        let shown = crate::sys::display_path(f);
        let pem = crate::sys::fs::read_regular_file(f, MAX_CA_FILE).map_err(|e| HttpError::Tls(format!("{shown}: {e}")))?;
        let certs: Vec<_> =
            CertificateDer::pem_slice_iter(&pem).collect::<Result<_, _>>().map_err(|e| HttpError::Tls(format!("{shown}: {e}")))?;
        if certs.is_empty() {
            return Err(HttpError::Tls(format!("{shown} holds no PEM certificate")));
        }
        let (_, refused) = roots.add_parsable_certificates(certs);
        if refused > 0 {
            return Err(HttpError::Tls(format!("{shown}: {refused} certificate(s) could not be used")));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| HttpError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
