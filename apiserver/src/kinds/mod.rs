//! The kinds table: every built-in resource krust serves, each one line here plus (when it
//! has rules of its own) one file holding its strategy. Routes, discovery and storage all
//! come from this table.

pub mod common;
pub mod podspec;
pub mod workload;
pub mod pod;
pub mod service;
pub mod namespace;
pub mod node;
pub mod configmap;
pub mod secret;
pub mod serviceaccount;
pub mod deployment;
pub mod replicaset;
pub mod replicationcontroller;
pub mod statefulset;
pub mod daemonset;
pub mod volume;
pub mod job;
pub mod cronjob;
pub mod event;
pub mod rbac;
pub mod lease;
pub mod endpoints;
pub mod podtemplate;
pub mod crd;
pub mod hpa;
pub mod hpa_v1;
pub mod pdb;
pub mod ingress;
pub mod priorityclass;
pub mod flowcontrol;
pub mod csr;
pub mod csistoragecapacity;
pub mod reviews;
pub mod apiservice;
pub mod admissionregistration;

use std::sync::Arc;

use k8s_openapi::api;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiextensions;
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1 as apiregistration;
use k8s_openapi::{ListableResource, Resource};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::registry::{Kind, Plain, ResourceInfo, Strategy};
use reviews::{Review, ReviewStrategy};

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

/// Builds a table entry for a virtual kind (create-only, never stored: the reviews) from a
/// k8s-openapi type, which has no list type.
fn virtual_kind<K>(strategy: impl Strategy, namespaced: bool) -> Kind
where
    K: Resource + DeserializeOwned + Serialize,
{
    Kind {
        info: ResourceInfo {
            group: K::GROUP.to_string(),
            version: K::VERSION.to_string(),
            kind: K::KIND.to_string(),
            list_kind: String::new(),
            plural: K::URL_PATH_SEGMENT.to_string(),
            singular: K::KIND.to_lowercase(),
            namespaced,
            short_names: Vec::new(),
            categories: Vec::new(),
            subresources: Vec::new(),
        },
        strategy: Arc::new(strategy),
        normalize: Some(normalize::<K>),
    }
}

const ALL: &[&str] = &["all"];
const STATUS: &[&str] = &["status"];
const STATUS_SCALE: &[&str] = &["status", "scale"];

