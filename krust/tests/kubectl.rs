//! The stock kubectl (1.32, pinned by the harness) against a real `krust server`: the
//! everyday commands a person runs, checked on their printed output and on the stored
//! objects. Each test starts its own server (~50 ms), so tests never see each other's objects.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{poll, text, TestServer};
use serde_json::Value;

/// Generous for a loaded 2-core CI machine.
const WAIT: Duration = Duration::from_secs(30);

/// `kubectl apply -f -` of a YAML manifest; returns stdout.
fn apply(server: &TestServer, yaml: &str) -> String {
    server.kubectl_stdin_ok(&["apply", "-f", "-"], yaml)
}

/// `kubectl create -f -` of a YAML manifest; returns stdout.
fn create(server: &TestServer, yaml: &str) -> String {
    server.kubectl_stdin_ok(&["create", "-f", "-"], yaml)
}

fn namespace(server: &TestServer, name: &str) {
    create(
        server,
        &format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n"),
    );
}

/// A ConfigMap manifest with labels (`k=v` pairs) and one data key.
fn configmap(ns: &str, name: &str, labels: &[(&str, &str)]) -> String {
    let mut y =
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: {ns}\n");
    if !labels.is_empty() {
        y.push_str("  labels:\n");
        for (k, v) in labels {
            y.push_str(&format!("    {k}: \"{v}\"\n"));
        }
    }
    y.push_str("data:\n  key: value\n");
    y
}

/// `kubectl get ... -o json`, parsed.
fn get_json(server: &TestServer, args: &[&str]) -> Value {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    let out = server.kubectl_ok(&all);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("kubectl {all:?} -o json: {e}\n{out}"))
}

/// `kubectl` that must fail; returns stderr.
fn kubectl_fails(server: &TestServer, args: &[&str]) -> String {
    let out = server.kubectl(args);
    assert!(
        !out.status.success(),
        "kubectl {args:?} should have failed, printed:\n{}",
        text(&out.stdout)
    );
    text(&out.stderr)
}

/// The ConfigMap the controller-manager publishes in every namespace: left out of the
/// listings these tests compare.
const ROOT_CA: &str = "kube-root-ca.crt";

/// Names printed by `kubectl get -o name`, as a set of `kind/name` (without [`ROOT_CA`]).
fn names(out: &str) -> BTreeSet<String> {
    out.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && *l != format!("configmap/{ROOT_CA}"))
        .map(String::from)
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// A Deployment with two containers, `app` and `sidecar`.
fn deployment(ns: &str, name: &str, replicas: u32, image: &str) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  namespace: {ns}
  labels:
    app: {name}
spec:
  replicas: {replicas}
  selector:
    matchLabels:
      app: {name}
  template:
    metadata:
      labels:
        app: {name}
    spec:
      containers:
        - name: app
          image: {image}
        - name: sidecar
          image: busybox:1.36
"
    )
}

#[test]
fn version_reports_client_and_server() {
    let server = TestServer::start();
    let v: Value = serde_json::from_str(&server.kubectl_ok(&["version", "-o", "json"])).unwrap();
    assert_eq!(v["clientVersion"]["minor"], "32", "{v}");
    assert_eq!(v["serverVersion"]["major"], "1", "{v}");
    let git = v["serverVersion"]["gitVersion"]
        .as_str()
        .unwrap_or_default();
    assert!(git.starts_with("v1.") && git.contains("krust"), "{v}");
    // The plain form too, as a person reads it.
    let out = server.kubectl_ok(&["version"]);
    assert!(out.contains("Client Version: v1.32"), "{out}");
    assert!(out.contains("Server Version: v1."), "{out}");
}

