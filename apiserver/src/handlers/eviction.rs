//! `POST pods/NAME/eviction` (upstream's `EvictionREST`, policy/v1 and v1beta1 `Eviction`):
//! deletes a pod unless that would break its PodDisruptionBudget.
//!
//! - A pod that is Pending, finished or already being deleted is deleted at once, without a
//!   budget (upstream's `canIgnorePDB`); so is one no budget selects.
//! - Several budgets selecting the pod: 500, as upstream does not support it.
//! - With one budget: a pod that is not Ready is deleted without consuming the budget when
//!   the policy is `AlwaysAllow` or the budget is healthy (`currentHealthy >= desiredHealthy
//!   > 0`), guarded by the pod's resourceVersion. Otherwise the budget must allow a
//!   disruption: 429 TooManyRequests "Cannot evict pod as it would violate the pod's
//!   disruption budget." (cause `DisruptionBudget`) when `disruptionsAllowed` is 0 or the
//!   budget's controller has not seen its latest generation; else `disruptionsAllowed` is
//!   decremented and the pod entered in `disruptedPods`, written to the budget's status
//!   guarded by the budget's resourceVersion (retried on conflict, as upstream's
//!   `RetryOnConflict`), before the pod gets the DisruptionTarget condition and is deleted
//!   with the Eviction's `deleteOptions`.

use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};
use crate::kinds::common::{self, arr, s};
use crate::meta;
use crate::registry::list::{ListOptions, Selection};
use crate::registry::store::{DeleteOptions, GenericStore, Propagation, Target, WriteOptions};
use crate::registry::ReqCtx;
use crate::selectors::{fields, labels};
use crate::AppState;

const TOO_MANY_REQUESTS: &str = "Cannot evict pod as it would violate the pod's disruption budget.";
/// Upstream's `MaxDisruptedPodSize`.
const MAX_DISRUPTED_PODS: usize = 2000;
const CONFLICT_RETRIES: usize = 5;
const MANAGER: &str = "eviction";

/// Evicts pod `name` in `ctx.namespace` as the Eviction body `eviction` asks; returns the
/// success Status.
pub async fn evict(st: &AppState, ctx: &ReqCtx, name: &str, eviction: &Value) -> ApiResult<Value> {
    if let Some(kind) = eviction["kind"].as_str().filter(|k| !k.is_empty()) {
        if kind != "Eviction" {
            return Err(ApiError::bad_request(format!("expected Eviction, got {kind}")));
        }
    }
    let body_name = s(&eviction["metadata"]["name"]);
    if !body_name.is_empty() && body_name != name {
        return Err(ApiError::bad_request("name in URL does not match name in Eviction object"));
    }
    let mut opts = delete_options(&eviction["deleteOptions"])?;
    opts.dry_run |= ctx.dry_run;
    let pods = st.registry.find("", "v1", "pods").ok_or(ApiError::NoRoute)?;
    let pod = pods.get(ctx.namespace.as_deref(), name).await?;

    if can_ignore_budget(&pod) {
        return delete(&pods, ctx, name, &pod, opts, false).await;
    }
    let budgets = st.registry.find("policy", "v1", "poddisruptionbudgets").ok_or(ApiError::NoRoute)?;
    let covering = budgets_of(&budgets, ctx, &pod).await?;
    let budget = match covering.as_slice() {
        [] => return delete(&pods, ctx, name, &pod, opts, false).await,
        [one] => meta::name(one).to_string(),
        _ => {
            return Err(ApiError::internal(
                "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
            ))
        }
    };
    let mut attempt = 0;
    loop {
        let pdb = budgets.get(ctx.namespace.as_deref(), &budget).await?;
        if !is_ready(&pod) {
            let status = &pdb["status"];
            let desired = status["desiredHealthy"].as_i64().unwrap_or(0);
            let always = pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow";
            if always || (status["currentHealthy"].as_i64().unwrap_or(0) >= desired && desired > 0) {
                // Not consuming the budget: the pod must not turn Ready meanwhile.
                if opts.precondition_rv.is_none() {
                    opts.precondition_rv = meta::resource_version(&pod).map(String::from);
                }
                return delete(&pods, ctx, name, &pod, opts, true).await;
            }
        }
        match decrement(&budgets, ctx, &pdb, name, opts.dry_run).await {
            Err(ApiError::Conflict { .. }) if attempt < CONFLICT_RETRIES => attempt += 1,
            Err(e) => return Err(e),
            Ok(()) => return delete(&pods, ctx, name, &pod, opts, true).await,
        }
    }
}

