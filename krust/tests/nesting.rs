//! No poison objects: every depth 1..=200 of free-form nesting, for a custom resource
//! (`x-kubernetes-preserve-unknown-fields`) and a built-in (ControllerRevision `data`, a
//! RawExtension). At each depth the create either succeeds, and then GET, LIST (JSON and
//! Table), WATCH from resourceVersion 0, server-side apply, PATCH and DELETE all work and
//! answer what serde_json (kube-rs, the controllers) decodes, or it is refused with a 400
//! Status that says what is wrong; afterwards the namespace, holding the deepest objects
//! accepted, is deleted. An object stored too deep by an older version (written here
//! through the etcd face) is still listed, watched and deleted.
//!
//! Requests go over one HTTP/2 connection of a kube-rs client (admin kubeconfig), so the
//! 2 x 200 depths take seconds; kubectl and etcdctl do the rest.

mod common;

use std::pin::Pin;
use std::process::{Command, Stdio};
use std::time::Duration;

use apiserver::registry::nesting::MAX_DEPTH;
use common::{poll, text, TestServer};
use hyper::body::Body as _;
use serde_json::{json, Value};

const NS: &str = "nesting";
const WALK: std::ops::RangeInclusive<usize> = 1..=200;

const CRD: &str = r#"{
  "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
  "metadata": {"name": "deeps.nesting.krust.test"},
  "spec": {
    "group": "nesting.krust.test", "scope": "Namespaced",
    "names": {"plural": "deeps", "singular": "deep", "kind": "Deep"},
    "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {
      "type": "object",
      "properties": {"spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}
    }}}]
  }
}"#;

/// One resource walked: where it lives and where its free-form field is.
struct Resource {
    api_version: &'static str,
    kind: &'static str,
    /// `/apis/G/V/namespaces/NS/PLURAL`
    collection: String,
    /// The field that takes any JSON; its value nests `levels` deep.
    field: &'static str,
    /// Other fields the kind requires.
    required: Value,
}

impl Resource {
    fn new(api_version: &'static str, kind: &'static str, plural: &str, field: &'static str, required: Value) -> Resource {
        Resource { api_version, kind, collection: format!("/apis/{api_version}/namespaces/{NS}/{plural}"), field, required }
    }

    fn custom() -> Resource {
        Resource::new("nesting.krust.test/v1", "Deep", "deeps", "spec", json!({}))
    }

    fn controller_revision() -> Resource {
        Resource::new("apps/v1", "ControllerRevision", "controllerrevisions", "data", json!({"revision": 1}))
    }

    /// The object whose free-form field nests `levels` deep: `{"a": {"a": ... "leaf"}}`.
    /// With the root it nests `levels + 1` deep.
    fn object(&self, name: &str, levels: usize) -> Value {
        let mut obj = json!({"apiVersion": self.api_version, "kind": self.kind, "metadata": {"name": name}});
        obj[self.field] = nested(levels);
        for (k, v) in self.required.as_object().unwrap() {
            obj[k] = v.clone();
        }
        obj
    }

    fn item(&self, name: &str) -> String {
        format!("{}/{name}", self.collection)
    }
}

fn nested(levels: usize) -> Value {
    (0..levels).fold(json!("leaf"), |inner, _| json!({ "a": inner }))
}

/// An admin client over one connection; answers are decoded as any serde_json client does
/// (default recursion limit), so an answer too deep for kube-rs fails the test.
struct Client(kube::Client);

impl Client {
    async fn new(server: &TestServer) -> Client {
        let kc = kube::config::Kubeconfig::read_from(server.kubeconfig()).unwrap();
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.unwrap();
        Client(kube::Client::try_from(cfg).unwrap())
    }

    fn request(method: &str, path: &str, content_type: &str, accept: &str, body: Vec<u8>) -> hyper::Request<kube::client::Body> {
        hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", content_type)
            .header("accept", accept)
            .body(kube::client::Body::from(body))
            .unwrap()
    }