#[test]
fn api_resources_lists_kinds_with_short_names() {
    let server = TestServer::start();
    let out = server.kubectl_ok(&["api-resources"]);
    let row = |plural: &str| {
        out.lines()
            .find(|l| l.split_whitespace().next() == Some(plural))
            .unwrap_or_else(|| panic!("no {plural} in api-resources:\n{out}"))
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    assert_eq!(row("pods"), ["pods", "po", "v1", "true", "Pod"]);
    assert_eq!(
        row("deployments"),
        ["deployments", "deploy", "apps/v1", "true", "Deployment"]
    );
    assert_eq!(
        row("configmaps"),
        ["configmaps", "cm", "v1", "true", "ConfigMap"]
    );
    assert_eq!(
        row("namespaces"),
        ["namespaces", "ns", "v1", "false", "Namespace"]
    );
    assert_eq!(
        row("services"),
        ["services", "svc", "v1", "true", "Service"]
    );

    let names = names(&server.kubectl_ok(&["api-resources", "-o", "name"]));
    for n in [
        "pods",
        "deployments.apps",
        "configmaps",
        "secrets",
        "namespaces",
    ] {
        assert!(names.contains(n), "{n} missing from {names:?}");
    }
    let apps = names_of_group(&server, "apps");
    assert!(
        apps.contains("deployments.apps") && apps.contains("replicasets.apps"),
        "{apps:?}"
    );
    assert!(!apps.contains("pods"), "{apps:?}");

    // Short names resolve.
    server.kubectl_ok(&["get", "po", "-A"]);
    server.kubectl_ok(&["get", "deploy", "-A"]);
}

fn names_of_group(server: &TestServer, group: &str) -> BTreeSet<String> {
    names(&server.kubectl_ok(&["api-resources", "--api-group", group, "-o", "name"]))
}

#[test]
fn create_get_and_list() {
    let server = TestServer::start();
    namespace(&server, "t");
    let out = create(
        &server,
        &format!(
            "{}---\n{}",
            configmap("t", "one", &[("app", "x")]),
            configmap("t", "two", &[])
        ),
    );
    assert_eq!(out.trim(), "configmap/one created\nconfigmap/two created");

    let one = get_json(&server, &["configmap", "one", "-n", "t"]);
    assert_eq!(one["kind"], "ConfigMap");
    assert_eq!(one["metadata"]["name"], "one");
    assert_eq!(one["metadata"]["namespace"], "t");
    assert_eq!(one["metadata"]["labels"]["app"], "x");
    assert_eq!(one["data"]["key"], "value");
    assert!(
        one["metadata"]["uid"]
            .as_str()
            .is_some_and(|u| !u.is_empty()),
        "{one}"
    );
    assert!(
        one["metadata"]["resourceVersion"]
            .as_str()
            .is_some_and(|r| r.parse::<u64>().is_ok()),
        "{one}"
    );
    assert!(one["metadata"]["creationTimestamp"].is_string(), "{one}");

    let list = get_json(&server, &["configmaps", "-n", "t"]);
    assert_eq!(list["kind"], "List");
    let listed: BTreeSet<_> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .filter(|n| n != ROOT_CA)
        .collect();
    assert_eq!(listed, set(&["one", "two"]));

    // The table a person sees.
    let table = server.kubectl_ok(&["get", "cm", "-n", "t"]);
    let header = table.lines().next().unwrap_or_default();
    assert!(
        header.starts_with("NAME") && header.contains("AGE"),
        "{table}"
    );
    assert!(table.lines().any(|l| l.starts_with("one ")), "{table}");
    assert!(table.lines().any(|l| l.starts_with("two ")), "{table}");

    // Several kinds at once, and an empty namespace.
    let out = server.kubectl_ok(&["get", "cm,ns", "-n", "t", "-o", "name"]);
    assert!(
        out.contains("configmap/one") && out.contains("namespace/t"),
        "{out}"
    );
    let out = server.kubectl(&["get", "secrets", "-n", "default"]);
    assert!(out.status.success());
    assert!(
        text(&out.stderr).contains("No resources found in default namespace."),
        "{}",
        text(&out.stderr)
    );
}

const SHOP: &str = "apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: shop
data:
  color: blue
---
apiVersion: v1
kind: Secret
metadata:
  name: creds
  namespace: shop
type: Opaque
data:
  user: YWRtaW4=
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
  labels:
    app: web
spec:
  replicas: 1
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
        - name: app
          image: nginx:1.25
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
spec:
  selector:
    app: web
  ports:
    - port: 80
      targetPort: 8080
";

#[test]
fn apply_is_idempotent_then_configures_changes() {
    // No controllers: the deployment controller's own writes (status, revision annotation)
    // would move the resourceVersion this test compares across an unchanged apply.
    let server = TestServer::start_with(&["--disable-controller-manager"]);
    let kinds = [
        "namespace/shop",
        "configmap/settings",
        "secret/creds",
        "deployment.apps/web",
        "service/web",
    ];
    let verbs = |out: &str| out.lines().map(String::from).collect::<Vec<_>>();
    let expect = |verb_of: &dyn Fn(&str) -> &'static str| {
        kinds
            .iter()
            .map(|k| format!("{k} {}", verb_of(k)))
            .collect::<Vec<_>>()
    };

    assert_eq!(verbs(&apply(&server, SHOP)), expect(&|_| "created"));
    let before = get_json(&server, &["deployment", "web", "-n", "shop"]);
    assert_eq!(verbs(&apply(&server, SHOP)), expect(&|_| "unchanged"));
    let after = get_json(&server, &["deployment", "web", "-n", "shop"]);
    assert_eq!(
        before["metadata"]["resourceVersion"], after["metadata"]["resourceVersion"],
        "an unchanged apply must not write"
    );

    let modified = SHOP
        .replace("color: blue", "color: red")
        .replace("replicas: 1", "replicas: 2")
        .replace("nginx:1.25", "nginx:1.27");
    assert_eq!(
        verbs(&apply(&server, &modified)),
        expect(
            &|k| if k.starts_with("configmap") || k.starts_with("deployment") {
                "configured"
            } else {
                "unchanged"
            }
        )
    );
    let cm = get_json(&server, &["configmap", "settings", "-n", "shop"]);
    assert_eq!(cm["data"]["color"], "red");
    let dep = get_json(&server, &["deployment", "web", "-n", "shop"]);
    assert_eq!(dep["spec"]["replicas"], 2);
    assert_eq!(
        dep["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.27"
    );
    assert_eq!(
        dep["metadata"]["generation"], 2,
        "a spec change bumps generation: {dep}"
    );
    let last_applied = dep["metadata"]["annotations"]
        ["kubectl.kubernetes.io/last-applied-configuration"]
        .as_str()
        .unwrap_or_default();
    assert!(last_applied.contains("nginx:1.27"), "{dep}");

    // And once more: nothing left to do.
    assert_eq!(verbs(&apply(&server, &modified)), expect(&|_| "unchanged"));
}

#[test]
fn patch_strategic_keeps_other_containers() {
    // No controllers: the deployment controller's writes would change the resourceVersion
    // this test compares.
    let server = TestServer::start_with(&["--disable-controller-manager"]);
    namespace(&server, "t");
    create(&server, &deployment("t", "web", 1, "nginx:1.25"));
    let out = server.kubectl_ok(&[
        "patch",
        "deployment",
        "web",
        "-n",
        "t",
        "--type=strategic",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"app","image":"nginx:1.27"}]}}}}"#,
    ]);
    assert_eq!(out.trim(), "deployment.apps/web patched");
    let dep = get_json(&server, &["deployment", "web", "-n", "t"]);
    let containers: Vec<(String, String)> = dep["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().into(),
                c["image"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        containers,
        [
            ("app".to_string(), "nginx:1.27".to_string()),
            ("sidecar".to_string(), "busybox:1.36".to_string())
        ]
    );

    // The default patch type of kubectl is strategic too; patching to the same value is a no-op.
    let rv = dep["metadata"]["resourceVersion"].clone();
    let out = server.kubectl_ok(&[
        "patch",
        "deployment",
        "web",
        "-n",
        "t",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"app","image":"nginx:1.27"}]}}}}"#,
    ]);
    assert_eq!(out.trim(), "deployment.apps/web patched (no change)");
    assert_eq!(
        get_json(&server, &["deployment", "web", "-n", "t"])["metadata"]["resourceVersion"],
        rv
    );
}

