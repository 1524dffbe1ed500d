use super::*;

/// A cost-4 hash made here with a fixed salt (no randomness needed to check a password).
fn hash(password: &str) -> String {
    bcrypt::hash_with_salt(password, 4, [7; 16]).unwrap().to_string()
}

fn p() -> &'static Path {
    Path::new("/etc/cluster-ai/web-config.yml")
}

fn err(text: &str) -> String {
    parse(p(), text).unwrap_err()
}

#[test]
fn exporter_toolkits_format_parses_with_paths_beside_the_file() {
    let text = format!(
        "tls_server_config:\n  cert_file: server.crt\n  key_file: /abs/server.key\n  min_version: TLS13\n\
         basic_auth_users:\n  prometheus: {}\n",
        hash("secret")
    );
    let c = parse(p(), &text).unwrap();
    let tls = c.tls.unwrap();
    assert_eq!(tls.cert_file, Path::new("/etc/cluster-ai/server.crt"));
    assert_eq!(tls.key_file, Path::new("/abs/server.key"));
    assert_eq!((tls.min_version, tls.max_version, tls.client_auth), (TlsVersion::Tls13, TlsVersion::Tls13, ClientAuth::None));
    assert_eq!(c.users.len(), 1);
    // Empty file: exporter-toolkit's "nothing".
    assert_eq!(parse(p(), "\n").unwrap(), WebConfig { tls: None, users: BTreeMap::new() });
    let mtls = parse(
        p(),
        "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n",
    )
    .unwrap();
    assert_eq!(mtls.tls.unwrap().client_auth, ClientAuth::Required(PathBuf::from("/etc/cluster-ai/ca.crt")));
}

#[test]
fn bad_yaml_unknown_and_unsupported_keys_name_the_file_and_the_key() {
    let e = err("tls_server_config: [unclosed\n");
    assert!(e.starts_with("/etc/cluster-ai/web-config.yml: ") && e.contains("line"), "{e}");
    let e = err("tls_server_config:\n  cert_fil: a\n");
    assert!(e.contains("web-config.yml") && e.contains("cert_fil") && e.contains("cert_file"), "{e}");
    let e = err("basic_auth_user:\n  a: b\n");
    assert!(e.contains("basic_auth_user") && e.contains("basic_auth_users"), "{e}");
    let e = err("tls_server_config:\n  cert_file: a\n  key_file: b\n  cipher_suites: [TLS_AES_128_GCM_SHA256]\n");
    assert!(e.contains("tls_server_config.cipher_suites") && e.contains("does not implement"), "{e}");
    let e = err("http_server_config:\n  http2: false\n");
    assert!(e.contains("http_server_config") && e.contains("does not implement"), "{e}");
    let e = err("tls_server_config: {}\n");
    assert!(e.contains("tls_server_config.cert_file: missing"), "{e}");
    let e = err("tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: TLS10\n");
    assert!(e.contains("tls_server_config.min_version") && e.contains("TLS12"), "{e}");
    let e = err("tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: TLS13\n  max_version: TLS12\n");
    assert!(e.contains("max_version"), "{e}");
    let e = err("tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: RequireAndVerifyClientCert\n");
    assert!(e.contains("client_ca_file: missing"), "{e}");
    let e = err("tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: RequireAnyClientCert\n");
    assert!(e.contains("client_auth_type") && e.contains("unverified"), "{e}");
    let e = err("tls_server_config:\n  cert_file: a\n  key_file: b\n  client_ca_file: ca\n");
    assert!(e.contains("client_ca_file") && e.contains("NoClientCert"), "{e}");
    let e = err("basic_auth_users:\n  prometheus: plaintext\n");
    assert!(e.contains("basic_auth_users.prometheus") && e.contains("bcrypt"), "{e}");
    let e = err("- a\n- b\n");
    assert!(e.contains("web-config.yml"), "{e}");
}

#[test]
fn every_problem_is_reported_at_once_each_on_its_line() {
    let e = err(&format!(
        "tls_server_config:\n  key_file: b\n  min_version: TLS9\n  client_auth_type: Maybe\n  cipher_suites: [X]\n\
         basic_auth_users:\n  ops: plaintext\n  prometheus: {}\n",
        hash("x")
    ));
    let lines: Vec<&str> = e.lines().collect();
    for key in ["cipher_suites", "min_version", "client_auth_type", "cert_file: missing", "basic_auth_users.ops"] {
        assert_eq!(lines.iter().filter(|l| l.contains(key)).count(), 1, "{key} once: {e}");
    }
    assert_eq!(lines.len(), 5, "{e}");
    assert!(lines.iter().all(|l| l.starts_with("/etc/cluster-ai/web-config.yml: ")), "{e}");
}

#[test]
fn a_user_written_twice_is_refused_not_a_guess_at_which_password_holds() {
    let e = err(&format!("basic_auth_users:\n  prometheus: {}\n  prometheus: {}\n", hash("a"), hash("b")));
    assert!(e.contains("basic_auth_users.prometheus: written twice"), "{e}");
}

