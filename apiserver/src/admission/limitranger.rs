//! Upstream's LimitRanger admission (plugin/pkg/admission/limitranger): the namespace's
//! LimitRanges default the requests and limits of a new pod's containers
//! (`defaultRequest`, `default` of `Container` limits), then every container, the pod as a
//! whole and PersistentVolumeClaims are checked against `min`, `max` and
//! `maxLimitRequestRatio`; a violation is 403 Forbidden with upstream's message.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde_json::{json, Map, Value};

use super::{Attributes, Operation, Plugin, Reader};
use crate::error::ApiResult;
use crate::kinds::common::{parse_quantity, Quantity};

pub struct LimitRanger;

const ANNOTATION: &str = "kubernetes.io/limit-ranger";

fn limits_of(lr: &Value) -> &[Value] {
    lr["spec"]["limits"].as_array().map(Vec::as_slice).unwrap_or_default()
}

fn quantity(v: &Value) -> Option<Quantity> {
    v.as_str().and_then(|s| parse_quantity(s).ok())
}

fn text(v: &Value) -> String {
    v.as_str().map(String::from).unwrap_or_else(|| v.to_string())
}

/// Upstream's `defaultContainerResourceRequirements`: (requests, limits) every container
/// gets where it sets none, from the `Container` limits.
fn container_defaults(lr: &Value) -> (Map<String, Value>, Map<String, Value>) {
    let (mut requests, mut limits) = (Map::new(), Map::new());
    for l in limits_of(lr).iter().filter(|l| l["type"] == "Container") {
        if let Some(d) = l["defaultRequest"].as_object() {
            requests.extend(d.clone());
        }
        if let Some(d) = l["default"].as_object() {
            limits.extend(d.clone());
        }
    }
    (requests, limits)
}

/// Upstream's `mergeContainerResources`: fills what is missing; returns what it set, as the
/// annotation words it.
fn merge_container(c: &mut Value, requests: &Map<String, Value>, limits: &Map<String, Value>, what: &str) -> Vec<String> {
    let name = c["name"].as_str().unwrap_or_default().to_string();
    let mut notes = Vec::new();
    if !c["resources"].is_object() {
        c["resources"] = json!({});
    }
    for (part, defaults) in [("limits", limits), ("requests", requests)] {
        if !c["resources"][part].is_object() {
            c["resources"][part] = json!({});
        }
        let current = c["resources"][part].as_object_mut().expect("object");
        let mut set: Vec<&str> = Vec::new();
        for (k, v) in defaults {
            if !current.contains_key(k) {
                current.insert(k.clone(), v.clone());
                set.push(k);
            }
        }
        if !set.is_empty() {
            set.sort();
            let kind = if part == "limits" { "limit" } else { "request" };
            notes.push(format!("{} {kind} for {what} {name}", set.join(", ")));
        }
    }
    // Upstream leaves empty lists unset on the wire.
    for part in ["limits", "requests"] {
        if c["resources"][part].as_object().is_some_and(Map::is_empty) {
            c["resources"].as_object_mut().expect("object").remove(part);
        }
    }
    notes
}

/// Upstream's `PodMutateLimitFunc` for one LimitRange.
fn mutate_pod(lr: &Value, pod: &mut Value) {
    let (requests, limits) = container_defaults(lr);
    let mut notes = Vec::new();
    for (list, what) in [("containers", "container"), ("initContainers", "init container")] {
        if let Some(cs) = pod["spec"].get_mut(list).and_then(Value::as_array_mut) {
            for c in cs {
                // The request notes come first, as upstream's (requests, then limits).
                let mut n = merge_container(c, &requests, &limits, what);
                n.reverse();
                notes.extend(n);
            }
        }
    }
    if !notes.is_empty() {
        let meta = &mut pod["metadata"];
        if !meta["annotations"].is_object() {
            meta["annotations"] = json!({});
        }
        meta["annotations"][ANNOTATION] = json!(format!("LimitRanger plugin set: {}", notes.join("; ")));
    }
}

