use serde_json::{json, Value};

use super::*;

fn node(name: &str, labels: &[(&str, &str)], taints: Value) -> Arc<Node> {
    let mut l: BTreeMap<String, String> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    l.insert("kubernetes.io/hostname".into(), name.into());
    let n: Node = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": l},
        "spec": {"taints": taints},
        "status": {"allocatable": {"cpu": "2", "memory": "4Gi", "pods": "110"}, "conditions": [{"type": "Ready", "status": "True"}]},
    }))
    .unwrap();
    Arc::new(n)
}

/// A pod in `default` named `name` with `labels` and extra `spec` fields.
fn pod(name: &str, labels: Value, spec: Value) -> Pod {
    let mut s = json!({"containers": [{"name": "c", "image": "i"}]});
    for (k, v) in spec.as_object().unwrap() {
        s[k] = v.clone();
    }
    serde_json::from_value(json!({"metadata": {"name": name, "namespace": "default", "uid": name, "labels": labels}, "spec": s})).unwrap()
}

fn on(node: &str, mut p: Pod) -> Arc<Pod> {
    p.spec.as_mut().unwrap().node_name = Some(node.into());
    Arc::new(p)
}

fn snap(nodes: &[Arc<Node>], pods: Vec<Arc<Pod>>) -> Snapshot {
    Snapshot::new(nodes, pods, HashMap::new())
}

fn message(p: &Pod, s: &Snapshot) -> String {
    let statuses = pick(p, s, None).unwrap_err();
    fit_error(s.nodes.len(), &statuses.into_iter().flat_map(|s| s.reasons).collect::<Vec<_>>())
}

fn two() -> Vec<Arc<Node>> {
    vec![node("a", &[], json!([])), node("b", &[], json!([]))]
}

#[test]
fn filters_and_messages() {
    let nodes = vec![node("a", &[("disk", "ssd")], json!([])), node("b", &[], json!([{"key": "dedicated", "value": "infra", "effect": "NoSchedule"}]))];
    let s = snap(&nodes, vec![]);
    assert_eq!(pick(&pod("p", json!({}), json!({})), &s, None).unwrap(), "a");
    let hdd = pod("p", json!({}), json!({"nodeSelector": {"disk": "hdd"}}));
    assert_eq!(message(&hdd, &s), "0/2 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, 1 node(s) had untolerated taint {dedicated: infra}.");
    let big = pod("p", json!({}), json!({"containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": "3"}}}], "tolerations": [{"key": "dedicated", "operator": "Exists"}]}));
    assert_eq!(message(&big, &s), "0/2 nodes are available: 2 Insufficient cpu.");
    let cordoned = vec![node("a", &[], json!([]))];
    let mut c = Node::clone(&cordoned[0]);
    c.spec.as_mut().unwrap().unschedulable = Some(true);
    let s = snap(&[Arc::new(c)], vec![]);
    assert_eq!(message(&pod("p", json!({}), json!({})), &s), "0/1 nodes are available: 1 node(s) were unschedulable.");
}

#[test]
fn match_fields_pin_a_pod_to_a_named_node() {
    let pinned = pod("p", json!({}), json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["b"]}]}]}}}}));
    assert_eq!(pick(&pinned, &snap(&two(), vec![]), None).unwrap(), "b");
}

fn anti(app: &str, key: &str) -> Value {
    json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": key}]}}})
}

#[test]
fn required_anti_affinity_spreads_and_reports() {
    let web = |n: &str| pod(n, json!({"app": "web"}), anti("web", "kubernetes.io/hostname"));
    let s = snap(&two(), vec![on("a", web("w1"))]);
    assert_eq!(pick(&web("w2"), &s, None).unwrap(), "b");
    let s = snap(&two(), vec![on("a", web("w1")), on("b", web("w2"))]);
    assert_eq!(message(&web("w3"), &s), "0/2 nodes are available: 2 node(s) didn't match pod anti-affinity rules.");
    // An existing pod's anti-affinity keeps matching pods away, though they have none.
    let s = snap(&two(), vec![on("a", web("w1"))]);
    assert_eq!(pick(&pod("x", json!({"app": "web"}), json!({})), &s, None).unwrap(), "b");
    let s = snap(&two(), vec![on("a", web("w1")), on("b", web("w2"))]);
    assert_eq!(message(&pod("x", json!({"app": "web"}), json!({})), &s), "0/2 nodes are available: 2 node(s) didn't satisfy existing pods anti-affinity rules.");
    // Other namespaces are not matched unless the term names them.
    let mut other = pod("o", json!({"app": "web"}), json!({}));
    other.metadata.namespace = Some("other".into());
    assert!(pick(&other, &s, None).is_ok());
}

