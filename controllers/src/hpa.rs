//! HorizontalPodAutoscaler (autoscaling/v2, upstream's `horizontalpodautoscaling`): every
//! sync period, for each HPA, reads the target's `scale` subresource, the usage of its pods
//! from `metrics.k8s.io` (served by krust server from the kubelets), and sets the replica
//! count upstream's algorithm gives: `ceil(current * usage / target)` outside a 10%
//! tolerance, the largest over all metrics, within min/max, scale-downs stabilized over
//! `behavior.scaleDown.stabilizationWindowSeconds` (300 s by default).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::autoscaling::v2::{HorizontalPodAutoscaler, MetricSpec};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use serde_json::{json, Value};

use crate::Ctx;

const MANAGER: &str = "horizontal-pod-autoscaler";
/// Upstream's `--horizontal-pod-autoscaler-tolerance`.
const TOLERANCE: f64 = 0.1;
const DEFAULT_SCALE_DOWN_WINDOW: i64 = 300;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Api(#[from] kube::Error),
    #[error("{0}")]
    Invalid(String),
    /// No usable metric: the `ScalingActive=False` reason and message.
    #[error("{1}")]
    Metrics(&'static str, String),
}

/// Recent recommendations per HPA (namespace/name), for scale-down stabilization.
type History = HashMap<String, VecDeque<(Instant, i32)>>;

pub async fn run(ctx: Arc<Ctx>) -> Result<(), crate::Error> {
    let mut history: History = HashMap::new();
    loop {
        let api = Api::<HorizontalPodAutoscaler>::all(ctx.client.clone());
        match api.list(&ListParams::default()).await {
            Ok(list) => {
                for hpa in list.items {
                    reconcile(&ctx, &hpa, &mut history).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "listing HorizontalPodAutoscalers failed"),
        }
        tokio::time::sleep(ctx.config.hpa_sync_period).await;
    }
}

/// A metric's recommendation: desired replicas and the `currentMetrics` entry.
struct Recommendation {
    replicas: i32,
    current: Value,
    reason: String,
}

fn key(hpa: &HorizontalPodAutoscaler) -> String {
    format!("{}/{}", hpa.metadata.namespace.as_deref().unwrap_or_default(), hpa.metadata.name.as_deref().unwrap_or_default())
}

async fn reconcile(ctx: &Ctx, hpa: &HorizontalPodAutoscaler, history: &mut History) {
    let ns = hpa.metadata.namespace.clone().unwrap_or_default();
    let name = hpa.metadata.name.clone().unwrap_or_default();
    let Some(spec) = hpa.spec.as_ref() else { return };
    let target = &spec.scale_target_ref;
    let (group, version) = match target.api_version.as_deref().unwrap_or("v1").split_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (String::new(), target.api_version.clone().unwrap_or_else(|| "v1".into())),
    };
    let gvk = GroupVersionKind::gvk(&group, &version, &target.kind);
    let ar = match kube::discovery::pinned_kind(&ctx.client, &gvk).await {
        Ok((ar, _)) => ar,
        Err(e) => return write_status(ctx, hpa, None, Err(Error::Metrics("FailedGetScale", format!("the HPA controller was unable to get the target's current scale: {e}")))).await,
    };
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &ns, &ar);
    let scale = match api.get_scale(&target.name).await {
        Ok(s) => s,
        Err(e) => return write_status(ctx, hpa, None, Err(Error::Metrics("FailedGetScale", format!("the HPA controller was unable to get the target's current scale: {e}")))).await,
    };
    let current = scale.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
    let selector = scale.status.as_ref().and_then(|s| s.selector.clone()).unwrap_or_default();
    let min = spec.min_replicas.unwrap_or(1);
    let max = spec.max_replicas;
    if current == 0 && min > 0 {
        // Scaled to zero by hand: autoscaling is off until someone scales it up.
        return write_status(ctx, hpa, Some((current, current, Vec::new())), Err(Error::Metrics("ScalingDisabled", "scaling is disabled since the replica count of the target is zero".into()))).await;
    }
    let recs = recommend(ctx, &ns, &selector, spec.metrics.as_deref().unwrap_or(&default_metrics()), current).await;
    let (recs, err) = match recs {
        Ok(r) => (r, None),
        Err(e) => (Vec::new(), Some(e)),
    };
    let raw = recs.iter().map(|r| r.replicas).max().unwrap_or(current);
    let bounded = raw.clamp(min, max.max(min));
    // Scale-down stabilization: the highest recommendation within the window wins.
    let window = spec
        .behavior
        .as_ref()
        .and_then(|b| b.scale_down.as_ref())
        .and_then(|r| r.stabilization_window_seconds)
        .map(i64::from)
        .unwrap_or(DEFAULT_SCALE_DOWN_WINDOW);
    let entries = history.entry(key(hpa)).or_default();
    let now = Instant::now();
    entries.push_back((now, bounded));
    while entries.front().is_some_and(|(t, _)| now.duration_since(*t) > Duration::from_secs(window.max(0) as u64)) {
        entries.pop_front();
    }
    let stabilized = if bounded < current { entries.iter().map(|(_, r)| *r).max().unwrap_or(bounded).min(current) } else { bounded };
    let desired = if err.is_some() { current } else { stabilized };
    if desired != current {
        // PUT, as upstream (its role grants `update` of `*/scale`), guarded by the
        // resourceVersion of the scale read above.
        let mut next = scale.clone();
        next.spec.get_or_insert_with(Default::default).replicas = Some(desired);
        let pp = kube::api::PostParams { field_manager: Some(MANAGER.into()), ..Default::default() };
        match api.replace_scale(&target.name, &pp, &next).await {
            Ok(_) => {
                let reason = recs.iter().max_by_key(|r| r.replicas).map(|r| r.reason.clone()).unwrap_or_default();
                tracing::info!(hpa = %key(hpa), from = current, to = desired, "rescaled");
                crate::podutil::event(ctx, hpa, false, "SuccessfulRescale", "Scale", format!("New size: {desired}; reason: {reason}")).await;
            }
            Err(e) => tracing::warn!(hpa = %key(hpa), error = %e, "rescaling failed"),
        }
    }
    let limited = if raw > max { Some("TooManyReplicas") } else if raw < min { Some("TooFewReplicas") } else { None };
    let outcome = match err {
        Some(e) => Err(e),
        None => Ok(limited),
    };
    let currents = recs.into_iter().map(|r| r.current).collect();
    write_status(ctx, hpa, Some((current, desired, currents)), outcome).await;
    let _ = name;
}

