//! API discovery shared by the controllers that act on every resource (namespace deletion,
//! garbage collection): what the server serves, through `kube::discovery`, as upstream's
//! `ServerPreferredResources`.

use kube::api::{Api, ApiResource, DynamicObject};
use kube::discovery::{verbs, ApiCapabilities, Discovery, Scope};

/// One served resource (not a subresource) at one version.
#[derive(Clone, Debug)]
pub struct ServedResource {
    pub ar: ApiResource,
    pub namespaced: bool,
    pub verbs: Vec<String>,
}

impl ServedResource {
    fn new(ar: ApiResource, caps: &ApiCapabilities) -> Self {
        ServedResource { ar, namespaced: caps.scope == Scope::Namespaced, verbs: caps.operations.clone() }
    }

    pub fn supports(&self, verb: &str) -> bool {
        self.verbs.iter().any(|v| v == verb)
    }

    /// `resource.group`, as upstream names a GroupResource (`configmaps.` for core).
    pub fn group_resource(&self) -> String {
        format!("{}.{}", self.ar.plural, self.ar.group)
    }

    /// An API for this resource: in `ns` when namespaced, else cluster-wide.
    pub fn api(&self, client: &kube::Client, ns: Option<&str>) -> Api<DynamicObject> {
        match (self.namespaced, ns) {
            (true, Some(ns)) => Api::namespaced_with(client.clone(), ns, &self.ar),
            _ => Api::all_with(client.clone(), &self.ar),
        }
    }
}

/// Every served resource at its group's preferred version.
pub async fn preferred(client: &kube::Client) -> Result<Vec<ServedResource>, kube::Error> {
    let discovery = Discovery::new(client.clone()).run().await?;
    Ok(discovery
        .groups()
        .flat_map(|g| g.recommended_resources())
        .map(|(ar, caps)| ServedResource::new(ar, &caps))
        .collect())
}

/// Every served resource at every version (to resolve an ownerReference's apiVersion/kind).
pub async fn all_versions(client: &kube::Client) -> Result<(Vec<ServedResource>, Vec<ServedResource>), kube::Error> {
    let discovery = Discovery::new(client.clone()).run().await?;
    let preferred = discovery
        .groups()
        .flat_map(|g| g.recommended_resources())
        .map(|(ar, caps)| ServedResource::new(ar, &caps))
        .collect();
    let all = discovery
        .groups()
        .flat_map(|g| g.versions().flat_map(|v| g.versioned_resources(v)).collect::<Vec<_>>())
        .map(|(ar, caps)| ServedResource::new(ar, &caps))
        .collect();
    Ok((preferred, all))
}

/// Whether deletion may go through `deletecollection` (else: list, then delete each).
pub fn deletable(r: &ServedResource) -> bool {
    r.supports(verbs::LIST) && (r.supports(verbs::DELETE) || r.supports(verbs::DELETE_COLLECTION))
}