#[test]
fn a_wrong_shape_names_the_files_key_not_an_internal_type() {
    for (text, named) in
        [("tls_server_config: yes\n", "tls_server_config"), ("basic_auth_users: [a, b]\n", "basic_auth_users"), ("- a\n", "web config")]
    {
        let e = err(text);
        assert!(!e.contains("Raw") && !e.contains("Users"), "{e}");
        assert!(e.contains(named), "{named}: {e}");
    }
}

#[test]
fn missing_or_unreadable_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let e = read(&dir.path().join("nope.yml")).unwrap_err();
    assert!(e.contains("nope.yml"), "{e}");
    let e = read(dir.path()).unwrap_err();
    assert!(e.contains(&dir.path().display().to_string()) && e.contains("directory"), "{e}");
    let cfg = dir.path().join("web.yml");
    std::fs::write(&cfg, "tls_server_config:\n  cert_file: missing.crt\n  key_file: missing.key\n").unwrap();
    let e = Web::load(&cfg).err().unwrap();
    assert!(e.contains("tls_server_config.cert_file") && e.contains("missing.crt"), "{e}");
    std::fs::write(dir.path().join("missing.crt"), "not pem\n").unwrap();
    let e = Web::load(&cfg).err().unwrap();
    assert!(e.contains("tls_server_config.cert_file") && e.contains("no PEM certificate"), "{e}");
}

fn basic(user: &str, password: &str) -> Vec<u8> {
    use base64::Engine;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))).into_bytes()
}

#[test]
fn basic_auth_checks_bcrypt_and_remembers_only_successes() {
    let mut a = Authenticator::new(BTreeMap::from([("prometheus".to_string(), hash("s3cret:with colon"))]));
    assert!(a.check(Some(&basic("prometheus", "s3cret:with colon"))));
    // Remembered: with the hash changed under it, the same password still passes from the
    // cache (no bcrypt ran); the old hash is put back for the rest.
    let real = a.users.insert("prometheus".into(), hash("other")).unwrap();
    assert!(a.check(Some(&basic("prometheus", "s3cret:with colon"))));
    a.users.insert("prometheus".into(), real);
    assert!(!a.check(Some(&basic("prometheus", "wrong"))));
    assert!(!a.check(Some(&basic("nobody", "s3cret:with colon"))));
    assert!(!a.check(None));
    assert!(!a.check(Some(b"Bearer abc")));
    assert!(!a.check(Some(b"Basic !!!not-base64")));
    assert_eq!(a.verified.lock().unwrap().len(), 1);
    // A stale entry is not trusted: the password is verified again.
    a.verified.lock().unwrap().get_mut("prometheus").unwrap().1 = Instant::now() - AUTH_CACHE_TTL - Duration::from_secs(1);
    assert!(!a.check(Some(&basic("prometheus", "wrong"))));
    assert!(a.check(Some(&basic("prometheus", "s3cret:with colon"))));
}

/// Hostile files, each refused quickly with one bounded line naming the file: flow collections
/// nested a million deep (the parser took 10 s and 150 MiB for 1 MiB of them), a key of a
/// megabyte (quoted back whole), a user name holding an escape sequence and a line break.
#[test]
fn hostile_yaml_is_refused_in_one_bounded_line() {
    let deep = format!("{}{}", "[".repeat(1 << 19), "]".repeat(1 << 19));
    let e = err(&deep);
    assert_eq!(e, "/etc/cluster-ai/web-config.yml: line 1: nested deeper than 64 levels of [ and {; a web config is a few levels deep (see docs/metrics.md)");
    let deep_map = format!("tls_server_config: {}1{}", "{a: ".repeat(5000), "}".repeat(5000));
    assert!(err(&deep_map).contains("line 1: nested deeper than 64 levels"));
    // Brackets in quotes and comments are text, not nesting: a file within the limit parses.
    let quoted = format!("# {}\nbasic_auth_users:\n  \"u{}\": {}\n", "[".repeat(100), "{".repeat(100), hash("x"));
    assert_eq!(parse(p(), &quoted).unwrap().users.len(), 1);

    let huge_key = format!("basic_auth_users:\n  {}: x\n", "u".repeat(1 << 20));
    let e = err(&huge_key);
    assert!(e.starts_with("/etc/cluster-ai/web-config.yml: basic_auth_users: ") && e.chars().count() <= 1001, "{}", e.len());

    let e = err("basic_auth_users:\n  \"\\e[2Jevil\\r\\nx\": 1\n");
    assert!(!e.contains('\x1b') && !e.contains('\r') && e.lines().count() == 1, "{e:?}");
    assert!(e.starts_with("/etc/cluster-ai/web-config.yml: basic_auth_users.\\u{1b}[2Jevil\\r\\nx: not a bcrypt hash"), "{e}");
}