#[test]
fn patch_merge_and_json() {
    let server = TestServer::start();
    namespace(&server, "t");
    create(&server, &configmap("t", "cfg", &[]));

    // Merge patch: add, change, and remove (null) keys.
    server.kubectl_ok(&[
        "patch",
        "cm",
        "cfg",
        "-n",
        "t",
        "--type=merge",
        "-p",
        r#"{"data":{"a":"1","b":"2"}}"#,
    ]);
    let out = server.kubectl_ok(&[
        "patch",
        "cm",
        "cfg",
        "-n",
        "t",
        "--type=merge",
        "-p",
        r#"{"data":{"a":null,"key":"new"}}"#,
    ]);
    assert_eq!(out.trim(), "configmap/cfg patched");
    let cm = get_json(&server, &["cm", "cfg", "-n", "t"]);
    assert_eq!(cm["data"], serde_json::json!({"b": "2", "key": "new"}));

    // JSON patch: add, replace, remove.
    let out = server.kubectl_ok(&[
        "patch", "cm", "cfg", "-n", "t", "--type=json", "-p",
        r#"[{"op":"add","path":"/data/c","value":"3"},{"op":"replace","path":"/data/b","value":"20"},{"op":"remove","path":"/data/key"}]"#,
    ]);
    assert_eq!(out.trim(), "configmap/cfg patched");
    let cm = get_json(&server, &["cm", "cfg", "-n", "t"]);
    assert_eq!(cm["data"], serde_json::json!({"b": "20", "c": "3"}));

    // A JSON patch whose `test` fails changes nothing.
    let rv = cm["metadata"]["resourceVersion"].clone();
    let err = kubectl_fails(
        &server,
        &[
            "patch",
            "cm",
            "cfg",
            "-n",
            "t",
            "--type=json",
            "-p",
            r#"[{"op":"test","path":"/data/b","value":"nope"},{"op":"remove","path":"/data/c"}]"#,
        ],
    );
    assert!(
        err.contains("/data/b"),
        "the error names the failed test: {err}"
    );
    let cm = get_json(&server, &["cm", "cfg", "-n", "t"]);
    assert_eq!(cm["metadata"]["resourceVersion"], rv);
    assert_eq!(cm["data"], serde_json::json!({"b": "20", "c": "3"}));
}

