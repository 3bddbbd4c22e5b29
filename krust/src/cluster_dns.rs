//! The `kube-system/kube-dns` Service: the address (`--cluster-dns`) pods have as their
//! nameserver. It has no selector: every node's agent serves DNS itself and publishes its own
//! EndpointSlice for it (`agent::dns`), which kube-proxy balances over.
//!
//! Kept by the server as the controller-manager's user (`system:kube-controller-manager`),
//! which krust's Role `kube-system/system:krust:kube-dns-service` lets get, create and delete
//! this one Service, and nothing more than upstream's role otherwise.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, PostParams};
use serde_json::json;

use agent::dns::{NAMESPACE, SERVICE};

/// The Service as krust keeps it.
pub fn service(cluster_ip: IpAddr) -> serde_json::Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": SERVICE,
            "namespace": NAMESPACE,
            "labels": {"k8s-app": "kube-dns", "kubernetes.io/cluster-service": "true", "kubernetes.io/name": "kube-dns"},
        },
        "spec": {
            "clusterIP": cluster_ip.to_string(),
            "clusterIPs": [cluster_ip.to_string()],
            "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
            ],
        },
    })
}

/// Creates the Service in the background once the API answers (retrying every second), and
/// recreates it when its ClusterIP is not `cluster_ip` (a changed `--cluster-dns`: the
/// ClusterIP cannot be updated).
pub async fn spawn(kubeconfig: &Path, cluster_ip: IpAddr) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let client = crate::node::client_from(kubeconfig).await.context("the cluster DNS client")?;
    Ok(tokio::spawn(async move {
        let mut attempt = 0u32;
        loop {
            match ensure(&client, cluster_ip).await {
                Ok(()) => return,
                Err(e) => {
                    attempt += 1;
                    // The first attempts race the listener; later ones are worth telling.
                    if attempt % 30 == 5 {
                        tracing::warn!(error = %format!("{e:#}"), "creating the kube-dns Service");
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }))
}

async fn ensure(client: &kube::Client, cluster_ip: IpAddr) -> anyhow::Result<()> {
    // Untyped: the binary does not depend on k8s-openapi's types.
    let resource = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("", "v1", "Service"), "services");
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), NAMESPACE, &resource);
    let want: DynamicObject = serde_json::from_value(service(cluster_ip))?;
    if let Some(have) = api.get_opt(SERVICE).await? {
        let ip = have.data["spec"]["clusterIP"].as_str().map(str::to_string);
        if ip.as_deref() == Some(cluster_ip.to_string().as_str()) {
            return Ok(());
        }
        tracing::info!(old = ?ip, new = %cluster_ip, "the kube-dns Service has another ClusterIP: recreating it");
        api.delete(SERVICE, &DeleteParams::default()).await?;
        // Gone before the create (a Service has no finalizers, but be patient).
        for _ in 0..50 {
            if api.get_opt(SERVICE).await?.is_none() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    match api.create(&PostParams { field_manager: Some("krust".into()), ..Default::default() }, &want).await {
        Ok(_) => {
            tracing::info!(%cluster_ip, "created the kube-dns Service");
            Ok(())
        }
        // Another server got there first.
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e).context("creating kube-system/kube-dns"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_is_a_valid_service() {
        let s: k8s_openapi::api::core::v1::Service = serde_json::from_value(service("10.43.0.10".parse().unwrap())).unwrap();
        let spec = s.spec.unwrap();
        assert_eq!(spec.cluster_ip.as_deref(), Some("10.43.0.10"));
        assert!(spec.selector.is_none());
        let ports = spec.ports.unwrap();
        assert_eq!((ports[0].name.as_deref(), ports[0].protocol.as_deref()), (Some("dns"), Some("UDP")));
        assert_eq!((ports[1].name.as_deref(), ports[1].protocol.as_deref()), (Some("dns-tcp"), Some("TCP")));
        let _: DynamicObject = serde_json::from_value(service("10.43.0.10".parse().unwrap())).unwrap();
    }
}