#[test]
fn required_affinity_co_locates() {
    let nodes = vec![node("a", &[("zone", "z1")], json!([])), node("b", &[("zone", "z2")], json!([])), node("c", &[("zone", "z2")], json!([]))];
    let with_db = json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "zone"}]}}});
    let s = snap(&nodes, vec![on("c", pod("db", json!({"app": "db"}), json!({})))]);
    assert_eq!(pick(&pod("p", json!({}), with_db.clone()), &s, None).unwrap(), "b");
    // Nothing matches: unschedulable, unless the pod matches its own terms (first of a group).
    let s = snap(&nodes, vec![]);
    assert_eq!(message(&pod("p", json!({}), with_db.clone()), &s), "0/3 nodes are available: 3 node(s) didn't match pod affinity rules.");
    assert!(pick(&pod("p", json!({"app": "db"}), with_db), &s, None).is_ok());
}

#[test]
fn namespace_selector_reaches_other_namespaces() {
    let term = json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "db"}}, "namespaceSelector": {"matchLabels": {"team": "data"}}, "topologyKey": "kubernetes.io/hostname"}]}}});
    let mut db = pod("db", json!({"app": "db"}), json!({}));
    db.metadata.namespace = Some("data".into());
    let mut s = snap(&two(), vec![on("b", db)]);
    assert!(pick(&pod("p", json!({}), term.clone()), &s, None).is_err());
    s.namespaces.insert("data".into(), [("team".to_string(), "data".to_string())].into());
    assert_eq!(pick(&pod("p", json!({}), term), &s, None).unwrap(), "b");
}

#[test]
fn host_ports_conflict() {
    let port = |ip: &str, proto: &str| json!({"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80, "hostPort": 8080, "hostIP": ip, "protocol": proto}]}]});
    let s = snap(&two(), vec![on("a", pod("x", json!({}), port("", "TCP")))]);
    assert_eq!(pick(&pod("p", json!({}), port("127.0.0.1", "TCP")), &s, None).unwrap(), "b");
    let full = snap(&two(), vec![on("a", pod("x", json!({}), port("", "TCP"))), on("b", pod("y", json!({}), port("10.0.0.1", "TCP")))]);
    assert_eq!(message(&pod("p", json!({}), port("0.0.0.0", "TCP")), &full), "0/2 nodes are available: 2 node(s) didn't have free ports for the requested pod ports.");
    // Another IP on b, or another protocol, is free.
    assert_eq!(pick(&pod("p", json!({}), port("10.0.0.2", "TCP")), &full, None).unwrap(), "b");
    assert!(pick(&pod("p", json!({}), port("", "UDP")), &full, None).is_ok());
}

fn spread(key: &str, skew: i32, extra: Value) -> Value {
    let mut c = json!({"maxSkew": skew, "topologyKey": key, "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "s"}}});
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    json!({"topologySpreadConstraints": [c]})
}

#[test]
fn topology_spread_do_not_schedule() {
    let nodes = vec![node("a", &[("zone", "z1")], json!([])), node("b", &[("zone", "z1")], json!([])), node("c", &[("zone", "z2")], json!([])), node("d", &[], json!([]))];
    let s_pod = |n: &str| pod(n, json!({"app": "s"}), spread("zone", 1, json!({})));
    let s = snap(&nodes, vec![on("a", s_pod("s1"))]);
    assert_eq!(pick(&s_pod("s2"), &s, None).unwrap(), "c");
    let lone = snap(&nodes[3..], vec![]);
    assert_eq!(message(&s_pod("s2"), &lone), "0/1 nodes are available: 1 node(s) didn't match pod topology spread constraints (missing required label).");
    // minDomains above the domain count makes the global minimum 0.
    let s = snap(&nodes, vec![on("a", s_pod("s1")), on("c", s_pod("s2"))]);
    assert!(pick(&s_pod("s3"), &s, None).is_ok());
    let min3 = pod("m", json!({"app": "s"}), spread("zone", 1, json!({"minDomains": 3})));
    assert_eq!(message(&min3, &s), "0/4 nodes are available: 1 node(s) didn't match pod topology spread constraints (missing required label), 3 node(s) didn't match pod topology spread constraints.");
    // nodeAffinityPolicy Honor (default): nodes the pod can't go to are no domains.
    let only_z1 = |extra: Value| {
        let mut v = spread("zone", 1, extra);
        v["nodeSelector"] = json!({"zone": "z1"});
        pod("z", json!({"app": "s"}), v)
    };
    let s = snap(&nodes, vec![on("a", s_pod("s1")), on("b", s_pod("s2"))]);
    assert!(pick(&only_z1(json!({})), &s, None).is_ok());
    assert_eq!(
        message(&only_z1(json!({"nodeAffinityPolicy": "Ignore"})), &s),
        "0/4 nodes are available: 2 node(s) didn't match Pod's node affinity/selector, 2 node(s) didn't match pod topology spread constraints."
    );
}

#[test]
fn scores_prefer_affinity_spread_and_untainted_nodes() {
    let nodes = vec![node("a", &[("disk", "ssd")], json!([{"key": "k", "value": "v", "effect": "PreferNoSchedule"}])), node("b", &[], json!([]))];
    let s = snap(&nodes, vec![]);
    assert_eq!(pick(&pod("p", json!({}), json!({})), &s, None).unwrap(), "b");
    let prefers_ssd = json!({"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 100, "preference": {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}}]}}});
    // (TaintToleration weighs 3, NodeAffinity 2: the taint still wins.)
    assert_eq!(pick(&pod("p", json!({}), prefers_ssd.clone()), &s, None).unwrap(), "b");
    let s = snap(&[node("a", &[("disk", "ssd")], json!([])), node("b", &[], json!([]))], vec![on("a", pod("x", json!({}), json!({})))]);
    assert_eq!(pick(&pod("p", json!({}), prefers_ssd), &s, None).unwrap(), "a");
    // Preferred pod affinity to a pod on a.
    let s = snap(&two(), vec![on("a", pod("db", json!({"app": "db"}), json!({})))]);
    let near_db = json!({"affinity": {"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 50, "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "kubernetes.io/hostname"}}]}}});
    assert_eq!(pick(&pod("p", json!({}), near_db), &s, None).unwrap(), "a");
    // The default spread of a group: the second replica goes to the other node, though its
    // requests make the first node the less allocated one.
    let small = |n: &str| pod(n, json!({"app": "r"}), json!({"containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": "10m"}}}]}));
    let big = pod("big", json!({}), json!({"containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": "300m"}}}]}));
    let s = snap(&two(), vec![on("a", small("r1")), on("b", big)]);
    let group = LabelSelector { match_labels: Some([("app".to_string(), "r".to_string())].into()), match_expressions: None };
    assert_eq!(pick(&small("r2"), &s, None).unwrap(), "a");
    assert_eq!(pick(&small("r2"), &s, Some(group)).unwrap(), "b");
}

