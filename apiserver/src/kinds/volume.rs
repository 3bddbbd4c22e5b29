//! PersistentVolumes and PersistentVolumeClaims: defaults (volume mode, reclaim policy,
//! Pending phase), spec validation, PVC spec immutability (bar resizing and binding), PV
//! source immutability, `kubectl get pv/pvc` columns.

use serde_json::{json, Value};

use super::common::{self, arr, parse_quantity, s, Quantity};
use crate::registry::table::{self, Column};
use crate::registry::{ReqCtx, Strategy};
use crate::validation::{FieldError, FieldErrors};

pub struct PersistentVolumeStrategy;
pub struct PersistentVolumeClaimStrategy;

const ACCESS_MODES: &[&str] = &["ReadOnlyMany", "ReadWriteMany", "ReadWriteOnce", "ReadWriteOncePod"];

/// `SetDefaults_PersistentVolumeClaim` on a PVC or a claim template: volume mode, phase.
pub fn default_pvc(pvc: &mut Value) {
    common::set_default(common::child(pvc, "spec"), "volumeMode", "Filesystem");
    common::set_default(common::child(pvc, "status"), "phase", "Pending");
}

/// `kubectl`'s `GetAccessModesAsString`: RWO, ROX, RWX, RWOP.
fn access_modes_string(modes: &Value) -> String {
    let modes: Vec<&str> = arr(modes).iter().map(s).collect();
    [("ReadWriteOnce", "RWO"), ("ReadOnlyMany", "ROX"), ("ReadWriteMany", "RWX"), ("ReadWriteOncePod", "RWOP")]
        .iter()
        .filter(|(m, _)| modes.contains(m))
        .map(|(_, short)| *short)
        .collect::<Vec<_>>()
        .join(",")
}

fn validate_access_modes(errs: &mut FieldErrors, modes: &Value, path: &str, detail: &str) {
    if arr(modes).is_empty() {
        errs.push(FieldError::required(path.to_string(), detail));
    }
    for m in arr(modes) {
        if !ACCESS_MODES.contains(&s(m)) {
            errs.push(FieldError::not_supported(path.to_string(), s(m), ACCESS_MODES));
        }
    }
}

fn validate_positive_quantity(errs: &mut FieldErrors, q: &Value, path: &str) {
    match parse_quantity(s(q)) {
        Err(e) => errs.push(FieldError::invalid(path.to_string(), s(q), e)),
        Ok(v) if v <= Quantity(0) => errs.push(FieldError::invalid(path.to_string(), s(q), "must be greater than zero")),
        Ok(_) => {}
    }
}

fn volume_mode_ok(errs: &mut FieldErrors, v: &Value, path: &str) {
    common::validate_optional_enum(errs, v, path, &["Block", "Filesystem"]);
}

fn class_cell(o: &Value) -> Value {
    let c = o["spec"]["storageClassName"].as_str().unwrap_or_else(|| s(&o["metadata"]["annotations"]["volume.beta.kubernetes.io/storage-class"]));
    json!(c)
}

fn unset_or(v: &Value) -> Value {
    json!(v.as_str().unwrap_or("<unset>"))
}

// ---- PersistentVolumeClaim ----

fn validate_pvc_spec(errs: &mut FieldErrors, spec: &Value, path: &str) {
    validate_access_modes(errs, &spec["accessModes"], &format!("{path}.accessModes"), "at least 1 access mode is required");
    let storage = &spec["resources"]["requests"]["storage"];
    let sp = format!("{path}.resources[storage]");
    if storage.is_null() {
        errs.push(FieldError::required(sp, ""));
    } else {
        validate_positive_quantity(errs, storage, &sp);
    }
    if let Some(class) = spec["storageClassName"].as_str().filter(|c| !c.is_empty()) {
        common::dns1123_subdomain(errs, class, &format!("{path}.storageClassName"));
    }
    volume_mode_ok(errs, &spec["volumeMode"], &format!("{path}.volumeMode"));
    if !spec["selector"].is_null() {
        common::validate_label_selector(errs, &spec["selector"], &format!("{path}.selector"));
    }
}

impl Strategy for PersistentVolumeClaimStrategy {
    fn apply_defaults(&self, obj: &mut Value) {
        common::set_default(common::child(obj, "spec"), "volumeMode", "Filesystem");
    }

    fn prepare_for_create(&self, _ctx: &ReqCtx, obj: &mut Value) {
        obj["status"] = json!({"phase": "Pending"});
    }

    fn validate(&self, _ctx: &ReqCtx, obj: &Value) -> FieldErrors {
        let mut errs = Vec::new();
        validate_pvc_spec(&mut errs, &obj["spec"], "spec");
        errs
    }

