//! Quota evaluation (upstream's `pkg/quota/v1` and its core evaluators): what one object
//! charges against a ResourceQuota, which quotas cover it (resources and scopes), and
//! resource lists as sums of quantities. Pure functions over JSON objects, shared by the
//! ResourceQuota admission plugin (charging one write) and the resource quota controller
//! (summing a namespace's objects).
//!
//! Evaluators, by group/resource:
//! - pods: `pods` (non-terminal), `count/pods`, `cpu`/`requests.cpu`, `limits.cpu`, the same for
//!   `memory` and `ephemeral-storage`, `hugepages-*`, extended resources as `requests.<name>`;
//!   scopes Terminating, NotTerminating, BestEffort, NotBestEffort, PriorityClass;
//! - services: `services`, `count/services`, `services.nodeports`, `services.loadbalancers`;
//! - persistentvolumeclaims: `persistentvolumeclaims`, `requests.storage`, and per storage class
//!   `<class>.storageclass.storage.k8s.io/{persistentvolumeclaims,requests.storage}`;
//! - every other resource: an object count, `count/<resource>[.<group>]` plus the legacy
//!   names (`configmaps`, `secrets`, `replicationcontrollers`, `resourcequotas`).

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::kinds::common::{arr, parse_quantity, s};
use crate::kinds::podspec;

/// An amount of one resource, in nano-units, and whether it prints with binary suffixes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Amount {
    pub nano: i128,
    pub binary: bool,
}

impl Amount {
    pub fn count(n: i64) -> Amount {
        Amount { nano: n as i128 * 1_000_000_000, binary: false }
    }

    /// Parses a quantity string; `None` when it is not one.
    pub fn parse(q: &str) -> Option<Amount> {
        let nano = parse_quantity(q).ok()?.0;
        Some(Amount { nano, binary: q.ends_with('i') })
    }

    fn of(v: &Value) -> Option<Amount> {
        match v {
            Value::String(q) => Amount::parse(q),
            Value::Number(n) => n.as_i64().map(Amount::count),
            _ => None,
        }
    }

    /// Upstream's canonical form (`Quantity.String()`): `500m`, `1`, `1500k`, `252Mi`.
    pub fn format(self) -> String {
        let v = self.nano;
        if v == 0 {
            return "0".into();
        }
        const GIGA: i128 = 1_000_000_000;
        if self.binary && v % GIGA == 0 && (v / GIGA).abs() >= 1024 {
            let n = v / GIGA;
            let suffixes = ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
            let mut best = None;
            for (i, suffix) in suffixes.iter().enumerate() {
                let unit = 1i128 << (10 * (i + 1));
                if n % unit == 0 {
                    best = Some((n / unit, *suffix));
                }
            }
            if let Some((m, suffix)) = best {
                return format!("{m}{suffix}");
            }
        }
        let suffixes = [("E", 27), ("P", 24), ("T", 21), ("G", 18), ("M", 15), ("k", 12), ("", 9), ("m", 6), ("u", 3), ("n", 0)];
        for (suffix, exp) in suffixes {
            let unit = 10i128.pow(exp);
            if v % unit == 0 {
                return format!("{}{suffix}", v / unit);
            }
        }
        v.to_string()
    }
}

/// A resource list: resource name → amount.
pub type Usage = BTreeMap<String, Amount>;

/// Reads a ResourceList (`{"cpu": "1", ...}`); unparsable entries are skipped.
pub fn parse_list(v: &Value) -> Usage {
    v.as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, q)| Amount::of(q).map(|a| (k.clone(), a)))
        .collect()
}

/// A ResourceList as JSON, canonical quantities.
pub fn to_json(u: &Usage) -> Value {
    Value::Object(u.iter().map(|(k, a)| (k.clone(), json!(a.format()))).collect::<Map<String, Value>>())
}

/// `a + b`, per resource (the format of `a`'s entry wins unless it is zero, as upstream's
/// `Quantity.Add`).
pub fn add(a: &mut Usage, b: &Usage) {
    for (k, v) in b {
        a.entry(k.clone())
            .and_modify(|x| {
                if x.nano == 0 {
                    x.binary = v.binary;
                }
                x.nano += v.nano;
            })
            .or_insert(*v);
    }
}

