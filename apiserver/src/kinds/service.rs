//! Services: defaulting (type, ports, traffic policies, IP families), validation (ports,
//! type-specific rules, cluster IP immutability), the clusterIP/clusterIPs normalization and
//! update patching upstream's service REST does, and `kubectl get services` columns.

use std::collections::{BTreeMap, HashSet};

use serde_json::{json, Value};

use super::common::{self, arr, int, s};
use crate::registry::strategy::default_fields;
use crate::registry::table::{self, Column};
use crate::registry::{NameRule, ReqCtx, Strategy};
use crate::validation::{FieldError, FieldErrors};

pub struct ServiceStrategy;

const TYPES: &[&str] = &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];

fn svc_type(svc: &Value) -> &str {
    s(&svc["spec"]["type"])
}

fn is_headless(svc: &Value) -> bool {
    s(&svc["spec"]["clusterIP"]) == "None"
}

fn externally_accessible(svc: &Value) -> bool {
    match svc_type(svc) {
        "LoadBalancer" | "NodePort" => true,
        "ClusterIP" => !arr(&svc["spec"]["externalIPs"]).is_empty(),
        _ => false,
    }
}

fn needs_cluster_ip(svc: &Value) -> bool {
    svc_type(svc) != "ExternalName"
}

fn needs_node_port(svc: &Value) -> bool {
    matches!(svc_type(svc), "NodePort" | "LoadBalancer")
}

fn needs_hc_node_port(svc: &Value) -> bool {
    svc_type(svc) == "LoadBalancer" && s(&svc["spec"]["externalTrafficPolicy"]) == "Local"
}

/// Upstream's `NormalizeClusterIPs`: keeps `clusterIP` and `clusterIPs` in step.
fn normalize_cluster_ips(new: &mut Value, old: Option<&Value>) {
    let spec = common::child(new, "spec");
    let ip = s(&spec["clusterIP"]).to_string();
    let ips_empty = arr(&spec["clusterIPs"]).is_empty();
    let Some(old) = old else {
        if !ip.is_empty() && ips_empty {
            spec["clusterIPs"] = json!([ip]);
        }
        return;
    };
    let os = &old["spec"];
    let old_ip = s(&os["clusterIP"]);
    if !arr(&os["clusterIPs"]).is_empty() && ips_empty && old_ip == ip {
        spec["clusterIPs"] = os["clusterIPs"].clone();
    }
    if old_ip != ip {
        let same_ips = common::same(&spec["clusterIPs"], &os["clusterIPs"]);
        if !old_ip.is_empty() && ip.is_empty() {
            if same_ips {
                common::remove(spec, "clusterIPs");
            }
        } else if same_ips {
            spec["clusterIPs"] = json!([ip]);
        }
    }
}

/// Upstream's `patchAllocatedValues`: an update that omits allocated values keeps them.
fn patch_allocated_values(new: &mut Value, old: &Value) {
    if needs_cluster_ip(old) && needs_cluster_ip(new) {
        let spec = common::child(new, "spec");
        if s(&spec["clusterIP"]).is_empty() && !s(&old["spec"]["clusterIP"]).is_empty() {
            spec["clusterIP"] = old["spec"]["clusterIP"].clone();
        }
        if arr(&spec["clusterIPs"]).is_empty() && !arr(&old["spec"]["clusterIPs"]).is_empty() {
            spec["clusterIPs"] = old["spec"]["clusterIPs"].clone();
        }
    }
    if needs_node_port(old) && needs_node_port(new) {
        let used = |svc: &Value| -> HashSet<i64> {
            arr(&svc["spec"]["ports"]).iter().filter_map(|p| int(&p["nodePort"])).filter(|n| *n != 0).collect()
        };
        let in_both: HashSet<i64> = used(old).intersection(&used(new)).copied().collect();
        let by_name: BTreeMap<String, i64> = arr(&old["spec"]["ports"])
            .iter()
            .map(|p| (s(&p["name"]).to_string(), int(&p["nodePort"]).unwrap_or(0)))
            .collect();
        common::each_mut(common::child(new, "spec"), "ports", |p| {
            if int(&p["nodePort"]).unwrap_or(0) == 0 {
                if let Some(old_port) = by_name.get(s(&p["name"])).filter(|n| **n != 0 && !in_both.contains(n)) {
                    p["nodePort"] = json!(old_port);
                }
            }
        });
    }
    if needs_hc_node_port(old) && needs_hc_node_port(new) && int(&new["spec"]["healthCheckNodePort"]).unwrap_or(0) == 0 {
        if let Some(hc) = int(&old["spec"]["healthCheckNodePort"]) {
            new["spec"]["healthCheckNodePort"] = json!(hc);
        }
    }
}

