//! Docker token auth end to end: a real distribution 2.8 with `auth: token:` that only accepts
//! bearer tokens, and a token server (`tests/token_server.py`) that issues them for Basic
//! credentials. clb (through oci-client) must take the challenge → token → retry path for
//! push, sign and upgrade; wrong or missing credentials are an auth refusal (exit 7) that
//! leaves the state untouched.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use std::path::Path;
use std::process::Command;

const USER: &str = "tester";
const PASS: &str = "t0ken-pass";

/// `clb --json --state-dir STATE upgrade -d IMAGE --key PUB` plus `creds` (no `--creds` when
/// `None`), built by hand because `Fixture::upgrade` always adds the registry's right
/// credentials.
fn upgrade_with(fx: &Fixture, state: &Path, creds: Option<&str>) -> std::process::Output {
    let mut args: Vec<String> = vec![
        "--json".into(),
        "--state-dir".into(),
        state.display().to_string(),
        "upgrade".into(),
        "-d".into(),
        fx.image("os:v1"),
        "--key".into(),
        fx.pubkey.display().to_string(),
    ];
    if let Some(c) = creds {
        args.extend(["--creds".into(), c.into()]);
    }
    clb_owned(&args)
}

#[test]
fn push_sign_and_upgrade_through_token_auth() {
    require_tool(clb_testsupport::PYTHON);
    require_tool("skopeo");
    let reg = Registry::start(RegistryOptions::plain().with_token_auth(USER, PASS))
        .unwrap_or_else(|e| panic!("start token-auth docker-registry: {e}"));
    let fx = Fixture::with_registry(reg);
    let ts = fx
        .reg
        .token_server()
        .expect("token-auth registry has a token server");
    let r = releases(fx.work.path(), &["v1"]);

    // Push and sign with the right credentials (Fixture adds `--creds tester:t0ken-pass`).
    let digest = fx.push(&[&r.base, &r.tops[0]], "os:v1", &[]);
    fx.sign("os:v1");
    let pushes: Vec<_> = ts
        .requests()
        .into_iter()
        .filter(|t| t.scopes.iter().any(|s| s == "repository:os:pull,push"))
        .collect();
    assert!(
        !pushes.is_empty()
            && pushes.iter().all(|t| t.outcome == "granted"
                && t.user.as_deref() == Some(USER)
                && t.access == [("os".to_string(), vec!["pull".into(), "push".into()])]),
        "push and sign must obtain pull,push tokens for `os`: {pushes:?}"
    );

    // The registry takes nothing but bearer tokens: the same credentials sent as Basic are
    // refused, so every success below went through the token server.
    let basic = clb_testsupport::http_request(
        &fx.reg.addr(),
        "GET",
        &format!("/v2/os/manifests/{digest}"),
        &[("Authorization", &format!("Basic {}", base64(USER, PASS)))],
        &[],
    )
    .expect("GET manifest with basic auth");
    assert_eq!(basic.status, 401, "basic must be refused: {}", basic.text());
    assert!(
        basic
            .header("WWW-Authenticate")
            .is_some_and(|h| h.starts_with("Bearer ") && h.contains(&ts.realm())),
        "bearer challenge naming the token server: {:?}",
        basic.headers
    );

    let state = fx.new_state_dir("state");
    let before = hash_tree(&state);

    // Wrong password: the token server answers 401, clb reports auth refused.
    let n = ts.requests().len();
    let out = upgrade_with(&fx, &state, Some(&format!("{USER}:wrong")));
    assert_fails(&out, 7, "auth");
    assert_eq!(
        hash_tree(&state),
        before,
        "wrong credentials changed the state"
    );
    let tried = &ts.requests()[n..];
    assert!(
        !tried.is_empty() && tried.iter().all(|t| t.outcome == "bad-credentials"),
        "wrong password must be refused by the token server: {tried:?}"
    );

    // No credentials: an anonymous token granting nothing; the registry refuses it.
    let n = ts.requests().len();
    let marker = fx.reg.clear_log_marker();
    let out = upgrade_with(&fx, &state, None);
    assert_fails(&out, 7, "auth");
    assert_eq!(
        hash_tree(&state),
        before,
        "anonymous upgrade changed the state"
    );
    let tried = &ts.requests()[n..];
    assert!(
        !tried.is_empty()
            && tried
                .iter()
                .all(|t| t.outcome == "anonymous" && t.access.is_empty()),
        "anonymous upgrade must get only empty tokens: {tried:?}"
    );
    let seen = fx.reg.requests_since(&marker);
    assert!(
        seen.iter()
            .any(|e| e.uri.starts_with("/v2/os/") && e.status == 401),
        "registry must refuse the anonymous token: {seen:?}"
    );
    assert!(
        seen.iter().all(|e| e.status / 100 != 2 || e.uri == "/v2/"),
        "nothing of os may be served anonymously: {seen:?}"
    );

    // Right credentials: a pull token for `os`, and the layers come down with it.
    let n = ts.requests().len();
    let marker = fx.reg.clear_log_marker();
    let out = Command::new(clb_bin())
        .args([
            "--json",
            "--state-dir",
            state.to_str().unwrap(),
            "upgrade",
            "-d",
            &fx.image("os:v1"),
            "--key",
            fx.pubkey.to_str().unwrap(),
            "--creds",
            &format!("{USER}:{PASS}"),
        ])
        .env("COSIGN_PASSWORD", PASSWORD)
        .env("RUST_LOG", "debug")
        .env_remove("REGISTRY_AUTH_FILE")
        .env("HOME", "/nonexistent-clb-test-home")
        .output()
        .expect("running clb");
    assert_ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains(PASS), "credentials must never be logged");
    let report = json(&out);
    assert_eq!(report["slot"], "a");
    assert_eq!(report["layers_downloaded"], 2);
    assert_eq!(fx.status(&state)["slots"]["a"]["verified"], true);
    let tokens = &ts.requests()[n..];
    assert!(
        tokens.iter().any(|t| t.outcome == "granted"
            && t.user.as_deref() == Some(USER)
            && t.scopes == ["repository:os:pull"]
            && t.access == [("os".to_string(), vec!["pull".to_string()])]),
        "upgrade must obtain a pull token for `os`: {tokens:?}"
    );
    assert!(tokens.iter().all(|t| t.outcome == "granted"), "{tokens:?}");
    // skopeo (an independent client, also taking the token path) names the layers.
    let layers = skopeo_layers(&fx.reg, "os:v1");
    let fetched: Vec<String> = fx
        .reg
        .fetches_since(&marker)
        .into_iter()
        .filter(|f| f.status == 200)
        .map(|f| f.digest)
        .collect();
    for l in &layers {
        assert!(
            fetched.contains(l),
            "layer {l} fetched with the bearer token: {fetched:?}"
        );
    }
}

/// Standard base64 of `user:pass`, for the Basic header the registry must refuse.
fn base64(user: &str, pass: &str) -> String {
    let out = Command::new("base64")
        .arg("-w0")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin
                .take()
                .unwrap()
                .write_all(format!("{user}:{pass}").as_bytes())?;
            c.wait_with_output()
        })
        .expect("base64 (coreutils)");
    String::from_utf8(out.stdout).unwrap()
}
