//! The `clb status --json` contract: real status documents (empty state, a staged slot, a
//! rolled-back host) validate against the committed JSON Schema (`docs/status.schema.json`,
//! kept equal to the code by `clb-gen docs --check` in `contracts.rs`) with an independent
//! validator (Debian's python3-jsonschema), which also rejects documents that break it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn committed_schema_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/status.schema.json")
}

/// Validates `doc` against the committed schema with python3-jsonschema; Err(message) when
/// the validator rejects it.
fn validate(doc: &serde_json::Value, dir: &Path) -> Result<(), String> {
    let instance = dir.join("instance.json");
    std::fs::write(&instance, serde_json::to_vec(doc).unwrap()).unwrap();
    let script = "import json, sys, jsonschema\n\
                  schema = json.load(open(sys.argv[1]))\n\
                  jsonschema.Draft202012Validator.check_schema(schema)\n\
                  jsonschema.validate(json.load(open(sys.argv[2])), schema, \
                  cls=jsonschema.Draft202012Validator)\n";
    // Debian's interpreter, where python3-jsonschema is installed (another python3 may come
    // first on PATH).
    let out = Command::new(clb_testsupport::PYTHON)
        .args(["-c", script])
        .arg(committed_schema_path())
        .arg(&instance)
        .output()
        .expect("missing test prerequisite: /usr/bin/python3 (run scripts/install-test-deps)");
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn real_status_documents_validate() {
    let fx = Fixture::new();
    let dir = fx.work.path();
    let state = fx.new_state_dir("state");

    let empty = fx.status(&state);
    assert_eq!(empty["apiVersion"], "clb.dev/v1");
    assert_eq!(empty["kind"], "HostStatus");
    validate(&empty, dir).unwrap();

    let r = releases(dir, &["v1", "v2"]);
    fx.push(&[&r.base, &r.tops[0]], "os:v1", &[]);
    fx.push(&[&r.base, &r.tops[1]], "os:v2", &[]);
    fx.sign("os:v1");
    fx.sign("os:v2");
    assert_ok(&fx.upgrade(&state, "os:v1", &[]));
    assert_ok(&fx.upgrade(&state, "os:v2", &[]));
    let staged = fx.status(&state);
    assert_eq!(staged["slots"]["b"]["complete"], true);
    validate(&staged, dir).unwrap();

    assert_ok(&clb(&["--state-dir", state.to_str().unwrap(), "rollback"]));
    let rolled = fx.status(&state);
    validate(&rolled, dir).unwrap();

    // The validator is not a rubber stamp: each of these breaks the contract.
    let mut wrong_kind = staged.clone();
    wrong_kind["kind"] = "Host".into();
    let mut bad_slot = staged.clone();
    bad_slot["active"] = "c".into();
    let mut bad_digest = staged.clone();
    bad_digest["slots"]["a"]["digest"] = "md5:00".into();
    let mut missing = staged.clone();
    missing.as_object_mut().unwrap().remove("slots");
    for (what, doc) in [
        ("kind", wrong_kind),
        ("active slot", bad_slot),
        ("digest", bad_digest),
        ("missing slots", missing),
    ] {
        assert!(
            validate(&doc, dir).is_err(),
            "a document with a bad {what} validated"
        );
    }
}