/// Upstream's `dropTypeDependentFields`: fields the old type needed and the new one does not
/// are cleared when the client left them unchanged.
fn drop_type_dependent_fields(new: &mut Value, old: &Value) {
    let spec_same = |new: &Value, f: &str| common::same(&new["spec"][f], &old["spec"][f]);
    if needs_cluster_ip(old) && !needs_cluster_ip(new) {
        for f in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
            if spec_same(new, f) {
                common::remove(common::child(new, "spec"), f);
            }
        }
    }
    if needs_node_port(old) && !needs_node_port(new) {
        let olds = arr(&old["spec"]["ports"]).to_vec();
        common::each_mut(common::child(new, "spec"), "ports", |p| {
            let n = int(&p["nodePort"]).unwrap_or(0);
            if n != 0 && olds.iter().any(|o| int(&o["nodePort"]) == Some(n)) {
                common::remove(p, "nodePort");
            }
        });
    }
    if needs_hc_node_port(old) && !needs_hc_node_port(new) && spec_same(new, "healthCheckNodePort") {
        common::remove(common::child(new, "spec"), "healthCheckNodePort");
    }
    if svc_type(new) != "LoadBalancer" {
        for f in ["allocateLoadBalancerNodePorts", "loadBalancerClass"] {
            if spec_same(new, f) {
                common::remove(common::child(new, "spec"), f);
            }
        }
    }
    if !externally_accessible(new) && spec_same(new, "externalTrafficPolicy") {
        common::remove(common::child(new, "spec"), "externalTrafficPolicy");
    }
}

impl Strategy for ServiceStrategy {
    fn apply_defaults(&self, obj: &mut Value) {
        let spec = common::child(obj, "spec");
        common::set_default(spec, "sessionAffinity", "None");
        if s(&spec["sessionAffinity"]) == "None" {
            common::remove(spec, "sessionAffinityConfig");
        }
        common::set_default(spec, "type", "ClusterIP");
        common::each_mut(spec, "ports", |p| {
            common::set_default(p, "protocol", "TCP");
            let unset = match &p["targetPort"] {
                Value::Null => true,
                Value::Number(n) => n.as_i64() == Some(0),
                Value::String(t) => t.is_empty(),
                _ => false,
            };
            if unset {
                p["targetPort"] = p["port"].clone();
            }
        });
        let accessible = externally_accessible(obj);
        let spec = common::child(obj, "spec");
        if accessible {
            common::set_default(spec, "externalTrafficPolicy", "Cluster");
        }
        let t = s(&spec["type"]).to_string();
        if matches!(t.as_str(), "ClusterIP" | "NodePort" | "LoadBalancer") {
            common::set_default(spec, "internalTrafficPolicy", "Cluster");
        }
        if t == "LoadBalancer" {
            common::set_default(spec, "allocateLoadBalancerNodePorts", true);
        }
    }

    fn prepare_for_create(&self, _ctx: &ReqCtx, obj: &mut Value) {
        normalize_cluster_ips(obj, None);
        default_ip_families(obj);
    }

    fn prepare_for_update(&self, _ctx: &ReqCtx, new: &mut Value, old: &Value) {
        patch_allocated_values(new, old);
        normalize_cluster_ips(new, Some(old));
        drop_type_dependent_fields(new, old);
        default_ip_families(new);
    }

    fn validate(&self, _ctx: &ReqCtx, obj: &Value) -> FieldErrors {
        validate_service(obj)
    }

    fn validate_update(&self, _ctx: &ReqCtx, new: &Value, old: &Value) -> FieldErrors {
        let mut errs = validate_service(new);
        errs.extend(validate_cluster_ips_update(old, new));
        errs
    }