/// `a - b`, never below zero per resource (upstream's `SubtractWithNonNegativeResult`).
pub fn subtract_non_negative(a: &Usage, b: &Usage) -> Usage {
    a.iter()
        .map(|(k, v)| (k.clone(), Amount { nano: (v.nano - b.get(k).map_or(0, |x| x.nano)).max(0), binary: v.binary }))
        .collect()
}

/// Only the entries named in `names` (upstream's `quota.Mask`).
pub fn mask<'a>(u: &Usage, names: impl IntoIterator<Item = &'a String>) -> Usage {
    names.into_iter().filter_map(|n| u.get(n).map(|a| (n.clone(), *a))).collect()
}

/// Whether two lists hold the same amounts (formats aside).
pub fn equal(a: &Usage, b: &Usage) -> bool {
    a.len() == b.len() && a.iter().all(|(k, v)| b.get(k).is_some_and(|x| x.nano == v.nano))
}

/// upstream's `prettyPrint`: `cpu=500m,pods=1`, sorted by name.
pub fn pretty(u: &Usage) -> String {
    u.iter().map(|(k, v)| format!("{k}={}", v.format())).collect::<Vec<_>>().join(",")
}

// ---- evaluators ----

/// Which evaluator measures a group/resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Evaluator {
    Pods,
    Services,
    PersistentVolumeClaims,
    /// An object count only.
    Count,
}

/// The evaluator of `group/plural`.
pub fn evaluator(group: &str, plural: &str) -> Evaluator {
    match (group, plural) {
        ("", "pods") => Evaluator::Pods,
        ("", "services") => Evaluator::Services,
        ("", "persistentvolumeclaims") => Evaluator::PersistentVolumeClaims,
        _ => Evaluator::Count,
    }
}

/// `count/<resource>` for the core group, `count/<resource>.<group>` otherwise.
pub fn count_name(group: &str, plural: &str) -> String {
    if group.is_empty() {
        format!("count/{plural}")
    } else {
        format!("count/{plural}.{group}")
    }
}

/// The legacy object-count names of core resources.
fn legacy_count_name(group: &str, plural: &str) -> Option<&'static str> {
    if !group.is_empty() {
        return None;
    }
    Some(match plural {
        "configmaps" => "configmaps",
        "secrets" => "secrets",
        "replicationcontrollers" => "replicationcontrollers",
        "resourcequotas" => "resourcequotas",
        "services" => "services",
        "persistentvolumeclaims" => "persistentvolumeclaims",
        "pods" => "pods",
        _ => return None,
    })
}

/// The group/resource a quota resource name counts objects of (`count/deployments.apps`,
/// `configmaps`, ...), if it is an object count.
pub fn counted_resource(name: &str) -> Option<(String, String)> {
    if let Some(rest) = name.strip_prefix("count/") {
        return Some(match rest.split_once('.') {
            Some((plural, group)) => (group.to_string(), plural.to_string()),
            None => (String::new(), rest.to_string()),
        });
    }
    match name {
        "configmaps" | "secrets" | "replicationcontrollers" | "resourcequotas" | "services" | "persistentvolumeclaims" | "pods" => {
            Some((String::new(), name.to_string()))
        }
        _ => None,
    }
}

const POD_RESOURCES: &[&str] = &[
    "pods",
    "cpu",
    "memory",
    "ephemeral-storage",
    "requests.cpu",
    "requests.memory",
    "requests.ephemeral-storage",
    "limits.cpu",
    "limits.memory",
    "limits.ephemeral-storage",
];
const SERVICE_RESOURCES: &[&str] = &["services", "services.nodeports", "services.loadbalancers"];
const STORAGE_CLASS_SUFFIX: &str = ".storageclass.storage.k8s.io/";

/// A resource name native to Kubernetes (no domain, or a `kubernetes.io` one).
fn is_native(name: &str) -> bool {
    match name.split_once('/') {
        None => true,
        Some((domain, _)) => domain == "kubernetes.io" || domain.ends_with(".kubernetes.io"),
    }
}

