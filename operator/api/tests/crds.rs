//! The generated CRDs: the committed `packaging/kubernetes/crds.yaml` is what the types
//! generate, the CRDs have the shape `kubectl` users rely on (scope, status subresource, print
//! columns, validation), and their schemas accept the issue's example Rollout and refuse broken
//! ones, checked offline in two ways:
//!
//! - the OpenAPI schema (types, patterns, enums, bounds, unknown fields) with an independent
//!   validator, Debian's python3-jsonschema;
//! - the CEL rules (`x-kubernetes-validations`) with kube's client-side CEL evaluator
//!   (kube-cel, the `cel` feature of kube, enabled for tests only). It implements the
//!   Kubernetes CEL libraries but is not the API server: what it cannot show is the API
//!   server's own cost estimate of each rule, which only a real API server computes when the
//!   CRD is applied (kube-cel's coarse estimate is checked instead). No API server can run
//!   here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use clb_operator_api::{
    Duration, GROUP, NodeUpdate, REGENERATE, Rollout, VERSION, Weekday, crds, crds_path, crds_yaml,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::core::cel::{
    AnalysisWarning, ScopeContext, Validator, WarningKind, analyze_rule, apply_defaults,
    compile_schema,
};
use serde_json::{Value, json};

/// Debian's interpreter, where python3-jsonschema is installed (another python3 may come first
/// on PATH).
const PYTHON: &str = "/usr/bin/python3";

/// The Rollout of issue 9, as a user would apply it.
const EXAMPLE: &str = r#"
apiVersion: clb.dev/v1alpha1
kind: Rollout
metadata:
  name: os-v2
spec:
  image: registry.example/os:v2
  nodeSelector: {matchLabels: {os: clb}}
  canary: {nodes: 1, soak: 10m}
  maxUnavailable: 10%
  failureBudget: 2
  drain: {timeout: 5m, ignoreDaemonSets: true, deleteEmptyDirData: true, force: false}
  healthCheck: {nodeReady: true, podsReady: true, minReadySeconds: 60}
  window: {days: [Sat, Sun], start: "02:00", end: "05:00", timeZone: Europe/Berlin}
  paused: false
"#;

fn example() -> Value {
    serde_saphyr::from_str(EXAMPLE).unwrap()
}

/// The generated CRDs as JSON, Rollout first.
fn generated() -> Vec<Value> {
    crds()
        .iter()
        .map(|crd| serde_json::to_value(crd).unwrap())
        .collect()
}

fn schema(crd: &Value) -> &Value {
    &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
}

/// `doc` with `path` (dot-separated) set to `value`.
fn with(doc: &Value, path: &str, value: Value) -> Value {
    let mut doc = doc.clone();
    let mut at = &mut doc;
    for key in path.split('.') {
        at = &mut at[key];
    }
    *at = value;
    doc
}

#[test]
fn committed_crds_are_current() {
    let path = crds_path();
    let committed = std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("cannot read {}: {err}; run `{REGENERATE}`", path.display()));
    let generated = crds_yaml().unwrap();
    assert!(
        committed == generated,
        "{} differs from what operator/api/src generates: run `{REGENERATE}` and commit the result",
        path.display()
    );
}

#[test]
fn the_yaml_holds_exactly_the_generated_crds() {
    // The YAML writer is not trusted blindly: read back, the file is the same objects.
    let documents: Vec<Value> = serde_saphyr::from_multiple(&crds_yaml().unwrap()).unwrap();
    assert_eq!(documents, generated());
}