    fn validate_status_update(&self, _ctx: &ReqCtx, new: &Value, _old: &Value) -> FieldErrors {
        let mut errs = Vec::new();
        for (i, ing) in arr(&new["status"]["loadBalancer"]["ingress"]).iter().enumerate() {
            let ip = s(&ing["ip"]);
            if !ip.is_empty() && !common::is_ip(ip) {
                errs.push(FieldError::invalid(format!("status.loadBalancer.ingress[{i}].ip"), ip, "must be a valid IP address"));
            }
        }
        errs
    }

    fn name_rule(&self) -> NameRule {
        NameRule::Dns1035Label
    }

    fn selectable_fields(&self, obj: &Value) -> BTreeMap<String, String> {
        let mut f = default_fields(obj);
        f.insert("spec.clusterIP".into(), s(&obj["spec"]["clusterIP"]).to_string());
        f.insert("spec.type".into(), svc_type(obj).to_string());
        f
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            table::name_column(),
            Column::new("Type", "string", |o| json!(svc_type(o))),
            Column::new("Cluster-IP", "string", |o| {
                table::or_none(arr(&o["spec"]["clusterIPs"]).first().map(s).unwrap_or_default())
            }),
            Column::new("External-IP", "string", |o| json!(external_ip(o))),
            Column::new("Port(s)", "string", |o| table::or_none(&port_string(o))),
            table::age_column(),
            Column::new("Selector", "string", |o| table::map_to_selector(&o["spec"]["selector"])).wide(),
        ]
    }
}

/// IP family policy and families for a service that needs a cluster IP (single-stack
/// IPv4 cluster, or the family of a requested IP). Upstream does this while allocating.
fn default_ip_families(obj: &mut Value) {
    if !needs_cluster_ip(obj) {
        return;
    }
    let headless_without_selector = is_headless(obj) && common::len(&obj["spec"]["selector"]) == 0;
    let spec = common::child(obj, "spec");
    common::set_default(spec, "ipFamilyPolicy", if headless_without_selector { "RequireDualStack" } else { "SingleStack" });
    if arr(&spec["ipFamilies"]).is_empty() {
        let first = arr(&spec["clusterIPs"]).first().map(s).unwrap_or_default();
        let family = if first.contains(':') { "IPv6" } else { "IPv4" };
        spec["ipFamilies"] = json!([family]);
    }
}

