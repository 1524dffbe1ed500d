//! Email over SMTP with lettre: STARTTLS (required, not opportunistic), implicit TLS, or plain
//! for a relay on this machine; TLS through rustls with the built-in Mozilla roots plus an
//! optional CA file. Credentials come from a file that only its owner may read, never from the
//! main config, and never appear in a log line.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
use lettre::transport::smtp::client::{AsyncSmtpConnection, Certificate, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::Message;

use super::{rfc3339, Alert, AlertState};
use crate::config::{AlertsConfig, SmtpSecurity};

/// Sends `alert` to every `smtp_to` address; `Ok` with the server's answer.
pub async fn send(cfg: &AlertsConfig, alert: &Alert) -> Result<String, String> {
    let server = cfg.smtp_server.as_deref().ok_or("email is not configured")?;
    let (host, port) = match server.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().map_err(|e| format!("{server}: {e}"))?),
        None => (server, cfg.smtp_security.default_port()),
    };
    // The CA and credentials files are read off the runtime (the swap task shares its thread),
    // as sys/http.rs does for https.
    let ca_file = cfg.ca_file.clone().filter(|_| cfg.smtp_security != SmtpSecurity::None);
    let creds_file = cfg.smtp_credentials_file.clone();
    let (certs, creds) = tokio::task::spawn_blocking(move || -> Result<_, String> {
        let certs = ca_file.as_deref().map(certificates).transpose()?.unwrap_or_default();
        let creds = creds_file.as_deref().map(credentials).transpose()?;
        Ok((certs, creds))
    })
    .await
    .map_err(|e| format!("reading alerts.ca_file / smtp_credentials_file: {e}"))??;
    let message = message(cfg, alert)?;
    let tls = match cfg.smtp_security {
        SmtpSecurity::None => None,
        _ => {
            let mut params = TlsParameters::builder(host.to_string());
            for cert in certs {
                params = params.add_root_certificate(cert);
            }
            Some(params.build_rustls().map_err(|e| format!("TLS for {host}: {e}"))?)
        }
    };
    // One SMTP session by hand rather than lettre's transport, which fails AUTH and DATA alike
    // with the server's text: the answer to AUTH may quote what it was sent (a 535 with the
    // "user:password", a 501 with its base64), so only AUTH's reply code is ever shown.
    let hello = ClientId::default();
    let timeout = Some(super::DELIVERY_TIMEOUT);
    let wrapper = tls.clone().filter(|_| cfg.smtp_security == SmtpSecurity::Tls);
    let mut conn =
        AsyncSmtpConnection::connect_tokio1((host, port), timeout, &hello, wrapper, None).await.map_err(|e| format!("{server}: {e}"))?;
    let sent = async {
        if let (SmtpSecurity::StartTls, Some(params)) = (cfg.smtp_security, tls) {
            // Refused (not skipped) when the server offers no STARTTLS.
            conn.starttls(params, &hello).await.map_err(|e| format!("{server}: {e}"))?;
        }
        if let Some((user, password)) = creds {
            if let Err(e) = conn.auth(DEFAULT_MECHANISMS, &Credentials::new(user, password)).await {
                if e.status().is_some() {
                    // A reply was read, so the session is sound: end it politely.
                    conn.abort().await;
                }
                return Err(format!("{server}: {}", auth_failed(&e)));
            }
        }
        conn.send(message.envelope(), &message.formatted()).await.map_err(|e| format!("{server}: {e}"))
    }
    .await;
    // QUIT after a message, as lettre's transport does. After a failure the connection is
    // dropped as it is, as there: a failed STARTTLS leaves no stream to write QUIT to.
    let answer = sent?;
    conn.abort().await;
    let text = answer.message().next().unwrap_or("accepted").to_string();
    Ok(format!("{} {text}", answer.code()))
}

/// Why AUTH failed, in fixed words: its reply code, never its text.
fn auth_failed(e: &lettre::transport::smtp::Error) -> String {
    match e.status() {
        Some(code) => format!("the SMTP server refused the credentials ({code}); check alerts.smtp_credentials_file"),
        None if e.is_timeout() => "the SMTP server did not answer the authentication in time".into(),
        None if e.is_client() => {
            "the SMTP server offers no authentication mechanism cluster-ai speaks (PLAIN, LOGIN), or a challenge it cannot answer".into()
        }
        None => "the connection failed during authentication".into(),
    }
}

fn message(cfg: &AlertsConfig, alert: &Alert) -> Result<Message, String> {
    let parse = |s: &str| s.parse::<Mailbox>().map_err(|e| format!("{s:?}: {e}"));
    let mut m = Message::builder().from(parse(cfg.smtp_from.as_deref().ok_or("alerts.smtp_from is not set")?)?);
    for to in &cfg.smtp_to {
        m = m.to(parse(to)?);
    }
    let mut body = format!(
        "{}\n\nnode: {}\nkey: {}\nseverity: {}\nstarted: {}\n",
        alert.summary,
        alert.node,
        alert.key,
        alert.severity,
        rfc3339(alert.starts_at_unix_ms)
    );
    if let (AlertState::Resolved, Some(end)) = (alert.state, alert.ends_at_unix_ms) {
        body += &format!("ended: {}\n", rfc3339(end));
    }
    for (k, v) in &alert.labels {
        body += &format!("{k}: {v}\n");
    }
    m.subject(alert.text()).header(ContentType::TEXT_PLAIN).body(body).map_err(|e| format!("cannot build the message: {e}"))
}