/// Upstream's `minConstraint`.
fn min_constraint(kind: &str, res: &str, enforced: &Value, requests: &Value, limits: &Value) -> Option<String> {
    let e = quantity(enforced)?;
    let Some(req) = requests.get(res) else {
        return Some(format!("minimum {res} usage per {kind} is {}.  No request is specified", text(enforced)));
    };
    if quantity(req).is_some_and(|r| r < e) {
        return Some(format!("minimum {res} usage per {kind} is {}, but request is {}", text(enforced), text(req)));
    }
    match limits.get(res) {
        Some(lim) if quantity(lim).is_some_and(|l| l < e) => {
            Some(format!("minimum {res} usage per {kind} is {}, but limit is {}", text(enforced), text(lim)))
        }
        _ => None,
    }
}

/// Upstream's `maxConstraint`.
fn max_constraint(kind: &str, res: &str, enforced: &Value, requests: &Value, limits: &Value) -> Option<String> {
    let e = quantity(enforced)?;
    let Some(lim) = limits.get(res) else {
        return Some(format!("maximum {res} usage per {kind} is {}.  No limit is specified", text(enforced)));
    };
    if quantity(lim).is_some_and(|l| l > e) {
        return Some(format!("maximum {res} usage per {kind} is {}, but limit is {}", text(enforced), text(lim)));
    }
    match requests.get(res) {
        Some(req) if quantity(req).is_some_and(|r| r > e) => {
            Some(format!("maximum {res} usage per {kind} is {}, but request is {}", text(enforced), text(req)))
        }
        _ => None,
    }
}

/// Upstream's `maxRequestConstraint` (PersistentVolumeClaims: only requests count).
fn max_request_constraint(kind: &str, res: &str, enforced: &Value, requests: &Value) -> Option<String> {
    let e = quantity(enforced)?;
    let Some(req) = requests.get(res) else {
        return Some(format!("maximum {res} usage per {kind} is {}.  No request is specified", text(enforced)));
    };
    quantity(req)
        .is_some_and(|r| r > e)
        .then(|| format!("maximum {res} usage per {kind} is {}, but request is {}", text(enforced), text(req)))
}

/// Upstream's `limitRequestRatioConstraint`.
fn ratio_constraint(kind: &str, res: &str, enforced: &Value, requests: &Value, limits: &Value) -> Option<String> {
    let e = quantity(enforced)?;
    let req = requests.get(res).and_then(quantity).filter(|q| !q.is_zero());
    let lim = limits.get(res).and_then(quantity).filter(|q| !q.is_zero());
    let Some(req) = req else {
        return Some(format!(
            "{res} max limit to request ratio per {kind} is {}, but no request is specified or request is 0",
            text(enforced)
        ));
    };
    let Some(lim) = lim else {
        return Some(format!(
            "{res} max limit to request ratio per {kind} is {}, but no limit is specified or limit is 0",
            text(enforced)
        ));
    };
    let observed = lim.0 as f64 / req.0 as f64;
    // Compared in milli-units, as upstream.
    let max = e.0 as f64 / 1e9;
    ((observed * 1000.0).round() > (max * 1000.0).round())
        .then(|| format!("{res} max limit to request ratio per {kind} is {}, but provided ratio is {observed:.6}", text(enforced)))
}

/// Checks one (requests, limits) pair against a limit item's min, max and ratio.
fn check(errs: &mut Vec<String>, item: &Value, kind: &str, requests: &Value, limits: &Value) {
    let each = |field: &str| item[field].as_object().cloned().unwrap_or_default();
    for (k, v) in each("min") {
        errs.extend(min_constraint(kind, &k, &v, requests, limits));
    }
    for (k, v) in each("max") {
        errs.extend(max_constraint(kind, &k, &v, requests, limits));
    }
    for (k, v) in each("maxLimitRequestRatio") {
        errs.extend(ratio_constraint(kind, &k, &v, requests, limits));
    }
}

fn add(into: &mut BTreeMap<String, Quantity>, list: &Value) {
    for (k, v) in list.as_object().into_iter().flatten() {
        if let Some(q) = quantity(v) {
            into.entry(k.clone()).or_insert(Quantity(0)).0 += q.0;
        }
    }
}