    fn validate_update(&self, _ctx: &ReqCtx, new: &Value, old: &Value) -> FieldErrors {
        let mut errs = Vec::new();
        validate_pvc_spec(&mut errs, &new["spec"], "spec");
        let mut new_spec = new["spec"].clone();
        let mut old_spec = old["spec"].clone();
        if s(&old_spec["volumeName"]).is_empty() {
            old_spec["volumeName"] = new_spec["volumeName"].clone();
        }
        // Resizing (bound claims) and volume attributes classes may change.
        if s(&new["status"]["phase"]) == "Bound" && new_spec["resources"]["requests"].is_object() {
            new_spec["resources"]["requests"]["storage"] = old["spec"]["resources"]["requests"]["storage"].clone();
        }
        new_spec["volumeAttributesClassName"] = old_spec["volumeAttributesClassName"].clone();
        if !common::same(&new_spec, &old_spec) {
            errs.push(FieldError::forbidden(
                "spec",
                "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
            ));
        }
        let (n, o) = (&new["spec"]["resources"]["requests"]["storage"], &old["spec"]["resources"]["requests"]["storage"]);
        if common::cmp_quantity(s(n), s(o)).is_lt() {
            errs.push(FieldError::forbidden("spec.resources.requests.storage", "field can not be less than previous value"));
        }
        errs
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            table::name_column(),
            Column::new("Status", "string", |o| {
                json!(if o["metadata"]["deletionTimestamp"].is_null() { s(&o["status"]["phase"]) } else { "Terminating" })
            }),
            Column::new("Volume", "string", |o| json!(s(&o["spec"]["volumeName"]))),
            Column::new("Capacity", "string", |o| {
                json!(if s(&o["spec"]["volumeName"]).is_empty() { "" } else { s(&o["status"]["capacity"]["storage"]) })
            }),
            Column::new("Access Modes", "string", |o| {
                json!(if s(&o["spec"]["volumeName"]).is_empty() { String::new() } else { access_modes_string(&o["status"]["accessModes"]) })
            }),
            Column::new("StorageClass", "string", class_cell),
            Column::new("VolumeAttributesClass", "string", |o| unset_or(&o["spec"]["volumeAttributesClassName"])),
            table::age_column(),
            Column::new("VolumeMode", "string", |o| unset_or(&o["spec"]["volumeMode"])).wide(),
        ]
    }
}

// ---- PersistentVolume ----

const PV_SOURCES: &[&str] = &[
    "awsElasticBlockStore", "azureDisk", "azureFile", "cephfs", "cinder", "csi", "fc", "flexVolume", "flocker",
    "gcePersistentDisk", "glusterfs", "hostPath", "iscsi", "local", "nfs", "photonPersistentDisk", "portworxVolume",
    "quobyte", "rbd", "scaleIO", "storageos", "vsphereVolume",
];

fn validate_pv(pv: &Value) -> FieldErrors {
    let mut errs = Vec::new();
    let spec = &pv["spec"];
    validate_access_modes(&mut errs, &spec["accessModes"], "spec.accessModes", "");
    let cap = &spec["capacity"];
    if common::len(cap) == 0 {
        errs.push(FieldError::required("spec.capacity", ""));
    }
    if cap.get("storage").is_none() || common::len(cap) > 1 {
        errs.push(FieldError::not_supported("spec.capacity", cap.clone(), &["storage"]));
    }
    if let Some(m) = cap.as_object() {
        for (k, q) in m {
            validate_positive_quantity(&mut errs, q, &format!("spec.capacity[{k}]"));
        }
    }
    common::validate_optional_enum(&mut errs, &spec["persistentVolumeReclaimPolicy"], "spec.persistentVolumeReclaimPolicy", &["Delete", "Recycle", "Retain"]);
    let sources: Vec<&str> = PV_SOURCES.iter().copied().filter(|k| spec[*k].is_object()).collect();
    match sources.as_slice() {
        [] => errs.push(FieldError::required("spec", "must specify a volume type")),
        [_] => {}
        [_, second, ..] => errs.push(FieldError::forbidden(format!("spec.{second}"), "may not specify more than 1 volume type")),
    }
    if spec["hostPath"].is_object() && s(&spec["hostPath"]["path"]).is_empty() {
        errs.push(FieldError::required("spec.hostPath.path", ""));
    }
    if spec["local"].is_object() && s(&spec["local"]["path"]).is_empty() {
        errs.push(FieldError::required("spec.local.path", ""));
    }
    if let Some(class) = spec["storageClassName"].as_str().filter(|c| !c.is_empty()) {
        common::dns1123_subdomain(&mut errs, class, "spec.storageClassName");
    }
    volume_mode_ok(&mut errs, &spec["volumeMode"], "spec.volumeMode");
    errs
}

