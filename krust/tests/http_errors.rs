//! Error responses of the API, checked at the HTTP level with `curl` (as the admin user,
//! with the client certificate from the admin kubeconfig, or anonymously): the exact status
//! code, and the `Status` body's `reason`, `code` and details as upstream sends them. After
//! every refused request the store must be unchanged.

mod common;

use std::time::{Duration, Instant};

use common::TestServer;
use serde_json::{json, Value};

const CM_URL: &str = "/api/v1/namespaces/t/configmaps";
const KEEP_URL: &str = "/api/v1/namespaces/t/configmaps/keep";
const JSON: &str = "Content-Type: application/json";

/// A server with namespace `t` holding ConfigMap `keep` (`data.v = "1"`).
fn server_with_keep(extra_args: &[&str]) -> TestServer {
    let server = if extra_args.is_empty() {
        TestServer::start()
    } else {
        TestServer::start_with(extra_args)
    };
    let (code, body) = server.curl_admin(
        "POST",
        "/api/v1/namespaces",
        &[JSON],
        Some(
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "t"}})
                .to_string()
                .as_bytes(),
        ),
    );
    assert_eq!(code, 201, "{body}");
    let (code, body) = server.curl_admin(
        "POST",
        CM_URL,
        &[JSON],
        Some(configmap("keep", "1").to_string().as_bytes()),
    );
    assert_eq!(code, 201, "{body}");
    server
}

fn configmap(name: &str, v: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"v": v}})
}

fn parse(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// Asserts an error response: HTTP code, and a Failure `Status` with that code and reason.
/// Returns the Status.
fn assert_status(got: (u16, String), code: u16, reason: &str) -> Value {
    let (http, body) = got;
    assert_eq!(http, code, "HTTP status; body: {body}");
    let status = parse(&body);
    assert_eq!(status["kind"], "Status", "{body}");
    assert_eq!(status["apiVersion"], "v1", "{body}");
    assert_eq!(status["status"], "Failure", "{body}");
    assert_eq!(status["code"], code, "{body}");
    assert_eq!(status["reason"], reason, "{body}");
    assert!(
        status["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    status
}

fn get(server: &TestServer, path: &str) -> Value {
    let (code, body) = server.curl_admin("GET", path, &[], None);
    assert_eq!(code, 200, "GET {path}: {body}");
    parse(&body)
}

/// The names in a list.
/// Names of the listed objects, leaving out what the controller-manager publishes in every
/// namespace (`kube-root-ca.crt`).
fn list_names(server: &TestServer, path: &str) -> Vec<String> {
    get(server, path)["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .filter(|n| n != "kube-root-ca.crt")
        .collect()
}

/// `keep` as stored now: refused requests must leave it exactly so.
fn keep(server: &TestServer) -> Value {
    get(server, KEEP_URL)
}

#[test]
fn malformed_json_body_is_400() {
    let server = server_with_keep(&[]);
    let before = keep(&server);
    let status = assert_status(
        server.curl_admin(
            "POST",
            CM_URL,
            &[JSON],
            Some(b"{\"apiVersion\": \"v1\", bad"),
        ),
        400,
        "BadRequest",
    );
    assert!(
        status.get("details").is_none() || status["details"].get("causes").is_none(),
        "{status}"
    );
    assert_status(
        server.curl_admin("PUT", KEEP_URL, &[JSON], Some(b"{not json")),
        400,
        "BadRequest",
    );
    assert_status(
        server.curl_admin(
            "PATCH",
            KEEP_URL,
            &["Content-Type: application/merge-patch+json"],
            Some(b"{nope"),
        ),
        400,
        "BadRequest",
    );
    // A body of the wrong kind is a 400 too.
    let wrong = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}});
    let status = assert_status(
        server.curl_admin("POST", CM_URL, &[JSON], Some(wrong.to_string().as_bytes())),
        400,
        "BadRequest",
    );
    assert!(
        status["message"].as_str().unwrap().contains("Secret"),
        "{status}"
    );
    assert_eq!(keep(&server), before);
    assert_eq!(list_names(&server, CM_URL), ["keep"]);
}

#[test]
fn namespace_in_body_must_match_url_400() {
    let server = server_with_keep(&[]);
    let before = keep(&server);
    let mut other = configmap("x", "1");
    other["metadata"]["namespace"] = json!("default");
    let status = assert_status(
        server.curl_admin("POST", CM_URL, &[JSON], Some(other.to_string().as_bytes())),
        400,
        "BadRequest",
    );
    assert_eq!(
        status["message"],
        "the namespace of the provided object does not match the namespace sent on the request",
        "{status}"
    );
    let mut moved = before.clone();
    moved["metadata"]["namespace"] = json!("default");
    moved["data"]["v"] = json!("2");
    assert_status(
        server.curl_admin("PUT", KEEP_URL, &[JSON], Some(moved.to_string().as_bytes())),
        400,
        "BadRequest",
    );
    // A name differing from the URL's is refused the same way.
    let mut renamed = before.clone();
    renamed["metadata"]["name"] = json!("other");
    let status = assert_status(
        server.curl_admin(
            "PUT",
            KEEP_URL,
            &[JSON],
            Some(renamed.to_string().as_bytes()),
        ),
        400,
        "BadRequest",
    );
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("does not match the name on the URL"),
        "{status}"
    );

    assert_eq!(keep(&server), before);
    assert_eq!(list_names(&server, CM_URL), ["keep"]);
    assert!(list_names(&server, "/api/v1/namespaces/default/configmaps").is_empty());
}