fn validate_service(svc: &Value) -> FieldErrors {
    let mut errs = Vec::new();
    let spec = &svc["spec"];
    let ports = arr(&spec["ports"]);
    let t = svc_type(svc);
    let headless = is_headless(svc);
    if ports.is_empty() && !headless && t != "ExternalName" {
        errs.push(FieldError::required("spec.ports", ""));
    }
    let first_ip = arr(&spec["clusterIPs"]).first().map(s).unwrap_or_default().to_string();
    match t {
        "LoadBalancer" => {
            for (i, p) in ports.iter().enumerate() {
                if int(&p["port"]) == Some(10250) {
                    errs.push(FieldError::invalid(
                        format!("spec.ports[{i}]"),
                        10250,
                        "may not expose port 10250 externally since it is used by kubelet",
                    ));
                }
            }
            if headless {
                errs.push(FieldError::invalid("spec.clusterIPs[0]", first_ip.as_str(), "may not be set to 'None' for LoadBalancer services"));
            }
        }
        "NodePort" if headless => {
            errs.push(FieldError::invalid("spec.clusterIPs[0]", first_ip.as_str(), "may not be set to 'None' for NodePort services"));
        }
        "ExternalName" => {
            if !arr(&spec["clusterIPs"]).is_empty() {
                errs.push(FieldError::forbidden("spec.clusterIPs", "may not be set for ExternalName services"));
            }
            if !arr(&spec["ipFamilies"]).is_empty() {
                errs.push(FieldError::forbidden("spec.ipFamilies", "may not be set for ExternalName services"));
            }
            if !spec["ipFamilyPolicy"].is_null() {
                errs.push(FieldError::forbidden("spec.ipFamilyPolicy", "may not be set for ExternalName services"));
            }
            let cname = s(&spec["externalName"]).trim_end_matches('.');
            if cname.is_empty() {
                errs.push(FieldError::required("spec.externalName", ""));
            } else {
                common::dns1123_subdomain(&mut errs, cname, "spec.externalName");
            }
        }
        _ => {}
    }
    let mut names = HashSet::new();
    for (i, p) in ports.iter().enumerate() {
        let pp = format!("spec.ports[{i}]");
        let name = s(&p["name"]);
        if ports.len() > 1 && name.is_empty() {
            errs.push(FieldError::required(format!("{pp}.name"), ""));
        } else if !name.is_empty() {
            common::dns1123_label(&mut errs, name, &format!("{pp}.name"));
            if !names.insert(name) {
                errs.push(FieldError::duplicate(format!("{pp}.name"), name));
            }
        }
        let port = int(&p["port"]).unwrap_or(0);
        for m in common::port_num_errors(port) {
            errs.push(FieldError::invalid(format!("{pp}.port"), port, m));
        }
        common::validate_enum(&mut errs, &p["protocol"], &format!("{pp}.protocol"), common::PROTOCOLS);
        common::validate_port_num_or_name(&mut errs, &p["targetPort"], &format!("{pp}.targetPort"));
        if let Some(ap) = p["appProtocol"].as_str() {
            crate::validation::push_invalid(&mut errs, &format!("{pp}.appProtocol"), ap, crate::validation::qualified_name(ap));
        }
        if let Some(np) = int(&p["nodePort"]).filter(|n| *n != 0) {
            if t == "ClusterIP" {
                errs.push(FieldError::forbidden(format!("{pp}.nodePort"), "may not be used when `type` is 'ClusterIP'"));
            } else {
                for m in common::port_num_errors(np) {
                    errs.push(FieldError::invalid(format!("{pp}.nodePort"), np, m));
                }
            }
        }
    }
    let mut node_ports = HashSet::new();
    let mut port_keys = HashSet::new();
    for (i, p) in ports.iter().enumerate() {
        let proto = s(&p["protocol"]);
        if let Some(np) = int(&p["nodePort"]).filter(|n| *n != 0) {
            if !node_ports.insert((proto, np)) {
                errs.push(FieldError::duplicate(format!("spec.ports[{i}].nodePort"), np));
            }
        }
        let port = int(&p["port"]).unwrap_or(0);
        if !port_keys.insert((proto, port)) {
            errs.push(FieldError::duplicate(format!("spec.ports[{i}]"), json!({"port": port, "protocol": proto})));
        }
    }
    common::validate_labels(&mut errs, &spec["selector"], "spec.selector");
    common::validate_enum(&mut errs, &spec["sessionAffinity"], "spec.sessionAffinity", &["ClientIP", "None"]);
    common::validate_enum(&mut errs, &spec["type"], "spec.type", TYPES);
    // Cluster IPs: valid addresses (or None), first one equal to clusterIP.
    let ips = arr(&spec["clusterIPs"]);
    for (i, ip) in ips.iter().enumerate() {
        let ip = s(ip);
        if !(common::is_ip(ip) || (i == 0 && ip == "None")) {
            errs.push(FieldError::invalid(
                format!("spec.clusterIPs[{i}]"),
                ip,
                "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
            ));
        }
    }
    if !ips.is_empty() && s(&spec["clusterIP"]) != s(&ips[0]) {
        errs.push(FieldError::invalid("spec.clusterIPs", spec["clusterIPs"].clone(), "first value must match `clusterIP`"));
    }
    common::validate_optional_enum(&mut errs, &spec["ipFamilyPolicy"], "spec.ipFamilyPolicy", &["SingleStack", "PreferDualStack", "RequireDualStack"]);
    for (i, f) in arr(&spec["ipFamilies"]).iter().enumerate() {
        common::validate_optional_enum(&mut errs, f, &format!("spec.ipFamilies[{i}]"), &["IPv4", "IPv6"]);
    }
    common::validate_optional_enum(&mut errs, &spec["externalTrafficPolicy"], "spec.externalTrafficPolicy", &["Cluster", "Local"]);
    common::validate_optional_enum(&mut errs, &spec["internalTrafficPolicy"], "spec.internalTrafficPolicy", &["Cluster", "Local"]);
    for (i, ip) in arr(&spec["externalIPs"]).iter().enumerate() {
        if !common::is_ip(s(ip)) {
            errs.push(FieldError::invalid(format!("spec.externalIPs[{i}]"), s(ip), "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"));
        }
    }
    errs
}

