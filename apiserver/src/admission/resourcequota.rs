//! Upstream's ResourceQuota admission (apiserver's `admission/plugin/resourcequota`): a write
//! that would take a namespace's usage past any covering quota's `status.hard` is refused
//! with 403 (`exceeded quota: NAME, requested: pods=1, used: pods=2, limited: pods=2`); a pod
//! without requests or limits for a quota'd cpu/memory resource is refused (`failed quota:
//! NAME: must specify ...`); a quota whose usage is not calculated yet refuses writes it
//! covers (`status unknown for quota`). Otherwise the plugin charges `status.used` itself,
//! compare-and-swap on each quota's revision, before the object is stored, so two fast
//! creates cannot both slip under one limit; the resource quota controller later
//! recalculates from what is stored.
//!
//! Creates of every namespaced resource (events excepted, as upstream's ignored resources)
//! and updates of services and persistentvolumeclaims (their usage can change) are
//! evaluated; what an object charges is `crate::quota`.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use kine_sqlite::Backend;
use serde_json::Value;

use super::{Attributes, Operation, Plugin, Reader};
use crate::error::{ApiError, ApiResult};
use crate::meta;
use crate::quota::{self, Usage};

pub struct ResourceQuota {
    backend: Arc<dyn Backend>,
}

/// Conflicting quota writes are retried this many times (upstream: 3 with fresh quotas).
const ATTEMPTS: usize = 5;

impl ResourceQuota {
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        ResourceQuota { backend }
    }
}

/// One quota read from storage, with its revision for the compare-and-swap.
struct Stored {
    key: String,
    revision: i64,
    lease: i64,
    obj: Value,
}

/// The quotas to write after a successful check: (index into the quotas, new usage).
type Charges = Vec<(usize, Usage)>;

/// Upstream's `CheckRequest` over `quotas` for one write of `obj`.
fn check(attrs: &Attributes<'_>, obj: &Value, quotas: &[Value], now: i64) -> ApiResult<Charges> {
    let (group, plural) = (attrs.resource.group.as_str(), attrs.resource.plural.as_str());
    let mut interesting = Vec::new();
    for (i, q) in quotas.iter().enumerate() {
        let hard = quota::hard_names(q);
        if !quota::matches(q, &hard, group, plural, obj) {
            continue;
        }
        let name = meta::name(q);
        let restricted = quota::matching_resources(group, plural, &hard);
        quota::constraints(group, plural, &restricted, obj).map_err(|e| attrs.forbidden(obj, format!("failed quota: {name}: {e}")))?;
        let used = quota::parse_list(&q["status"]["used"]);
        if restricted.iter().any(|r| !used.contains_key(r)) {
            let mut names = restricted.clone();
            names.sort();
            return Err(attrs.forbidden(obj, format!("status unknown for quota: {name}, resources: {}", names.join(","))));
        }
        interesting.push(i);
    }
    if interesting.is_empty() {
        return Ok(Vec::new());
    }
    let input = quota::usage(group, plural, obj, now);
    if let Some((k, _)) = input.iter().find(|(_, a)| a.nano < 0) {
        return Err(attrs.forbidden(obj, format!("quota usage is negative for resource(s): {k}")));
    }
    let mut charges = Vec::new();
    for i in interesting {
        let q = &quotas[i];
        let hard_names = quota::hard_names(q);
        let mut delta = input.clone();
        if let (Operation::Update, Some(old)) = (attrs.operation, attrs.old) {
            if quota::matches(q, &hard_names, group, plural, old) {
                delta = quota::subtract_non_negative(&input, &quota::usage(group, plural, old, now));
            }
        }
        delta.retain(|_, a| a.nano != 0);
        let requested = quota::mask(&delta, &hard_names);
        if requested.is_empty() {
            continue;
        }
        let hard = quota::parse_list(&q["status"]["hard"]);
        let used = quota::parse_list(&q["status"]["used"]);
        let mut new_used = used.clone();
        quota::add(&mut new_used, &requested);
        let exceeded: Vec<String> =
            requested.keys().filter(|k| hard.get(*k).is_some_and(|h| new_used.get(*k).is_some_and(|u| u.nano > h.nano))).cloned().collect();
        if !exceeded.is_empty() {
            return Err(attrs.forbidden(
                obj,
                format!(
                    "exceeded quota: {}, requested: {}, used: {}, limited: {}",
                    meta::name(q),
                    quota::pretty(&quota::mask(&requested, &exceeded)),
                    quota::pretty(&quota::mask(&used, &exceeded)),
                    quota::pretty(&quota::mask(&hard, &exceeded)),
                ),
            ));
        }
        charges.push((i, new_used));
    }
    Ok(charges)
}

