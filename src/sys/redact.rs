//! Configured URLs as they may be shown. A Slack webhook's token is its URL path, and an
//! Alertmanager behind a proxy may take `user:password@` or a `?token=`: a log line, `status`,
//! `config check` and error messages show only where the URL points (scheme, host, port), never
//! the rest. Pure text, no parsing beyond what that needs, so it also covers a malformed URL that
//! a config error quotes back.

/// `scheme://host:port` of `url`, then `/…` when it had anything after the authority (a path
/// beyond `/`, a query, a fragment) or userinfo: `https://hooks.slack.com/services/T/B/x` →
/// `https://hooks.slack.com:443/…`. The port is made explicit for http and https. Text with no
/// `scheme://` keeps only what comes before its first `/`, `?` or `#`.
pub fn url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (Some(s), r),
        None => (None, url),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, after) = rest.split_at(end);
    let (host, userinfo) = match authority.rsplit_once('@') {
        Some((_, h)) => (h, true),
        None => (authority, false),
    };
    let hidden = userinfo || !(after.is_empty() || after == "/");
    // A port is there when the text after the last ':' is digits and not inside [v6].
    let has_port =
        !host.ends_with(']') && host.rsplit_once(':').is_some_and(|(_, p)| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    let default_port = match scheme.map(str::to_ascii_lowercase).as_deref() {
        Some("http") => Some(80),
        Some("https") => Some(443),
        _ => None,
    };
    let mut out = scheme.map(|s| format!("{s}://")).unwrap_or_default();
    out += host;
    if let (false, Some(p), false) = (has_port, default_port, host.is_empty()) {
        out += &format!(":{p}");
    }
    if hidden {
        out += "/…";
    }
    out
}

/// `text` (an error message, a server's answer) with every occurrence of `url`, and of its path
/// and query, replaced by what [`url`] shows: for errors that may quote the URL they were about.
pub fn in_text(text: &str, configured: &str) -> String {
    if configured.is_empty() {
        return text.to_string();
    }
    let mut out = text.replace(configured, &url(configured));
    let rest = configured.split_once("://").map_or(configured, |(_, r)| r);
    if let Some(i) = rest.find(['/', '?', '#']) {
        let tail = rest[i..].trim_end_matches('/');
        // A bare "/" says nothing and would mangle every other path in the text.
        if tail.len() > 1 {
            out = out.replace(tail, "/…");
        }
    }
    if let Some((userinfo, _)) = rest.split_once('@').filter(|(u, _)| !u.contains(['/', '?', '#'])) {
        out = out.replace(&format!("{userinfo}@"), "…@");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_scheme_host_and_port_are_shown() {
        assert_eq!(url("https://hooks.slack.com/services/T000/B000/XXXXXXXX"), "https://hooks.slack.com:443/…");
        assert_eq!(url("http://127.0.0.1:9093"), "http://127.0.0.1:9093");
        assert_eq!(url("http://am.lan:9093/"), "http://am.lan:9093");
        assert_eq!(url("http://admin:hunter2@am.lan:9093"), "http://am.lan:9093/…");
        assert_eq!(url("https://hook.example.org?token=s3cret"), "https://hook.example.org:443/…");
        assert_eq!(url("https://hook.example.org#s3cret"), "https://hook.example.org:443/…");
        assert_eq!(url("http://[::1]/hook/s3cret"), "http://[::1]:80/…");
        assert_eq!(url("http://[::1]:8080/hook"), "http://[::1]:8080/…");
        assert_eq!(url("ftp://x"), "ftp://x");
        assert_eq!(url("hooks.slack.com/services/T000/B000/XXXXXXXX"), "hooks.slack.com/…", "no scheme: the host only");
        assert_eq!(url(""), "");
    }

    #[test]
    fn errors_that_quote_the_url_are_redacted() {
        let hook = "https://hooks.slack.com/services/T000/B000/XXXXXXXX";
        let e = format!("{hook:?} is not reachable; bad request path \"/services/T000/B000/XXXXXXXX\"");
        let shown = in_text(&e, hook);
        assert!(!shown.contains("XXXXXXXX"), "{shown}");
        assert_eq!(shown, "\"https://hooks.slack.com:443/…\" is not reachable; bad request path \"/…\"");
        let e = in_text("\"http://admin:hunter2@am.lan:9093\" has no host:port", "http://admin:hunter2@am.lan:9093");
        assert!(!e.contains("hunter2"), "{e}");
        assert_eq!(in_text("cannot connect: refused", "http://127.0.0.1:9093"), "cannot connect: refused");
    }
}