/// Every built-in kind, in discovery order.
pub fn all() -> Vec<Kind> {
    use api::core::v1 as core;
    vec![
        // core/v1
        typed::<core::Namespace>(namespace::NamespaceStrategy, &["ns"], &[], &["status"]),
        typed::<core::Pod>(pod::PodStrategy, &["po"], ALL, &["status", "binding", "eviction", "log", "exec", "attach", "portforward"]),
        typed::<core::Service>(service::ServiceStrategy, &["svc"], ALL, STATUS),
        typed::<core::Endpoints>(endpoints::EndpointsStrategy, &["ep"], &[], &[]),
        typed::<core::ConfigMap>(configmap::ConfigMapStrategy, &["cm"], &[], &[]),
        typed::<core::Secret>(secret::SecretStrategy, &[], &[], &[]),
        typed::<core::ServiceAccount>(serviceaccount::ServiceAccountStrategy, &["sa"], &[], &["token"]),
        typed::<core::Event>(event::EventStrategy, &["ev"], &[], &[]),
        typed::<core::Node>(node::NodeStrategy, &["no"], &[], STATUS),
        typed::<core::PersistentVolume>(volume::PersistentVolumeStrategy, &["pv"], &[], STATUS),
        typed::<core::PersistentVolumeClaim>(volume::PersistentVolumeClaimStrategy, &["pvc"], &[], STATUS),
        typed::<core::LimitRange>(Plain, &["limits"], &[], &[]),
        typed::<core::ResourceQuota>(Plain, &["quota"], &[], STATUS),
        typed::<core::ReplicationController>(replicationcontroller::ReplicationControllerStrategy, &["rc"], ALL, STATUS_SCALE),
        typed::<core::PodTemplate>(podtemplate::PodTemplateStrategy, &[], &[], &[]),
        // apiregistration (the aggregator's group, first upstream)
        typed::<apiregistration::APIService>(apiservice::ApiServiceStrategy, &[], &["api-extensions"], STATUS),
        // apps/v1
        typed::<api::apps::v1::Deployment>(deployment::DeploymentStrategy, &["deploy"], ALL, STATUS_SCALE),
        typed::<api::apps::v1::ReplicaSet>(replicaset::ReplicaSetStrategy, &["rs"], ALL, STATUS_SCALE),
        typed::<api::apps::v1::StatefulSet>(statefulset::StatefulSetStrategy, &["sts"], ALL, STATUS_SCALE),
        typed::<api::apps::v1::DaemonSet>(daemonset::DaemonSetStrategy, &["ds"], ALL, STATUS),
        typed::<api::apps::v1::ControllerRevision>(Plain, &[], &[], &[]),
        // batch/v1
        typed::<api::batch::v1::Job>(job::JobStrategy, &[], ALL, STATUS),
        typed::<api::batch::v1::CronJob>(cronjob::CronJobStrategy, &["cj"], ALL, STATUS),
        // autoscaling
        typed::<api::autoscaling::v2::HorizontalPodAutoscaler>(hpa::HpaStrategy, &["hpa"], ALL, STATUS),
        typed::<api::autoscaling::v1::HorizontalPodAutoscaler>(hpa::HpaV1Strategy, &["hpa"], ALL, STATUS),
        // coordination, discovery, events
        typed::<api::coordination::v1::Lease>(lease::LeaseStrategy, &[], &[], &[]),
        typed::<api::discovery::v1::EndpointSlice>(endpoints::EndpointSliceStrategy, &[], &[], &[]),
        typed::<api::events::v1::Event>(event::EventsV1Strategy, &["ev"], &[], &[]),
        // authentication, authorization: virtual, create-only
        virtual_kind::<api::authentication::v1::TokenReview>(ReviewStrategy(Review::Token), false),
        virtual_kind::<api::authentication::v1::SelfSubjectReview>(ReviewStrategy(Review::SelfSubject), false),
        virtual_kind::<api::authorization::v1::LocalSubjectAccessReview>(ReviewStrategy(Review::LocalSubjectAccess), true),
        virtual_kind::<api::authorization::v1::SelfSubjectAccessReview>(ReviewStrategy(Review::SelfSubjectAccess), false),
        virtual_kind::<api::authorization::v1::SelfSubjectRulesReview>(ReviewStrategy(Review::SelfSubjectRules), false),
        virtual_kind::<api::authorization::v1::SubjectAccessReview>(ReviewStrategy(Review::SubjectAccess), false),
        // rbac
        typed::<api::rbac::v1::Role>(rbac::RoleStrategy, &[], &[], &[]),
        typed::<api::rbac::v1::RoleBinding>(rbac::RoleBindingStrategy, &[], &[], &[]),
        typed::<api::rbac::v1::ClusterRole>(rbac::ClusterRoleStrategy, &[], &[], &[]),
        typed::<api::rbac::v1::ClusterRoleBinding>(rbac::ClusterRoleBindingStrategy, &[], &[], &[]),
        // networking
        typed::<api::networking::v1::NetworkPolicy>(Plain, &["netpol"], &[], &[]),
        typed::<api::networking::v1::Ingress>(ingress::IngressStrategy, &["ing"], &[], STATUS),
        typed::<api::networking::v1::IngressClass>(Plain, &[], &[], &[]),
        // policy
        typed::<api::policy::v1::PodDisruptionBudget>(pdb::PdbStrategy, &["pdb"], &[], STATUS),
        // storage
        typed::<api::storage::v1::StorageClass>(Plain, &["sc"], &[], &[]),
        typed::<api::storage::v1::CSIDriver>(Plain, &[], &[], &[]),
        typed::<api::storage::v1::CSINode>(Plain, &[], &[], &[]),
        typed::<api::storage::v1::VolumeAttachment>(Plain, &[], &[], STATUS),
        typed::<api::storage::v1::CSIStorageCapacity>(csistoragecapacity::CsiStorageCapacityStrategy, &[], &[], &[]),
        // apiextensions (objects stored; serving custom resources comes with the CRD issue)
        typed::<apiextensions::CustomResourceDefinition>(crd::CrdStrategy, &["crd", "crds"], &["api-extensions"], STATUS),
        // scheduling, node, certificates, admissionregistration
        typed::<api::scheduling::v1::PriorityClass>(priorityclass::PriorityClassStrategy, &["pc"], &[], &[]),
        typed::<api::node::v1::RuntimeClass>(Plain, &[], &[], &[]),
        typed::<api::certificates::v1::CertificateSigningRequest>(csr::CsrStrategy, &["csr"], &[], &["status", "approval"]),
        typed::<api::admissionregistration::v1::MutatingWebhookConfiguration>(admissionregistration::WebhookConfigurationStrategy, &[], &["api-extensions"], &[]),
        typed::<api::admissionregistration::v1::ValidatingWebhookConfiguration>(admissionregistration::WebhookConfigurationStrategy, &[], &["api-extensions"], &[]),
        typed::<api::admissionregistration::v1::ValidatingAdmissionPolicy>(admissionregistration::ValidatingAdmissionPolicyStrategy, &[], &["api-extensions"], STATUS),
        typed::<api::admissionregistration::v1::ValidatingAdmissionPolicyBinding>(Plain, &[], &["api-extensions"], &[]),
        // flowcontrol (API priority and fairness: stored, not yet enforced)
        typed::<api::flowcontrol::v1::FlowSchema>(flowcontrol::FlowSchemaStrategy, &[], &[], STATUS),
        typed::<api::flowcontrol::v1::PriorityLevelConfiguration>(flowcontrol::PriorityLevelConfigurationStrategy, &[], &[], STATUS),
    ]
    .into_iter()
    // metrics.k8s.io: read from kubelets on request, never stored.
    .chain(crate::handlers::metrics::kinds())
    .collect()
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
