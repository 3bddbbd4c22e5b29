//! Upstream's ServiceAccount admission (plugin/pkg/admission/serviceaccount): a pod runs
//! as `default` unless it names a ServiceAccount, and gets the projected
//! `kube-api-access-XXXXX` volume (token, cluster CA, namespace) mounted in every container
//! at `/var/run/secrets/kubernetes.io/serviceaccount`, unless the pod or its ServiceAccount
//! opts out with `automountServiceAccountToken: false`.
//!
//! Upstream refuses a pod whose ServiceAccount does not exist (403). krust's conformance
//! framework does not wait for the namespace's `default` ServiceAccount, which a controller
//! creates after the namespace, so a missing ServiceAccount counts as one without an
//! opinion on automounting instead.

use async_trait::async_trait;
use serde_json::{json, Value};

use super::{is_pod_create, Attributes, Plugin, Reader};
use crate::error::ApiResult;
use crate::meta;

pub struct ServiceAccount;

pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";
pub const TOKEN_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
const VOLUME_PREFIX: &str = "kube-api-access-";
const MIRROR_POD_ANNOTATION: &str = "kubernetes.io/config.mirror";
/// Upstream's `WarnOnlyBoundTokenExpirationSeconds`.
const TOKEN_EXPIRATION_SECONDS: i64 = 3607;

/// Upstream's `TokenVolumeSource`.
pub fn token_volume_source() -> Value {
    json!({
        "defaultMode": 0o644,
        "sources": [
            {"serviceAccountToken": {"path": "token", "expirationSeconds": TOKEN_EXPIRATION_SECONDS}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
        ],
    })
}

/// Upstream's `shouldAutomount`: the pod's preference wins, then the ServiceAccount's;
/// true by default.
fn should_automount(sa: Option<&Value>, spec: &Value) -> bool {
    if let Some(b) = spec["automountServiceAccountToken"].as_bool() {
        return b;
    }
    sa.and_then(|sa| sa["automountServiceAccountToken"].as_bool()).unwrap_or(true)
}

/// Upstream's `mountServiceAccountToken`: every container (and init container) without a
/// mount at the token path gets one; the volume is added when some container needs it.
fn mount_token(spec: &mut Value) {
    let existing = spec["volumes"]
        .as_array()
        .and_then(|vs| vs.iter().filter_map(|v| v["name"].as_str()).find(|n| n.starts_with(VOLUME_PREFIX)))
        .map(String::from);
    let volume_name = existing.clone().unwrap_or_else(|| format!("{VOLUME_PREFIX}{}", meta::random_suffix()));
    let mount = json!({"name": volume_name, "readOnly": true, "mountPath": TOKEN_MOUNT_PATH});
    let mut needs_volume = false;
    for list in ["initContainers", "containers"] {
        let Some(containers) = spec.get_mut(list).and_then(Value::as_array_mut) else { continue };
        for c in containers {
            let mounted = c["volumeMounts"]
                .as_array()
                .is_some_and(|ms| ms.iter().any(|m| m["mountPath"] == TOKEN_MOUNT_PATH));
            if mounted {
                continue;
            }
            match c.get_mut("volumeMounts").and_then(Value::as_array_mut) {
                Some(ms) => ms.push(mount.clone()),
                None => c["volumeMounts"] = json!([mount.clone()]),
            }
            needs_volume = true;
        }
    }
    if existing.is_none() && needs_volume {
        let volume = json!({"name": volume_name, "projected": token_volume_source()});
        match spec.get_mut("volumes").and_then(Value::as_array_mut) {
            Some(vs) => vs.push(volume),
            None => spec["volumes"] = json!([volume]),
        }
    }
}

#[async_trait]
impl Plugin for ServiceAccount {
    fn handles(&self, attrs: &Attributes<'_>) -> bool {
        is_pod_create(attrs)
    }

    async fn admit(&self, attrs: &Attributes<'_>, obj: &mut Value, reader: &dyn Reader) -> ApiResult<()> {
        if obj["metadata"]["annotations"].get(MIRROR_POD_ANNOTATION).is_some() {
            return Ok(());
        }
        let Some(spec) = obj.get_mut("spec").filter(|s| s.is_object()) else { return Ok(()) };
        if spec["serviceAccountName"].as_str().unwrap_or_default().is_empty() {
            spec["serviceAccountName"] = json!(DEFAULT_SERVICE_ACCOUNT);
        }
        let sa_name = spec["serviceAccountName"].as_str().unwrap_or_default().to_string();
        let sa = reader.get("", "serviceaccounts", attrs.ctx.namespace.as_deref(), &sa_name).await?;
        if should_automount(sa.as_ref(), spec) {
            mount_token(spec);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{create, ctx, pods, MemReader};
    use super::*;

    fn pod(spec: Value) -> Value {
        json!({"metadata": {"name": "p", "namespace": "ns"}, "spec": spec})
    }

    async fn admit(reader: &MemReader, mut obj: Value) -> Value {
        let (info, ctx) = (pods(), ctx());
        ServiceAccount.admit(&create(&info, &ctx), &mut obj, reader).await.unwrap();
        obj
    }

    fn mounted(obj: &Value) -> bool {
        obj["spec"]["containers"][0]["volumeMounts"].as_array().is_some_and(|ms| ms.iter().any(|m| m["mountPath"] == TOKEN_MOUNT_PATH))
    }

    #[tokio::test]
    async fn mounts_the_token_unless_opted_out() {
        let reader = MemReader::default();
        reader.put("", "serviceaccounts", Some("ns"), json!({"metadata": {"name": "default"}}));
        reader.put("", "serviceaccounts", Some("ns"), json!({"metadata": {"name": "nomount"}, "automountServiceAccountToken": false}));
        let got = admit(&reader, pod(json!({"containers": [{"name": "c"}], "initContainers": [{"name": "i"}]}))).await;
        assert_eq!(got["spec"]["serviceAccountName"], "default");
        assert!(mounted(&got));
        let vol = &got["spec"]["volumes"][0];
        let name = vol["name"].as_str().unwrap();
        assert!(name.starts_with("kube-api-access-") && name.len() == "kube-api-access-".len() + 5, "{name}");
        assert_eq!(vol["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"], 3607);
        assert_eq!(got["spec"]["initContainers"][0]["volumeMounts"][0], json!({"name": name, "readOnly": true, "mountPath": TOKEN_MOUNT_PATH}));
        assert!(!mounted(&admit(&reader, pod(json!({"serviceAccountName": "nomount", "containers": [{"name": "c"}]}))).await));
        assert!(mounted(&admit(&reader, pod(json!({"serviceAccountName": "nomount", "automountServiceAccountToken": true, "containers": [{"name": "c"}]}))).await));
        assert!(!mounted(&admit(&reader, pod(json!({"automountServiceAccountToken": false, "containers": [{"name": "c"}]}))).await));
        // A container mounting something at the token path keeps it; no volume is added then.
        let own = admit(&reader, pod(json!({"containers": [{"name": "c", "volumeMounts": [{"name": "mine", "mountPath": TOKEN_MOUNT_PATH}]}]}))).await;
        assert_eq!(own["spec"]["containers"][0]["volumeMounts"].as_array().unwrap().len(), 1);
        assert!(own["spec"]["volumes"].is_null());
    }
}