/// Upstream's default when `metrics` is empty: 80% average CPU utilization.
fn default_metrics() -> Vec<MetricSpec> {
    vec![serde_json::from_value(json!({"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}})).expect("a valid MetricSpec")]
}

fn quantity(q: &str, scale: f64) -> f64 {
    crate::scheduler::parse_quantity(q, scale) as f64
}

/// Requests of a resource summed over the pod's containers, in milli-units.
fn pod_request(pod: &Pod, resource: &str) -> Option<f64> {
    let mut total = 0.0;
    for c in pod.spec.as_ref()?.containers.iter() {
        let q = c.resources.as_ref()?.requests.as_ref()?.get(resource)?;
        total += quantity(&q.0, 1000.0);
    }
    Some(total)
}

async fn recommend(ctx: &Ctx, ns: &str, selector: &str, metrics: &[MetricSpec], current: i32) -> Result<Vec<Recommendation>, Error> {
    let pods: Vec<Pod> = Api::<Pod>::namespaced(ctx.client.clone(), ns)
        .list(&ListParams::default().labels(selector))
        .await?
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none() && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .collect();
    let ar = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("metrics.k8s.io", "v1beta1", "PodMetrics"), "pods");
    let pm_api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), ns, &ar);
    let usage: BTreeMap<String, Value> = pm_api
        .list(&ListParams::default().labels(selector))
        .await
        .map_err(|e| Error::Metrics("FailedGetResourceMetric", format!("unable to get metrics for resource: unable to fetch metrics from resource metrics API: {e}")))?
        .items
        .into_iter()
        .map(|m| (m.metadata.name.clone().unwrap_or_default(), m.data))
        .collect();
    let mut out = Vec::new();
    for m in metrics {
        if m.type_ != "Resource" {
            continue;
        }
        let Some(res) = m.resource.as_ref() else { continue };
        let scale = if res.name == "cpu" { 1000.0 } else { 1.0 };
        let mut total_usage = 0.0;
        let mut total_request = 0.0;
        let mut counted = 0;
        for pod in &pods {
            let Some(pm) = usage.get(pod.metadata.name.as_deref().unwrap_or_default()) else { continue };
            let used: f64 = pm["containers"].as_array().into_iter().flatten().map(|c| quantity(c["usage"][&res.name].as_str().unwrap_or("0"), scale)).sum();
            total_usage += used;
            total_request += pod_request(pod, &res.name).map(|r| r * scale / 1000.0).unwrap_or(0.0);
            counted += 1;
        }
        if counted == 0 {
            return Err(Error::Metrics("FailedGetResourceMetric", format!("unable to get metrics for resource {}: no metrics returned from resource metrics API", res.name)));
        }
        let target = &res.target;
        let (replicas, current_entry, reason) = match target.type_.as_str() {
            "Utilization" => {
                if total_request <= 0.0 {
                    return Err(Error::Metrics("FailedGetResourceMetric", format!("missing request for {}", res.name)));
                }
                let want = target.average_utilization.unwrap_or(80) as f64;
                let utilization = total_usage / total_request * 100.0;
                let ratio = utilization / want;
                let replicas = if (ratio - 1.0).abs() <= TOLERANCE { current } else { (ratio * counted as f64).ceil() as i32 };
                let avg = total_usage / counted as f64;
                (replicas, json!({"type": "Resource", "resource": {"name": res.name, "current": {"averageUtilization": utilization.round() as i64, "averageValue": format_quantity(avg, scale)}}}),
                 format!("{} resource utilization (percentage of request) {} target", res.name, if ratio > 1.0 { "above" } else { "below" }))
            }
            "AverageValue" => {
                let want = target.average_value.as_ref().map(|q| quantity(&q.0, scale)).unwrap_or(1.0).max(1.0);
                let avg = total_usage / counted as f64;
                let ratio = avg / want;
                let replicas = if (ratio - 1.0).abs() <= TOLERANCE { current } else { (total_usage / want).ceil() as i32 };
                (replicas, json!({"type": "Resource", "resource": {"name": res.name, "current": {"averageValue": format_quantity(avg, scale)}}}),
                 format!("{} resource {} target", res.name, if ratio > 1.0 { "above" } else { "below" }))
            }
            other => return Err(Error::Invalid(format!("unsupported target type {other:?}"))),
        };
        out.push(Recommendation { replicas, current: current_entry, reason });
    }
    Ok(out)
}

/// A quantity from an amount in 1/scale units (`250m` for CPU, bytes otherwise).
fn format_quantity(v: f64, scale: f64) -> String {
    if scale == 1000.0 { format!("{}m", v.round() as i64) } else { format!("{}", v.round() as i64) }
}

async fn write_status(ctx: &Ctx, hpa: &HorizontalPodAutoscaler, replicas: Option<(i32, i32, Vec<Value>)>, outcome: Result<Option<&str>, Error>) {
    let ns = hpa.metadata.namespace.clone().unwrap_or_default();
    let name = hpa.metadata.name.clone().unwrap_or_default();
    let now = crate::podutil::now_rfc3339();
    let old = hpa.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
    let cond = |type_: &str, ok: bool, reason: &str, message: String| {
        let status = if ok { "True" } else { "False" };
        let since = old.iter().find(|c| c.type_ == type_ && c.status == status).and_then(|c| c.last_transition_time.as_ref()).map(|t| json!(t)).unwrap_or(json!(now));
        json!({"type": type_, "status": status, "reason": reason, "message": message, "lastTransitionTime": since})
    };
    let mut conditions = vec![cond("AbleToScale", true, "ReadyForNewScale", "recommended size matches current size".into())];
    match &outcome {
        Ok(limited) => {
            conditions.push(cond("ScalingActive", true, "ValidMetricFound", "the HPA was able to successfully calculate a replica count from resource metrics".into()));
            conditions.push(match limited {
                Some(r) => cond("ScalingLimited", true, r, "the desired replica count is beyond the allowed range".into()),
                None => cond("ScalingLimited", false, "DesiredWithinRange", "the desired count is within the acceptable range".into()),
            });
        }
        Err(Error::Metrics(reason, message)) => conditions.push(cond("ScalingActive", false, reason, message.clone())),
        Err(e) => conditions.push(cond("ScalingActive", false, "InvalidMetricSourceType", e.to_string())),
    }
    let mut status = json!({"conditions": conditions, "observedGeneration": hpa.metadata.generation});
    if let Some((current, desired, metrics)) = replicas {
        status["currentReplicas"] = json!(current);
        status["desiredReplicas"] = json!(desired);
        if !metrics.is_empty() {
            status["currentMetrics"] = json!(metrics);
        }
        let previous = hpa.status.as_ref().and_then(|s| s.last_scale_time.as_ref()).map(|t| json!(t));
        status["lastScaleTime"] = if desired != current { json!(now) } else { previous.unwrap_or(Value::Null) };
    }
    let api = Api::<HorizontalPodAutoscaler>::namespaced(ctx.client.clone(), &ns);
    if let Err(e) = crate::writes::update(&api, &name, MANAGER, crate::writes::Part::Status, &json!({"status": status})).await {
        tracing::warn!(hpa = %format!("{ns}/{name}"), error = %e, "updating HPA status failed");
    }
}
