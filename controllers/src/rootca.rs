//! The root CA publisher (upstream's `root-ca-cert-publisher`): every active namespace has
//! a ConfigMap `kube-root-ca.crt` whose `ca.crt` is the cluster CA, so pods can verify the
//! API server; it is restored when deleted or changed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{watcher, Controller};

use crate::Ctx;

pub const NAME: &str = "kube-root-ca.crt";
pub const KEY: &str = "ca.crt";
const DESCRIPTION_ANNOTATION: &str = "kubernetes.io/description";
const DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";
const MANAGER: &str = "root-ca-cert-publisher";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("publishing {NAME} in {0}: {1}")]
    PublishFailed(String, #[source] kube::Error),
}

pub async fn run(ctx: Arc<Ctx>) -> Result<(), crate::Error> {
    if ctx.config.root_ca_pem.is_none() {
        tracing::info!("no cluster CA configured: not publishing {NAME}");
        return Ok(());
    }
    let client = ctx.client.clone();
    Controller::new(Api::<Namespace>::all(client.clone()), watcher::Config::default())
        .watches(
            Api::<ConfigMap>::all(client),
            watcher::Config::default().fields(&format!("metadata.name={NAME}")),
            |cm| cm.metadata.namespace.map(|ns| ObjectRef::new(&ns)),
        )
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {})
        .await;
    Ok(())
}

fn error_policy(_ns: Arc<Namespace>, err: &Error, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!(error = %err, "root CA publishing failed");
    Action::requeue(Duration::from_secs(5))
}

/// The ConfigMap as it should be (data and the description annotation), keeping the rest.
pub fn desired(mut cm: ConfigMap, ca: &str) -> ConfigMap {
    cm.metadata.name = Some(NAME.into());
    cm.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(DESCRIPTION_ANNOTATION.into(), DESCRIPTION.into());
    cm.data = Some(BTreeMap::from([(KEY.to_string(), ca.to_string())]));
    cm.binary_data = None;
    cm
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let name = ns.metadata.name.clone().unwrap_or_default();
    let Some(ca) = ctx.config.root_ca_pem.as_deref() else {
        return Ok(Action::await_change());
    };
    if ns.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &name);
    let pp = PostParams { field_manager: Some(MANAGER.into()), ..Default::default() };
    let fail = |e| Error::PublishFailed(name.clone(), e);
    // Read as upstream's lister would: the publisher's role only creates and updates.
    let result = match crate::writes::lookup(&api, NAME).await.map_err(fail)? {
        None => {
            let cm = desired(ConfigMap { metadata: ObjectMeta::default(), ..Default::default() }, ca);
            api.create(&pp, &cm).await.map(|_| tracing::info!(namespace = %name, "published {NAME}"))
        }
        Some(cm) => {
            let want = desired(cm.clone(), ca);
            if want == cm {
                return Ok(Action::await_change());
            }
            // Carries the resourceVersion read: a concurrent change is a 409, retried.
            api.replace(NAME, &pp, &want).await.map(|_| tracing::info!(namespace = %name, "restored {NAME}"))
        }
    };
    match result {
        Ok(()) => Ok(Action::await_change()),
        // The namespace began terminating or is gone.
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(Action::await_change()),
        Err(e) if crate::podutil::namespace_terminating(&e) => Ok(Action::await_change()),
        Err(e) => Err(fail(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn desired_replaces_data_and_keeps_labels() {
        let mut cm = ConfigMap::default();
        cm.metadata.labels = Some(BTreeMap::from([("a".to_string(), "b".to_string())]));
        cm.data = Some(BTreeMap::from([("other".to_string(), "x".to_string())]));
        let want = desired(cm, "PEM");
        assert_eq!(want.data.unwrap()[KEY], "PEM");
        assert_eq!(want.metadata.labels.unwrap()["a"], "b");
        assert!(want.metadata.annotations.unwrap().contains_key(DESCRIPTION_ANNOTATION));
    }
}
