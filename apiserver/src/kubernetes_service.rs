//! The `default/kubernetes` Service and its Endpoints and EndpointSlice, pointing at this
//! API server, as upstream's controlplane reconciler keeps them: pods reach the API through
//! the first address of the service range.

use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};
use crate::registry::store::{GenericStore, Target, WriteOptions};
use crate::registry::{Registry, ReqCtx};

/// Where clients reach this API server.
#[derive(Clone, Debug)]
pub struct Advertise {
    pub address: String,
    pub port: u16,
}

fn ctx() -> ReqCtx {
    ReqCtx { namespace: Some("default".into()), ..Default::default() }
}

/// Creates the object, or brings the fields `fix` sets back in line if someone changed them.
async fn ensure(store: &GenericStore, obj: Value, fix: impl Fn(&mut Value, &Value)) -> ApiResult<()> {
    let name = obj["metadata"]["name"].as_str().unwrap_or_default().to_string();
    let opts = WriteOptions { dry_run: false, field_manager: Some("kube-apiserver".into()) };
    match store.create(&ctx(), store.decode_body(obj.clone())?, &opts).await {
        Ok(_) => Ok(()),
        Err(ApiError::AlreadyExists { .. }) => store
            .guaranteed_update(&ctx(), &name, Target::Main, &opts, |cur| {
                let mut next = cur.clone();
                fix(&mut next, &obj);
                Ok(next)
            })
            .await
            .map(|_| ()),
        Err(e) => Err(e),
    }
}

/// Makes sure the `kubernetes` Service, Endpoints and EndpointSlice exist and point here.
pub async fn reconcile(registry: &Registry, cluster_ip: &str, at: &Advertise) -> ApiResult<()> {
    let find = |g: &str, v: &str, p: &str| -> ApiResult<std::sync::Arc<GenericStore>> {
        registry.find(g, v, p).ok_or_else(|| ApiError::internal(format!("{p} not served")))
    };
    let labels = json!({"component": "apiserver", "provider": "kubernetes"});
    let service = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kubernetes", "labels": labels},
        "spec": {"type": "ClusterIP", "clusterIP": cluster_ip, "sessionAffinity": "None",
                 "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": at.port}]},
    });
    let services = find("", "v1", "services")?;
    ensure(&services, service, |cur, want| cur["spec"]["ports"] = want["spec"]["ports"].clone()).await?;
    let endpoints = json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "kubernetes", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": at.address}], "ports": [{"name": "https", "port": at.port, "protocol": "TCP"}]}],
    });
    let eps = find("", "v1", "endpoints")?;
    ensure(&eps, endpoints, |cur, want| cur["subsets"] = want["subsets"].clone()).await?;
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "kubernetes", "labels": {"kubernetes.io/service-name": "kubernetes", "endpointslice.kubernetes.io/managed-by": "endpointslicemirroring-controller.k8s.io"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [at.address], "conditions": {"ready": true}}],
        "ports": [{"name": "https", "port": at.port, "protocol": "TCP"}],
    });
    let slices = find("discovery.k8s.io", "v1", "endpointslices")?;
    ensure(&slices, slice, |cur, want| {
        cur["endpoints"] = want["endpoints"].clone();
        cur["ports"] = want["ports"].clone();
    })
    .await
}