impl Strategy for PersistentVolumeStrategy {
    fn apply_defaults(&self, obj: &mut Value) {
        let spec = common::child(obj, "spec");
        common::set_default(spec, "persistentVolumeReclaimPolicy", "Retain");
        common::set_default(spec, "volumeMode", "Filesystem");
    }

    fn prepare_for_create(&self, _ctx: &ReqCtx, obj: &mut Value) {
        let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
        obj["status"] = json!({"phase": "Pending", "lastPhaseTransitionTime": now});
    }

    fn validate(&self, _ctx: &ReqCtx, obj: &Value) -> FieldErrors {
        validate_pv(obj)
    }

    fn validate_update(&self, _ctx: &ReqCtx, new: &Value, old: &Value) -> FieldErrors {
        let mut errs = validate_pv(new);
        let source = |v: &Value| -> Value {
            PV_SOURCES.iter().filter(|k| v["spec"][**k].is_object()).map(|k| (k.to_string(), v["spec"][*k].clone())).collect::<serde_json::Map<_, _>>().into()
        };
        if source(new) != source(old) {
            errs.push(FieldError::forbidden("spec.persistentvolumesource", "spec.persistentvolumesource is immutable after creation"));
        }
        common::immutable(&mut errs, &new["spec"]["volumeMode"], &old["spec"]["volumeMode"], "spec.volumeMode");
        if !old["spec"]["nodeAffinity"].is_null() {
            common::immutable(&mut errs, &new["spec"]["nodeAffinity"], &old["spec"]["nodeAffinity"], "nodeAffinity");
        }
        errs
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            table::name_column(),
            Column::new("Capacity", "string", |o| json!(s(&o["spec"]["capacity"]["storage"]))),
            Column::new("Access Modes", "string", |o| json!(access_modes_string(&o["spec"]["accessModes"]))),
            Column::new("Reclaim Policy", "string", |o| json!(s(&o["spec"]["persistentVolumeReclaimPolicy"]))),
            Column::new("Status", "string", |o| {
                json!(if o["metadata"]["deletionTimestamp"].is_null() { s(&o["status"]["phase"]) } else { "Terminating" })
            }),
            Column::new("Claim", "string", |o| {
                let c = &o["spec"]["claimRef"];
                json!(if c.is_object() { format!("{}/{}", s(&c["namespace"]), s(&c["name"])) } else { String::new() })
            }),
            Column::new("StorageClass", "string", class_cell),
            Column::new("VolumeAttributesClass", "string", |o| unset_or(&o["spec"]["volumeAttributesClassName"])),
            Column::new("Reason", "string", |o| json!(s(&o["status"]["reason"]))),
            table::age_column(),
            Column::new("VolumeMode", "string", |o| unset_or(&o["spec"]["volumeMode"])).wide(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pvc() {
        let ctx = ReqCtx::default();
        let mut pvc = json!({"spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}});
        PersistentVolumeClaimStrategy.apply_defaults(&mut pvc);
        PersistentVolumeClaimStrategy.prepare_for_create(&ctx, &mut pvc);
        assert_eq!(pvc["spec"]["volumeMode"], "Filesystem");
        assert_eq!(pvc["status"]["phase"], "Pending");
        assert!(PersistentVolumeClaimStrategy.validate(&ctx, &pvc).is_empty());
        let errs = PersistentVolumeClaimStrategy.validate(&ctx, &json!({"spec": {}}));
        let msgs: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(msgs, vec!["spec.accessModes: Required value: at least 1 access mode is required", "spec.resources[storage]: Required value"]);
        let mut new = pvc.clone();
        new["spec"]["volumeName"] = json!("pv1");
        assert!(PersistentVolumeClaimStrategy.validate_update(&ctx, &new, &pvc).is_empty());
        new["spec"]["accessModes"] = json!(["ReadWriteMany"]);
        assert_eq!(PersistentVolumeClaimStrategy.validate_update(&ctx, &new, &pvc)[0].field, "spec");
    }

    #[test]
    fn pv() {
        let ctx = ReqCtx::default();
        let mut pv = json!({"spec": {"accessModes": ["ReadWriteOnce"], "capacity": {"storage": "1Gi"}, "hostPath": {"path": "/data"}}});
        PersistentVolumeStrategy.apply_defaults(&mut pv);
        PersistentVolumeStrategy.prepare_for_create(&ctx, &mut pv);
        assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Retain");
        assert_eq!(pv["status"]["phase"], "Pending");
        assert!(PersistentVolumeStrategy.validate(&ctx, &pv).is_empty());
        let cells: Vec<Value> = PersistentVolumeStrategy.columns().iter().map(|c| (c.cell)(&pv)).collect();
        assert_eq!(cells[1], "1Gi");
        assert_eq!(cells[2], "RWO");
        assert_eq!(cells[3], "Retain");
        assert_eq!(cells[7], "<unset>");
    }
}
