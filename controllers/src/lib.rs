//! krust's controller-manager and scheduler. Every controller is an API client built on
//! kube-rs (`kube::runtime` watchers, reflectors and `Controller`s), talking to the API
//! server only through the wire API, as upstream's do. `run` starts them all once this
//! process holds the controller-manager Lease, so several servers can run it safely.
//!
//! One module per controller; each exposes `pub async fn run(ctx: Arc<Ctx>) -> Result<(), Error>`
//! and is listed once in [`CONTROLLERS`].

pub mod clusterroleaggregation;
pub mod context;
pub mod credentials;
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
pub mod writes;

use std::sync::Arc;

pub use context::{Config, Ctx, Error};

/// A controller's entry point.
pub type RunFn = fn(Arc<Ctx>) -> futures::future::BoxFuture<'static, Result<(), Error>>;

/// Every controller: its name (as upstream's `--controllers` names them), the service
/// account it acts as (upstream's, bound to `system:controller:<account>` by the bootstrap
/// policy; see [`credentials`]), and its entry point.
pub const CONTROLLERS: &[(&str, &str, RunFn)] = &[
    ("namespace", "namespace-controller", |ctx| Box::pin(namespace::run(ctx))),
    ("garbage-collector", "generic-garbage-collector", |ctx| Box::pin(gc::run(ctx))),
    ("serviceaccount", "service-account-controller", |ctx| Box::pin(serviceaccount::run(ctx))),
    ("root-ca-cert-publisher", "root-ca-cert-publisher", |ctx| Box::pin(rootca::run(ctx))),
    ("replicaset", "replicaset-controller", |ctx| Box::pin(replicaset::run(ctx))),
    ("replicationcontroller", "replication-controller", |ctx| Box::pin(replicaset::run_replication_controllers(ctx))),
    ("deployment", "deployment-controller", |ctx| Box::pin(deployment::run(ctx))),
    ("nodeipam", "node-controller", |ctx| Box::pin(nodeipam::run(ctx))),
    ("nodelifecycle", "node-controller", |ctx| Box::pin(nodelifecycle::run(ctx))),
    ("podgc", "pod-garbage-collector", |ctx| Box::pin(podgc::run(ctx))),
    ("job", "job-controller", |ctx| Box::pin(job::run(ctx))),
    ("ttl-after-finished", "ttl-after-finished-controller", |ctx| Box::pin(job::run_ttl_after_finished(ctx))),
    ("cronjob", "cronjob-controller", |ctx| Box::pin(cronjob::run(ctx))),
    ("endpointslice", "endpointslice-controller", |ctx| Box::pin(endpoints::run_endpoint_slices(ctx))),
    ("endpoints", "endpoint-controller", |ctx| Box::pin(endpoints::run_endpoints(ctx))),
    ("endpointslice-mirroring", "endpointslicemirroring-controller", |ctx| Box::pin(endpointslicemirroring::run(ctx))),
    ("horizontalpodautoscaling", "horizontal-pod-autoscaler", |ctx| Box::pin(hpa::run(ctx))),
    ("resourcequota", "resourcequota-controller", |ctx| Box::pin(resourcequota::run(ctx))),
    ("disruption", "disruption-controller", |ctx| Box::pin(disruption::run(ctx))),
    ("statefulset", "statefulset-controller", |ctx| Box::pin(statefulset::run(ctx))),
    ("daemonset", "daemon-set-controller", |ctx| Box::pin(daemonset::run(ctx))),
    ("clusterrole-aggregation", "clusterrole-aggregation-controller", |ctx| Box::pin(clusterroleaggregation::run(ctx))),
];

/// The scheduler's name in `Config::disabled`; it runs apart from the controllers
/// ([`run_scheduler`]), under its own identity and Lease.
pub const SCHEDULER: &str = "scheduler";

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

/// Runs every controller while this process holds the `kube-controller-manager` Lease;
/// returns only on a fatal error. `client` is the controller-manager's own (root) client;
/// with `Config::service_account_credentials` each controller gets a client of its own
/// service account, else they all share `client`.
pub async fn run(client: kube::Client, config: Config) -> Result<(), Error> {
    let builder = match &config.service_account_credentials {
        Some(base) => Some(credentials::ClientBuilder::new(client.clone(), base)?),
        None => None,
    };
    let ctx = Arc::new(Ctx::new(client, config));
    leader::run_while_leader(ctx.clone(), leader::LEASE_NAME, |ctx| {
        let builder = builder.clone();
        async move {
            let mut tasks = tokio::task::JoinSet::new();
            for (name, account, run) in CONTROLLERS {
                if ctx.config.disabled.iter().any(|d| d == name) {
                    continue;
                }
                let (ctx, builder, name, account) = (ctx.clone(), builder.clone(), *name, *account);
                tasks.spawn(async move {
                    let ctx = match builder {
                        Some(b) => Arc::new(Ctx::new(own_client(&b, name, account).await, ctx.config.clone())),
                        None => ctx,
                    };
                    tracing::info!(controller = name, service_account = account, "starting controller");
                    if let Err(e) = run(ctx).await {
                        tracing::error!(controller = name, error = %e, "controller stopped");
                    }
                });
            }
            while tasks.join_next().await.is_some() {}
        }
    })
    .await
}

/// A controller's own client, retried until the API answers (it may still be starting).
async fn own_client(builder: &credentials::ClientBuilder, name: &str, account: &str) -> kube::Client {
    let mut attempt = 0u32;
    loop {
        match builder.client_for(account).await {
            Ok(c) => return c,
            Err(e) => {
                attempt += 1;
                if attempt % 10 == 3 {
                    tracing::warn!(controller = name, service_account = account, error = %e, "obtaining the controller's credentials");
                }
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    }
}

/// Runs the scheduler with `client` (its own identity, `system:kube-scheduler`) while this
/// process holds the `kube-scheduler` Lease, as upstream's kube-scheduler elects its leader
/// apart from the controller-manager.
pub async fn run_scheduler(client: kube::Client, config: Config) -> Result<(), Error> {
    let ctx = Arc::new(Ctx::new(client, config));
    leader::run_while_leader(ctx, leader::SCHEDULER_LEASE_NAME, |ctx| async move {
        tracing::info!("starting the scheduler");
        if let Err(e) = scheduler::run(ctx).await {
            tracing::error!(error = %e, "the scheduler stopped");
        }
    })
    .await
}
