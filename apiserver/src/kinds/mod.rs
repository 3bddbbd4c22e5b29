//! The kinds table: every built-in resource krust serves, each one line here plus (when it
//! has rules of its own) one file holding its strategy. Routes, discovery and storage all
//! come from this table.

use std::sync::Arc;

use k8s_openapi::api;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiextensions;
use k8s_openapi::{ListableResource, Resource};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::registry::{Kind, Plain, ResourceInfo, Strategy};

/// Whether a k8s-openapi resource type is namespaced (from its `Scope` type).
pub trait Scoped {
    const NAMESPACED: bool;
}
impl Scoped for k8s_openapi::NamespaceResourceScope {
    const NAMESPACED: bool = true;
}
impl Scoped for k8s_openapi::ClusterResourceScope {
    const NAMESPACED: bool = false;
}

fn normalize<K: DeserializeOwned + Serialize>(v: Value) -> Result<Value, String> {
    let typed: K = serde_json::from_value(v).map_err(|e| e.to_string())?;
    serde_json::to_value(typed).map_err(|e| e.to_string())
}

/// Builds a table entry from a k8s-openapi type.
fn typed<K>(strategy: impl Strategy, short_names: &[&str], categories: &[&str], subresources: &[&str]) -> Kind
where
    K: Resource + ListableResource + DeserializeOwned + Serialize,
    K::Scope: Scoped,
{
    let strs = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    Kind {
        info: ResourceInfo {
            group: K::GROUP.to_string(),
            version: K::VERSION.to_string(),
            kind: K::KIND.to_string(),
            list_kind: K::LIST_KIND.to_string(),
            plural: K::URL_PATH_SEGMENT.to_string(),
            singular: K::KIND.to_lowercase(),
            namespaced: <K::Scope as Scoped>::NAMESPACED,
            short_names: strs(short_names),
            categories: strs(categories),
            subresources: strs(subresources),
        },
        strategy: Arc::new(strategy),
        normalize: Some(normalize::<K>),
    }
}

const ALL: &[&str] = &["all"];
const STATUS: &[&str] = &["status"];

/// Every built-in kind, in discovery order.
pub fn all() -> Vec<Kind> {
    use api::core::v1 as core;
    vec![
        // core/v1
        typed::<core::Namespace>(Plain, &["ns"], &[], &["status"]),
        typed::<core::Pod>(Plain, &["po"], ALL, STATUS),
        typed::<core::Service>(Plain, &["svc"], ALL, STATUS),
        typed::<core::Endpoints>(Plain, &["ep"], &[], &[]),
        typed::<core::ConfigMap>(Plain, &["cm"], &[], &[]),
        typed::<core::Secret>(Plain, &[], &[], &[]),
        typed::<core::ServiceAccount>(Plain, &["sa"], &[], &[]),
        typed::<core::Event>(Plain, &["ev"], &[], &[]),
        typed::<core::Node>(Plain, &["no"], &[], STATUS),
        typed::<core::PersistentVolume>(Plain, &["pv"], &[], STATUS),
        typed::<core::PersistentVolumeClaim>(Plain, &["pvc"], &[], STATUS),
        typed::<core::LimitRange>(Plain, &["limits"], &[], &[]),
        typed::<core::ResourceQuota>(Plain, &["quota"], &[], STATUS),
        typed::<core::ReplicationController>(Plain, &["rc"], ALL, STATUS),
        typed::<core::PodTemplate>(Plain, &[], &[], &[]),
        // apps/v1
        typed::<api::apps::v1::Deployment>(Plain, &["deploy"], ALL, STATUS),
        typed::<api::apps::v1::ReplicaSet>(Plain, &["rs"], ALL, STATUS),
        typed::<api::apps::v1::StatefulSet>(Plain, &["sts"], ALL, STATUS),
        typed::<api::apps::v1::DaemonSet>(Plain, &["ds"], ALL, STATUS),
        typed::<api::apps::v1::ControllerRevision>(Plain, &[], &[], &[]),
        // batch/v1
        typed::<api::batch::v1::Job>(Plain, &[], ALL, STATUS),
        typed::<api::batch::v1::CronJob>(Plain, &["cj"], ALL, STATUS),
        // autoscaling
        typed::<api::autoscaling::v2::HorizontalPodAutoscaler>(Plain, &["hpa"], ALL, STATUS),
        typed::<api::autoscaling::v1::HorizontalPodAutoscaler>(Plain, &["hpa"], ALL, STATUS),
        // coordination, discovery, events
        typed::<api::coordination::v1::Lease>(Plain, &[], &[], &[]),
        typed::<api::discovery::v1::EndpointSlice>(Plain, &[], &[], &[]),
        typed::<api::events::v1::Event>(Plain, &["ev"], &[], &[]),
        // rbac
        typed::<api::rbac::v1::Role>(Plain, &[], &[], &[]),
        typed::<api::rbac::v1::RoleBinding>(Plain, &[], &[], &[]),
        typed::<api::rbac::v1::ClusterRole>(Plain, &[], &[], &[]),
        typed::<api::rbac::v1::ClusterRoleBinding>(Plain, &[], &[], &[]),
        // networking
        typed::<api::networking::v1::NetworkPolicy>(Plain, &["netpol"], &[], &[]),
        typed::<api::networking::v1::Ingress>(Plain, &["ing"], &[], STATUS),
        typed::<api::networking::v1::IngressClass>(Plain, &[], &[], &[]),
        // policy
        typed::<api::policy::v1::PodDisruptionBudget>(Plain, &["pdb"], &[], STATUS),
        // storage
        typed::<api::storage::v1::StorageClass>(Plain, &["sc"], &[], &[]),
        typed::<api::storage::v1::CSIDriver>(Plain, &[], &[], &[]),
        typed::<api::storage::v1::CSINode>(Plain, &[], &[], &[]),
        typed::<api::storage::v1::VolumeAttachment>(Plain, &[], &[], STATUS),
        // apiextensions (objects stored; serving custom resources comes with the CRD issue)
        typed::<apiextensions::CustomResourceDefinition>(Plain, &["crd", "crds"], &["api-extensions"], STATUS),
        // scheduling, node, certificates, admissionregistration
        typed::<api::scheduling::v1::PriorityClass>(Plain, &["pc"], &[], &[]),
        typed::<api::node::v1::RuntimeClass>(Plain, &[], &[], &[]),
        typed::<api::certificates::v1::CertificateSigningRequest>(Plain, &["csr"], &[], STATUS),
        typed::<api::admissionregistration::v1::MutatingWebhookConfiguration>(Plain, &[], &["api-extensions"], &[]),
        typed::<api::admissionregistration::v1::ValidatingWebhookConfiguration>(Plain, &[], &["api-extensions"], &[]),
        typed::<api::admissionregistration::v1::ValidatingAdmissionPolicy>(Plain, &[], &["api-extensions"], STATUS),
        typed::<api::admissionregistration::v1::ValidatingAdmissionPolicyBinding>(Plain, &[], &["api-extensions"], &[]),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_consistent() {
        let kinds = all();
        let pods = kinds.iter().find(|k| k.info.plural == "pods").unwrap();
        assert!(pods.info.namespaced);
        assert_eq!(pods.info.group, "");
        let nodes = kinds.iter().find(|k| k.info.plural == "nodes").unwrap();
        assert!(!nodes.info.namespaced);
        let deploy = kinds.iter().find(|k| k.info.plural == "deployments").unwrap();
        assert_eq!(deploy.info.api_version(), "apps/v1");
        assert_eq!(deploy.info.key_root(), "/registry/apps/deployments/");
    }
}