#[test]
fn label_overwrite_and_remove() {
    let server = TestServer::start();
    namespace(&server, "t");
    create(&server, &configmap("t", "cfg", &[("keep", "yes")]));
    let labels =
        |s: &TestServer| get_json(s, &["cm", "cfg", "-n", "t"])["metadata"]["labels"].clone();

    assert_eq!(
        server
            .kubectl_ok(&["label", "cm", "cfg", "-n", "t", "env=prod", "tier=web"])
            .trim(),
        "configmap/cfg labeled"
    );
    assert_eq!(
        labels(&server),
        serde_json::json!({"keep": "yes", "env": "prod", "tier": "web"})
    );

    let err = kubectl_fails(&server, &["label", "cm", "cfg", "-n", "t", "env=dev"]);
    assert!(
        err.contains("'env' already has a value (prod), and --overwrite is false"),
        "{err}"
    );
    assert_eq!(labels(&server)["env"], "prod");

    assert_eq!(
        server
            .kubectl_ok(&["label", "cm", "cfg", "-n", "t", "--overwrite", "env=dev"])
            .trim(),
        "configmap/cfg labeled"
    );
    assert_eq!(labels(&server)["env"], "dev");

    assert_eq!(
        server
            .kubectl_ok(&["label", "cm", "cfg", "-n", "t", "tier-"])
            .trim(),
        "configmap/cfg unlabeled"
    );
    assert_eq!(
        labels(&server),
        serde_json::json!({"keep": "yes", "env": "dev"})
    );

    // An invalid label value is refused by the server; nothing changes.
    let err = kubectl_fails(
        &server,
        &[
            "label",
            "cm",
            "cfg",
            "-n",
            "t",
            "--overwrite",
            "env=bad value!",
        ],
    );
    assert!(err.contains("Invalid") || err.contains("invalid"), "{err}");
    assert_eq!(
        labels(&server),
        serde_json::json!({"keep": "yes", "env": "dev"})
    );
}

#[test]
fn annotate_adds_overwrites_and_removes() {
    let server = TestServer::start();
    namespace(&server, "t");
    create(&server, &configmap("t", "cfg", &[]));
    let annotations =
        |s: &TestServer| get_json(s, &["cm", "cfg", "-n", "t"])["metadata"]["annotations"].clone();

    assert_eq!(
        server
            .kubectl_ok(&[
                "annotate",
                "cm",
                "cfg",
                "-n",
                "t",
                "note=hello world",
                "example.com/owner=team-a"
            ])
            .trim(),
        "configmap/cfg annotated"
    );
    assert_eq!(
        annotations(&server),
        serde_json::json!({"note": "hello world", "example.com/owner": "team-a"})
    );
    let err = kubectl_fails(&server, &["annotate", "cm", "cfg", "-n", "t", "note=other"]);
    assert!(err.contains("--overwrite is false"), "{err}");
    server.kubectl_ok(&[
        "annotate",
        "cm",
        "cfg",
        "-n",
        "t",
        "--overwrite",
        "note=other",
    ]);
    assert_eq!(annotations(&server)["note"], "other");
    server.kubectl_ok(&["annotate", "cm", "cfg", "-n", "t", "note-"]);
    assert_eq!(
        annotations(&server),
        serde_json::json!({"example.com/owner": "team-a"})
    );
}

#[test]
fn delete_removes_and_missing_is_not_found() {
    let server = TestServer::start();
    namespace(&server, "t");
    create(
        &server,
        &format!(
            "{}---\n{}",
            configmap("t", "a", &[]),
            configmap("t", "b", &[])
        ),
    );

    assert_eq!(
        server.kubectl_ok(&["delete", "cm", "a", "-n", "t"]).trim(),
        "configmap \"a\" deleted"
    );
    let err = kubectl_fails(&server, &["get", "cm", "a", "-n", "t"]);
    assert!(
        err.contains("Error from server (NotFound): configmaps \"a\" not found"),
        "{err}"
    );
    // The other one is untouched.
    assert_eq!(
        get_json(&server, &["cm", "b", "-n", "t"])["data"]["key"],
        "value"
    );

    let err = kubectl_fails(&server, &["delete", "cm", "a", "-n", "t"]);
    assert!(
        err.contains("Error from server (NotFound): configmaps \"a\" not found"),
        "{err}"
    );
    // --ignore-not-found makes it a success.
    server.kubectl_ok(&["delete", "cm", "a", "-n", "t", "--ignore-not-found"]);

    // Deleting by label (a collection delete through kubectl).
    create(
        &server,
        &format!(
            "{}---\n{}",
            configmap("t", "l1", &[("grp", "x")]),
            configmap("t", "l2", &[("grp", "x")])
        ),
    );
    let out = server.kubectl_ok(&["delete", "cm", "-n", "t", "-l", "grp=x"]);
    assert!(
        out.contains("configmap \"l1\" deleted") && out.contains("configmap \"l2\" deleted"),
        "{out}"
    );
    assert_eq!(
        names(&server.kubectl_ok(&["get", "cm", "-n", "t", "-o", "name"])),
        set(&["configmap/b"])
    );
}