    async fn call_as(&self, method: &str, path: &str, content_type: &str, accept: &str, body: Option<&Value>) -> (u16, Value) {
        let body = body.map(|b| serde_json::to_vec(b).unwrap()).unwrap_or_default();
        let resp = self.0.send(Self::request(method, path, content_type, accept, body)).await.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let code = resp.status().as_u16();
        let bytes = resp.into_body().collect_bytes().await.unwrap();
        let value = serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{method} {path} answered {code} with what serde_json cannot decode: {e}"));
        (code, value)
    }

    async fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let ctype = if method == "PATCH" { "application/merge-patch+json" } else { "application/json" };
        self.call_as(method, path, ctype, "application/json", body).await
    }

    /// The first event of a watch, decoded.
    async fn first_event(&self, path: &str) -> Value {
        let resp = self.0.send(Self::request("GET", path, "application/json", "application/json", Vec::new())).await.unwrap();
        assert_eq!(resp.status().as_u16(), 200, "watch {path}");
        let mut body = resp.into_body();
        let mut line = Vec::new();
        let read = async {
            while !line.contains(&b'\n') {
                let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
                let frame = frame.expect("the watch ended before its first event").expect("watch stream");
                line.extend_from_slice(frame.data_ref().map(|d| &d[..]).unwrap_or_default());
            }
        };
        tokio::time::timeout(Duration::from_secs(10), read).await.unwrap_or_else(|_| panic!("no event from {path}"));
        let end = line.iter().position(|b| *b == b'\n').unwrap();
        serde_json::from_slice(&line[..end]).unwrap_or_else(|e| panic!("watch event of {path} serde_json cannot decode: {e}"))
    }
}

/// Asserts a 400 Status saying the object nests too deep.
fn assert_too_deep(what: &str, code: u16, status: &Value) {
    assert_eq!(code, 400, "{what}: {status}");
    assert_eq!(status["kind"], "Status", "{what}: {status}");
    assert_eq!(status["reason"], "BadRequest", "{what}: {status}");
    let msg = status["message"].as_str().unwrap_or_default();
    let says = msg.contains(&format!("exceeded max depth of {MAX_DEPTH}"));
    assert!(says, "{what}: the message does not say the object nests too deep: {msg}");
}

/// Walks one resource through every depth; returns the deepest depth (levels) accepted.
async fn walk(c: &Client, r: &Resource) -> usize {
    let mut deepest = 0;
    for levels in WALK {
        let name = format!("d{levels}");
        let obj = r.object(&name, levels);
        let what = format!("{} at {} levels", r.kind, levels);
        let (code, created) = c.call("POST", &r.collection, Some(&obj)).await;
        if levels + 1 > MAX_DEPTH {
            // Refused: nothing stored, and server-side apply cannot create it either.
            assert_too_deep(&format!("create {what}"), code, &created);
            let apply = format!("{}?fieldManager=walker", r.item(&name));
            let (code, status) = c.call_as("PATCH", &apply, "application/apply-patch+yaml", "application/json", Some(&obj)).await;
            assert_too_deep(&format!("apply-create {what}"), code, &status);
            assert_eq!(c.call("GET", &r.item(&name), None).await.0, 404, "{what} was stored");
            continue;
        }
        assert_eq!(code, 201, "create {what}: {created}");
        deepest = levels;
        let (code, got) = c.call("GET", &r.item(&name), None).await;
        assert_eq!(code, 200, "get {what}: {got}");
        assert_eq!(got[r.field], obj[r.field], "get {what}");
        let (code, list) = c.call("GET", &format!("{}?fieldSelector=metadata.name={name}", r.collection), None).await;
        assert_eq!((code, list["items"][0]["metadata"]["name"].as_str()), (200, Some(name.as_str())), "list {what}: {list}");
        let table = "application/json;as=Table;v=v1;g=meta.k8s.io";
        let path = format!("{}?fieldSelector=metadata.name={name}&includeObject=Object", r.collection);
        let (code, t) = c.call_as("GET", &path, "application/json", table, None).await;
        assert_eq!((code, &t["rows"][0]["object"][r.field]), (200, &obj[r.field]), "table {what}");
        let event = c.first_event(&format!("{}?watch=1&resourceVersion=0&fieldSelector=metadata.name={name}", r.collection)).await;
        assert_eq!((event["type"].as_str(), &event["object"][r.field]), (Some("ADDED"), &obj[r.field]), "watch {what}");
        // Server-side apply of the same object with a label, then a merge patch.
        let mut applied = obj.clone();
        applied["metadata"]["labels"] = json!({"applied": "yes"});
        let apply = format!("{}?fieldManager=walker&force=true", r.item(&name));
        let (code, out) = c.call_as("PATCH", &apply, "application/apply-patch+yaml", "application/json", Some(&applied)).await;
        assert_eq!((code, &out["metadata"]["labels"]["applied"]), (200, &json!("yes")), "apply {what}: {out}");
        let (code, out) = c.call("PATCH", &r.item(&name), Some(&json!({"metadata": {"labels": {"patched": "yes"}}}))).await;
        assert_eq!((code, &out[r.field]), (200, &obj[r.field]), "patch {what}: {out}");
        let (code, out) = c.call("DELETE", &r.item(&name), None).await;
        assert_eq!(code, 200, "delete {what}: {out}");
        assert_eq!(c.call("GET", &r.item(&name), None).await.0, 404, "{what} survived its delete");
    }
    deepest
}