#[test]
fn crds_have_the_shape_kubectl_relies_on() {
    let crds = generated();
    let [rollout, node_update] = crds.as_slice() else {
        panic!("expected two CRDs, got {}", crds.len());
    };
    for (crd, name, kind, short) in [
        (rollout, "rollouts.clb.dev", "Rollout", "clbro"),
        (node_update, "nodeupdates.clb.dev", "NodeUpdate", "clbnu"),
    ] {
        assert_eq!(crd["metadata"]["name"], name);
        let spec = &crd["spec"];
        assert_eq!(spec["group"], GROUP);
        assert_eq!(spec["scope"], "Cluster", "{kind}");
        assert_eq!(spec["names"]["kind"], kind);
        assert_eq!(spec["names"]["shortNames"], json!([short]));
        let versions = spec["versions"].as_array().unwrap();
        assert_eq!(versions.len(), 1, "{kind}");
        assert_eq!(versions[0]["name"], VERSION);
        assert_eq!(versions[0]["served"], true);
        assert_eq!(versions[0]["storage"], true);
        assert_eq!(
            versions[0]["subresources"],
            json!({"status": {}}),
            "{kind}: status subresource"
        );
        let spec_schema = &schema(crd)["properties"]["spec"];
        assert!(
            spec_schema["description"].as_str().unwrap().len() > 40,
            "{kind}: spec described"
        );
        assert_every_field_described(&schema(crd)["properties"], kind);
    }

    let columns = |crd: &Value| -> Vec<(String, String)> {
        crd["spec"]["versions"][0]["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|column| {
                (
                    column["name"].as_str().unwrap().to_string(),
                    column["jsonPath"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let rollout_columns = columns(rollout);
    for expected in [
        ("Image", ".spec.image"),
        ("Phase", ".status.phase"),
        ("Updated", ".status.updatedText"),
        ("Failed", ".status.counts.failed"),
        ("Age", ".metadata.creationTimestamp"),
    ] {
        assert!(
            rollout_columns.contains(&(expected.0.into(), expected.1.into())),
            "Rollout column {expected:?} missing from {rollout_columns:?}"
        );
    }
    let node_columns = columns(node_update);
    for expected in [
        ("Phase", ".status.phase"),
        ("Booted", ".status.booted.shortDigest"),
        ("Staged", ".status.staged.shortDigest"),
        ("Rolled Back", ".status.rolledBack"),
        ("Last Error", ".status.lastError.class"),
    ] {
        assert!(
            node_columns.contains(&(expected.0.into(), expected.1.into())),
            "NodeUpdate column {expected:?} missing from {node_columns:?}"
        );
    }

    // Only formats OpenAPI 3.0 and the API server know (unsigned types would give `uint32`,
    // which API servers from 1.36 on warn about).
    let mut found = Vec::new();
    for crd in &crds {
        formats(schema(crd), "", &mut found);
    }
    let unknown: Vec<&String> = found
        .iter()
        .filter(|entry| {
            !["int32", "int64", "date-time"]
                .iter()
                .any(|known| entry.ends_with(&format!(": {known}")))
        })
        .collect();
    assert!(unknown.is_empty(), "unknown formats: {unknown:?}");

    let spec = &schema(rollout)["properties"]["spec"]["properties"];
    assert_eq!(
        spec["window"]["properties"]["days"]["items"]["enum"],
        json!(["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"])
    );
    assert_eq!(spec["maxUnavailable"]["x-kubernetes-int-or-string"], true);
    assert_eq!(
        spec["window"]["x-kubernetes-validations"][0]["rule"],
        "self.start != self.end"
    );
    let status = &schema(rollout)["properties"]["status"]["properties"];
    assert_eq!(status["conditions"]["x-kubernetes-list-type"], "map");
    assert_eq!(
        status["conditions"]["x-kubernetes-list-map-keys"],
        json!(["type"])
    );
    assert_eq!(
        status["nodes"]["x-kubernetes-list-map-keys"],
        json!(["name"])
    );
    assert_eq!(
        schema(node_update)["x-kubernetes-validations"][0]["rule"],
        "self.metadata.name == self.spec.nodeName"
    );
}

/// Every `format` in `schema`, as `path: format`.
fn formats(schema: &Value, at: &str, found: &mut Vec<String>) {
    match schema {
        Value::Object(object) => {
            if let Some(Value::String(format)) = object.get("format") {
                found.push(format!("{at}: {format}"));
            }
            for (key, nested) in object {
                formats(nested, &format!("{at}.{key}"), found);
            }
        }
        Value::Array(items) => items.iter().for_each(|item| formats(item, at, found)),
        _ => {}
    }
}

/// Every property has a description (they are what `kubectl explain` shows), except inside
/// types taken whole from Kubernetes.
fn assert_every_field_described(properties: &Value, at: &str) {
    for (name, property) in properties.as_object().unwrap() {
        let path = format!("{at}.{name}");
        assert!(
            property["description"]
                .as_str()
                .is_some_and(|text| !text.is_empty()),
            "{path} has no description"
        );
        if name == "conditions" {
            continue; // apimachinery's Condition, described upstream
        }
        for nested in [&property["properties"], &property["items"]["properties"]] {
            if nested.is_object() {
                assert_every_field_described(nested, &path);
            }
        }
    }
}

#[test]
fn the_example_reads_as_the_types_say() {
    let rollout: Rollout = serde_saphyr::from_str(EXAMPLE).unwrap();
    let spec = &rollout.spec;
    assert_eq!(spec.image, "registry.example/os:v2");
    assert_eq!(spec.canary.nodes, 1);
    assert_eq!(spec.canary.soak, Duration::from_mins(10));
    assert_eq!(spec.max_unavailable, IntOrString::String("10%".into()));
    assert_eq!(spec.failure_budget, 2);
    assert_eq!(spec.drain.timeout, Duration::from_mins(5));
    assert!(spec.drain.delete_empty_dir_data);
    assert_eq!(spec.health_check.min_ready_seconds, 60);
    let window = spec.window.as_ref().unwrap();
    assert_eq!(window.days, [Weekday::Sat, Weekday::Sun]);
    assert_eq!(
        (window.start.as_str(), window.end.as_str()),
        ("02:00", "05:00")
    );
    assert_eq!(window.time_zone, "Europe/Berlin");
    assert!(rollout.status.is_none());
}

#[test]
fn schema_defaults_agree_with_the_types() {
    // What the API server stores for a minimal Rollout (its schema defaults applied) reads back
    // as the types' own defaults, so the controller sees the same values either way.
    let crds = generated();
    let minimal = json!({
        "apiVersion": "clb.dev/v1alpha1", "kind": "Rollout", "metadata": {"name": "minimal"},
        "spec": {"image": "registry.example/os:v2", "nodeSelector": {},
                 "window": {"start": "22:00", "end": "02:00"}}
    });
    let defaulted = apply_defaults(schema(&crds[0]), &minimal);
    let spec = &defaulted["spec"];
    assert_eq!(spec["maxUnavailable"], 1);
    assert_eq!(spec["canary"], json!({"nodes": 0, "soak": "0s"}));
    assert_eq!(spec["drain"]["timeout"], "5m");
    assert_eq!(spec["window"]["timeZone"], "UTC");
    let from_server: Rollout = serde_json::from_value(defaulted).unwrap();
    let from_types: Rollout = serde_json::from_value(minimal).unwrap();
    assert_eq!(from_server, from_types);
    assert_eq!(from_types.spec.window.unwrap().days, Weekday::ALL);
}

/// The schema of `crd` as `kubectl apply` meets it: the API server adds apiVersion, kind and
/// metadata at the root, and refuses unknown fields (kubectl's default field validation is
/// Strict), which JSON Schema says with `additionalProperties: false`.
fn strict(crd: &Value) -> Value {
    fn close(schema: &mut Value) {
        let Some(object) = schema.as_object_mut() else {
            return;
        };
        if object.contains_key("properties") && !object.contains_key("additionalProperties") {
            object.insert("additionalProperties".into(), false.into());
        }
        for key in ["properties"] {
            if let Some(Value::Object(properties)) = object.get_mut(key) {
                properties.values_mut().for_each(close);
            }
        }
        for key in ["items", "additionalProperties"] {
            if let Some(nested) = object.get_mut(key) {
                close(nested);
            }
        }
    }
    let mut schema = schema(crd).clone();
    close(&mut schema);
    let properties = schema["properties"].as_object_mut().unwrap();
    properties.insert("apiVersion".into(), json!({"type": "string"}));
    properties.insert("kind".into(), json!({"type": "string"}));
    properties.insert("metadata".into(), json!({"type": "object"}));
    schema
}

/// The schema errors python3-jsonschema finds in each document, as `path: message`.
fn schema_errors(schema: &Value, docs: &[Value], dir: &Path) -> Vec<Vec<String>> {
    let schema_file = dir.join("schema.json");
    let docs_file = dir.join("docs.json");
    std::fs::write(&schema_file, serde_json::to_vec(schema).unwrap()).unwrap();
    std::fs::write(&docs_file, serde_json::to_vec(docs).unwrap()).unwrap();
    // Kubernetes' openAPIV3Schema is OpenAPI 3.0's dialect of JSON Schema draft 4.
    let script = "import json, sys, jsonschema\n\
                  schema = json.load(open(sys.argv[1]))\n\
                  jsonschema.Draft4Validator.check_schema(schema)\n\
                  validator = jsonschema.Draft4Validator(schema)\n\
                  print(json.dumps([[ '.'.join(map(str, e.absolute_path)) + ': ' + e.message\n\
                  for e in validator.iter_errors(doc)] for doc in json.load(open(sys.argv[2]))]))\n";
    let out = Command::new(PYTHON)
        .args(["-c", script])
        .arg(&schema_file)
        .arg(&docs_file)
        .output()
        .expect("missing test prerequisite: /usr/bin/python3 (run scripts/install-test-deps)");
    assert!(
        out.status.success(),
        "python3-jsonschema failed (run scripts/install-test-deps): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn rollout_schema_accepts_the_example_and_refuses_broken_ones() {
    let dir = tempfile::tempdir().unwrap();
    let crds = generated();
    let good = example();
    let minimal = json!({
        "apiVersion": "clb.dev/v1alpha1", "kind": "Rollout", "metadata": {"name": "m"},
        "spec": {"image": "registry.example/os@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                 "nodeSelector": {"matchExpressions": [{"key": "os", "operator": "Exists"}]},
                 "maxUnavailable": 3}
    });
    // (what is broken, the document, where the error must point)
    let bad = [
        (
            "percent with a space",
            with(&good, "spec.maxUnavailable", "10 %".into()),
            "spec.maxUnavailable",
        ),
        (
            "percent above 100",
            with(&good, "spec.maxUnavailable", "150%".into()),
            "spec.maxUnavailable",
        ),
        (
            "number as a string",
            with(&good, "spec.maxUnavailable", "3".into()),
            "spec.maxUnavailable",
        ),
        (
            "negative count",
            with(&good, "spec.maxUnavailable", (-1).into()),
            "spec.maxUnavailable",
        ),
        (
            "no such day",
            with(&good, "spec.window.days", json!(["Funday"])),
            "spec.window.days.0",
        ),
        (
            "no day at all",
            with(&good, "spec.window.days", json!([])),
            "spec.window.days",
        ),
        (
            "hour 25",
            with(&good, "spec.window.start", "25:00".into()),
            "spec.window.start",
        ),
        (
            "unpadded time",
            with(&good, "spec.window.end", "5:00".into()),
            "spec.window.end",
        ),
        (
            "duration in words",
            with(&good, "spec.canary.soak", "10 minutes".into()),
            "spec.canary.soak",
        ),
        (
            "Go duration in ms",
            with(&good, "spec.drain.timeout", "300ms".into()),
            "spec.drain.timeout",
        ),
        (
            "negative budget",
            with(&good, "spec.failureBudget", (-1).into()),
            "spec.failureBudget",
        ),
        (
            "image with a space",
            with(&good, "spec.image", "registry.example/os v2".into()),
            "spec.image",
        ),
        (
            "empty image",
            with(&good, "spec.image", "".into()),
            "spec.image",
        ),
        (
            "unknown operator",
            with(
                &good,
                "spec.nodeSelector",
                json!({"matchExpressions": [{"key": "os", "operator": "Has"}]}),
            ),
            "spec.nodeSelector.matchExpressions.0.operator",
        ),
        (
            "misspelt field",
            with(&good, "spec.maxUnavailble", "10%".into()),
            "spec",
        ),
        (
            "no selector",
            {
                let mut doc = good.clone();
                doc["spec"].as_object_mut().unwrap().remove("nodeSelector");
                doc
            },
            "spec",
        ),
    ];
    let mut docs = vec![good.clone(), minimal];
    docs.extend(bad.iter().map(|(_, doc, _)| doc.clone()));
    let errors = schema_errors(&strict(&crds[0]), &docs, dir.path());

    assert_eq!(errors[0], Vec::<String>::new(), "the issue's example");
    assert_eq!(
        errors[1],
        Vec::<String>::new(),
        "a minimal rollout by digest"
    );
    for ((what, _, path), errors) in bad.iter().zip(&errors[2..]) {
        assert!(
            errors
                .iter()
                .any(|error| error.starts_with(&format!("{path}: "))),
            "{what}: expected an error at {path}, got {errors:?}"
        );
    }
}

#[test]
fn node_update_schema_accepts_a_bridge_report_and_refuses_broken_ones() {
    let dir = tempfile::tempdir().unwrap();
    let crds = generated();
    let digest = format!("sha256:{}", "ab".repeat(32));
    let good = json!({
        "apiVersion": "clb.dev/v1alpha1", "kind": "NodeUpdate", "metadata": {"name": "node-1"},
        "spec": {
            "nodeName": "node-1",
            "rollout": "os-v2",
            "request": {"id": 3, "action": "Stage", "image": format!("registry.example/os:v2@{digest}"), "digest": digest}
        },
        "status": {
            "phase": "Staged",
            "booted": {"slot": "a", "image": "registry.example/os:v1", "digest": format!("sha256:{}", "01".repeat(32)), "shortDigest": "010101010101"},
            "markedGood": true,
            "staged": {"slot": "b", "image": "registry.example/os:v2", "digest": digest, "shortDigest": "abababababab"},
            "rolledBack": false,
            "operation": "idle",
            "progress": {"percent": 100, "message": "staged"},
            "strategy": "coordinated",
            "request": {"id": 3, "action": "Stage", "state": "Succeeded", "startedAt": "2026-05-01T02:00:00Z", "finishedAt": "2026-05-01T02:03:00Z"},
            "lastReported": "2026-05-01T02:03:00Z"
        }
    });
    let bad = [
        (
            "unknown action",
            with(&good, "spec.request.action", "Wipe".into()),
            "spec.request.action",
        ),
        (
            "request by tag",
            with(&good, "spec.request.image", "registry.example/os:v2".into()),
            "spec.request.image",
        ),
        (
            "request id 0",
            with(&good, "spec.request.id", 0.into()),
            "spec.request.id",
        ),
        (
            "md5 digest",
            with(&good, "status.booted.digest", "md5:00".into()),
            "status.booted.digest",
        ),
        (
            "unknown phase",
            with(&good, "status.phase", "Sleeping".into()),
            "status.phase",
        ),
        (
            "progress 101",
            with(&good, "status.progress.percent", 101.into()),
            "status.progress.percent",
        ),
        (
            "unknown request state",
            with(&good, "status.request.state", "Maybe".into()),
            "status.request.state",
        ),
    ];
    let mut docs = vec![good.clone()];
    docs.extend(bad.iter().map(|(_, doc, _)| doc.clone()));
    let errors = schema_errors(&strict(&crds[1]), &docs, dir.path());
    assert_eq!(errors[0], Vec::<String>::new(), "a bridge's report");
    for ((what, _, path), errors) in bad.iter().zip(&errors[1..]) {
        assert!(
            errors
                .iter()
                .any(|error| error.starts_with(&format!("{path}: "))),
            "{what}: expected an error at {path}, got {errors:?}"
        );
    }
    // And the typed status reads it.
    let node: NodeUpdate = serde_json::from_value(good).unwrap();
    assert_eq!(
        node.status.unwrap().staged.unwrap().slot.as_deref(),
        Some("b")
    );
}

/// The messages of the CEL rules `object` breaks (`old`: the object before an update).
fn cel_errors(crd: &Value, object: &Value, old: Option<&Value>) -> Vec<String> {
    match Validator::new().validate(schema(crd), object, old) {
        Ok(()) => Vec::new(),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn rollout_cel_rules_hold() {
    let crds = generated();
    let good = example();
    assert_eq!(cel_errors(&crds[0], &good, None), Vec::<String>::new());
    let selector = |expression: Value| {
        with(
            &good,
            "spec.nodeSelector",
            json!({"matchExpressions": [expression]}),
        )
    };
    for (doc, expected) in [
        (
            with(&good, "spec.window.end", "02:00".into()),
            "the window's start and end must differ",
        ),
        (
            selector(json!({"key": "os", "operator": "In"})),
            "In and NotIn need values",
        ),
        (
            selector(json!({"key": "os", "operator": "NotIn", "values": []})),
            "In and NotIn need values",
        ),
        (
            selector(json!({"key": "os", "operator": "Exists", "values": ["clb"]})),
            "In and NotIn need values",
        ),
    ] {
        let errors = cel_errors(&crds[0], &doc, None);
        assert!(
            errors.iter().any(|error| error.contains(expected)),
            "expected {expected:?} for {}, got {errors:?}",
            doc["spec"]
        );
    }
    for expression in [
        json!({"key": "os", "operator": "In", "values": ["clb"]}),
        json!({"key": "os", "operator": "DoesNotExist"}),
    ] {
        assert_eq!(
            cel_errors(&crds[0], &selector(expression), None),
            Vec::<String>::new()
        );
    }
}

#[test]
fn node_update_cel_rules_hold() {
    let crds = generated();
    let digest = format!("sha256:{}", "ab".repeat(32));
    let request = |id: i64| json!({"id": id, "action": "Reboot", "image": format!("registry.example/os@{digest}"), "digest": digest});
    let old = json!({
        "apiVersion": "clb.dev/v1alpha1", "kind": "NodeUpdate", "metadata": {"name": "node-1"},
        "spec": {"nodeName": "node-1", "rollout": "os-v2", "request": request(4)}
    });
    assert_eq!(cel_errors(&crds[1], &old, None), Vec::<String>::new());
    let next = with(&old, "spec.request", request(5));
    assert_eq!(
        cel_errors(&crds[1], &next, Some(&old)),
        Vec::<String>::new()
    );
    let released = with(&old, "spec.rollout", Value::Null);
    assert_eq!(
        cel_errors(&crds[1], &released, Some(&old)),
        Vec::<String>::new()
    );

    for (doc, previous, expected) in [
        (
            with(&old, "metadata.name", "node-2".into()),
            None,
            "named after its node",
        ),
        (
            with(&old, "spec.nodeName", "node-2".into()),
            Some(&old),
            "nodeName never changes",
        ),
        (
            with(&old, "spec.request", request(3)),
            Some(&old),
            "request ids never go down",
        ),
    ] {
        let errors = cel_errors(&crds[1], &doc, previous);
        assert!(
            errors.iter().any(|error| error.contains(expected)),
            "expected {expected:?}, got {errors:?}"
        );
    }
}

#[test]
fn cel_rules_compile_in_scope_and_within_budget() {
    // kube-cel's static checks: every rule compiles, uses only the variables a CRD rule may,
    // and its coarse cost estimate stays within the API server's per-rule budget.
    fn rules<'a>(schema: &'a Value, found: &mut Vec<(&'a Value, &'a str)>) {
        if let Some(validations) = schema["x-kubernetes-validations"].as_array() {
            for validation in validations {
                found.push((schema, validation["rule"].as_str().unwrap()));
            }
        }
        if let Some(properties) = schema["properties"].as_object() {
            properties.values().for_each(|nested| rules(nested, found));
        }
        for key in ["items", "additionalProperties"] {
            if schema[key].is_object() {
                rules(&schema[key], found);
            }
        }
    }
    let crds = generated();
    let mut found = Vec::new();
    for crd in &crds {
        rules(schema(crd), &mut found);
    }
    assert_eq!(
        found.len(),
        5,
        "rules: {:?}",
        found.iter().map(|(_, rule)| rule).collect::<Vec<_>>()
    );
    for (at, rule) in found {
        let compiled = compile_schema(at);
        assert!(
            compiled.compilation_errors().is_empty(),
            "{rule}: {:?}",
            compiled.compilation_errors()
        );
        let warnings: Vec<AnalysisWarning> =
            analyze_rule(rule, &compiled, ScopeContext::CrdValidation)
                .into_iter()
                .filter(|warning| warning.kind != WarningKind::MissingBounds)
                .collect();
        assert!(warnings.is_empty(), "{rule}: {warnings:?}");
    }
}