#[test]
fn get_watch_prints_added_modified_deleted() {
    let server = TestServer::start();
    namespace(&server, "w");
    create(&server, &configmap("w", "sentinel", &[]));
    let out_file = server.data_dir().join("watch.out");
    let mut watch = server.kubectl_background(
        &["get", "cm", "-n", "w", "-w", "--output-watch-events"],
        &out_file,
    );
    // The initial list is printed before the watch starts: after it, no event is missed.
    watch.wait_for("the initial list", WAIT, |o| o.contains("sentinel"));

    create(&server, &configmap("w", "moving", &[]));
    server.kubectl_ok(&["label", "cm", "moving", "-n", "w", "step=two"]);
    server.kubectl_ok(&["delete", "cm", "moving", "-n", "w"]);

    let out = watch.wait_for("ADDED, MODIFIED and DELETED of moving", WAIT, |o| {
        o.lines()
            .any(|l| l.starts_with("DELETED") && l.contains("moving"))
    });
    let events: Vec<(String, String)> = out
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((w.next()?.to_string(), w.next()?.to_string()))
        })
        .filter(|(_, name)| name != "NAME" && name != ROOT_CA)
        .collect();
    let e = |t: &str, n: &str| (t.to_string(), n.to_string());
    assert_eq!(
        events,
        [
            e("ADDED", "sentinel"),
            e("ADDED", "moving"),
            e("MODIFIED", "moving"),
            e("DELETED", "moving")
        ],
        "{out}"
    );
    assert!(
        out.lines().next().unwrap_or_default().starts_with("EVENT"),
        "{out}"
    );
}

#[test]
fn chunked_list_returns_every_object() {
    let server = TestServer::start();
    namespace(&server, "t");
    let docs: Vec<String> = (1..=7)
        .map(|i| configmap("t", &format!("cm-{i}"), &[]))
        .collect();
    create(&server, &docs.join("---\n"));

    // -v=6 logs each request: the pages are really fetched two by two.
    let out = server.kubectl(&[
        "get",
        "cm",
        "-n",
        "t",
        "--chunk-size=2",
        "-o",
        "name",
        "-v=6",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let want: BTreeSet<String> = (1..=7).map(|i| format!("configmap/cm-{i}")).collect();
    let got = names(&text(&out.stdout));
    assert_eq!(got, want);
    assert_eq!(
        text(&out.stdout).lines().filter(|l| !l.contains(ROOT_CA)).count(),
        7,
        "no duplicates:\n{}",
        text(&out.stdout)
    );
    let log = text(&out.stderr);
    let pages = log
        .lines()
        .filter(|l| l.contains("/configmaps?") && l.contains("limit=2"))
        .count();
    let continued = log
        .lines()
        .filter(|l| l.contains("limit=2") && l.contains("continue="))
        .count();
    assert_eq!(
        (pages, continued),
        (4, 3),
        "expected 4 pages, 3 with a continue token:\n{log}"
    );

    // The table form pages too.
    let table = server.kubectl_ok(&["get", "cm", "-n", "t", "--chunk-size=2"]);
    assert_eq!(
        table.lines().filter(|l| l.starts_with("cm-")).count(),
        7,
        "{table}"
    );
    assert_eq!(
        table.lines().filter(|l| l.starts_with("NAME")).count(),
        1,
        "one header:\n{table}"
    );
}

#[test]
fn label_selectors_of_every_form() {
    let server = TestServer::start();
    namespace(&server, "t");
    let docs = [
        configmap("t", "a", &[("env", "prod"), ("tier", "web")]),
        configmap("t", "b", &[("env", "dev")]),
        configmap("t", "c", &[("env", "test"), ("tier", "db")]),
        configmap("t", "d", &[]),
    ];
    create(&server, &docs.join("---\n"));
    let select = |sel: &str| {
        let out = server.kubectl_ok(&["get", "cm", "-n", "t", "-l", sel, "-o", "name"]);
        names(&out)
            .into_iter()
            .map(|n| n.trim_start_matches("configmap/").to_string())
            .collect::<BTreeSet<_>>()
    };
    let cases: &[(&str, &[&str])] = &[
        ("env=prod", &["a"]),
        ("env==prod", &["a"]),
        ("env!=prod", &["b", "c", "d"]),
        ("env in (prod,dev)", &["a", "b"]),
        ("env notin (prod,dev)", &["c", "d"]),
        ("tier", &["a", "c"]),
        ("!tier", &["b", "d"]),
        ("env,tier=db", &["c"]),
        ("env!=dev,!tier", &["d"]),
        ("env in (prod,test),tier notin (db)", &["a"]),
        ("env=prod,tier=db", &[]),
    ];
    for (sel, want) in cases {
        assert_eq!(select(sel), set(want), "selector {sel:?}");
    }
    // A malformed selector is refused, by kubectl or the server, with a message.
    let err = kubectl_fails(&server, &["get", "cm", "-n", "t", "-l", "env in (prod"]);
    assert!(!err.trim().is_empty());
}

#[test]
fn field_selectors() {
    let server = TestServer::start();
    namespace(&server, "t1");
    namespace(&server, "t2");
    create(
        &server,
        &[
            configmap("t1", "a", &[]),
            configmap("t1", "b", &[]),
            configmap("t2", "a", &[]),
        ]
        .join("---\n"),
    );
    let out = server.kubectl_ok(&[
        "get",
        "cm",
        "-n",
        "t1",
        "--field-selector",
        "metadata.name=a",
        "-o",
        "name",
    ]);
    assert_eq!(names(&out), set(&["configmap/a"]));
    let out = server.kubectl_ok(&[
        "get",
        "cm",
        "-n",
        "t1",
        "--field-selector",
        "metadata.name!=a",
        "-o",
        "name",
    ]);
    assert_eq!(names(&out), set(&["configmap/b"]));

    let list = get_json(
        &server,
        &["cm", "-A", "--field-selector", "metadata.namespace=t2"],
    );
    let got: Vec<(String, String)> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["metadata"]["namespace"].as_str().unwrap().into(),
                i["metadata"]["name"].as_str().unwrap().into(),
            )
        })
        .filter(|(_, name)| name != ROOT_CA)
        .collect();
    assert_eq!(got, [("t2".to_string(), "a".to_string())]);
    let list = get_json(
        &server,
        &[
            "cm",
            "-A",
            "--field-selector",
            "metadata.namespace=t1,metadata.name=b",
        ],
    );
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");

    let err = kubectl_fails(
        &server,
        &["get", "cm", "-n", "t1", "--field-selector", "spec.foo=bar"],
    );
    assert!(err.contains("field label not supported: spec.foo"), "{err}");
    assert!(err.contains("BadRequest"), "{err}");
}

