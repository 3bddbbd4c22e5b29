//! The authorizer chain, as kube-apiserver's `--authorization-mode=Node,RBAC`: members of
//! `system:masters` are allowed everything (upstream's privileged-group authorizer), nodes
//! are decided by the Node authorizer, everyone else by RBAC.
//!
//! The RBAC policy is an in-memory index (`rbac::Policy`) rebuilt from the watch cache
//! whenever one of the four RBAC kinds changes, so a decision reads no storage; decisions
//! are also memoized per attribute set until the policy next changes. A denial first waits
//! (briefly) for the index to catch up with the store, so a client that has just created a
//! binding is not refused because the index lagged a few milliseconds behind its write.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use kine_sqlite::Backend;
use serde_json::Value;
use tokio::sync::watch;

use super::attributes::Attributes;
use super::node::NodeAuthorizer;
use super::rbac::{Policy, PolicyRule};
use super::UserInfo;
use crate::registry::cache::WatchCache;
use crate::registry::store::GenericStore;
use crate::registry::Registry;

/// Upstream's `user.SystemPrivilegedGroup`.
pub const MASTERS: &str = "system:masters";

/// Decisions remembered before the memo is emptied (it is also emptied on every change).
const MEMO_LIMIT: usize = 20_000;

/// How long a denial waits for the policy index to reach the store's revision.
const CATCH_UP: Duration = Duration::from_secs(2);

/// The four RBAC kinds, in the order `Policy::build` takes them.
const RBAC_RESOURCES: [&str; 4] = ["clusterroles", "roles", "clusterrolebindings", "rolebindings"];

/// A decision and the reason given for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub reason: String,
}

pub struct Authorizer {
    policy: RwLock<Arc<Policy>>,
    memo: RwLock<HashMap<Attributes, Decision>>,
    /// The store revision the policy index reflects.
    applied: watch::Sender<i64>,
    backend: Option<Arc<dyn Backend>>,
    pub node: NodeAuthorizer,
}

impl Authorizer {
    /// An authorizer over a fixed policy (tests).
    pub fn with_policy(policy: Policy) -> Authorizer {
        Authorizer {
            policy: RwLock::new(Arc::new(policy)),
            memo: RwLock::new(HashMap::new()),
            applied: watch::channel(0).0,
            backend: None,
            node: NodeAuthorizer::default(),
        }
    }

    /// The authorizer of a registry: reads the policy now, then follows every change.
    pub async fn start(registry: &Arc<Registry>) -> anyhow::Result<Arc<Authorizer>> {
        let cache = registry.watch_cache().clone();
        cache.ensure_started().await?;
        let stores: Vec<Arc<GenericStore>> = RBAC_RESOURCES
            .iter()
            .map(|r| registry.find("rbac.authorization.k8s.io", "v1", r).ok_or_else(|| anyhow::anyhow!("{r} not served")))
            .collect::<anyhow::Result<_>>()?;
        let mut authorizer = Authorizer::with_policy(Policy::default());
        authorizer.backend = Some(registry.backend().clone());
        authorizer.node.cache = Some(cache.clone());
        let authorizer = Arc::new(authorizer);
        let rev = cache.revision();
        authorizer.node.load(&cache);
        authorizer.replace(build_policy(&cache, &stores), rev);
        tokio::spawn(follow(Arc::downgrade(&authorizer), cache, stores, rev));
        Ok(authorizer)
    }

    fn replace(&self, policy: Policy, revision: i64) {
        *self.policy.write().expect("policy lock") = Arc::new(policy);
        self.memo.write().expect("memo lock").clear();
        self.applied.send_replace(revision);
    }

