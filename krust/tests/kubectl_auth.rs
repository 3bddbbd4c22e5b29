//! `kubectl auth whoami`, `kubectl auth can-i`, TokenReview and `kubectl get apiservices`
//! against a real `krust server`: the review kinds and the local APIServices as a person
//! meets them.

mod common;

use common::TestServer;

#[test]
fn auth_whoami_and_can_i() {
    let server = TestServer::start();
    let out = server.kubectl_ok(&["auth", "whoami"]);
    assert!(out.contains("Username") && out.contains("system:admin"), "{out}");
    assert!(out.contains("system:masters") && out.contains("system:authenticated"), "{out}");
    let out = server.kubectl_ok(&["auth", "whoami", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["kind"], "SelfSubjectReview", "{v}");

    assert_eq!(server.kubectl_ok(&["auth", "can-i", "create", "pods"]).trim(), "yes");
    assert_eq!(server.kubectl_ok(&["auth", "can-i", "delete", "nodes", "--all-namespaces"]).trim(), "yes");
    assert_eq!(server.kubectl_ok(&["auth", "can-i", "get", "/healthz"]).trim(), "yes");
    let out = server.kubectl_ok(&["auth", "can-i", "--list", "-n", "default"]);
    assert!(out.contains("*.*") && out.contains("[*]"), "{out}");
}

/// A token from `kubectl create token` passes a TokenReview as its service account; with
/// another audience, or altered, it does not.
#[test]
fn token_review_authenticates_service_account_tokens() {
    let server = TestServer::start();
    server.kubectl_ok(&["create", "serviceaccount", "builder"]);
    let token = server.kubectl_ok(&["create", "token", "builder"]).trim().to_string();
    let review = |token: &str, audiences: &str| {
        let manifest = format!("apiVersion: authentication.k8s.io/v1\nkind: TokenReview\nspec: {{token: \"{token}\", audiences: [{audiences}]}}\n");
        let out = server.kubectl_stdin_ok(&["create", "-o", "json", "-f", "-"], &manifest);
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["status"].clone()
    };
    let ok = review(&token, "");
    assert_eq!(ok["authenticated"], true, "{ok}");
    assert_eq!(ok["user"]["username"], "system:serviceaccount:default:builder");
    let uid = server.kubectl_ok(&["get", "serviceaccount", "builder", "-o", "jsonpath={.metadata.uid}"]);
    assert_eq!(ok["user"]["uid"], uid.trim());
    assert!(ok["user"]["groups"].as_array().unwrap().iter().any(|g| g == "system:serviceaccounts:default"), "{ok}");
    assert_eq!(review(&token, "vault")["authenticated"], false);
    // (a character inside the signature: the last one also carries padding bits)
    let mut forged = token.clone().into_bytes();
    let i = forged.len() - 10;
    forged[i] = if forged[i] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    assert_eq!(review(&forged, "")["authenticated"], false);
}

#[test]
fn get_apiservices_lists_the_local_ones() {
    let server = TestServer::start();
    let out = server.kubectl_ok(&["get", "apiservices"]);
    let row = |name: &str| {
        out.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no {name} in:\n{out}"))
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
    };
    for name in ["v1.", "v1.apps", "v2.autoscaling", "v1.authorization.k8s.io"] {
        let r = row(name);
        assert_eq!(r[1], "Local", "{out}");
        // status comes from the sync loop right after start
        assert!(r[2] == "True" || r[2] == "Unknown", "{out}");
    }
}
