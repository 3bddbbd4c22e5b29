//! OpenAPI documents as the stock kubectl (1.32) consumes them: `kubectl explain` over
//! OpenAPI v3 (default) and v2 (`--output=plaintext-openapiv2`, the protobuf document), and
//! `kubectl apply --validate=strict`, which relies on the `fieldValidation` parameter of
//! the v3 PATCH operations to leave validation to the server.

mod common;

use common::{text, TestServer};

#[test]
fn explain_prints_field_descriptions() {
    let server = TestServer::start();
    let out = server.kubectl_ok(&["explain", "deployment.spec.replicas"]);
    assert!(out.contains("FIELD: replicas <integer>"), "{out}");
    assert!(out.contains("Number of desired pods"), "{out}");

    let out = server.kubectl_ok(&["explain", "deployment.spec.template.spec.containers"]);
    assert!(out.contains("<[]Container>"), "{out}");
    assert!(out.contains("imagePullPolicy"), "{out}");
}

#[test]
fn explain_recursive() {
    let server = TestServer::start();
    let out = server.kubectl_ok(&["explain", "pods.spec.containers", "--recursive"]);
    assert!(out.contains("KIND:       Pod"), "{out}");
    for field in ["env\t<[]EnvVar>", "containerPort\t<integer> -required-", "livenessProbe\t<Probe>"] {
        assert!(out.contains(field), "missing {field:?} in:\n{out}");
    }
    let out = server.kubectl_ok(&["explain", "pods", "--recursive"]);
    assert!(out.lines().count() > 500, "{out}");
}

#[test]
fn explain_openapi_v2() {
    let server = TestServer::start();
    let out = server.kubectl_ok(&["explain", "--output=plaintext-openapiv2", "deployment"]);
    assert!(out.contains("KIND:     Deployment"), "{out}");
    assert!(out.contains("Deployment enables declarative updates for Pods and ReplicaSets."), "{out}");
    let out = server.kubectl_ok(&["explain", "--output=plaintext-openapiv2", "deployment.spec.template.spec.containers.ports"]);
    assert!(out.contains("List of ports to expose from the container."), "{out}");
}

#[test]
fn apply_validate_strict() {
    let server = TestServer::start();
    let manifest = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 2\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n      - name: web\n        image: nginx\n        ports: [{containerPort: 80}]\n";
    let out = server.kubectl_stdin_ok(&["apply", "--validate=strict", "-f", "-"], manifest);
    assert!(out.contains("deployment.apps/web created"), "{out}");
    let out = server.kubectl_stdin_ok(&["apply", "--validate=strict", "-f", "-"], manifest);
    assert!(out.contains("deployment.apps/web unchanged"), "{out}");
    // An unknown field is still refused (by the server, as fieldValidation=Strict asks).
    let bad = manifest.replace("  replicas: 2\n", "  replicas: 2\n  bogus: 1\n");
    let out = server.kubectl_stdin(&["apply", "--validate=strict", "-f", "-"], &bad);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("unknown field \"spec.bogus\""), "{}", text(&out.stderr));
}

#[test]
fn v3_hashed_urls_are_stable_and_immutable() {
    let server = TestServer::start();
    let (status, index) = server.curl_admin("GET", "/openapi/v3", &[], None);
    assert_eq!(status, 200);
    let (_, again) = server.curl_admin("GET", "/openapi/v3", &[], None);
    assert_eq!(index, again);
    let v: serde_json::Value = serde_json::from_str(&index).unwrap();
    let url = v["paths"]["apis/apps/v1"]["serverRelativeURL"].as_str().unwrap().to_string();
    assert!(url.contains("?hash="), "{url}");
    let (status, body) = server.curl_admin("GET", &url, &[], None);
    assert_eq!(status, 200);
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(doc["components"]["schemas"]["io.k8s.api.apps.v1.Deployment"].is_object());
}
