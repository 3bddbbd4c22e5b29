//! The EndpointSlice and Endpoints controllers inside `krust server`, seen through kubectl,
//! with simulated nodes running the pods (see `sim`).

mod common;
mod sim;

use std::time::{Duration, Instant};

use common::{jsonpath, poll, TestServer};
use sim::{Sim, SimNode};

const WAIT: Duration = Duration::from_secs(60);


const OBJECTS: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, labels: {tier: front}}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: web-headless}
spec:
  clusterIP: None
  selector: {app: web}
  ports: [{port: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: external}
spec:
  ports: [{port: 443}]
"#;

fn pod(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, labels: {{app: web}}}}\nspec:\n  containers: [{{name: c, image: nginx, ports: [{{name: http, containerPort: 8080}}]}}]\n---\n"
    )
}

/// `pod=ready/serving/terminating@node` of the endpoints of the Service's slices, sorted.
fn slice_endpoints(server: &TestServer, svc: &str) -> Vec<String> {
    let out = jsonpath(
        server,
        &["get", "endpointslices", "-l", &format!("kubernetes.io/service-name={svc}")],
        r#"{range .items[*].endpoints[*]}{.targetRef.name}={.conditions.ready}/{.conditions.serving}/{.conditions.terminating}@{.nodeName}{"\n"}{end}"#,
    );
    let mut v: Vec<String> = out.lines().map(String::from).collect();
    v.sort();
    v
}

/// `ready | not ready` pod names of the Service's Endpoints.
fn endpoints(server: &TestServer, svc: &str) -> String {
    jsonpath(server, &["get", "endpoints", svc], "{.subsets[*].addresses[*].targetRef.name}|{.subsets[*].notReadyAddresses[*].targetRef.name}")
}

#[test]
fn endpoints_follow_the_pods_of_services() {
    let server = TestServer::start();
    let _sim = Sim::start(&server.kubeconfig(), vec![SimNode::new("node-a"), SimNode::new("node-b")]);
    let pods: String = ["web-0", "web-1", "web-2"].iter().map(|n| pod(n)).collect();
    server.kubectl_stdin_ok(&["apply", "-f", "-"], &pods);
    server.kubectl_stdin_ok(&["apply", "-f", "-"], OBJECTS);

    let ready3 = |e: &Vec<String>| e.len() == 3 && e.iter().all(|l| l.contains("=true/true/false@node-"));
    assert!(poll(WAIT, || ready3(&slice_endpoints(&server, "web"))), "{:?}\n{}", slice_endpoints(&server, "web"), server.kubectl_ok(&["get", "endpointslices,pods", "-o", "wide"]));
    assert!(poll(WAIT, || endpoints(&server, "web") == "web-0 web-1 web-2|"), "{}", endpoints(&server, "web"));

    // The slice: labels, owner, address type, the named target port resolved.
    let slice = jsonpath(&server, &["get", "endpointslices", "-l", "kubernetes.io/service-name=web"], "{.items[0].metadata.name}");
    assert!(slice.starts_with("web-"), "{slice}");
    let meta = jsonpath(
        &server,
        &["get", "endpointslice", &slice],
        r#"{.metadata.labels.endpointslice\.kubernetes\.io/managed-by} {.metadata.labels.tier} {.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}/{.metadata.ownerReferences[0].controller} {.addressType} {.ports[0].name}:{.ports[0].port}/{.ports[0].protocol}"#,
    );
    assert_eq!(meta, "endpointslice-controller.k8s.io front Service/web/true IPv4 http:8080/TCP");
    let target = jsonpath(&server, &["get", "endpointslice", &slice], "{.endpoints[0].targetRef.kind} {.endpoints[0].addresses[0]}");
    assert!(target.starts_with("Pod 10.244."), "{target}");
    let ep = jsonpath(&server, &["get", "endpoints", "web"], r#"{.metadata.labels.endpointslice\.kubernetes\.io/skip-mirror} {.subsets[0].ports[0].name}:{.subsets[0].ports[0].port}"#);
    assert_eq!(ep, "true http:8080");
    let table = server.kubectl_ok(&["get", "endpoints", "web"]);
    assert!(table.contains(":8080"), "{table}");

    // The headless Service has its slice (labelled) and Endpoints; the selectorless one none.
    assert!(poll(WAIT, || ready3(&slice_endpoints(&server, "web-headless"))), "{:?}", slice_endpoints(&server, "web-headless"));
    let headless = jsonpath(&server, &["get", "endpointslices", "-l", "kubernetes.io/service-name=web-headless"], r#"{.items[0].metadata.labels.service\.kubernetes\.io/headless}|{.items[0].ports[0].port}"#);
    assert_eq!(headless, "|8080");
    assert!(poll(WAIT, || endpoints(&server, "web-headless") == "web-0 web-1 web-2|"));
    assert!(slice_endpoints(&server, "external").is_empty());
    assert!(!server.kubectl(&["get", "endpoints", "external"]).status.success(), "a service without selector gets no endpoints");

    // A pod turning not ready moves at once.
    let start = Instant::now();
    server.kubectl_ok(&["patch", "pod", "web-1", "--subresource=status", "-p", r#"{"status":{"conditions":[{"type":"Ready","status":"False"}]}}"#]);
    assert!(
        poll(WAIT, || slice_endpoints(&server, "web").iter().any(|l| l.starts_with("web-1=false/false/false"))
            && endpoints(&server, "web") == "web-0 web-2|web-1"),
        "{:?} {}",
        slice_endpoints(&server, "web"),
        endpoints(&server, "web")
    );
    assert!(start.elapsed() < Duration::from_secs(5), "took {:?}", start.elapsed());

    // A deleted pod leaves; a new one joins.
    server.kubectl_ok(&["delete", "pod", "web-0", "--wait=true", "--timeout=30s"]);
    assert!(
        poll(WAIT, || slice_endpoints(&server, "web").len() == 2 && endpoints(&server, "web") == "web-2|web-1"),
        "{:?} {}",
        slice_endpoints(&server, "web"),
        endpoints(&server, "web")
    );
    // A pod relabelled out of the selector leaves too.
    server.kubectl_ok(&["label", "pod", "web-2", "app=other", "--overwrite"]);
    assert!(poll(WAIT, || endpoints(&server, "web") == "|web-1"), "{}", endpoints(&server, "web"));
    server.kubectl_stdin_ok(&["apply", "-f", "-"], &pod("web-3"));
    assert!(poll(WAIT, || endpoints(&server, "web") == "web-3|web-1"), "{}", endpoints(&server, "web"));
    assert_eq!(jsonpath(&server, &["get", "endpointslices", "-l", "kubernetes.io/service-name=web"], "{.items[*].metadata.name}"), slice, "the slice is updated in place");

    // Settled, nothing is rewritten.
    let versions = || jsonpath(&server, &["get", "endpoints,endpointslices"], "{.items[*].metadata.resourceVersion}");
    let before = versions();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(versions(), before, "endpoints keep being rewritten");

    // Deleting the Service removes its slices (garbage collector) and Endpoints.
    server.kubectl_ok(&["delete", "service", "web"]);
    assert!(
        poll(WAIT, || !server.kubectl(&["get", "endpoints", "web"]).status.success() && slice_endpoints(&server, "web").is_empty()
            && jsonpath(&server, &["get", "endpointslices", "-l", "kubernetes.io/service-name=web"], "{.items[*].metadata.name}").is_empty()),
        "{}",
        server.kubectl_ok(&["get", "endpoints,endpointslices"])
    );
}