/// Upstream's `validateUpgradeDowngradeClusterIPs`: allocated cluster IPs never change.
fn validate_cluster_ips_update(old: &Value, new: &Value) -> FieldErrors {
    let mut errs = Vec::new();
    if svc_type(new) == "ExternalName" || svc_type(old) == "ExternalName" || (is_headless(old) && is_headless(new)) {
        return errs;
    }
    let (o, n) = (arr(&old["spec"]["clusterIPs"]), arr(&new["spec"]["clusterIPs"]));
    let value = new["spec"]["clusterIPs"].clone();
    let value = if value.is_null() { json!([]) } else { value };
    if o.len() == n.len() {
        for (i, ip) in o.iter().enumerate() {
            if ip != &n[i] {
                errs.push(FieldError::invalid(format!("spec.clusterIPs[{i}]"), value.clone(), "may not change once set"));
            }
        }
    } else if o.len() > n.len() {
        if n.is_empty() {
            errs.push(FieldError::invalid("spec.clusterIPs[0]", value.clone(), "primary clusterIP can not be unset"));
        }
        if !o.is_empty() && !n.is_empty() && n[0] != o[0] {
            errs.push(FieldError::invalid("spec.clusterIPs[0]", value.clone(), "may not change once set"));
        }
        if n.len() == 1 && s(&new["spec"]["ipFamilyPolicy"]) != "SingleStack" {
            errs.push(FieldError::invalid(
                "spec.clusterIPs[0]",
                value,
                "`ipFamilyPolicy` must be set to 'SingleStack' when releasing the secondary clusterIP",
            ));
        }
    } else if !o.is_empty() && n[0] != o[0] {
        errs.push(FieldError::invalid("spec.clusterIPs[0]", value, "may not change once set"));
    }
    errs
}