#[test]
fn preemption_picks_victims_of_lower_priority() {
    let cpu = |n: &str, cpu: &str, prio: i32| pod(n, json!({}), json!({"priority": prio, "containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": cpu}}}]}));
    let s = snap(&two(), vec![on("a", cpu("low", "1500m", 0)), on("a", cpu("tiny", "100m", 0)), on("b", cpu("mid", "1500m", 5))]);
    let high = cpu("high", "1", 10);
    let statuses = pick(&high, &s, None).unwrap_err();
    assert!(preemption::eligible(&high, &s).is_ok());
    let c = preemption::find(&high, &s, &statuses).unwrap_or_else(|m| panic!("{m}"));
    // a's victims are of lower priority than b's; `tiny` may stay.
    assert_eq!((c.node.as_str(), c.victims.iter().map(|p| p.name_any()).collect::<Vec<_>>()), ("a", vec!["low".to_string()]));
    // Nothing of lower priority: the dry run's own message.
    let equal = cpu("eq", "1", 0);
    let statuses = pick(&equal, &s, None).unwrap_err();
    assert_eq!(preemption::find(&equal, &s, &statuses).err().unwrap(), "0/2 nodes are available: 2 No preemption victims found for incoming pod.");
    let mut never = cpu("never", "1", 10);
    never.spec.as_mut().unwrap().preemption_policy = Some("Never".into());
    assert_eq!(preemption::eligible(&never, &s).unwrap_err(), "not eligible due to preemptionPolicy=Never.");
    // A node the pod can't use anyway is not helped.
    let pinned = pod("pin", json!({}), json!({"priority": 10, "nodeSelector": {"kubernetes.io/hostname": "b"}, "containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": "1"}}}]}));
    let statuses = pick(&pinned, &s, None).unwrap_err();
    let c = preemption::find(&pinned, &s, &statuses).unwrap_or_else(|m| panic!("{m}"));
    assert_eq!((c.node.as_str(), c.victims.len()), ("b", 1));
}