    /// The current RBAC policy.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.read().expect("policy lock").clone()
    }

    /// Decides now, on the index as it is.
    pub fn decide(&self, a: &Attributes) -> Decision {
        if a.user.groups.iter().any(|g| g == MASTERS) {
            return Decision { allowed: true, reason: String::new() };
        }
        // Node decisions follow the pod graph, which the memo does not track.
        if super::node::node_name(&a.user).is_some() {
            return self.evaluate(a);
        }
        if let Some(d) = self.memo.read().expect("memo lock").get(a) {
            return d.clone();
        }
        let d = self.evaluate(a);
        let mut memo = self.memo.write().expect("memo lock");
        if memo.len() >= MEMO_LIMIT {
            memo.clear();
        }
        memo.insert(a.clone(), d.clone());
        d
    }

    fn evaluate(&self, a: &Attributes) -> Decision {
        // As upstream's union: the Node authorizer allows or has no opinion (with a reason),
        // then RBAC decides; a denial carries both reasons.
        let policy = self.policy();
        let node = self.node.decide(a, &policy);
        if let Some(d) = node.as_ref().filter(|d| d.allowed) {
            return d.clone();
        }
        let (allowed, reason) = policy.authorize(a);
        if allowed {
            return Decision { allowed, reason };
        }
        let reasons: Vec<String> = node.map(|d| d.reason).into_iter().chain([reason]).filter(|r| !r.is_empty()).collect();
        Decision { allowed: false, reason: reasons.join(", ") }
    }

    /// Decides; a denial is confirmed against a policy index caught up with the store.
    pub async fn authorize(&self, a: &Attributes) -> Decision {
        let d = self.decide(a);
        if d.allowed || !self.catch_up().await {
            return d;
        }
        self.decide(a)
    }

    /// Waits until the index reflects the store's current revision; true when it moved.
    async fn catch_up(&self) -> bool {
        let Some(backend) = &self.backend else { return false };
        let Ok(current) = backend.current_revision().await else { return false };
        let mut rx = self.applied.subscribe();
        let before = *rx.borrow();
        if before >= current {
            return false;
        }
        let _ = tokio::time::timeout(CATCH_UP, rx.wait_for(|r| *r >= current)).await;
        let now = *rx.borrow();
        now > before
    }

    /// The rules `user` holds in `namespace` (SelfSubjectRulesReview, escalation checks):
    /// everything for `system:masters`.
    pub fn rules_for(&self, user: &UserInfo, namespace: &str) -> (Vec<PolicyRule>, Vec<String>) {
        if user.groups.iter().any(|g| g == MASTERS) {
            return (vec![PolicyRule::from_value(&serde_json::json!({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]})), PolicyRule::from_value(&serde_json::json!({"nonResourceURLs": ["*"], "verbs": ["*"]}))], Vec::new());
        }
        self.policy().rules_for(user, namespace)
    }
}

fn build_policy(cache: &WatchCache, stores: &[Arc<GenericStore>]) -> Policy {
    let objects: Vec<Vec<Value>> = stores
        .iter()
        .map(|s| cache.list(&s.prefix(None)).1.iter().filter_map(|kv| s.decode(kv).ok()).collect())
        .collect();
    Policy::build(&objects[0], &objects[1], &objects[2], &objects[3])
}

/// Rebuilds the policy whenever the cache applies a change under an RBAC prefix.
async fn follow(authorizer: std::sync::Weak<Authorizer>, cache: Arc<WatchCache>, stores: Vec<Arc<GenericStore>>, mut seen: i64) {
    let mut progress = cache.subscribe();
    let prefixes: Vec<String> = stores.iter().map(|s| s.prefix(None)).collect();
    loop {
        if progress.changed().await.is_err() {
            return;
        }
        let rev = *progress.borrow_and_update();
        let Some(authorizer) = authorizer.upgrade() else { return };
        if !authorizer.node.apply_after(&cache, seen) {
            authorizer.node.load(&cache);
        }
        // Out of the window (TooOld): rebuild to be safe.
        let changed = prefixes.iter().any(|p| cache.events_after(p, seen, 1).map_or(true, |(events, _)| !events.is_empty()));
        if changed {
            authorizer.replace(build_policy(&cache, &stores), rev);
            tracing::debug!(revision = rev, "RBAC policy reloaded");
        } else {
            authorizer.applied.send_replace(rev);
        }
        seen = rev;
    }
}