#[test]
fn output_formats() {
    let server = TestServer::start();
    namespace(&server, "t");
    create(
        &server,
        &format!(
            "{}---\n{}",
            configmap("t", "cfg", &[("app", "web"), ("env", "prod")]),
            deployment("t", "web", 1, "nginx:1.25")
        ),
    );

    let yaml: serde_yaml::Value =
        serde_yaml::from_str(&server.kubectl_ok(&["get", "cm", "cfg", "-n", "t", "-o", "yaml"]))
            .unwrap();
    assert_eq!(yaml["kind"].as_str(), Some("ConfigMap"));
    assert_eq!(yaml["apiVersion"].as_str(), Some("v1"));
    assert_eq!(yaml["data"]["key"].as_str(), Some("value"));
    assert_eq!(yaml["metadata"]["labels"]["env"].as_str(), Some("prod"));

    let json = get_json(&server, &["cm", "cfg", "-n", "t"]);
    assert_eq!(json["kind"], "ConfigMap");
    assert_eq!(json["metadata"]["name"], "cfg");

    let out = server.kubectl_ok(&[
        "get",
        "cm",
        "cfg",
        "-n",
        "t",
        "-o",
        "jsonpath={.metadata.name}:{.data.key}:{.metadata.labels.app}",
    ]);
    assert_eq!(out, "cfg:value:web");
    let out = server.kubectl_ok(&[
        "get",
        "deploy",
        "web",
        "-n",
        "t",
        "-o",
        "jsonpath={range .spec.template.spec.containers[*]}{.name}={.image};{end}",
    ]);
    assert_eq!(out, "app=nginx:1.25;sidecar=busybox:1.36;");

    assert_eq!(
        server
            .kubectl_ok(&["get", "cm", "cfg", "-n", "t", "-o", "name"])
            .trim(),
        "configmap/cfg"
    );
    assert_eq!(
        server
            .kubectl_ok(&["get", "deploy", "-n", "t", "-o", "name"])
            .trim(),
        "deployment.apps/web"
    );

    let out = server.kubectl_ok(&["get", "cm", "cfg", "-n", "t", "--show-labels"]);
    let header: Vec<&str> = out
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(header.first(), Some(&"NAME"), "{out}");
    assert_eq!(header.last(), Some(&"LABELS"), "{out}");
    let row = out.lines().nth(1).unwrap_or_default();
    assert!(
        row.starts_with("cfg ") && row.trim_end().ends_with("app=web,env=prod"),
        "{out}"
    );

    // Deployment columns, as upstream prints them; -o wide adds containers, images, selector.
    let out = server.kubectl_ok(&["get", "deploy", "web", "-n", "t"]);
    let header: Vec<&str> = out
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
        "{out}"
    );
    let out = server.kubectl_ok(&["get", "deploy", "web", "-n", "t", "-o", "wide"]);
    let header: Vec<&str> = out
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "NAME",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "AGE",
            "CONTAINERS",
            "IMAGES",
            "SELECTOR"
        ],
        "{out}"
    );
    let row: Vec<&str> = out
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(row.first(), Some(&"web"), "{out}");
    assert_eq!(
        &row[row.len().saturating_sub(3)..],
        ["app,sidecar", "nginx:1.25,busybox:1.36", "app=web"],
        "{out}"
    );
}

