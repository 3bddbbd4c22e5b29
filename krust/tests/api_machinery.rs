//! kubectl 1.32 workflows of the API machinery: server-side apply with conflicts and
//! force, diff, wait for a CRD to be Established and for deletion, explain on a CRD.

mod common;

use common::{text, TestServer};

const DEPLOY: &str = "apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: busybox:1.36}]
";

#[test]
fn server_side_apply_diff_and_conflicts() {
    let server = TestServer::start();
    let out = server.kubectl_stdin_ok(&["apply", "--server-side", "-f", "-"], DEPLOY);
    assert!(out.contains("serverside-applied"), "{out}");
    // Another manager takes replicas over with a plain update.
    server.kubectl_ok(&["scale", "deployment", "web", "--replicas=5"]);
    // Re-applying the old value conflicts, naming the field; --force-conflicts takes it back.
    let out = server.kubectl_stdin(&["apply", "--server-side", "-f", "-"], DEPLOY);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("conflict") && err.contains(".spec.replicas"), "{err}");
    server.kubectl_stdin_ok(&["apply", "--server-side", "--force-conflicts", "-f", "-"], DEPLOY);
    assert_eq!(server.kubectl_ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]), "2");
    let managers = server.kubectl_ok(&["get", "deploy", "web", "--show-managed-fields", "-o", "jsonpath={.metadata.managedFields[*].manager}"]);
    assert!(managers.contains("kubectl"), "{managers}");
    // diff shows the change a new manifest would make, and exits 1; none: exit 0.
    let changed = DEPLOY.replace("busybox:1.36", "busybox:1.37");
    let out = server.kubectl_stdin(&["diff", "--server-side", "--force-conflicts", "-f", "-"], &changed);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("+      - image: busybox:1.37") || text(&out.stdout).contains("busybox:1.37"), "{}", text(&out.stdout));
    let out = server.kubectl_stdin(&["diff", "--server-side", "--force-conflicts", "-f", "-"], DEPLOY);
    assert_eq!(out.status.code(), Some(0), "{} {}", text(&out.stdout), text(&out.stderr));
    // Nothing of the diffs was stored.
    let image = server.kubectl_ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.template.spec.containers[0].image}"]);
    assert_eq!(image, "busybox:1.36");
}

const CRD: &str = "apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: gadgets.example.com}
spec:
  group: example.com
  scope: Namespaced
  names: {plural: gadgets, singular: gadget, kind: Gadget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            description: What the gadget should be.
            properties:
              size: {type: integer, description: How big the gadget is.}
";

#[test]
fn crd_workflow_wait_explain_and_delete() {
    let server = TestServer::start();
    server.kubectl_stdin_ok(&["apply", "-f", "-"], CRD);
    server.kubectl_ok(&["wait", "--for=condition=Established", "crd/gadgets.example.com", "--timeout=20s"]);
    let explain = server.kubectl_ok(&["explain", "gadget.spec.size"]);
    assert!(explain.contains("How big the gadget is."), "{explain}");
    server.kubectl_stdin_ok(&["apply", "--server-side", "-f", "-"], "apiVersion: example.com/v1\nkind: Gadget\nmetadata: {name: g1, namespace: default}\nspec: {size: 3}\n");
    assert_eq!(server.kubectl_ok(&["get", "gadget", "g1", "-o", "jsonpath={.spec.size}"]), "3");
    let out = server.kubectl_stdin(&["apply", "-f", "-"], "apiVersion: example.com/v1\nkind: Gadget\nmetadata: {name: g2, namespace: default}\nspec: {size: big}\n");
    assert!(!out.status.success(), "a string where the schema says integer is refused");
    // Deleting the CRD deletes its objects; wait --for=delete returns once it is gone.
    server.kubectl_ok(&["delete", "crd", "gadgets.example.com", "--wait=false"]);
    server.kubectl_ok(&["wait", "--for=delete", "crd/gadgets.example.com", "--timeout=30s"]);
    let out = server.kubectl(&["get", "gadgets"]);
    assert!(!out.status.success(), "the resource is no longer served");
}
