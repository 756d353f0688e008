//! `admin`: its defaults, explicit values, unknown keys and the rule against sharing the
//! socket of `http.listen`.

use super::*;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Deserialized but not resolved, to drive `resolve` with a chosen $HOME.
pub(super) fn unresolved(text: &str) -> Config {
    serde_saphyr::from_str(text).unwrap()
}

#[test]
fn defaults_to_loopback_and_a_generated_token() {
    let c = ok(&with_top(""));
    assert_eq!(c.admin.listen, addr("127.0.0.1:9091"));
    assert_eq!(c.admin.token_file, None);
    let c = ok(&with_top("admin: {}"));
    assert_eq!(c.admin.listen, addr("127.0.0.1:9091"));
}

#[test]
fn explicit_values() {
    let c = ok(&with_top(
        "admin: { listen: \"[::1]:19091\", tokenFile: /etc/crbridge/admin-token }",
    ));
    assert_eq!(c.admin.listen, addr("[::1]:19091"));
    assert_eq!(
        c.admin.token_file,
        Some(PathBuf::from("/etc/crbridge/admin-token"))
    );
    let home = Some(OsStr::new("/home/me"));
    let c = resolve(
        FILE,
        unresolved(&with_top("admin: { tokenFile: ~/t }")),
        home,
    )
    .unwrap();
    assert_eq!(c.admin.token_file, Some(PathBuf::from("/home/me/t")));
    assert_contains(
        &resolve(
            FILE,
            unresolved(&with_top("admin: { tokenFile: ~/t }")),
            None,
        )
        .unwrap_err()
        .to_string(),
        r#"crbridge.yaml: admin.tokenFile: cannot expand "~/t": $HOME is not set"#,
    );
    assert_contains(
        &err(&with_top("admin: { tokenFile: '' }")),
        "crbridge.yaml: admin.tokenFile: empty (expected a file holding the token",
    );
}

#[test]
fn unknown_keys_and_bad_values() {
    let line = err(&with_top("admin: { listen: 127.0.0.1:9091, token: abc }"));
    assert_contains(
        &line,
        "crbridge.yaml: admin.token: unknown key (expected one of: listen, tokenFile)",
    );
    assert_contains(&line, "did you mean tokenFile?");
    assert_contains(
        &err(&with_top("admin: { listen: localhost }")),
        r#"crbridge.yaml: admin.listen: invalid address "localhost" (expected ip:port"#,
    );
}

#[test]
fn admin_listen_never_shares_the_http_socket() {
    assert_eq!(
        err(&with_top("http: { listen: 127.0.0.1:9091 }")),
        "crbridge.yaml: admin.listen: 127.0.0.1:9091 takes the socket of http.listen \
         (127.0.0.1:9091) (expected another port, e.g. 127.0.0.1:9091: the admin API never \
         shares the metrics listener)"
    );
    // 0.0.0.0 takes the port on every address, loopback included.
    assert_contains(
        &err(&with_top(
            "http: { listen: 0.0.0.0:9090 }\nadmin: { listen: 127.0.0.1:9090 }",
        )),
        "crbridge.yaml: admin.listen: 127.0.0.1:9090 takes the socket of http.listen (0.0.0.0:9090)",
    );
    assert_contains(
        &err(&with_top("admin: { listen: \"[::]:9090\" }")),
        "crbridge.yaml: admin.listen: [::]:9090 takes the socket of http.listen (0.0.0.0:9090)",
    );
    // Different addresses, or port 0 (a free port each), do not clash.
    let c = ok(&with_top(
        "http: { listen: 10.0.0.1:9090 }\nadmin: { listen: 127.0.0.1:9090 }",
    ));
    assert_eq!(c.admin.listen, addr("127.0.0.1:9090"));
    ok(&with_top(
        "http: { listen: 127.0.0.1:0 }\nadmin: { listen: 127.0.0.1:0 }",
    ));
}