/// Of the quota resource names `names`, those the evaluator of `group/plural` measures
/// (upstream's `MatchingResources`).
pub fn matching_resources(group: &str, plural: &str, names: &[String]) -> Vec<String> {
    let count = count_name(group, plural);
    names
        .iter()
        .filter(|n| {
            let n = n.as_str();
            if n == count || (legacy_count_name(group, plural) == Some(n) && !matches!(n, "pods" | "services" | "persistentvolumeclaims")) {
                return true;
            }
            match evaluator(group, plural) {
                Evaluator::Pods => {
                    POD_RESOURCES.contains(&n)
                        || n.starts_with("hugepages-")
                        || n.starts_with("requests.hugepages-")
                        || n.strip_prefix("requests.").is_some_and(|r| !is_native(r))
                }
                Evaluator::Services => SERVICE_RESOURCES.contains(&n),
                Evaluator::PersistentVolumeClaims => {
                    n == "persistentvolumeclaims"
                        || n == "requests.storage"
                        || n.split_once(STORAGE_CLASS_SUFFIX).is_some_and(|(_, r)| r == "persistentvolumeclaims" || r == "requests.storage")
                }
                Evaluator::Count => false,
            }
        })
        .cloned()
        .collect()
}

/// The scope selectors of a quota: `spec.scopes` (as `Exists`) and `spec.scopeSelector`.
pub fn scope_selectors(quota: &Value) -> Vec<Value> {
    let mut out: Vec<Value> = arr(&quota["spec"]["scopes"]).iter().map(|s| json!({"scopeName": s, "operator": "Exists"})).collect();
    out.extend(arr(&quota["spec"]["scopeSelector"]["matchExpressions"]).iter().cloned());
    out
}

fn is_terminating(pod: &Value) -> bool {
    pod["spec"]["activeDeadlineSeconds"].as_i64().is_some_and(|s| s >= 0)
}

/// Whether the object matches one scope selector (non-pods match none).
fn matches_scope(ev: Evaluator, sel: &Value, obj: &Value) -> bool {
    if ev != Evaluator::Pods {
        return false;
    }
    let best_effort = || podspec::qos_class(&obj["spec"]) == "BestEffort";
    match s(&sel["scopeName"]) {
        "Terminating" => is_terminating(obj),
        "NotTerminating" => !is_terminating(obj),
        "BestEffort" => best_effort(),
        "NotBestEffort" => !best_effort(),
        "PriorityClass" => {
            let class = s(&obj["spec"]["priorityClassName"]);
            let values: Vec<&str> = arr(&sel["values"]).iter().map(s).collect();
            match s(&sel["operator"]) {
                "Exists" => !class.is_empty(),
                "DoesNotExist" => class.is_empty(),
                "In" => !class.is_empty() && values.contains(&class),
                "NotIn" => class.is_empty() || !values.contains(&class),
                _ => false,
            }
        }
        "CrossNamespacePodAffinity" => {
            let terms = |kind: &str| {
                let a = &obj["spec"]["affinity"][kind];
                let required = arr(&a["requiredDuringSchedulingIgnoredDuringExecution"]).iter();
                let preferred = arr(&a["preferredDuringSchedulingIgnoredDuringExecution"]).iter().map(|w| &w["podAffinityTerm"]);
                required.chain(preferred).any(|t| !arr(&t["namespaces"]).is_empty() || !t["namespaceSelector"].is_null())
            };
            terms("podAffinity") || terms("podAntiAffinity")
        }
        _ => false,
    }
}

/// The hard limits a quota enforces (its status, as upstream's admission reads them).
pub fn hard_names(quota: &Value) -> Vec<String> {
    quota["status"]["hard"].as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default()
}

/// Upstream's `generic.Matches`: the quota limits something the evaluator measures, and the
/// object matches every scope selector of the quota. `hard` are the quota's limited names.
pub fn matches(quota: &Value, hard: &[String], group: &str, plural: &str, obj: &Value) -> bool {
    let ev = evaluator(group, plural);
    !matching_resources(group, plural, hard).is_empty() && scope_selectors(quota).iter().all(|sel| matches_scope(ev, sel, obj))
}

/// Upstream's `QuotaV1Pod`: a pod is charged compute resources unless finished, or being
/// deleted past its grace period.
fn pod_is_charged(pod: &Value, now: i64) -> bool {
    let phase = s(&pod["status"]["phase"]);
    if phase == "Succeeded" || phase == "Failed" {
        return false;
    }
    let m = &pod["metadata"];
    if let (Some(ts), Some(grace)) = (m["deletionTimestamp"].as_str(), m["deletionGracePeriodSeconds"].as_i64()) {
        if let Ok(t) = chrono::DateTime::parse_from_rfc3339(ts) {
            if now > t.timestamp() + grace {
                return false;
            }
        }
    }
    true
}