#[test]
fn no_client_certificate_is_401() {
    let server = server_with_keep(&[]);
    let before = keep(&server);
    for path in ["/api", "/apis", "/api/v1/namespaces", KEEP_URL, CM_URL] {
        assert_status(server.curl_anonymous(path), 401, "Unauthorized");
    }
    assert_eq!(keep(&server), before);
}

#[test]
fn missing_object_and_missing_namespace_are_404() {
    let server = server_with_keep(&[]);
    let status = assert_status(
        server.curl_admin("GET", "/api/v1/namespaces/t/configmaps/nope", &[], None),
        404,
        "NotFound",
    );
    assert_eq!(status["message"], "configmaps \"nope\" not found");
    assert_eq!(
        status["details"],
        json!({"name": "nope", "kind": "configmaps"})
    );
    let status = assert_status(
        server.curl_admin(
            "GET",
            "/apis/apps/v1/namespaces/t/deployments/nope",
            &[],
            None,
        ),
        404,
        "NotFound",
    );
    assert_eq!(
        status["details"],
        json!({"name": "nope", "group": "apps", "kind": "deployments"})
    );
    assert_status(
        server.curl_admin("DELETE", "/api/v1/namespaces/t/configmaps/nope", &[], None),
        404,
        "NotFound",
    );
    assert_status(
        server.curl_admin(
            "PATCH",
            "/api/v1/namespaces/t/configmaps/nope",
            &["Content-Type: application/merge-patch+json"],
            Some(b"{}"),
        ),
        404,
        "NotFound",
    );
    // An unknown resource.
    assert_status(
        server.curl_admin("GET", "/api/v1/namespaces/t/widgets", &[], None),
        404,
        "NotFound",
    );

    // Creating in a namespace that does not exist: the namespace is what is not found.
    let status = assert_status(
        server.curl_admin(
            "POST",
            "/api/v1/namespaces/missing/configmaps",
            &[JSON],
            Some(configmap("x", "1").to_string().as_bytes()),
        ),
        404,
        "NotFound",
    );
    assert_eq!(status["message"], "namespaces \"missing\" not found");
    assert_eq!(
        status["details"],
        json!({"name": "missing", "kind": "namespaces"})
    );
    assert_status(
        server.curl_admin("GET", "/api/v1/namespaces/missing", &[], None),
        404,
        "NotFound",
    );
    assert!(list_names(&server, "/api/v1/configmaps")
        .iter()
        .all(|n| n == "keep"));
}