/// `kubectl`'s `makePortString`: `80/TCP`, `80:30080/TCP`.
fn port_string(svc: &Value) -> String {
    arr(&svc["spec"]["ports"])
        .iter()
        .map(|p| {
            let port = int(&p["port"]).unwrap_or(0);
            let proto = s(&p["protocol"]);
            match int(&p["nodePort"]).filter(|n| *n > 0) {
                Some(np) => format!("{port}:{np}/{proto}"),
                None => format!("{port}/{proto}"),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// `kubectl`'s `loadBalancerStatusStringer` (non-wide: long lists are cut at 16 characters).
pub fn load_balancer_ips(lb: &Value) -> String {
    let list: Vec<&str> = arr(&lb["ingress"])
        .iter()
        .filter_map(|i| [s(&i["ip"]), s(&i["hostname"])].into_iter().find(|x| !x.is_empty()))
        .collect();
    let r = list.join(",");
    if r.len() > 16 { format!("{}...", &r[..13]) } else { r }
}

/// `kubectl`'s `getServiceExternalIP`.
fn external_ip(svc: &Value) -> String {
    let external: Vec<&str> = arr(&svc["spec"]["externalIPs"]).iter().map(s).collect();
    match svc_type(svc) {
        "ClusterIP" | "NodePort" => {
            if external.is_empty() { "<none>".into() } else { external.join(",") }
        }
        "LoadBalancer" => {
            let lb = load_balancer_ips(&svc["status"]["loadBalancer"]);
            if !external.is_empty() {
                let mut all: Vec<&str> = if lb.is_empty() { vec![] } else { lb.split(',').collect() };
                all.extend(external);
                all.join(",")
            } else if !lb.is_empty() {
                lb
            } else {
                "<pending>".into()
            }
        }
        "ExternalName" => s(&svc["spec"]["externalName"]).to_string(),
        _ => "<unknown>".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(mut svc: Value) -> (Value, Vec<String>) {
        ServiceStrategy.apply_defaults(&mut svc);
        ServiceStrategy.prepare_for_create(&ReqCtx::default(), &mut svc);
        let errs = ServiceStrategy.validate(&ReqCtx::default(), &svc).iter().map(ToString::to_string).collect();
        (svc, errs)
    }

    #[test]
    fn defaults() {
        let (svc, errs) = create(json!({"metadata": {"name": "s"}, "spec": {"selector": {"app": "a"}, "ports": [{"port": 80}]}}));
        assert!(errs.is_empty(), "{errs:?}");
        let spec = &svc["spec"];
        assert_eq!(spec["type"], "ClusterIP");
        assert_eq!(spec["sessionAffinity"], "None");
        assert_eq!(spec["ports"][0]["protocol"], "TCP");
        assert_eq!(spec["ports"][0]["targetPort"], 80);
        assert_eq!(spec["internalTrafficPolicy"], "Cluster");
        assert_eq!(spec["ipFamilyPolicy"], "SingleStack");
        assert_eq!(spec["ipFamilies"], json!(["IPv4"]));
        assert!(spec.get("externalTrafficPolicy").is_none());
        let (svc, _) = create(json!({"spec": {"type": "NodePort", "ports": [{"port": 80, "targetPort": "http"}]}}));
        assert_eq!(svc["spec"]["externalTrafficPolicy"], "Cluster");
        assert_eq!(svc["spec"]["ports"][0]["targetPort"], "http");
    }

    #[test]
    fn validation() {
        let (_, errs) = create(json!({"spec": {}}));
        assert_eq!(errs, vec!["spec.ports: Required value"]);
        let (_, errs) = create(json!({"spec": {"type": "Weird", "ports": [{"port": 80}, {"port": 0, "name": "b"}]}}));
        assert!(errs.contains(&"spec.ports[0].name: Required value".to_string()), "{errs:?}");
        assert!(errs.contains(&"spec.ports[1].port: Invalid value: 0: must be between 1 and 65535, inclusive".to_string()), "{errs:?}");
        assert!(errs.iter().any(|e| e.starts_with("spec.type: Unsupported value: \"Weird\"")), "{errs:?}");
        let (_, errs) = create(json!({"spec": {"clusterIP": "None"}}));
        assert!(errs.is_empty(), "{errs:?}");
        let (_, errs) = create(json!({"spec": {"type": "ExternalName", "externalName": "example.com"}}));
        assert!(errs.is_empty(), "{errs:?}");
    }

    #[test]
    fn cluster_ip_is_kept_and_immutable() {
        let (mut old, _) = create(json!({"spec": {"ports": [{"port": 80}]}}));
        old["spec"]["clusterIP"] = json!("10.96.0.10");
        old["spec"]["clusterIPs"] = json!(["10.96.0.10"]);
        let mut new = json!({"spec": {"ports": [{"port": 81}]}});
        ServiceStrategy.apply_defaults(&mut new);
        ServiceStrategy.prepare_for_update(&ReqCtx::default(), &mut new, &old);
        assert_eq!(new["spec"]["clusterIP"], "10.96.0.10");
        assert!(ServiceStrategy.validate_update(&ReqCtx::default(), &new, &old).is_empty());
        new["spec"]["clusterIP"] = json!("10.96.0.11");
        ServiceStrategy.prepare_for_update(&ReqCtx::default(), &mut new, &old);
        let errs = ServiceStrategy.validate_update(&ReqCtx::default(), &new, &old);
        assert_eq!(errs[0].to_string(), "spec.clusterIPs[0]: Invalid value: [\"10.96.0.11\"]: may not change once set");
    }

    #[test]
    fn columns() {
        let svc = json!({"spec": {"type": "NodePort", "clusterIPs": ["10.0.0.1"], "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}]}});
        let cols = ServiceStrategy.columns();
        let cells: Vec<Value> = cols.iter().map(|c| (c.cell)(&svc)).collect();
        assert_eq!(cells[1], "NodePort");
        assert_eq!(cells[2], "10.0.0.1");
        assert_eq!(cells[3], "<none>");
        assert_eq!(cells[4], "80:30080/TCP,53/UDP");
        assert_eq!(cells[6], "<none>");
        let lb = json!({"spec": {"type": "LoadBalancer"}});
        assert_eq!(external_ip(&lb), "<pending>");
    }
}