#[test]
fn server_dry_run_stores_nothing() {
    let server = TestServer::start();
    namespace(&server, "t");
    let out = create_dry(&server, &configmap("t", "ghost", &[]));
    assert_eq!(out.trim(), "configmap/ghost created (server dry run)");
    let err = kubectl_fails(&server, &["get", "cm", "ghost", "-n", "t"]);
    assert!(err.contains("NotFound"), "{err}");

    create(&server, &configmap("t", "real", &[]));
    let before = get_json(&server, &["cm", "real", "-n", "t"]);
    // Dry-run create of an existing object reports the conflict, as a real create would.
    let out = server.kubectl_stdin(
        &["create", "--dry-run=server", "-f", "-"],
        &configmap("t", "real", &[]),
    );
    assert!(
        !out.status.success(),
        "dry-run create of an existing object must fail: {}",
        text(&out.stdout)
    );
    assert!(
        text(&out.stderr).contains("AlreadyExists"),
        "{}",
        text(&out.stderr)
    );

    let out = server.kubectl_ok(&[
        "patch",
        "cm",
        "real",
        "-n",
        "t",
        "--dry-run=server",
        "--type=merge",
        "-p",
        r#"{"data":{"key":"changed"}}"#,
    ]);
    // (kubectl's patch and label print no dry-run suffix; the store is checked below.)
    assert!(out.starts_with("configmap/real patched"), "{out}");
    let out = server.kubectl_ok(&["label", "cm", "real", "-n", "t", "--dry-run=server", "x=y"]);
    assert!(out.starts_with("configmap/real labeled"), "{out}");
    let out = server.kubectl_ok(&["delete", "cm", "real", "-n", "t", "--dry-run=server"]);
    assert_eq!(out.trim(), "configmap \"real\" deleted (server dry run)");
    let out = server.kubectl_stdin_ok(
        &["apply", "--dry-run=server", "-f", "-"],
        &configmap("t", "applied", &[]),
    );
    assert_eq!(out.trim(), "configmap/applied created (server dry run)");

    let after = get_json(&server, &["cm", "real", "-n", "t"]);
    assert_eq!(before, after, "dry runs must not change the stored object");
    assert!(kubectl_fails(&server, &["get", "cm", "applied", "-n", "t"]).contains("NotFound"));
}

fn create_dry(server: &TestServer, yaml: &str) -> String {
    server.kubectl_stdin_ok(&["create", "--dry-run=server", "-f", "-"], yaml)
}

#[test]
fn replace_with_stale_resource_version_conflicts() {
    let server = TestServer::start();
    namespace(&server, "t");
    create(&server, &configmap("t", "cfg", &[]));
    let mut stale = get_json(&server, &["cm", "cfg", "-n", "t"]);
    server.kubectl_ok(&[
        "patch",
        "cm",
        "cfg",
        "-n",
        "t",
        "--type=merge",
        "-p",
        r#"{"data":{"key":"theirs"}}"#,
    ]);
    let current = get_json(&server, &["cm", "cfg", "-n", "t"]);

    stale["data"]["key"] = "mine".into();
    let out = server.kubectl_stdin(&["replace", "-f", "-"], &stale.to_string());
    assert!(
        !out.status.success(),
        "replace with a stale resourceVersion must fail"
    );
    let err = text(&out.stderr);
    assert!(err.contains("Error from server (Conflict)"), "{err}");
    assert!(
        err.contains("Operation cannot be fulfilled on configmaps \"cfg\": the object has been modified; please apply your changes to the latest version and try again"),
        "{err}"
    );
    assert_eq!(
        get_json(&server, &["cm", "cfg", "-n", "t"]),
        current,
        "a refused replace changes nothing"
    );

    // With the current resourceVersion the same replace works.
    let mut fresh = current.clone();
    fresh["data"]["key"] = "mine".into();
    assert_eq!(
        server
            .kubectl_stdin_ok(&["replace", "-f", "-"], &fresh.to_string())
            .trim(),
        "configmap/cfg replaced"
    );
    assert_eq!(
        get_json(&server, &["cm", "cfg", "-n", "t"])["data"]["key"],
        "mine"
    );
}

