//! The ClusterRole aggregation controller (upstream's `clusterrole-aggregation`,
//! pkg/controller/clusterroleaggregation): a ClusterRole with an `aggregationRule` gets as
//! rules the union of the rules of every other ClusterRole matching any of its
//! `clusterRoleSelectors`, in upstream's order (selectors in order, matching roles by name,
//! their rules in order, duplicates dropped). Only `rules` is written, and only when it
//! differs. Chains converge pass by pass: `view` is labelled into `edit`, `edit` into `admin`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule};
use kube::api::{Api, Patch};
use tokio::sync::Notify;

use crate::podutil::selector_matches;
use crate::{patch_params, spawn_reflector, Ctx};

const MANAGER: &str = "clusterrole-aggregation-controller";
/// A pass also runs this often, so a failed write is retried without a new event.
const RESYNC: Duration = Duration::from_secs(30);

pub async fn run(ctx: Arc<Ctx>) -> Result<(), crate::Error> {
    let notify = Arc::new(Notify::new());
    let api = Api::<ClusterRole>::all(ctx.client.clone());
    let roles = spawn_reflector(api.clone(), notify.clone());
    roles.wait_until_ready().await.map_err(|e| crate::Error::Other(format!("waiting for the ClusterRole cache: {e}")))?;
    loop {
        let state: Vec<ClusterRole> = roles.state().iter().map(|r| (**r).clone()).collect();
        for (name, rules) in plan(&state) {
            let patch = serde_json::json!({"rules": rules});
            match api.patch(&name, &patch_params(MANAGER), &Patch::Merge(&patch)).await {
                Ok(_) => tracing::info!(clusterrole = %name, rules = rules.len(), "aggregated ClusterRole rules"),
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => tracing::warn!(clusterrole = %name, error = %e, "aggregating ClusterRole rules failed"),
            }
        }
        // Every change (ours included) wakes the next pass; a pass with nothing to do writes nothing.
        let _ = tokio::time::timeout(RESYNC, notify.notified()).await;
    }
}

/// A rule with absent and empty lists alike, for upstream's semantic equality.
fn key(r: &PolicyRule) -> [Vec<String>; 5] {
    let list = |v: &Option<Vec<String>>| v.clone().unwrap_or_default();
    [r.verbs.clone(), list(&r.api_groups), list(&r.resources), list(&r.resource_names), list(&r.non_resource_urls)]
}

/// The rules `role` should have, when it is aggregated.
fn aggregated_rules(role: &ClusterRole, by_name: &BTreeMap<&str, &ClusterRole>) -> Option<Vec<PolicyRule>> {
    let selectors = role.aggregation_rule.as_ref()?.cluster_role_selectors.clone().unwrap_or_default();
    let name = role.metadata.name.as_deref().unwrap_or_default();
    let mut rules: Vec<PolicyRule> = Vec::new();
    for selector in &selectors {
        for (other_name, other) in by_name {
            let labels = other.metadata.labels.clone().unwrap_or_default();
            if *other_name == name || !selector_matches(Some(selector), &labels) {
                continue;
            }
            for r in other.rules.iter().flatten() {
                if !rules.iter().any(|have| key(have) == key(r)) {
                    rules.push(r.clone());
                }
            }
        }
    }
    Some(rules)
}

/// The writes one pass makes: each aggregated ClusterRole whose rules differ from the union
/// of its selected roles' rules, with that union.
pub fn plan(roles: &[ClusterRole]) -> Vec<(String, Vec<PolicyRule>)> {
    let by_name: BTreeMap<&str, &ClusterRole> = roles.iter().map(|r| (r.metadata.name.as_deref().unwrap_or_default(), r)).collect();
    let mut out = Vec::new();
    for (name, role) in &by_name {
        let Some(want) = aggregated_rules(role, &by_name) else { continue };
        let have = role.rules.clone().unwrap_or_default();
        if have.len() != want.len() || have.iter().zip(&want).any(|(a, b)| key(a) != key(b)) {
            out.push((name.to_string(), want));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::rbac::v1::AggregationRule;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

    fn rule(verb: &str, resource: &str) -> PolicyRule {
        PolicyRule { verbs: vec![verb.into()], api_groups: Some(vec!["".into()]), resources: Some(vec![resource.into()]), ..Default::default() }
    }

    fn role(name: &str, labels: &[&str], rules: Vec<PolicyRule>) -> ClusterRole {
        let labels = labels.iter().map(|l| (l.to_string(), "true".to_string())).collect();
        ClusterRole { metadata: ObjectMeta { name: Some(name.into()), labels: Some(labels), ..Default::default() }, rules: Some(rules), ..Default::default() }
    }

    fn aggregated(name: &str, labels: &[&str], selects: &[&str], rules: Vec<PolicyRule>) -> ClusterRole {
        let selectors = selects
            .iter()
            .map(|s| LabelSelector { match_labels: Some(BTreeMap::from([(s.to_string(), "true".to_string())])), ..Default::default() })
            .collect();
        ClusterRole { aggregation_rule: Some(AggregationRule { cluster_role_selectors: Some(selectors) }), ..role(name, labels, rules) }
    }

    #[test]
    fn unions_selected_roles_by_name_without_duplicates_or_itself() {
        let roles = vec![
            role("b-part", &["to-view"], vec![rule("get", "pods"), rule("list", "pods")]),
            role("a-part", &["to-view"], vec![rule("get", "pods"), rule("get", "services")]),
            role("unrelated", &[], vec![rule("delete", "nodes")]),
            aggregated("view", &["to-view"], &["to-view"], vec![rule("stale", "x")]),
        ];
        let plan = plan(&roles);
        assert_eq!(plan.len(), 1);
        let (name, rules) = &plan[0];
        assert_eq!(name, "view");
        assert_eq!(rules, &vec![rule("get", "pods"), rule("get", "services"), rule("list", "pods")], "a-part first, duplicate get pods dropped, own rules ignored");
    }

    #[test]
    fn selectors_are_taken_in_order_and_up_to_date_roles_are_left_alone() {
        let roles = vec![
            role("x", &["second"], vec![rule("get", "x")]),
            role("y", &["first"], vec![rule("get", "y")]),
            aggregated("agg", &[], &["first", "second"], vec![]),
        ];
        let plan1 = plan(&roles);
        assert_eq!(plan1[0].1, vec![rule("get", "y"), rule("get", "x")]);
        let converged = vec![roles[0].clone(), roles[1].clone(), aggregated("agg", &[], &["first", "second"], plan1[0].1.clone())];
        assert!(plan(&converged).is_empty(), "nothing to write once rules match");
        let mut empty_lists = converged.clone();
        empty_lists[2].rules.as_mut().unwrap()[0].resource_names = Some(vec![]);
        assert!(plan(&empty_lists).is_empty(), "absent and empty lists are equal, as upstream's semantic equality");
    }

    #[test]
    fn chains_converge_pass_by_pass() {
        let mut roles = vec![
            role("system:aggregate-to-view", &["to-view"], vec![rule("get", "pods")]),
            aggregated("view", &["to-edit"], &["to-view"], vec![]),
            aggregated("edit", &["to-admin"], &["to-edit"], vec![]),
            aggregated("admin", &[], &["to-admin"], vec![]),
        ];
        for _ in 0..3 {
            for (name, rules) in plan(&roles) {
                roles.iter_mut().find(|r| r.metadata.name.as_deref() == Some(&name)).unwrap().rules = Some(rules);
            }
        }
        assert!(plan(&roles).is_empty());
        assert_eq!(roles[3].rules, Some(vec![rule("get", "pods")]), "view's rules reach admin through edit");
    }
}