/// Upstream's `PodRequests`/`PodLimits`: containers summed, at least each init container,
/// plus the pod overhead; as a resource list of nano-unit quantities rendered back.
fn pod_totals(spec: &Value, part: &str) -> Value {
    let mut sum = BTreeMap::new();
    for c in spec["containers"].as_array().into_iter().flatten() {
        add(&mut sum, &c["resources"][part]);
    }
    for c in spec["initContainers"].as_array().into_iter().flatten() {
        let mut one = BTreeMap::new();
        add(&mut one, &c["resources"][part]);
        for (k, v) in one {
            let e = sum.entry(k).or_insert(Quantity(0));
            if v > *e {
                *e = v;
            }
        }
    }
    add(&mut sum, &spec["overhead"]);
    Value::Object(sum.into_iter().map(|(k, q)| (k, json!(format_quantity(q)))).collect())
}

/// A quantity in a short form: binary suffixes for whole multiples of 1024, whole units,
/// else milli- or nano-units.
fn format_quantity(q: Quantity) -> String {
    const NANO: i128 = 1_000_000_000;
    if q.0 % NANO == 0 {
        let units = q.0 / NANO;
        for (suffix, factor) in [("Ti", 1i128 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)] {
            if units != 0 && units % factor == 0 {
                return format!("{}{suffix}", units / factor);
            }
        }
        return units.to_string();
    }
    if q.0 % 1_000_000 == 0 {
        return format!("{}m", q.0 / 1_000_000);
    }
    format!("{}n", q.0)
}

/// Upstream's `PodValidateLimitFunc` for one LimitRange.
fn validate_pod(lr: &Value, pod: &Value) -> Vec<String> {
    let mut errs = Vec::new();
    let spec = &pod["spec"];
    for item in limits_of(lr) {
        match item["type"].as_str() {
            Some("Container") => {
                for c in spec["containers"].as_array().into_iter().flatten().chain(spec["initContainers"].as_array().into_iter().flatten()) {
                    check(&mut errs, item, "Container", &c["resources"]["requests"], &c["resources"]["limits"]);
                }
            }
            Some("Pod") => {
                let (requests, limits) = (pod_totals(spec, "requests"), pod_totals(spec, "limits"));
                check(&mut errs, item, "Pod", &requests, &limits);
            }
            _ => {}
        }
    }
    errs
}

/// Upstream's `PersistentVolumeClaimValidateLimitFunc` for one LimitRange.
fn validate_pvc(lr: &Value, pvc: &Value) -> Vec<String> {
    let mut errs = Vec::new();
    let requests = &pvc["spec"]["resources"]["requests"];
    for item in limits_of(lr).iter().filter(|l| l["type"] == "PersistentVolumeClaim") {
        for (k, v) in item["min"].as_object().into_iter().flatten() {
            errs.extend(min_constraint("PersistentVolumeClaim", k, v, requests, &json!({})));
        }
        for (k, v) in item["max"].as_object().into_iter().flatten() {
            errs.extend(max_request_constraint("PersistentVolumeClaim", k, v, requests));
        }
    }
    errs
}

/// Upstream's aggregate error: one message, or several in brackets.
fn aggregate(errs: &[String]) -> String {
    match errs {
        [one] => one.clone(),
        many => format!("[{}]", many.join(", ")),
    }
}

#[async_trait]
impl Plugin for LimitRanger {
    /// New pods (their containers cannot change after), and PersistentVolumeClaims.
    fn handles(&self, attrs: &Attributes<'_>) -> bool {
        (attrs.is("", "pods") && attrs.operation == Operation::Create) || attrs.is("", "persistentvolumeclaims")
    }

    async fn admit(&self, attrs: &Attributes<'_>, obj: &mut Value, reader: &dyn Reader) -> ApiResult<()> {
        if !attrs.is("", "pods") {
            return Ok(());
        }
        for lr in reader.list("", "limitranges", attrs.ctx.namespace.as_deref()).await? {
            mutate_pod(&lr, obj);
        }
        Ok(())
    }