#[test]
fn finalizers_hold_deletion_until_removed() {
    let server = TestServer::start();
    namespace(&server, "t");
    create(
        &server,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: held\n  namespace: t\n  finalizers:\n    - example.com/hold\ndata:\n  key: value\n",
    );
    let out = server.kubectl_ok(&["delete", "cm", "held", "-n", "t", "--wait=false"]);
    assert_eq!(out.trim(), "configmap \"held\" deleted");
    let obj = get_json(&server, &["cm", "held", "-n", "t"]);
    assert!(obj["metadata"]["deletionTimestamp"].is_string(), "{obj}");
    assert_eq!(
        obj["metadata"]["finalizers"],
        serde_json::json!(["example.com/hold"])
    );
    assert_eq!(obj["data"]["key"], "value");

    // Deleting again changes nothing; a new finalizer cannot be added while deleting.
    server.kubectl_ok(&["delete", "cm", "held", "-n", "t", "--wait=false"]);
    assert_eq!(
        get_json(&server, &["cm", "held", "-n", "t"])["metadata"]["deletionTimestamp"],
        obj["metadata"]["deletionTimestamp"]
    );
    let err = kubectl_fails(
        &server,
        &[
            "patch",
            "cm",
            "held",
            "-n",
            "t",
            "--type=json",
            "-p",
            r#"[{"op":"add","path":"/metadata/finalizers/-","value":"example.com/more"}]"#,
        ],
    );
    assert!(
        err.contains("no new finalizers can be added if the object is being deleted"),
        "{err}"
    );

    server.kubectl_ok(&[
        "patch",
        "cm",
        "held",
        "-n",
        "t",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
    ]);
    assert!(
        poll(WAIT, || !server
            .kubectl(&["get", "cm", "held", "-n", "t"])
            .status
            .success()),
        "the object should be gone once its last finalizer is removed"
    );
    let err = kubectl_fails(&server, &["get", "cm", "held", "-n", "t"]);
    assert!(err.contains("configmaps \"held\" not found"), "{err}");
}

#[test]
fn get_all_shows_the_examples() {
    let server = TestServer::start();
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../manifests/examples/");
    let out = server.kubectl_ok(&["apply", "-f", examples]);
    for obj in [
        "namespace/demo",
        "configmap/demo-config",
        "deployment.apps/demo",
        "service/demo",
    ] {
        assert!(out.contains(&format!("{obj} created")), "{out}");
    }
    let out = server.kubectl_ok(&["get", "all", "-A"]);
    let row_of = |name: &str| {
        out.lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .map(String::from)
    };
    let svc = row_of("service/demo").unwrap_or_else(|| panic!("no service/demo:\n{out}"));
    assert!(svc.starts_with("demo "), "{out}");
    let dep =
        row_of("deployment.apps/demo").unwrap_or_else(|| panic!("no deployment.apps/demo:\n{out}"));
    assert!(dep.starts_with("demo "), "{out}");
    // Only kinds in the `all` category.
    assert!(
        !out.contains("configmap/") && !out.contains("secret/") && !out.contains("serviceaccount/"),
        "{out}"
    );
    // The `all` short form also works in one namespace.
    // (The deployment controller adds a ReplicaSet and its pods, as they come.)
    let out = server.kubectl_ok(&["get", "all", "-n", "demo", "-o", "name"]);
    let mut found = names(&out);
    found.retain(|n| !n.starts_with("replicaset.apps/demo-") && !n.starts_with("pod/demo-"));
    assert_eq!(found, set(&["service/demo", "deployment.apps/demo"]));
}

#[test]
fn scale_deployment_uses_the_scale_subresource() {
    let server = TestServer::start();
    namespace(&server, "t");
    create(&server, &deployment("t", "web", 1, "nginx:1.25"));
    let out = server.kubectl_ok(&["scale", "deployment", "web", "-n", "t", "--replicas=3"]);
    assert_eq!(out.trim(), "deployment.apps/web scaled");
    let dep = get_json(&server, &["deployment", "web", "-n", "t"]);
    assert_eq!(dep["spec"]["replicas"], 3);
    assert_eq!(
        dep["spec"]["template"]["spec"]["containers"][1]["name"], "sidecar",
        "nothing else changes: {dep}"
    );

    let scale: Value = serde_json::from_str(&server.kubectl_ok(&[
        "get",
        "--raw",
        "/apis/apps/v1/namespaces/t/deployments/web/scale",
    ]))
    .unwrap();
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["apiVersion"], "autoscaling/v1");
    assert_eq!(scale["spec"]["replicas"], 3);
    assert_eq!(scale["status"]["selector"], "app=web");

    // --current-replicas is a precondition checked against the Scale.
    let err = kubectl_fails(
        &server,
        &[
            "scale",
            "deployment",
            "web",
            "-n",
            "t",
            "--current-replicas=1",
            "--replicas=5",
        ],
    );
    assert!(err.contains("Expected replicas to be 1, was 3"), "{err}");
    assert_eq!(
        get_json(&server, &["deployment", "web", "-n", "t"])["spec"]["replicas"],
        3
    );
}