/// Upstream's `canIgnorePDB`.
fn can_ignore_budget(pod: &Value) -> bool {
    matches!(s(&pod["status"]["phase"]), "Succeeded" | "Failed" | "Pending" | "") || meta::is_deleting(pod)
}

fn is_ready(pod: &Value) -> bool {
    arr(&pod["status"]["conditions"]).iter().any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// The budgets of the pod's namespace whose selector matches it.
async fn budgets_of(budgets: &GenericStore, ctx: &ReqCtx, pod: &Value) -> ApiResult<Vec<Value>> {
    let selection = Selection {
        labels: labels::parse("").map_err(|e| ApiError::internal(e.to_string()))?,
        fields: fields::parse("").map_err(|e| ApiError::internal(e.to_string()))?,
    };
    let opts = ListOptions { selection, limit: 0, continue_token: None, resource_version: None, resource_version_match: None };
    let page = budgets.list(ctx.namespace.as_deref(), &opts).await?;
    let pod_labels = pod["metadata"]["labels"].clone();
    let empty = json!({});
    Ok(page
        .items
        .into_iter()
        .filter(|pdb| common::selector_matches(&pdb["spec"]["selector"], if pod_labels.is_object() { &pod_labels } else { &empty }))
        .collect())
}

/// Upstream's `checkAndDecrement`: consumes one disruption of `pdb` for pod `pod_name`.
async fn decrement(budgets: &GenericStore, ctx: &ReqCtx, pdb: &Value, pod_name: &str, dry_run: bool) -> ApiResult<()> {
    let name = meta::name(pdb).to_string();
    let status = &pdb["status"];
    let refuse = |cause: String| ApiError::TooManyRequests { message: TOO_MANY_REQUESTS.into(), causes: vec![("DisruptionBudget".into(), cause)] };
    if status["observedGeneration"].as_i64().unwrap_or(0) < pdb["metadata"]["generation"].as_i64().unwrap_or(0) {
        return Err(refuse(format!("The disruption budget {name} is still being processed by the server.")));
    }
    let allowed = status["disruptionsAllowed"].as_i64().unwrap_or(0);
    let forbidden = |why: &str| ApiError::Forbidden(format!("poddisruptionbudgets.policy \"{name}\" is forbidden: {why}"));
    if allowed < 0 {
        return Err(forbidden("pdb disruptions allowed is negative"));
    }
    if status["disruptedPods"].as_object().is_some_and(|m| m.len() > MAX_DISRUPTED_PODS) {
        return Err(forbidden("DisruptedPods map too big - too many evictions not confirmed by PDB controller"));
    }
    if allowed == 0 {
        return Err(refuse(format!(
            "The disruption budget {name} needs {} healthy pods and has {} currently",
            status["desiredHealthy"].as_i64().unwrap_or(0),
            status["currentHealthy"].as_i64().unwrap_or(0)
        )));
    }
    let rv = meta::resource_version(pdb).map(String::from);
    let wopts = WriteOptions { dry_run, field_manager: Some(MANAGER.into()) };
    budgets
        .guaranteed_update(ctx, &name, Target::Status, &wopts, |current| {
            // Guarded by the revision the decision was made at.
            let mut new = current.clone();
            meta::set(&mut new, "resourceVersion", json!(rv.clone().unwrap_or_default()));
            let st = &mut new["status"];
            st["disruptionsAllowed"] = json!(allowed - 1);
            if !st["disruptedPods"].is_object() {
                st["disruptedPods"] = json!({});
            }
            st["disruptedPods"][pod_name] = json!(meta::now());
            if allowed - 1 == 0 {
                set_insufficient(st);
            }
            Ok(new)
        })
        .await?;
    Ok(())
}

/// Upstream's `UpdateDisruptionAllowedCondition` for a budget left with no disruptions.
fn set_insufficient(status: &mut Value) {
    let observed = status["observedGeneration"].clone();
    let conds = arr(&status["conditions"]).to_vec();
    let old = conds.iter().find(|c| c["type"] == "DisruptionAllowed");
    let since = match old {
        Some(c) if c["status"] == "False" => c["lastTransitionTime"].clone(),
        _ => json!(meta::now()),
    };
    let mut conds: Vec<Value> = conds.iter().filter(|c| c["type"] != "DisruptionAllowed").cloned().collect();
    conds.push(json!({"type": "DisruptionAllowed", "status": "False", "reason": "InsufficientPods", "message": "",
        "observedGeneration": observed, "lastTransitionTime": since}));
    status["conditions"] = json!(conds);
}

/// Marks the pod with the DisruptionTarget condition (unless finished) and deletes it.
async fn delete(pods: &GenericStore, ctx: &ReqCtx, name: &str, pod: &Value, opts: DeleteOptions, mark: bool) -> ApiResult<Value> {
    if mark && !opts.dry_run && !matches!(s(&pod["status"]["phase"]), "Succeeded" | "Failed") && !meta::is_deleting(pod) {
        let wopts = WriteOptions { dry_run: false, field_manager: Some(MANAGER.into()) };
        let precondition = opts.precondition_rv.clone();
        let marked = pods
            .guaranteed_update(ctx, name, Target::Status, &wopts, |current| {
                let mut new = current.clone();
                if let Some(rv) = &precondition {
                    meta::set(&mut new, "resourceVersion", json!(rv));
                }
                let mut conds: Vec<Value> = arr(&new["status"]["conditions"]).iter().filter(|c| c["type"] != "DisruptionTarget").cloned().collect();
                conds.push(json!({"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI",
                    "message": "Eviction API: evicting", "lastProbeTime": null, "lastTransitionTime": meta::now()}));
                new["status"]["conditions"] = json!(conds);
                Ok(new)
            })
            .await;
        if let Ok(w) = &marked {
            // The delete's resourceVersion precondition now refers to the marked pod.
            let mut opts = opts;
            if opts.precondition_rv.is_some() {
                opts.precondition_rv = meta::resource_version(&w.object).map(String::from);
            }
            pods.delete(ctx, name, &opts).await?;
            return Ok(success());
        }
        marked?;
    }
    pods.delete(ctx, name, &opts).await?;
    Ok(success())
}

fn success() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201})
}

