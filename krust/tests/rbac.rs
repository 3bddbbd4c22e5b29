//! Authorization as a person meets it, through stock kubectl and curl against a real
//! `krust server`: service account tokens and client certificates without grants are
//! refused with upstream's messages, RBAC grants and revokes, nobody escalates, impersonation
//! is authorized, access reviews tell the truth, tokens die with their service account or
//! pod, and a node identity reaches only what its pods use.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use common::{poll, text, TestServer};

/// A kubectl that authenticates with `auth` (`--token=...` or `--client-certificate=...`
/// `--client-key=...`) instead of the admin kubeconfig.
fn kubectl_as(server: &TestServer, auth: &[String], args: &[&str]) -> Output {
    Command::new(common::kubectl_bin())
        .args(["--kubeconfig", "/dev/null", "--server", &server.url(), "--request-timeout", "20s"])
        .arg(format!("--certificate-authority={}", server.server_ca().display()))
        .args(auth)
        .args(args)
        .output()
        .expect("running kubectl")
}

fn token_auth(token: &str) -> Vec<String> {
    vec![format!("--token={token}")]
}

fn stderr_of(out: &Output) -> String {
    text(&out.stderr)
}

/// A client certificate signed by the server's client CA (as an administrator would make
/// one with openssl), for `cn` in groups `orgs`.
fn client_cert(server: &TestServer, cn: &str, orgs: &[&str]) -> Vec<String> {
    let tls = server.data_dir().join("server/tls");
    let dir = server.data_dir().join(format!("certs-{}", cn.replace(':', "_")));
    std::fs::create_dir_all(&dir).unwrap();
    let (key, csr, crt) = (dir.join("c.key"), dir.join("c.csr"), dir.join("c.crt"));
    let subject: String = std::iter::once(format!("/CN={cn}")).chain(orgs.iter().map(|o| format!("/O={o}"))).collect();
    let run = |args: &[&str]| {
        let out = Command::new("openssl").args(args).output().expect("running openssl");
        assert!(out.status.success(), "openssl {args:?}: {}", text(&out.stderr));
    };
    let p = |p: &PathBuf| p.display().to_string();
    run(&["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", &p(&key)]);
    run(&["req", "-new", "-key", &p(&key), "-subj", &subject, "-out", &p(&csr)]);
    let ext = dir.join("ext.cnf");
    std::fs::write(&ext, "extendedKeyUsage=clientAuth\n").unwrap();
    run(&["x509", "-req", "-in", &p(&csr), "-CA", &p(&tls.join("client-ca.crt")), "-CAkey", &p(&tls.join("client-ca.key")), "-CAcreateserial", "-days", "1", "-extfile", &p(&ext), "-out", &p(&crt)]);
    vec![format!("--client-certificate={}", crt.display()), format!("--client-key={}", key.display())]
}

fn token_for(server: &TestServer, ns: &str, sa: &str, extra: &[&str]) -> String {
    let mut args = vec!["create", "token", sa, "-n", ns];
    args.extend_from_slice(extra);
    server.kubectl_ok(&args).trim().to_string()
}

fn can_i(server: &TestServer, args: &[&str]) -> String {
    let mut a = vec!["auth", "can-i"];
    a.extend_from_slice(args);
    text(&server.kubectl(&a).stdout).trim().to_string()
}