#[test]
fn post_to_an_object_url_is_405() {
    let server = server_with_keep(&[]);
    let before = keep(&server);
    assert_status(
        server.curl_admin(
            "POST",
            KEEP_URL,
            &[JSON],
            Some(configmap("keep", "2").to_string().as_bytes()),
        ),
        405,
        "MethodNotAllowed",
    );
    assert_eq!(keep(&server), before);
    assert_eq!(list_names(&server, CM_URL), ["keep"]);
}

#[test]
fn unacceptable_media_type_is_406() {
    let server = server_with_keep(&[]);
    let before = keep(&server);
    let status = assert_status(
        server.curl_admin("GET", KEEP_URL, &["Accept: application/xml"], None),
        406,
        "NotAcceptable",
    );
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("application/json"),
        "{status}"
    );
    assert_status(
        server.curl_admin("GET", CM_URL, &["Accept: text/html"], None),
        406,
        "NotAcceptable",
    );

    // Protobuf alone: upstream serves it. krust either serves it too (the protobuf envelope
    // starts with the magic "k8s\0") or refuses with a proper 406.
    let (code, body) = server.curl_admin(
        "GET",
        KEEP_URL,
        &["Accept: application/vnd.kubernetes.protobuf"],
        None,
    );
    match code {
        406 => {
            assert_status((code, body), 406, "NotAcceptable");
        }
        200 => assert!(
            body.starts_with("k8s"),
            "a 200 for protobuf must be protobuf: {body:?}"
        ),
        other => panic!("Accept: protobuf answered {other}: {body}"),
    }
    // With JSON as a fallback, JSON is served.
    let (code, body) = server.curl_admin(
        "GET",
        KEEP_URL,
        &["Accept: application/xml, application/json"],
        None,
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(parse(&body)["metadata"]["name"], "keep");
    assert_eq!(keep(&server), before);
}