/// At the deepest object accepted, patches that would nest it deeper are refused and leave
/// it as it was; it stays for the namespace deletion.
async fn patches_cannot_deepen(c: &Client, r: &Resource, levels: usize) {
    let obj = r.object("deepest", levels);
    let (code, created) = c.call("POST", &r.collection, Some(&obj)).await;
    assert_eq!(code, 201, "{created}");
    let item = r.item("deepest");
    let mut deeper = json!({});
    deeper[r.field] = nested(levels + 1);
    let (code, status) = c.call("PATCH", &item, Some(&deeper)).await;
    assert_too_deep("merge patch one level deeper", code, &status);
    let pointer = format!("/{}{}", r.field, "/a".repeat(levels - 1));
    let add = json!([{"op": "replace", "path": format!("{pointer}/a"), "value": {"b": {}}}]);
    let (code, status) = c.call_as("PATCH", &item, "application/json-patch+json", "application/json", Some(&add)).await;
    assert_too_deep("JSON patch one level deeper", code, &status);
    let (code, got) = c.call("GET", &item, None).await;
    assert_eq!((code, &got[r.field]), (200, &obj[r.field]), "the refused patches changed the object");
}

/// A Deep stored by an older version 130 levels deep with its managedFields, put straight
/// into the datastore through the etcd face.
fn put_legacy_object(endpoint: &str) {
    let mut legacy = Resource::custom().object("legacy", 129);
    legacy["metadata"]["namespace"] = json!(NS);
    legacy["metadata"]["uid"] = json!("0b8d5d4c-1a7e-4a47-9f2e-0d3c1b6e5a01");
    legacy["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
    let fields = (0..130).fold(json!({".": {}}), |inner, _| json!({ "f:a": inner }));
    legacy["metadata"]["managedFields"] = json!([{"manager": "old", "operation": "Update", "apiVersion": "nesting.krust.test/v1", "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": fields}}]);
    let mut put = Command::new("etcdctl")
        .args(["--endpoints", endpoint, "put", &format!("/registry/nesting.krust.test/deeps/{NS}/legacy")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("etcdctl (Debian's etcd-client)");
    std::io::Write::write_all(&mut put.stdin.take().unwrap(), &serde_json::to_vec(&legacy).unwrap()).unwrap();
    let out = put.wait_with_output().unwrap();
    assert!(out.status.success(), "etcdctl put: {}", text(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_depth_is_refused_or_fully_served() {
    let etcd = format!("127.0.0.1:{}", common::free_port());
    let server = TestServer::start_with(&["--datastore-listen", &etcd]);
    server.kubectl_ok(&["create", "namespace", NS]);
    server.kubectl_stdin_ok(&["apply", "-f", "-"], CRD);
    server.kubectl_ok(&["wait", "--for=condition=Established", "crd/deeps.nesting.krust.test", "--timeout=30s"]);
    let c = Client::new(&server).await;
    // Discovery of the new group may lag Established by a moment.
    assert!(poll(Duration::from_secs(15), || server.kubectl(&["get", "deeps", "-n", NS]).status.success()));

    for r in [Resource::custom(), Resource::controller_revision()] {
        let deepest = walk(&c, &r).await;
        assert_eq!(deepest + 1, MAX_DEPTH, "{}: the deepest object accepted", r.kind);
        patches_cannot_deepen(&c, &r, deepest).await;
    }

    // What the etcd face serves of the deepest objects accepted decodes as well.
    for key in [format!("/registry/nesting.krust.test/deeps/{NS}/deepest"), format!("/registry/apps/controllerrevisions/{NS}/deepest")] {
        let out = Command::new("etcdctl").args(["--endpoints", &etcd, "get", &key, "--print-value-only"]).output().unwrap();
        assert!(out.status.success() && !out.stdout.is_empty(), "etcdctl get {key}: {}", text(&out.stderr));
        let stored: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{key} as stored: {e}"));
        assert!(stored["metadata"]["managedFields"].is_array(), "{key}: {stored}");
    }

    // Written before the limit: read, listed and watched all the same, by kubectl and the
    // API, and an update that does not deepen it passes (so finalizers can go).
    put_legacy_object(&etcd);
    let got = server.kubectl_ok(&["get", "deep", "legacy", "-n", NS, "-o", "jsonpath={.metadata.name}"]);
    assert_eq!(got, "legacy");
    let listed = server.kubectl_ok(&["get", "deeps", "-n", NS, "-o", "name"]);
    assert!(listed.contains("deep.nesting.krust.test/legacy") && listed.contains("deep.nesting.krust.test/deepest"), "{listed}");
    // Too deep for serde_json's default limit, so read as a Go client would.
    let watch = format!("{}?watch=1&resourceVersion=0&timeoutSeconds=1&fieldSelector=metadata.name=legacy", Resource::custom().collection);
    let (code, events) = server.curl_admin("GET", &watch, &[], None);
    let first = events.lines().next().unwrap_or_default();
    let mut de = serde_json::Deserializer::from_str(first);
    de.disable_recursion_limit();
    let event: Value = de.into_iter().next().expect("an event").unwrap_or_else(|e| panic!("watch of the legacy object ({code}): {e}: {events}"));
    assert_eq!((event["type"].as_str(), event["object"]["metadata"]["name"].as_str()), (Some("ADDED"), Some("legacy")));
    server.kubectl_ok(&["label", "deep", "legacy", "-n", NS, "touched=yes"]);
    let legacy = Resource::custom().item("legacy");
    let (code, status) = c.call("PATCH", &legacy, Some(&json!({"spec": {"b": nested(MAX_DEPTH + 40)}}))).await;
    assert_too_deep("deepening the legacy object", code, &status);

    // The namespace goes with everything in it: the deepest objects accepted and the legacy one.
    server.kubectl_ok(&["delete", "namespace", NS, "--wait=false"]);
    let gone = poll(Duration::from_secs(60), || !server.kubectl(&["get", "namespace", NS]).status.success());
    assert!(gone, "namespace {NS} was not deleted: {}", server.kubectl_ok(&["get", "namespace", NS, "-o", "yaml"]));
    assert!(!server.logs().contains("corrupt stored object"), "a stored object could not be decoded");
}