impl ResourceQuota {
    async fn quotas(&self, ns: &str) -> ApiResult<Vec<Stored>> {
        let page = self.backend.list(&format!("/registry/resourcequotas/{ns}/"), "", 0, 0).await?;
        page.kvs
            .iter()
            .map(|kv| {
                Ok(Stored {
                    key: kv.key.clone(),
                    revision: kv.mod_revision,
                    lease: kv.lease,
                    obj: crate::registry::store::decode_at(&kv.value, kv.mod_revision)?,
                })
            })
            .collect()
    }
}

#[async_trait]
impl Plugin for ResourceQuota {
    fn handles(&self, attrs: &Attributes<'_>) -> bool {
        let r = attrs.resource;
        if !r.namespaced || r.plural == "events" {
            return false;
        }
        match attrs.operation {
            Operation::Create => true,
            Operation::Update => r.group.is_empty() && (r.plural == "services" || r.plural == "persistentvolumeclaims"),
        }
    }

    async fn validate(&self, attrs: &Attributes<'_>, obj: &Value, _reader: &dyn Reader) -> ApiResult<()> {
        let Some(ns) = meta::namespace(obj).or(attrs.ctx.namespace.as_deref()).map(String::from) else { return Ok(()) };
        let now = chrono::Utc::now().timestamp();
        // Quotas already charged by an earlier attempt (others conflicted).
        let mut charged: HashSet<String> = HashSet::new();
        for _ in 0..ATTEMPTS {
            let stored: Vec<Stored> = self.quotas(&ns).await?.into_iter().filter(|s| !charged.contains(meta::name(&s.obj))).collect();
            if stored.is_empty() {
                return Ok(());
            }
            let objs: Vec<Value> = stored.iter().map(|s| s.obj.clone()).collect();
            let charges = check(attrs, obj, &objs, now)?;
            if attrs.ctx.dry_run {
                return Ok(());
            }
            let mut conflicted = false;
            for (i, used) in charges {
                let s = &stored[i];
                let mut q = s.obj.clone();
                q["status"]["used"] = quota::to_json(&used);
                let out = self.backend.update(&s.key, crate::registry::store::encode(&q)?, s.revision, s.lease).await?;
                if out.succeeded {
                    charged.insert(meta::name(&s.obj).to_string());
                } else {
                    conflicted = true;
                }
            }
            if !conflicted {
                return Ok(());
            }
        }
        Err(ApiError::Conflict {
            group: String::new(),
            resource: "resourcequotas".into(),
            name: String::new(),
            message: "quota usage kept changing; please try again".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::testing;
    use super::*;

    fn quota(name: &str, hard: Value, used: Value) -> Value {
        json!({"metadata": {"name": name}, "spec": {"hard": hard}, "status": {"hard": hard, "used": used}})
    }

    #[test]
    fn refuses_past_the_limit_with_upstreams_message() {
        let (info, ctx) = (testing::pods(), testing::ctx());
        let attrs = testing::create(&info, &ctx);
        let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}});
        let q = quota("q", json!({"pods": "2"}), json!({"pods": "2"}));
        let err = check(&attrs, &pod, &[q], 0).unwrap_err();
        assert_eq!(err.code(), 403);
        assert_eq!(err.to_string(), "pods \"p\" is forbidden: exceeded quota: q, requested: pods=1, used: pods=2, limited: pods=2");
        let q = quota("q", json!({"pods": "2"}), json!({"pods": "1"}));
        let charges = check(&attrs, &pod, &[q], 0).unwrap();
        assert_eq!(quota::to_json(&charges[0].1), json!({"pods": "2"}));
    }

    #[test]
    fn pods_must_specify_quotad_compute_resources() {
        let (info, ctx) = (testing::pods(), testing::ctx());
        let attrs = testing::create(&info, &ctx);
        let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}});
        let q = quota("compute", json!({"cpu": "1", "limits.memory": "1Gi"}), json!({"cpu": "0", "limits.memory": "0"}));
        let err = check(&attrs, &pod, &[q], 0).unwrap_err();
        assert_eq!(err.to_string(), "pods \"p\" is forbidden: failed quota: compute: must specify cpu for: c; limits.memory for: c");
        let fresh = json!({"metadata": {"name": "new"}, "spec": {"hard": {"pods": "1"}}, "status": {"hard": {"pods": "1"}}});
        let err = check(&attrs, &pod, &[fresh], 0).unwrap_err();
        assert_eq!(err.to_string(), "pods \"p\" is forbidden: status unknown for quota: new, resources: pods");
    }
}