fn max_into(a: &mut Usage, b: &Usage) {
    for (k, v) in b {
        let e = a.entry(k.clone()).or_insert(Amount { nano: 0, binary: v.binary });
        if v.nano > e.nano {
            *e = *v;
        }
    }
}

/// Upstream's `PodRequests`/`PodLimits`: containers summed, init containers as a maximum
/// (sidecars — restartable init containers — run beside the rest), plus the overhead.
fn pod_resources(spec: &Value, part: &str) -> Usage {
    let mut sum = Usage::new();
    let mut sidecars = Usage::new();
    let mut init_max = Usage::new();
    for ic in arr(&spec["initContainers"]) {
        let r = parse_list(&ic["resources"][part]);
        if s(&ic["restartPolicy"]) == "Always" {
            add(&mut sum, &r);
            add(&mut sidecars, &r);
        } else {
            let mut with = r.clone();
            add(&mut with, &sidecars);
            max_into(&mut init_max, &with);
        }
    }
    for c in arr(&spec["containers"]) {
        add(&mut sum, &parse_list(&c["resources"][part]));
    }
    max_into(&mut sum, &init_max);
    add(&mut sum, &parse_list(&spec["overhead"]));
    sum
}

/// Upstream's `podComputeUsageHelper`.
fn compute_usage(requests: &Usage, limits: &Usage) -> Usage {
    let mut out = Usage::new();
    out.insert("pods".into(), Amount::count(1));
    for r in ["cpu", "memory", "ephemeral-storage"] {
        if let Some(q) = requests.get(r) {
            out.insert(r.into(), *q);
            out.insert(format!("requests.{r}"), *q);
        }
        if let Some(q) = limits.get(r) {
            out.insert(format!("limits.{r}"), *q);
        }
    }
    for (r, q) in requests {
        if r.starts_with("hugepages-") {
            out.insert(r.clone(), *q);
            out.insert(format!("requests.{r}"), *q);
        } else if !is_native(r) {
            out.insert(format!("requests.{r}"), *q);
        }
    }
    out
}

/// What one object charges (upstream's evaluators' `Usage`); `now` in Unix seconds.
pub fn usage(group: &str, plural: &str, obj: &Value, now: i64) -> Usage {
    let mut out = Usage::new();
    out.insert(count_name(group, plural), Amount::count(1));
    if let Some(legacy) = legacy_count_name(group, plural) {
        out.insert(legacy.into(), Amount::count(1));
    }
    match evaluator(group, plural) {
        Evaluator::Pods => {
            out.remove("pods");
            if pod_is_charged(obj, now) {
                let spec = &obj["spec"];
                add(&mut out, &compute_usage(&pod_resources(spec, "requests"), &pod_resources(spec, "limits")));
            }
        }
        Evaluator::Services => {
            let spec = &obj["spec"];
            let ports = arr(&spec["ports"]).len() as i64;
            let (mut node_ports, mut lbs) = (0, 0);
            match s(&spec["type"]) {
                "NodePort" => node_ports = ports,
                "LoadBalancer" => {
                    node_ports = if spec["allocateLoadBalancerNodePorts"] == json!(false) {
                        arr(&spec["ports"]).iter().filter(|p| p["nodePort"].as_i64().unwrap_or(0) != 0).count() as i64
                    } else {
                        ports
                    };
                    lbs = 1;
                }
                _ => {}
            }
            out.insert("services.nodeports".into(), Amount::count(node_ports));
            out.insert("services.loadbalancers".into(), Amount::count(lbs));
        }
        Evaluator::PersistentVolumeClaims => {
            let class = obj["spec"]["storageClassName"].as_str().unwrap_or_default();
            let storage = Amount::of(&obj["spec"]["resources"]["requests"]["storage"]);
            if !class.is_empty() {
                out.insert(format!("{class}{STORAGE_CLASS_SUFFIX}persistentvolumeclaims"), Amount::count(1));
            }
            if let Some(q) = storage {
                out.insert("requests.storage".into(), q);
                if !class.is_empty() {
                    out.insert(format!("{class}{STORAGE_CLASS_SUFFIX}requests.storage"), q);
                }
            }
        }
        Evaluator::Count => {}
    }
    out
}