#[test]
fn unsupported_content_type_is_415() {
    let server = server_with_keep(&[]);
    let before = keep(&server);
    let mut changed = before.clone();
    changed["data"]["v"] = json!("2");
    assert_status(
        server.curl_admin(
            "PUT",
            KEEP_URL,
            &["Content-Type: text/plain"],
            Some(changed.to_string().as_bytes()),
        ),
        415,
        "UnsupportedMediaType",
    );
    assert_status(
        server.curl_admin(
            "POST",
            CM_URL,
            &["Content-Type: text/plain"],
            Some(configmap("x", "1").to_string().as_bytes()),
        ),
        415,
        "UnsupportedMediaType",
    );
    // A PATCH with a content type that is no patch type.
    assert_status(
        server.curl_admin(
            "PATCH",
            KEEP_URL,
            &["Content-Type: text/plain"],
            Some(br#"{"data":{"v":"3"}}"#),
        ),
        415,
        "UnsupportedMediaType",
    );
    assert_eq!(keep(&server), before);
    assert_eq!(list_names(&server, CM_URL), ["keep"]);
}

#[test]
fn create_of_existing_object_is_409_already_exists() {
    let server = server_with_keep(&[]);
    let before = keep(&server);
    let status = assert_status(
        server.curl_admin(
            "POST",
            CM_URL,
            &[JSON],
            Some(configmap("keep", "2").to_string().as_bytes()),
        ),
        409,
        "AlreadyExists",
    );
    assert_eq!(status["message"], "configmaps \"keep\" already exists");
    assert_eq!(
        status["details"],
        json!({"name": "keep", "kind": "configmaps"})
    );
    // A dry run checks existence too.
    assert_status(
        server.curl_admin(
            "POST",
            &format!("{CM_URL}?dryRun=All"),
            &[JSON],
            Some(configmap("keep", "2").to_string().as_bytes()),
        ),
        409,
        "AlreadyExists",
    );
    assert_eq!(keep(&server), before);
}

#[test]
fn stale_resource_version_is_409_conflict() {
    let server = server_with_keep(&[]);
    let stale = keep(&server);
    let (code, body) = server.curl_admin(
        "PATCH",
        KEEP_URL,
        &["Content-Type: application/merge-patch+json"],
        Some(br#"{"data":{"v":"2"}}"#),
    );
    assert_eq!(code, 200, "{body}");
    let current = keep(&server);

    let mut update = stale.clone();
    update["data"]["v"] = json!("3");
    let status = assert_status(
        server.curl_admin(
            "PUT",
            KEEP_URL,
            &[JSON],
            Some(update.to_string().as_bytes()),
        ),
        409,
        "Conflict",
    );
    assert_eq!(
        status["message"],
        "Operation cannot be fulfilled on configmaps \"keep\": the object has been modified; please apply your changes to the latest version and try again"
    );
    assert_eq!(
        status["details"],
        json!({"name": "keep", "kind": "configmaps"})
    );
    // A patch naming the stale resourceVersion is a conflict as well.
    let patch = json!({"metadata": {"resourceVersion": stale["metadata"]["resourceVersion"]}, "data": {"v": "4"}});
    assert_status(
        server.curl_admin(
            "PATCH",
            KEEP_URL,
            &["Content-Type: application/merge-patch+json"],
            Some(patch.to_string().as_bytes()),
        ),
        409,
        "Conflict",
    );
    // A delete precondition on the stale resourceVersion, too.
    let opts = json!({"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"resourceVersion": stale["metadata"]["resourceVersion"]}});
    assert_status(
        server.curl_admin(
            "DELETE",
            KEEP_URL,
            &[JSON],
            Some(opts.to_string().as_bytes()),
        ),
        409,
        "Conflict",
    );
    assert_eq!(keep(&server), current);
}

#[test]
fn compacted_continue_token_and_watch_are_410() {
    // Compaction every second, keeping one revision of history; the watch cache keeps only
    // the last two events, so watches from older revisions are expired too.
    let server = server_with_keep(&[
        "--datastore-compact-interval",
        "1",
        "--datastore-compact-retain",
        "1",
        "--default-watch-cache-size",
        "2",
    ]);
    for i in 0..4 {
        let (code, body) = server.curl_admin(
            "POST",
            CM_URL,
            &[JSON],
            Some(configmap(&format!("c{i}"), "1").to_string().as_bytes()),
        );
        assert_eq!(code, 201, "{body}");
    }
    let first = get(&server, &format!("{CM_URL}?limit=2"));
    let token = first["metadata"]["continue"]
        .as_str()
        .expect("a continue token")
        .to_string();
    let old_rv = first["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    // History moves on after the list's revision.
    for i in 0..4 {
        let (code, body) = server.curl_admin(
            "PATCH",
            &format!("{CM_URL}/c{i}"),
            &["Content-Type: application/merge-patch+json"],
            Some(br#"{"data":{"v":"2"}}"#),
        );
        assert_eq!(code, 200, "{body}");
    }

    // Until the compactor runs, the token still works; after, it is expired.
    let continue_url = format!("{CM_URL}?limit=2&continue={token}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut got = server.curl_admin("GET", &continue_url, &[], None);
    while got.0 == 200 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        got = server.curl_admin("GET", &continue_url, &[], None);
    }
    let status = assert_status(got, 410, "Expired");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("The provided continue parameter is too old"),
        "{status}"
    );

    // A watch from a revision older than the watch cache's window: one ERROR event carrying
    // a 410 Status.
    let (code, body) = server.curl_admin(
        "GET",
        &format!("{CM_URL}?watch=1&resourceVersion={old_rv}&timeoutSeconds=5"),
        &[],
        None,
    );
    assert_eq!(code, 200, "{body}");
    let events: Vec<Value> = body
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(parse)
        .collect();
    assert_eq!(events.len(), 1, "{body}");
    assert_eq!(events[0]["type"], "ERROR", "{body}");
    let status = &events[0]["object"];
    assert_eq!(status["kind"], "Status", "{body}");
    assert_eq!(status["code"], 410, "{body}");
    assert_eq!(status["reason"], "Expired", "{body}");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .starts_with(&format!("too old resource version: {old_rv} (")),
        "{body}"
    );

    // A plain list at that exact old revision is expired too; the current state is intact.
    let (code, body) = server.curl_admin(
        "GET",
        &format!("{CM_URL}?resourceVersion={old_rv}&resourceVersionMatch=Exact"),
        &[],
        None,
    );
    assert_status((code, body), 410, "Expired");
    let mut names = list_names(&server, CM_URL);
    names.sort();
    assert_eq!(names, ["c0", "c1", "c2", "c3", "keep"]);
    assert_eq!(get(&server, &format!("{CM_URL}/c3"))["data"]["v"], "2");
}

#[test]
fn body_over_3_mib_is_413() {
    let server = server_with_keep(&[]);
    let before = keep(&server);
    let big = configmap("big", &"a".repeat(3 * 1024 * 1024 + 1)).to_string();
    let status = assert_status(
        server.curl_admin("POST", CM_URL, &[JSON], Some(big.as_bytes())),
        413,
        "RequestEntityTooLarge",
    );
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("limit is 3145728"),
        "{status}"
    );
    let mut huge = before.clone();
    huge["data"]["v"] = json!("b".repeat(3 * 1024 * 1024 + 1));
    assert_status(
        server.curl_admin("PUT", KEEP_URL, &[JSON], Some(huge.to_string().as_bytes())),
        413,
        "RequestEntityTooLarge",
    );
    assert_eq!(keep(&server), before);
    assert_eq!(list_names(&server, CM_URL), ["keep"]);
    // Just under the limit is fine, as far as the body size goes (ConfigMaps hold 1 MiB).
    let (code, body) = server.curl_admin(
        "POST",
        CM_URL,
        &[JSON],
        Some(
            configmap("small", &"a".repeat(512 * 1024))
                .to_string()
                .as_bytes(),
        ),
    );
    assert_eq!(code, 201, "{body}");
}

#[test]
fn invalid_name_is_422_with_field_cause() {
    let server = server_with_keep(&[]);
    let status = assert_status(
        server.curl_admin(
            "POST",
            CM_URL,
            &[JSON],
            Some(configmap("Bad_Name", "1").to_string().as_bytes()),
        ),
        422,
        "Invalid",
    );
    assert_eq!(status["details"]["name"], "Bad_Name");
    assert_eq!(status["details"]["kind"], "ConfigMap");
    let cause = &status["details"]["causes"][0];
    assert_eq!(cause["field"], "metadata.name", "{status}");
    assert_eq!(cause["reason"], "FieldValueInvalid", "{status}");
    assert!(
        cause["message"]
            .as_str()
            .unwrap()
            .starts_with("Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain"),
        "{status}"
    );
    assert!(
        status["message"].as_str().unwrap().starts_with(
            "ConfigMap \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\""
        ),
        "{status}"
    );
    // Through kubectl the same error reads as upstream's.
    let out = server.kubectl_stdin(
        &["create", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: Bad_Name\n  namespace: t\n",
    );
    assert!(!out.status.success());
    let err = common::text(&out.stderr);
    assert!(
        err.contains(
            "The ConfigMap \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\""
        ),
        "{err}"
    );
    assert_eq!(list_names(&server, CM_URL), ["keep"]);

    // An invalid label on update leaves the object as it was.
    let before = keep(&server);
    let mut bad = before.clone();
    bad["metadata"]["labels"] = json!({"ok": "not valid!"});
    let status = assert_status(
        server.curl_admin("PUT", KEEP_URL, &[JSON], Some(bad.to_string().as_bytes())),
        422,
        "Invalid",
    );
    assert_eq!(
        status["details"]["causes"][0]["field"], "metadata.labels",
        "{status}"
    );
    assert_eq!(keep(&server), before);
}

#[test]
fn pod_without_containers_is_422() {
    let server = server_with_keep(&[]);
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "empty"}, "spec": {"containers": []}});
    let status = assert_status(
        server.curl_admin(
            "POST",
            "/api/v1/namespaces/t/pods",
            &[JSON],
            Some(pod.to_string().as_bytes()),
        ),
        422,
        "Invalid",
    );
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("spec.containers: Required value"),
        "{status}"
    );
    let causes = status["details"]["causes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        causes
            .iter()
            .any(|c| c["field"] == "spec.containers" && c["reason"] == "FieldValueRequired"),
        "{status}"
    );
    assert!(list_names(&server, "/api/v1/namespaces/t/pods").is_empty());
}
