//! kubectl's generator subcommands (`kubectl create configmap|deployment|...`) send their
//! objects as `application/vnd.kubernetes.protobuf`; krust decodes them into the same
//! JSON kubectl itself would have written.

mod common;

use common::TestServer;
use serde_json::Value;

/// Every field of `want` is in `got` with the same value (the server may add metadata and
/// defaults). Arrays must have the same length and match element by element.
fn assert_subset(want: &Value, got: &Value, path: &str) {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            for (k, wv) in w {
                // Server-owned: status, and metadata kubectl writes as null/empty.
                if path.is_empty() && k == "status" || wv.is_null() {
                    continue;
                }
                let gv = g.get(k).unwrap_or_else(|| panic!("{path}.{k} missing in the server's object: {got}"));
                assert_subset(wv, gv, &format!("{path}.{k}"));
            }
        }
        (Value::Array(w), Value::Array(g)) => {
            assert_eq!(w.len(), g.len(), "{path}: {want} vs {got}");
            for (i, (wv, gv)) in w.iter().zip(g).enumerate() {
                assert_subset(wv, gv, &format!("{path}[{i}]"));
            }
        }
        _ => assert_eq!(want, got, "{path}"),
    }
}

#[test]
fn kubectl_create_generators_round_trip() {
    let server = TestServer::start();
    let cases: &[&[&str]] = &[
        &["create", "configmap", "a", "--from-literal=x=1", "--from-literal=empty="],
        &["create", "secret", "generic", "s", "--from-literal=a=b"],
        &["create", "namespace", "foo"],
        &["create", "deployment", "d", "--image=busybox", "--replicas=2", "--port=80"],
        &["create", "deployment", "zero", "--image=busybox", "--replicas=0", "--", "sleep", "1"],
        &["create", "serviceaccount", "sa"],
        &["create", "job", "j", "--image=busybox"],
        &["create", "cronjob", "cj", "--image=busybox", "--schedule=*/5 * * * *"],
        &["create", "role", "r", "--verb=get", "--resource=pods"],
        &["create", "rolebinding", "rb", "--role=r", "--user=bob", "--serviceaccount=default:sa"],
        &["create", "clusterrole", "cr", "--verb=get,list", "--resource=pods,deployments.apps"],
        &["create", "clusterrolebinding", "crb", "--clusterrole=cr", "--group=g"],
        &["create", "service", "clusterip", "s", "--tcp=80:8080"],
        &["create", "service", "nodeport", "np", "--tcp=5678:http"],
        &["create", "quota", "q", "--hard=cpu=1,memory=1G,pods=2"],
        &["create", "priorityclass", "pc", "--value=1000", "--preemption-policy=Never"],
        &["create", "poddisruptionbudget", "pdb", "--selector=app=d", "--max-unavailable=50%"],
        &["create", "ingress", "ing", "--rule=foo.com/bar=svc1:8080,tls=my-cert", "--class=nginx"],
    ];
    for args in cases {
        // Flags go before the arguments: some commands end in `-- command...`.
        let with = |flags: &[&'static str]| [&args[..1], flags, &args[1..]].concat();
        let client: Value =
            serde_json::from_str(&server.kubectl_ok(&with(&["--dry-run=client", "-o", "json"]))).expect("client-side JSON");
        let created: Value = serde_json::from_str(&server.kubectl_ok(&with(&["-o", "json"]))).expect("server JSON");
        assert_subset(&client, &created, "");
    }

    // Spot checks of what the decoder must get right.
    let secret: Value = serde_json::from_str(&server.kubectl_ok(&["get", "secret", "s", "-o", "json"])).unwrap();
    assert_eq!(secret["data"]["a"], "Yg==");
    let zero: Value = serde_json::from_str(&server.kubectl_ok(&["get", "deploy", "zero", "-o", "json"])).unwrap();
    assert_eq!(zero["spec"]["replicas"], 0, "a pointer field set to zero is kept: {zero}");
    let svc: Value = serde_json::from_str(&server.kubectl_ok(&["get", "svc", "np", "-o", "json"])).unwrap();
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], "http");
    let svc: Value = serde_json::from_str(&server.kubectl_ok(&["get", "svc", "s", "-o", "json"])).unwrap();
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], 8080);
    let cm: Value = serde_json::from_str(&server.kubectl_ok(&["get", "cm", "a", "-o", "json"])).unwrap();
    assert_eq!(cm["data"]["empty"], "");
}

#[test]
fn malformed_protobuf_is_bad_request() {
    let server = TestServer::start();
    let (status, body) = server.curl_admin(
        "POST",
        "/api/v1/namespaces/default/configmaps",
        &["Content-Type: application/vnd.kubernetes.protobuf"],
        Some(b"k8s\0\x0a\xff"),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("could not be decoded"), "{body}");
}