/// Upstream's pod `Constraints`: when a quota limits cpu or memory, every container must
/// say how much: `must specify limits.cpu for: a,b; requests.memory for: a`.
pub fn constraints(group: &str, plural: &str, restricted: &[String], obj: &Value) -> Result<(), String> {
    if evaluator(group, plural) != Evaluator::Pods {
        return Ok(());
    }
    const VALIDATED: &[&str] = &["cpu", "memory", "requests.cpu", "requests.memory", "limits.cpu", "limits.memory"];
    let required: Vec<&String> = restricted.iter().filter(|r| VALIDATED.contains(&r.as_str())).collect();
    let mut missing: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
    let containers = arr(&obj["spec"]["containers"]).iter().chain(arr(&obj["spec"]["initContainers"]));
    for c in containers {
        let have = compute_usage(&parse_list(&c["resources"]["requests"]), &parse_list(&c["resources"]["limits"]));
        for r in &required {
            if !have.contains_key(*r) {
                missing.entry((*r).clone()).or_default().insert(s(&c["name"]).to_string());
            }
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let parts: Vec<String> = missing.iter().map(|(r, names)| format!("{r} for: {}", names.iter().cloned().collect::<Vec<_>>().join(","))).collect();
    Err(format!("must specify {}", parts.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_upstream() {
        let f = |q: &str| Amount::parse(q).unwrap().format();
        assert_eq!(f("500m"), "500m");
        assert_eq!(f("1000m"), "1");
        assert_eq!(f("1.5"), "1500m");
        assert_eq!(f("1.5M"), "1500k");
        assert_eq!(f("252Mi"), "252Mi");
        assert_eq!(f("1.5Gi"), "1536Mi");
        assert_eq!(f("0"), "0");
        let mut a = parse_list(&json!({"memory": "500Mi"}));
        add(&mut a, &parse_list(&json!({"memory": "524Mi"})));
        assert_eq!(a["memory"].format(), "1Gi");
        let mut zero = parse_list(&json!({"memory": "0"}));
        add(&mut zero, &parse_list(&json!({"memory": "512Mi"})));
        assert_eq!(zero["memory"].format(), "512Mi");
    }

    #[test]
    fn pod_usage_and_scopes() {
        let pod = json!({"spec": {"activeDeadlineSeconds": 10, "containers": [
            {"name": "a", "resources": {"requests": {"cpu": "500m", "memory": "252Mi", "example.com/dongle": "2"}, "limits": {"cpu": "1"}}},
            {"name": "b", "resources": {"requests": {"cpu": "250m"}}}],
            "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "2"}}}]}});
        let u = usage("", "pods", &pod, 0);
        assert_eq!(u["pods"].format(), "1");
        assert_eq!(u["count/pods"].format(), "1");
        assert_eq!(u["requests.cpu"].format(), "2");
        assert_eq!(u["limits.cpu"].format(), "1");
        assert_eq!(u["requests.example.com/dongle"].format(), "2");
        let quota = json!({"spec": {"scopes": ["Terminating"]}, "status": {"hard": {"pods": "5"}}});
        assert!(matches(&quota, &hard_names(&quota), "", "pods", &pod));
        let quota = json!({"spec": {"scopes": ["NotTerminating"]}, "status": {"hard": {"pods": "5"}}});
        assert!(!matches(&quota, &hard_names(&quota), "", "pods", &pod));
        let finished = json!({"spec": pod["spec"], "status": {"phase": "Succeeded"}});
        assert!(!usage("", "pods", &finished, 0).contains_key("pods"));
        let required = vec!["limits.memory".to_string(), "requests.cpu".to_string(), "pods".to_string()];
        assert_eq!(constraints("", "pods", &required, &pod).unwrap_err(), "must specify limits.memory for: a,b,i");
    }

    #[test]
    fn object_counts() {
        assert_eq!(counted_resource("count/replicasets.apps"), Some(("apps".into(), "replicasets".into())));
        assert_eq!(counted_resource("secrets"), Some((String::new(), "secrets".into())));
        let names: Vec<String> = ["count/replicasets.apps", "pods", "secrets"].iter().map(|s| s.to_string()).collect();
        assert_eq!(matching_resources("apps", "replicasets", &names), vec!["count/replicasets.apps".to_string()]);
        assert_eq!(matching_resources("", "secrets", &names), vec!["secrets".to_string()]);
        let svc = json!({"spec": {"type": "NodePort", "ports": [{"port": 80}]}});
        let u = usage("", "services", &svc, 0);
        assert_eq!((u["services"].format(), u["services.nodeports"].format()), ("1".into(), "1".into()));
    }
}