/// The Eviction's `deleteOptions`.
fn delete_options(v: &Value) -> ApiResult<DeleteOptions> {
    let mut opts = DeleteOptions {
        grace_period_seconds: v["gracePeriodSeconds"].as_i64(),
        precondition_uid: v["preconditions"]["uid"].as_str().map(String::from),
        precondition_rv: v["preconditions"]["resourceVersion"].as_str().map(String::from),
        ..Default::default()
    };
    opts.dry_run = arr(&v["dryRun"]).iter().any(|d| d == "All");
    opts.propagation = match v["propagationPolicy"].as_str() {
        None => v["orphanDependents"].as_bool().map(|o| if o { Propagation::Orphan } else { Propagation::Background }),
        Some(p) => Some(Propagation::parse(p).ok_or_else(|| ApiError::bad_request(format!("unsupported propagationPolicy {p}")))?),
    };
    Ok(opts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_are_ignored_for_pods_that_do_not_run() {
        assert!(can_ignore_budget(&json!({"status": {"phase": "Pending"}})));
        assert!(can_ignore_budget(&json!({"status": {"phase": "Succeeded"}})));
        assert!(can_ignore_budget(&json!({"metadata": {"deletionTimestamp": "2024-01-01T00:00:00Z"}, "status": {"phase": "Running"}})));
        assert!(!can_ignore_budget(&json!({"status": {"phase": "Running"}})));
    }

    #[test]
    fn insufficient_condition_keeps_its_transition_time() {
        let mut st = json!({"observedGeneration": 2, "conditions": [{"type": "DisruptionAllowed", "status": "False", "lastTransitionTime": "t0"}]});
        set_insufficient(&mut st);
        assert_eq!(st["conditions"][0]["lastTransitionTime"], "t0");
        assert_eq!(st["conditions"][0]["reason"], "InsufficientPods");
        assert_eq!(st["conditions"][0]["observedGeneration"], 2);
    }
}
