//! The service account controller (upstream's `serviceaccount` controller): every active
//! namespace has a `default` ServiceAccount, created again if deleted.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{watcher, Controller};

use crate::Ctx;

pub const DEFAULT: &str = "default";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("creating the default ServiceAccount in {0}: {1}")]
    CreateFailed(String, #[source] kube::Error),
}

pub async fn run(ctx: Arc<Ctx>) -> Result<(), crate::Error> {
    let client = ctx.client.clone();
    Controller::new(Api::<Namespace>::all(client.clone()), watcher::Config::default())
        .watches(
            Api::<ServiceAccount>::all(client),
            watcher::Config::default().fields(&format!("metadata.name={DEFAULT}")),
            |sa| sa.metadata.namespace.map(|ns| ObjectRef::new(&ns)),
        )
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {})
        .await;
    Ok(())
}

fn error_policy(_ns: Arc<Namespace>, err: &Error, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!(error = %err, "service account reconcile failed");
    Action::requeue(Duration::from_secs(5))
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let name = ns.metadata.name.clone().unwrap_or_default();
    if ns.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let api: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), &name);
    // Read as upstream's lister would: the controller's role only creates.
    if crate::writes::lookup(&api, DEFAULT).await.map_err(|e| Error::CreateFailed(name.clone(), e))?.is_some() {
        return Ok(Action::await_change());
    }
    let sa = ServiceAccount {
        metadata: ObjectMeta { name: Some(DEFAULT.into()), ..Default::default() },
        ..Default::default()
    };
    let pp = PostParams { field_manager: Some("service-account-controller".into()), ..Default::default() };
    match api.create(&pp, &sa).await {
        Ok(_) => tracing::info!(namespace = %name, "created the default ServiceAccount"),
        // Created meanwhile, or the namespace began terminating / is gone.
        Err(kube::Error::Api(s)) if matches!(s.code, 409 | 404) => {}
        Err(e) if crate::podutil::namespace_terminating(&e) => {}
        Err(e) => return Err(Error::CreateFailed(name, e)),
    }
    Ok(Action::await_change())
}