/// `user:password` from a file that only its owner may read (mode 0600 or 0400) and that root or
/// this process's user owns: a password readable by others is refused, with the fix.
pub fn credentials(path: &Path) -> Result<(String, String), String> {
    let shown = crate::sys::display_path(path);
    let meta = std::fs::metadata(path).map_err(|e| format!("alerts.smtp_credentials_file {shown}: {e}"))?;
    let me = crate::sys::node::euid();
    if meta.mode() & 0o077 != 0 || (meta.uid() != 0 && meta.uid() != me) {
        return Err(format!(
            "alerts.smtp_credentials_file {shown} may be read by others (mode {:o}, owner {}); chmod 600 it, owned by root",
            meta.mode() & 0o777,
            meta.uid()
        ));
    }
    let bytes = crate::sys::fs::read_regular_file(path, 64 << 10).map_err(|e| format!("alerts.smtp_credentials_file {shown}: {e}"))?;
    let text = String::from_utf8(bytes).map_err(|_| format!("alerts.smtp_credentials_file {shown} is not UTF-8"))?;
    let line = text.lines().next().unwrap_or("").trim_end();
    let (user, password) =
        line.split_once(':').ok_or_else(|| format!("alerts.smtp_credentials_file {shown}: expected one line user:password"))?;
    Ok((user.to_string(), password.to_string()))
}

fn certificates(path: &Path) -> Result<Vec<Certificate>, String> {
    let shown = crate::sys::display_path(path);
    let bytes = crate::sys::fs::read_regular_file(path, 1 << 20).map_err(|e| format!("alerts.ca_file {shown}: {e}"))?;
    let text = String::from_utf8_lossy(&bytes);
    const END: &str = "-----END CERTIFICATE-----";
    let certs: Vec<Certificate> = text
        .split_inclusive(END)
        .filter(|block| block.contains(END))
        .map(|block| Certificate::from_pem(block.trim().as_bytes()).map_err(|e| format!("alerts.ca_file {shown}: {e}")))
        .collect::<Result<_, _>>()?;
    if certs.is_empty() {
        return Err(format!("alerts.ca_file {shown} holds no PEM certificate"));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use crate::alerts::{Alert, AlertKey, Severity};
    use crate::config::{AlertsConfig, SmtpSecurity};

    /// A server on loopback whose 535 quotes the credentials back, as some do: the error (which
    /// goes to a WARN line, `status` and the queue file) has the code and the fix, not the text.
    #[tokio::test]
    async fn the_answer_to_auth_never_reaches_the_error() {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let (r, mut w) = stream.into_split();
            let mut lines = BufReader::new(r).lines();
            let mut verbs = Vec::new();
            let _ = w.write_all(b"220 fake ESMTP\r\n").await;
            while let Ok(Some(line)) = lines.next_line().await {
                let verb = line.split(' ').next().unwrap_or_default().to_ascii_uppercase();
                let reply: &[u8] = match verb.as_str() {
                    "EHLO" => b"250-fake\r\n250 AUTH PLAIN LOGIN\r\n",
                    "AUTH" => b"535 5.7.8 bad credentials user:secret\r\n",
                    "QUIT" => b"221 bye\r\n",
                    _ => b"500 5.5.1 unexpected\r\n",
                };
                let _ = w.write_all(reply).await;
                verbs.push(verb);
            }
            verbs
        });
        let dir = tempfile::tempdir().unwrap();
        let creds = dir.path().join("smtp");
        std::fs::write(&creds, "user:secret\n").unwrap();
        std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o600)).unwrap();
        let cfg = AlertsConfig {
            smtp_server: Some(format!("127.0.0.1:{port}")),
            smtp_security: SmtpSecurity::None,
            smtp_from: Some("node@example.org".into()),
            smtp_to: vec!["ops@example.org".into()],
            smtp_credentials_file: Some(creds),
            ..AlertsConfig::default()
        };
        let e = super::send(&cfg, &Alert::notice(AlertKey::Test, Severity::Info, "test")).await.unwrap_err();
        assert_eq!(e, format!("127.0.0.1:{port}: the SMTP server refused the credentials (535); check alerts.smtp_credentials_file"));
        assert!(!e.contains("secret") && !e.contains("bad credentials"), "{e}");
        assert_eq!(server.await.unwrap(), ["EHLO", "AUTH", "QUIT"], "AUTH was tried, then the session closed; no mail sent");
    }

    #[test]
    fn credentials_readable_by_others_are_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("smtp");
        std::fs::write(&f, "alerts@example.org:s3cret:with:colons\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = super::credentials(&f).unwrap_err();
        assert!(e.contains("may be read by others (mode 644") && e.contains("chmod 600"), "{e}");
        assert!(!e.contains("s3cret"), "the password never shows");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(super::credentials(&f).unwrap(), ("alerts@example.org".into(), "s3cret:with:colons".into()));
    }
}