#[test]
fn a_token_without_grants_is_refused_until_bound_and_again_after_unbinding() {
    let server = TestServer::start();
    server.kubectl_ok(&["create", "namespace", "x"]);
    server.kubectl_ok(&["create", "serviceaccount", "bob", "-n", "x"]);
    let bob = token_auth(&token_for(&server, "x", "bob", &[]));

    let out = kubectl_as(&server, &bob, &["get", "secrets", "-n", "kube-system"]);
    assert!(!out.status.success());
    assert!(
        stderr_of(&out).contains(r#"Error from server (Forbidden): secrets is forbidden: User "system:serviceaccount:x:bob" cannot list resource "secrets" in API group "" in the namespace "kube-system""#),
        "{}",
        stderr_of(&out)
    );
    let out = kubectl_as(&server, &bob, &["delete", "namespace", "x"]);
    assert!(stderr_of(&out).contains(r#"namespaces "x" is forbidden: User "system:serviceaccount:x:bob" cannot delete resource "namespaces" in API group "" in the namespace "x""#), "{}", stderr_of(&out));
    let out = kubectl_as(&server, &bob, &["create", "clusterrolebinding", "me", "--clusterrole=cluster-admin", "--serviceaccount=x:bob"]);
    assert!(stderr_of(&out).contains("cannot create resource \"clusterrolebindings\" in API group \"rbac.authorization.k8s.io\" at the cluster scope"), "{}", stderr_of(&out));
    // Discovery, version and self-reviews are everyone's (system:discovery, system:basic-user).
    assert!(kubectl_as(&server, &bob, &["api-resources", "--api-group=apps"]).status.success());
    let who = text(&kubectl_as(&server, &bob, &["auth", "whoami"]).stdout);
    assert!(who.contains("system:serviceaccount:x:bob") && who.contains("system:serviceaccounts:x"), "{who}");

    // A RoleBinding to `view` grants reading pods in x, not secrets, not elsewhere.
    server.kubectl_ok(&["create", "rolebinding", "bob-view", "-n", "x", "--clusterrole=view", "--serviceaccount=x:bob"]);
    assert!(poll(Duration::from_secs(5), || kubectl_as(&server, &bob, &["get", "pods", "-n", "x"]).status.success()));
    assert!(!kubectl_as(&server, &bob, &["get", "secrets", "-n", "x"]).status.success());
    assert!(!kubectl_as(&server, &bob, &["get", "pods", "-n", "default"]).status.success());
    assert_eq!(text(&kubectl_as(&server, &bob, &["auth", "can-i", "list", "pods", "-n", "x"]).stdout).trim(), "yes");
    assert_eq!(text(&kubectl_as(&server, &bob, &["auth", "can-i", "create", "pods", "-n", "x"]).stdout).trim(), "no");
    let list = text(&kubectl_as(&server, &bob, &["auth", "can-i", "--list", "-n", "x"]).stdout);
    assert!(list.lines().any(|l| l.starts_with("pods ") && l.contains("[get list watch]")), "{list}");
    assert!(!list.contains("secrets"), "{list}");

    // Unbinding revokes at once (the decision memo follows the policy).
    server.kubectl_ok(&["delete", "rolebinding", "bob-view", "-n", "x"]);
    assert!(poll(Duration::from_secs(5), || !kubectl_as(&server, &bob, &["get", "pods", "-n", "x"]).status.success()));
}

#[test]
fn certificates_are_users_and_groups() {
    let server = TestServer::start();
    let bob = client_cert(&server, "bob", &[]);
    let out = kubectl_as(&server, &bob, &["get", "namespaces"]);
    assert!(stderr_of(&out).contains(r#"namespaces is forbidden: User "bob" cannot list resource "namespaces" in API group "" at the cluster scope"#), "{}", stderr_of(&out));
    // A group bound to a role grants its members.
    let dev = client_cert(&server, "carol", &["devs"]);
    server.kubectl_ok(&["create", "clusterrolebinding", "devs-view", "--clusterrole=view", "--group=devs"]);
    assert!(poll(Duration::from_secs(5), || kubectl_as(&server, &dev, &["get", "pods", "-A"]).status.success()));
    assert!(!kubectl_as(&server, &bob, &["get", "pods", "-A"]).status.success());
    // system:masters in a certificate is cluster-admin, as upstream.
    let root = client_cert(&server, "root", &["system:masters"]);
    assert!(kubectl_as(&server, &root, &["get", "secrets", "-A"]).status.success());
}

#[test]
fn nobody_grants_what_they_do_not_hold() {
    let server = TestServer::start();
    server.kubectl_ok(&["create", "namespace", "x"]);
    server.kubectl_ok(&["create", "serviceaccount", "lead", "-n", "x"]);
    server.kubectl_ok(&["create", "rolebinding", "lead-admin", "-n", "x", "--clusterrole=admin", "--serviceaccount=x:lead"]);
    let lead = token_auth(&token_for(&server, "x", "lead", &[]));
    assert!(poll(Duration::from_secs(10), || kubectl_as(&server, &lead, &["get", "roles", "-n", "x"]).status.success()));
    // What admin holds in x may be granted in x...
    let out = kubectl_as(&server, &lead, &["create", "rolebinding", "helper-edit", "-n", "x", "--clusterrole=edit", "--user=helper"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let out = kubectl_as(&server, &lead, &["create", "role", "reader", "-n", "x", "--verb=get", "--resource=pods"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    // ...but not cluster-admin, nor rules it lacks (nodes), with upstream's message.
    let out = kubectl_as(&server, &lead, &["create", "rolebinding", "me-root", "-n", "x", "--clusterrole=cluster-admin", "--serviceaccount=x:lead"]);
    let err = stderr_of(&out);
    assert!(err.contains(r#"rolebindings.rbac.authorization.k8s.io "me-root" is forbidden: user "system:serviceaccount:x:lead" (groups=["system:serviceaccounts" "system:serviceaccounts:x" "system:authenticated"]) is attempting to grant RBAC permissions not currently held:"#), "{err}");
    assert!(err.contains(r#"{APIGroups:["*"], Resources:["*"], Verbs:["*"]}"#), "{err}");
    let out = kubectl_as(&server, &lead, &["create", "role", "nodes", "-n", "x", "--verb=get", "--resource=nodes"]);
    assert!(stderr_of(&out).contains(r#"{APIGroups:[""], Resources:["nodes"], Verbs:["get"]}"#), "{}", stderr_of(&out));
    // Editing a role to add rules is checked too.
    let out = kubectl_as(&server, &lead, &["patch", "role", "reader", "-n", "x", "--type=json", "-p", r#"[{"op":"add","path":"/rules/-","value":{"apiGroups":[""],"resources":["nodes"],"verbs":["list"]}}]"#]);
    assert!(stderr_of(&out).contains("attempting to grant RBAC permissions not currently held"), "{}", stderr_of(&out));

    // `bind` on cluster-admin allows binding it; `escalate` on roles allows writing any rule.
    server.kubectl_ok(&["create", "role", "binder", "-n", "x", "--verb=bind", "--resource=clusterroles.rbac.authorization.k8s.io", "--resource-name=cluster-admin"]);
    server.kubectl_ok(&["create", "role", "escalator", "-n", "x", "--verb=escalate", "--resource=roles.rbac.authorization.k8s.io"]);
    server.kubectl_ok(&["create", "rolebinding", "lead-binder", "-n", "x", "--role=binder", "--serviceaccount=x:lead"]);
    server.kubectl_ok(&["create", "rolebinding", "lead-escalator", "-n", "x", "--role=escalator", "--serviceaccount=x:lead"]);
    assert!(poll(Duration::from_secs(5), || kubectl_as(&server, &lead, &["create", "rolebinding", "ns-root", "-n", "x", "--clusterrole=cluster-admin", "--user=helper"]).status.success()));
    let out = kubectl_as(&server, &lead, &["create", "role", "nodes", "-n", "x", "--verb=get", "--resource=nodes"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
}

#[test]
fn impersonation_is_authorized_and_reviews_tell_the_truth() {
    let server = TestServer::start();
    server.kubectl_ok(&["create", "namespace", "x"]);
    server.kubectl_ok(&["create", "rolebinding", "bob-edit", "-n", "x", "--clusterrole=edit", "--user=bob"]);
    assert!(poll(Duration::from_secs(5), || can_i(&server, &["create", "deployments", "-n", "x", "--as=bob"]) == "yes"));
    assert_eq!(can_i(&server, &["create", "deployments", "-n", "default", "--as=bob"]), "no");
    assert_eq!(can_i(&server, &["get", "secrets", "-n", "x", "--as=bob"]), "yes");
    assert_eq!(can_i(&server, &["get", "/healthz", "--as=bob"]), "yes");
    assert_eq!(can_i(&server, &["get", "/metrics", "--as=bob"]), "no");
    assert_eq!(can_i(&server, &["list", "pods", "--as=bob", "--as-group=system:masters"]), "yes");
    let who = server.kubectl_ok(&["auth", "whoami", "--as=bob", "--as-group=devs", "-o", "json"]);
    let who: serde_json::Value = serde_json::from_str(&who).unwrap();
    assert_eq!(who["status"]["userInfo"]["username"], "bob");
    assert_eq!(who["status"]["userInfo"]["groups"], serde_json::json!(["devs", "system:authenticated"]));
    // Acting as bob through --as lists what bob may.
    assert!(server.kubectl(&["get", "pods", "-n", "x", "--as=bob"]).status.success());
    let out = server.kubectl(&["get", "pods", "-n", "default", "--as=bob"]);
    assert!(stderr_of(&out).contains(r#"User "bob" cannot list resource "pods" in API group "" in the namespace "default""#), "{}", stderr_of(&out));

    // Without `impersonate`, --as is refused; with it (on users named bob) it works.
    let alice = client_cert(&server, "alice", &[]);
    // (--raw: a refused discovery leaves kubectl's resource mapping without the message)
    let pods = "/api/v1/namespaces/x/pods";
    let out = kubectl_as(&server, &alice, &["get", "--raw", pods, "--as=bob"]);
    assert!(stderr_of(&out).contains(r#"users "bob" is forbidden: User "alice" cannot impersonate resource "users" in API group "" at the cluster scope"#), "{}", stderr_of(&out));
    server.kubectl_ok(&["create", "clusterrole", "impersonate-bob", "--verb=impersonate", "--resource=users", "--resource-name=bob"]);
    server.kubectl_ok(&["create", "clusterrolebinding", "alice-as-bob", "--clusterrole=impersonate-bob", "--user=alice"]);
    assert!(poll(Duration::from_secs(5), || kubectl_as(&server, &alice, &["get", "pods", "-n", "x", "--as=bob"]).status.success()));
    let out = kubectl_as(&server, &alice, &["get", "--raw", pods, "--as=carol"]);
    assert!(stderr_of(&out).contains(r#"users "carol" is forbidden"#), "{}", stderr_of(&out));
    let out = kubectl_as(&server, &alice, &["get", "--raw", pods, "--as=bob", "--as-group=system:masters"]);
    assert!(stderr_of(&out).contains(r#"groups "system:masters" is forbidden"#), "{}", stderr_of(&out));

    // A SubjectAccessReview names the granting binding.
    let sar = r#"{"apiVersion":"authorization.k8s.io/v1","kind":"SubjectAccessReview","spec":{"user":"bob","resourceAttributes":{"namespace":"x","verb":"delete","resource":"pods"}}}"#;
    let out: serde_json::Value = serde_json::from_str(&server.kubectl_stdin_ok(&["create", "-o", "json", "-f", "-"], sar)).unwrap();
    assert_eq!(out["status"]["allowed"], true, "{out}");
    assert_eq!(out["status"]["reason"], r#"RBAC: allowed by RoleBinding "bob-edit/x" of ClusterRole "edit" to User "bob""#);
    let denied = sar.replace("\"x\"", "\"default\"");
    let out: serde_json::Value = serde_json::from_str(&server.kubectl_stdin_ok(&["create", "-o", "json", "-f", "-"], &denied)).unwrap();
    assert_eq!(out["status"]["allowed"], false, "{out}");
}

#[test]
fn tokens_are_for_this_api_and_die_with_their_objects() {
    let server = TestServer::start();
    server.kubectl_ok(&["create", "serviceaccount", "robot"]);
    server.kubectl_ok(&["create", "rolebinding", "robot-view", "--clusterrole=view", "--serviceaccount=default:robot"]);
    let token = token_for(&server, "default", "robot", &[]);
    assert!(poll(Duration::from_secs(5), || kubectl_as(&server, &token_auth(&token), &["get", "pods"]).status.success()));
    // Another audience: 401, as upstream.
    let vault = token_for(&server, "default", "robot", &["--audience=vault"]);
    let out = kubectl_as(&server, &token_auth(&vault), &["get", "pods"]);
    assert!(stderr_of(&out).contains("Unauthorized"), "{}", stderr_of(&out));
    let ca = server.server_ca();
    let curl = |token: &str| {
        let out = Command::new("curl").args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"]).arg(&ca).args(["-H", &format!("Authorization: Bearer {token}")]).arg(format!("{}/api/v1/namespaces/default/pods", server.url())).output().unwrap();
        text(&out.stdout)
    };
    assert_eq!(curl(&token), "200");
    assert_eq!(curl(&vault), "401");
    assert_eq!(curl("not-a-token"), "401");

    // A token bound to a pod dies with the pod.
    server.kubectl_ok(&["run", "p", "--image=busybox", "--restart=Never", "--overrides", r#"{"spec":{"serviceAccountName":"robot","nodeName":"nowhere"}}"#]);
    let pod_token = token_for(&server, "default", "robot", &["--bound-object-kind=Pod", "--bound-object-name=p"]);
    assert_eq!(curl(&pod_token), "200");
    server.kubectl_ok(&["delete", "pod", "p", "--grace-period=0", "--force"]);
    assert!(poll(Duration::from_secs(5), || curl(&pod_token) == "401"));
    assert_eq!(curl(&token), "200");

    // Deleting the service account revokes its tokens, even once one of the same name exists.
    server.kubectl_ok(&["delete", "serviceaccount", "robot"]);
    assert!(poll(Duration::from_secs(5), || curl(&token) == "401"));
    server.kubectl_ok(&["create", "serviceaccount", "robot"]);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(curl(&token), "401");
    let review = format!(r#"{{"apiVersion":"authentication.k8s.io/v1","kind":"TokenReview","spec":{{"token":"{token}"}}}}"#);
    let out: serde_json::Value = serde_json::from_str(&server.kubectl_stdin_ok(&["create", "-o", "json", "-f", "-"], &review)).unwrap();
    assert_eq!(out["status"]["authenticated"], false, "{out}");
    assert!(out["status"]["error"].as_str().unwrap_or_default().contains("does not match claim"), "{out}");
}

#[test]
fn a_node_reaches_only_what_its_pods_use() {
    let server = TestServer::start();
    let n1 = client_cert(&server, "system:node:n1", &["system:nodes"]);
    for s in ["used", "unused"] {
        server.kubectl_ok(&["create", "secret", "generic", s, "--from-literal=k=v"]);
    }
    server.kubectl_ok(&["create", "configmap", "cm", "--from-literal=k=v"]);
    let pod = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"nodeName":"n1","containers":[{"name":"c","image":"busybox","envFrom":[{"configMapRef":{"name":"cm"}}]}],"volumes":[{"name":"s","secret":{"secretName":"used"}}]}}"#;
    server.kubectl_stdin_ok(&["create", "-f", "-"], pod);
    let get = |args: &[&str]| kubectl_as(&server, &n1, args);
    assert!(poll(Duration::from_secs(5), || get(&["get", "secret", "used"]).status.success()));
    assert!(get(&["get", "configmap", "cm"]).status.success());
    let out = get(&["get", "secret", "unused"]);
    assert!(stderr_of(&out).contains(r#"secrets "unused" is forbidden: User "system:node:n1" cannot get resource "secrets" in API group "" in the namespace "default": no relationship found between node 'n1' and this object"#), "{}", stderr_of(&out));
    assert!(!get(&["get", "secrets"]).status.success(), "a node may not list secrets");
    // Another node's view of the same objects.
    let n2 = client_cert(&server, "system:node:n2", &["system:nodes"]);
    assert!(!kubectl_as(&server, &n2, &["get", "secret", "used"]).status.success());
    assert!(!kubectl_as(&server, &n2, &["delete", "pod", "p"]).status.success());
    // Nodes read pods and nodes, may not delete others' Nodes.
    assert!(get(&["get", "pods", "-A"]).status.success());
    server.kubectl_stdin_ok(&["create", "-f", "-"], r#"{"apiVersion":"v1","kind":"Node","metadata":{"name":"n2"}}"#);
    let out = get(&["delete", "node", "n2"]);
    assert!(!out.status.success() && stderr_of(&out).contains("forbidden"), "{}", stderr_of(&out));
    // A PersistentVolume is reachable through the claim a pod of the node uses.
    let pv = |name: &str, claim: &str| format!(r#"{{"apiVersion":"v1","kind":"PersistentVolume","metadata":{{"name":"{name}"}},"spec":{{"capacity":{{"storage":"1Gi"}},"accessModes":["ReadWriteOnce"],"hostPath":{{"path":"/tmp/{name}"}},"claimRef":{{"namespace":"default","name":"{claim}"}}}}}}"#);
    server.kubectl_stdin_ok(&["create", "-f", "-"], &pv("pv-used", "data"));
    server.kubectl_stdin_ok(&["create", "-f", "-"], &pv("pv-other", "other"));
    let claimer = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"claimer"},"spec":{"nodeName":"n1","containers":[{"name":"c","image":"busybox"}],"volumes":[{"name":"d","persistentVolumeClaim":{"claimName":"data"}}]}}"#;
    server.kubectl_stdin_ok(&["create", "-f", "-"], claimer);
    assert!(poll(Duration::from_secs(5), || get(&["get", "pv", "pv-used"]).status.success()));
    let out = get(&["get", "pv", "pv-other"]);
    assert!(stderr_of(&out).contains("no relationship found between node 'n1' and this object"), "{}", stderr_of(&out));
    assert!(!kubectl_as(&server, &n2, &["get", "pv", "pv-used"]).status.success());

    // Once the pod is gone, so is the node's access to its secret.
    server.kubectl_ok(&["delete", "pod", "p", "--grace-period=0", "--force"]);
    assert!(poll(Duration::from_secs(5), || !get(&["get", "secret", "used"]).status.success()));
}

/// OIDC discovery of the service account issuer: for service accounts (RBAC's
/// system:service-account-issuer-discovery), naming the key that signs their tokens.
#[test]
fn service_account_issuer_discovery() {
    let server = TestServer::start();
    server.kubectl_ok(&["create", "serviceaccount", "oidc"]);
    let token = token_for(&server, "default", "oidc", &[]);
    let get = |path: &str, token: Option<&str>| {
        let mut cmd = Command::new("curl");
        cmd.args(["-s", "-w", "\n%{http_code}\n%{content_type}", "--cacert"]).arg(server.server_ca());
        if let Some(t) = token {
            cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
        }
        let out = text(&cmd.arg(format!("{}{path}", server.url())).output().unwrap().stdout);
        let mut parts = out.rsplitn(3, '\n');
        let (ctype, code, body) = (parts.next().unwrap().to_string(), parts.next().unwrap().to_string(), parts.next().unwrap_or_default().to_string());
        (code, ctype, body)
    };
    let (code, ctype, body) = get("/.well-known/openid-configuration", Some(&token));
    assert_eq!((code.as_str(), ctype.as_str()), ("200", "application/json"), "{body}");
    let conf: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(conf["issuer"], "https://kubernetes.default.svc.cluster.local");
    assert_eq!(conf["id_token_signing_alg_values_supported"], serde_json::json!(["ES256"]));
    assert!(conf["jwks_uri"].as_str().unwrap().ends_with("/openid/v1/jwks"), "{conf}");
    let (code, ctype, body) = get("/openid/v1/jwks", Some(&token));
    assert_eq!((code.as_str(), ctype.as_str()), ("200", "application/jwk-set+json"), "{body}");
    let jwks: serde_json::Value = serde_json::from_str(&body).unwrap();
    let key = &jwks["keys"][0];
    assert_eq!((key["kty"].as_str(), key["crv"].as_str(), key["alg"].as_str()), (Some("EC"), Some("P-256"), Some("ES256")));
    // The key id is upstream's: SHA-256 of the public key's PKIX form, here computed by
    // openssl from the signing key on disk; tokens name it in their header.
    let key_file = server.data_dir().join("server/tls/service.key");
    let digest = Command::new("bash")
        .arg("-c")
        .arg(format!("set -o pipefail; openssl pkey -pubout -outform DER -in {} | openssl dgst -sha256 -binary", key_file.display()))
        .output()
        .unwrap();
    assert!(digest.status.success() && digest.stdout.len() == 32, "{}", text(&digest.stderr));
    let kid = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, &digest.stdout);
    assert_eq!(key["kid"], kid.as_str());
    let header = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, token.split('.').next().unwrap()).unwrap();
    let header: serde_json::Value = serde_json::from_slice(&header).unwrap();
    assert_eq!(header["kid"], kid.as_str());
    // Not for anonymous callers, nor for users outside system:serviceaccounts.
    assert_eq!(get("/openid/v1/jwks", None).0, "401");
    assert_eq!(server.kubectl(&["get", "--raw", "/openid/v1/jwks", "--as=bob"]).status.code(), Some(1));
}

/// NodeRestriction: a node registers and labels only itself, never with restricted labels
/// or changed taints, creates only mirror pods, and requests tokens only for its pods.
#[test]
fn a_node_writes_only_itself() {
    let server = TestServer::start();
    let n1 = client_cert(&server, "system:node:n1", &["system:nodes"]);
    let as_n1 = |args: &[&str], input: &str| {
        let mut child = Command::new(common::kubectl_bin())
            .args(["--kubeconfig", "/dev/null", "--server", &server.url(), "--request-timeout", "20s"])
            .arg(format!("--certificate-authority={}", server.server_ca().display()))
            .args(&n1)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    };
    let node = |name: &str, labels: &str| format!(r#"{{"apiVersion":"v1","kind":"Node","metadata":{{"name":"{name}","labels":{{{labels}}}}}}}"#);
    let out = as_n1(&["create", "-f", "-"], &node("n2", ""));
    assert!(stderr_of(&out).contains(r#"nodes "n2" is forbidden: node "n1" is not allowed to modify node "n2""#), "{}", stderr_of(&out));
    let out = as_n1(&["create", "-f", "-"], &node("n1", r#""node-restriction.kubernetes.io/pool":"gpu""#));
    assert!(stderr_of(&out).contains(r#"node "n1" is not allowed to set the following labels: node-restriction.kubernetes.io/pool"#), "{}", stderr_of(&out));
    let out = as_n1(&["create", "-f", "-"], &node("n1", r#""kubernetes.io/hostname":"n1","example.com/rack":"7""#));
    assert!(out.status.success(), "{}", stderr_of(&out));
    // The admin's labels and taints are the admin's.
    server.kubectl_ok(&["label", "node", "n1", "node-restriction.kubernetes.io/pool=gpu"]);
    server.kubectl_ok(&["taint", "node", "n1", "dedicated=gpu:NoSchedule"]);
    let out = as_n1(&["label", "node", "n1", "node-restriction.kubernetes.io/pool-"], "");
    assert!(stderr_of(&out).contains("is not allowed to modify labels: node-restriction.kubernetes.io/pool"), "{}", stderr_of(&out));
    let out = as_n1(&["label", "node", "n1", "node-role.kubernetes.io/worker=true"], "");
    assert!(stderr_of(&out).contains("is not allowed to modify labels: node-role.kubernetes.io/worker"), "{}", stderr_of(&out));
    let out = as_n1(&["taint", "node", "n1", "dedicated-"], "");
    assert!(stderr_of(&out).contains(r#"node "n1" is not allowed to modify taints"#), "{}", stderr_of(&out));
    let out = as_n1(&["label", "node", "n1", "example.com/rack=8", "--overwrite"], "");
    assert!(out.status.success(), "{}", stderr_of(&out));

    // Pods: only mirror pods; not ordinary ones.
    let out = as_n1(&["create", "-f", "-"], r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","namespace":"default"},"spec":{"nodeName":"n1","containers":[{"name":"c","image":"busybox"}]}}"#);
    assert!(stderr_of(&out).contains(r#"pod does not have "kubernetes.io/config.mirror" annotation, node "n1" can only create mirror pods"#), "{}", stderr_of(&out));
    // Tokens only bound to its own pods.
    server.kubectl_stdin_ok(&["create", "-f", "-"], r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"mine"},"spec":{"nodeName":"n1","containers":[{"name":"c","image":"busybox"}]}}"#);
    server.kubectl_stdin_ok(&["create", "-f", "-"], r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"theirs"},"spec":{"nodeName":"n2","containers":[{"name":"c","image":"busybox"}]}}"#);
    let uid = |p: &str| server.kubectl_ok(&["get", "pod", p, "-o", "jsonpath={.metadata.uid}"]);
    let request = |pod: &str| format!(r#"{{"apiVersion":"authentication.k8s.io/v1","kind":"TokenRequest","spec":{{"boundObjectRef":{{"apiVersion":"v1","kind":"Pod","name":"{pod}","uid":"{}"}}}}}}"#, uid(pod));
    let token_path = "/api/v1/namespaces/default/serviceaccounts/default/token";
    let (cert, key) = (n1[0].trim_start_matches("--client-certificate=").to_string(), n1[1].trim_start_matches("--client-key=").to_string());
    let send = |method: &str, ctype: &str, path: &str, body: &str| {
        let out = Command::new("curl")
            .args(["-s", "-w", "\n%{http_code}", "--cacert"])
            .arg(server.server_ca())
            .args(["--cert", &cert, "--key", &key, "-H", &format!("Content-Type: {ctype}"), "-X", method, "--data-binary", body])
            .arg(format!("{}{path}", server.url()))
            .output()
            .unwrap();
        text(&out.stdout)
    };
    let post = |body: &str| send("POST", "application/json", token_path, body);
    // Its own Node's status may not relabel it either.
    let relabel = send("PATCH", "application/merge-patch+json", "/api/v1/nodes/n1/status", r#"{"metadata":{"labels":{"node-restriction.kubernetes.io/pool":"cpu"}}}"#);
    assert!(relabel.ends_with("\n403") && relabel.contains("is not allowed to modify labels"), "{relabel}");
    let status = send("PATCH", "application/merge-patch+json", "/api/v1/nodes/n1/status", r#"{"status":{"phase":"Running"}}"#);
    assert!(status.ends_with("\n200"), "{status}");
    assert!(poll(Duration::from_secs(5), || post(&request("mine")).ends_with("\n201")));
    let theirs = post(&request("theirs"));
    assert!(theirs.ends_with("\n403") && theirs.contains("node requested token bound to a pod scheduled on a different node"), "{theirs}");
}