    async fn validate(&self, attrs: &Attributes<'_>, obj: &Value, reader: &dyn Reader) -> ApiResult<()> {
        for lr in reader.list("", "limitranges", attrs.ctx.namespace.as_deref()).await? {
            let errs = if attrs.is("", "pods") { validate_pod(&lr, obj) } else { validate_pvc(&lr, obj) };
            if !errs.is_empty() {
                return Err(attrs.forbidden(obj, aggregate(&errs)));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{create, ctx, pods, MemReader};
    use super::*;

    fn limit_range() -> Value {
        json!({"metadata": {"name": "lr", "namespace": "ns"}, "spec": {"limits": [{
            "type": "Container",
            "min": {"cpu": "50m", "memory": "100Mi"},
            "max": {"cpu": "500m", "memory": "500Mi"},
            "default": {"cpu": "500m", "memory": "500Mi"},
            "defaultRequest": {"cpu": "100m", "memory": "200Mi"},
        }]}})
    }

    fn pod(resources: Value) -> Value {
        json!({"metadata": {"name": "p", "namespace": "ns"}, "spec": {"containers": [{"name": "c", "image": "i", "resources": resources}]}})
    }

    #[tokio::test]
    async fn defaults_then_bounds() {
        let reader = MemReader::default();
        reader.put("", "limitranges", Some("ns"), limit_range());
        let (info, ctx) = (pods(), ctx());
        let attrs = create(&info, &ctx);

        let mut p = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}});
        LimitRanger.admit(&attrs, &mut p, &reader).await.unwrap();
        assert_eq!(p["spec"]["containers"][0]["resources"], json!({
            "requests": {"cpu": "100m", "memory": "200Mi"}, "limits": {"cpu": "500m", "memory": "500Mi"}}));
        assert_eq!(p["metadata"]["annotations"][ANNOTATION], "LimitRanger plugin set: cpu, memory request for container c; cpu, memory limit for container c");
        LimitRanger.validate(&attrs, &p, &reader).await.unwrap();

        let mut partial = pod(json!({"requests": {"cpu": "300m"}, "limits": {"cpu": "300m"}}));
        LimitRanger.admit(&attrs, &mut partial, &reader).await.unwrap();
        assert_eq!(partial["spec"]["containers"][0]["resources"], json!({
            "requests": {"cpu": "300m", "memory": "200Mi"}, "limits": {"cpu": "300m", "memory": "500Mi"}}));

        let mut under = pod(json!({"requests": {"cpu": "10m"}, "limits": {"cpu": "10m"}}));
        LimitRanger.admit(&attrs, &mut under, &reader).await.unwrap();
        let err = LimitRanger.validate(&attrs, &under, &reader).await.unwrap_err();
        assert_eq!(err.code(), 403);
        assert_eq!(err.to_string(), "pods \"p\" is forbidden: minimum cpu usage per Container is 50m, but request is 10m");

        let mut over = pod(json!({"requests": {"cpu": "600m"}, "limits": {"cpu": "600m"}}));
        LimitRanger.admit(&attrs, &mut over, &reader).await.unwrap();
        let err = LimitRanger.validate(&attrs, &over, &reader).await.unwrap_err();
        assert_eq!(err.to_string(), "pods \"p\" is forbidden: maximum cpu usage per Container is 500m, but limit is 600m");
    }

    #[test]
    fn ratio_and_pod_limits() {
        let lr = json!({"spec": {"limits": [
            {"type": "Container", "maxLimitRequestRatio": {"cpu": "2"}},
            {"type": "Pod", "max": {"memory": "1Gi"}},
        ]}});
        let p = json!({"spec": {"containers": [
            {"name": "a", "resources": {"requests": {"cpu": "100m", "memory": "600Mi"}, "limits": {"cpu": "300m", "memory": "600Mi"}}},
            {"name": "b", "resources": {"requests": {"cpu": "1", "memory": "600Mi"}, "limits": {"cpu": "1", "memory": "600Mi"}}},
        ]}});
        assert_eq!(validate_pod(&lr, &p), [
            "cpu max limit to request ratio per Container is 2, but provided ratio is 3.000000",
            "maximum memory usage per Pod is 1Gi, but limit is 1200Mi",
        ]);
        let pvc = json!({"spec": {"resources": {"requests": {"storage": "5Gi"}}}});
        let lr = json!({"spec": {"limits": [{"type": "PersistentVolumeClaim", "min": {"storage": "1Gi"}, "max": {"storage": "2Gi"}}]}});
        assert_eq!(validate_pvc(&lr, &pvc), ["maximum storage usage per PersistentVolumeClaim is 2Gi, but request is 5Gi"]);
    }
}
