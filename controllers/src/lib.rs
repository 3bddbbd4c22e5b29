//! krust's controller-manager and scheduler. Every controller is an API client built on
//! kube-rs (`kube::runtime` watchers, reflectors and `Controller`s), talking to the API
//! server only through the wire API, as upstream's do. `run` starts them all once this
//! process holds the controller-manager Lease, so several servers can run it safely.
//!
//! One module per controller; each exposes `pub async fn run(ctx: Arc<Ctx>) -> Result<(), Error>`
//! and is listed once in [`CONTROLLERS`].

pub mod clusterroleaggregation;
pub mod context;
pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod discovery;
pub mod events;
pub mod disruption;
pub mod endpoints;
pub mod endpointslicemirroring;
pub mod gc;
pub mod job;
pub mod hpa;
pub mod leader;
pub mod namespace;
pub mod nodeipam;
pub mod nodelifecycle;
pub mod podgc;
pub mod podutil;
pub mod replicaset;
pub mod resourcequota;
pub mod revision;
pub mod rootca;
pub mod scheduler;
pub mod serviceaccount;
pub mod statefulset;

use std::sync::Arc;

pub use context::{Config, Ctx, Error};

/// A controller's entry point.
pub type RunFn = fn(Arc<Ctx>) -> futures::future::BoxFuture<'static, Result<(), Error>>;

/// Every controller, by name (as upstream's `--controllers` names them).
pub const CONTROLLERS: &[(&str, RunFn)] = &[
    ("namespace", |ctx| Box::pin(namespace::run(ctx))),
    ("garbage-collector", |ctx| Box::pin(gc::run(ctx))),
    ("serviceaccount", |ctx| Box::pin(serviceaccount::run(ctx))),
    ("root-ca-cert-publisher", |ctx| Box::pin(rootca::run(ctx))),
    ("replicaset", |ctx| Box::pin(replicaset::run(ctx))),
    ("replicationcontroller", |ctx| Box::pin(replicaset::run_replication_controllers(ctx))),
    ("scheduler", |ctx| Box::pin(scheduler::run(ctx))),
    ("deployment", |ctx| Box::pin(deployment::run(ctx))),
    ("nodeipam", |ctx| Box::pin(nodeipam::run(ctx))),
    ("nodelifecycle", |ctx| Box::pin(nodelifecycle::run(ctx))),
    ("podgc", |ctx| Box::pin(podgc::run(ctx))),
    ("job", |ctx| Box::pin(job::run(ctx))),
    ("cronjob", |ctx| Box::pin(cronjob::run(ctx))),
    ("endpointslice", |ctx| Box::pin(endpoints::run_endpoint_slices(ctx))),
    ("endpoints", |ctx| Box::pin(endpoints::run_endpoints(ctx))),
    ("endpointslice-mirroring", |ctx| Box::pin(endpointslicemirroring::run(ctx))),
    ("horizontalpodautoscaling", |ctx| Box::pin(hpa::run(ctx))),
    ("resourcequota", |ctx| Box::pin(resourcequota::run(ctx))),
    ("disruption", |ctx| Box::pin(disruption::run(ctx))),
    ("statefulset", |ctx| Box::pin(statefulset::run(ctx))),
    ("daemonset", |ctx| Box::pin(daemonset::run(ctx))),
    ("clusterrole-aggregation", |ctx| Box::pin(clusterroleaggregation::run(ctx))),
];

/// A reflector cache of `api`, kept current in the background; every change wakes `notify`.
/// For loops that recompute from whole caches (scheduler, node lifecycle, kube-proxy).
pub fn spawn_reflector<K>(api: kube::Api<K>, notify: Arc<tokio::sync::Notify>) -> kube::runtime::reflector::Store<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    use futures::StreamExt;
    use kube::runtime::{reflector, watcher, WatchStreamExt};
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, watcher::Config::default())).default_backoff().touched_objects();
    tokio::spawn(async move {
        stream
            .for_each(|_| {
                notify.notify_one();
                futures::future::ready(())
            })
            .await;
    });
    reader
}

/// Patch parameters naming a controller's field manager.
pub(crate) fn patch_params(manager: &str) -> kube::api::PatchParams {
    kube::api::PatchParams { field_manager: Some(manager.into()), ..Default::default() }
}

/// Runs every controller while this process is the leader; returns only on a fatal error.
pub async fn run(client: kube::Client, config: Config) -> Result<(), Error> {
    let ctx = Arc::new(Ctx::new(client, config));
    leader::run_while_leader(ctx.clone(), |ctx| async move {
        let mut tasks = tokio::task::JoinSet::new();
        for (name, run) in CONTROLLERS {
            if ctx.config.disabled.iter().any(|d| d == name) {
                continue;
            }
            let ctx = ctx.clone();
            let name = *name;
            tasks.spawn(async move {
                tracing::info!(controller = name, "starting controller");
                if let Err(e) = run(ctx).await {
                    tracing::error!(controller = name, error = %e, "controller stopped");
                }
            });
        }
        while tasks.join_next().await.is_some() {}
    })
    .await
}
