//! CertificateSigningRequests (certificates.k8s.io/v1), after upstream's strategies: a create
//! records who asked (`spec.username`, `uid`, `groups`), the spec never changes after, the
//! `status` and `approval` subresources keep Approved/Denied/Failed conditions from being
//! removed or flipped, and condition timestamps are filled in. The store confines an
//! `approval` write to `status.conditions` (upstream's `csrApprovalStrategy`).
//! No signer runs yet: approved requests get no certificate.

use serde_json::{json, Value};

use super::common::{arr, s};
use crate::meta;
use crate::registry::table::{self, Column};
use crate::registry::{ReqCtx, Strategy};
use crate::validation::{self, FieldError, FieldErrors};

const USAGES: &[&str] = &[
    "signing", "digital signature", "content commitment", "key encipherment", "key agreement", "data encipherment",
    "cert sign", "crl sign", "encipher only", "decipher only", "any", "server auth", "client auth", "code signing",
    "email protection", "s/mime", "ipsec end system", "ipsec tunnel", "ipsec user", "timestamping", "ocsp signing",
    "microsoft sgc", "netscape sgc",
];

/// Condition types that, once set, stay (upstream's approval/denial/failure rules).
const STICKY: &[&str] = &["Approved", "Denied", "Failed"];

pub struct CsrStrategy;

impl Strategy for CsrStrategy {
    fn prepare_for_create(&self, ctx: &ReqCtx, obj: &mut Value) {
        // Upstream: the requesting user's identity is recorded, whatever the body said.
        let spec = super::common::child(obj, "spec");
        if let Some(m) = spec.as_object_mut() {
            m.remove("uid");
            m.remove("extra");
            m.remove("username");
            m.remove("groups");
            if !ctx.user.is_empty() {
                m.insert("username".into(), json!(ctx.user));
            }
            if !ctx.groups.is_empty() {
                m.insert("groups".into(), json!(ctx.groups));
            }
        }
    }

    fn validate(&self, _ctx: &ReqCtx, obj: &Value) -> FieldErrors {
        let mut errs = Vec::new();
        let spec = &obj["spec"];
        if s(&spec["request"]).is_empty() {
            errs.push(FieldError::required("spec.request", ""));
        }
        let signer = s(&spec["signerName"]);
        if signer.is_empty() {
            errs.push(FieldError::required("spec.signerName", ""));
        } else {
            validate_signer_name(&mut errs, signer);
        }
        if let Some(secs) = spec["expirationSeconds"].as_i64().filter(|s| *s < 600) {
            errs.push(FieldError::invalid("spec.expirationSeconds", secs, "may not specify a duration less than 600 seconds (10 minutes)"));
        }
        if arr(&spec["usages"]).is_empty() {
            errs.push(FieldError::required("spec.usages", ""));
        }
        for (i, u) in arr(&spec["usages"]).iter().enumerate() {
            if !USAGES.contains(&s(u)) {
                errs.push(FieldError::not_supported(format!("spec.usages[{i}]"), s(u), USAGES));
            }
        }
        validate_conditions(&mut errs, obj);
        errs
    }

    /// Upstream: updates of the main resource change neither spec nor status.
    fn prepare_for_update(&self, _ctx: &ReqCtx, new: &mut Value, old: &Value) {
        new["spec"] = old["spec"].clone();
    }

    fn prepare_for_status_update(&self, _ctx: &ReqCtx, new: &mut Value, old: &Value) {
        new["spec"] = old["spec"].clone();
        populate_condition_timestamps(new, old);
    }

    fn validate_status_update(&self, _ctx: &ReqCtx, new: &Value, old: &Value) -> FieldErrors {
        let mut errs = Vec::new();
        validate_conditions(&mut errs, new);
        for t in STICKY {
            let of_type = |o: &Value| -> Vec<String> {
                arr(&o["status"]["conditions"]).iter().filter(|c| s(&c["type"]) == *t).map(|c| s(&c["status"]).to_string()).collect()
            };
            let (old_c, new_c) = (of_type(old), of_type(new));
            if new_c.len() < old_c.len() {
                errs.push(FieldError::forbidden("status.conditions", format!("updates may not remove a condition of type \"{t}\"")));
            } else if old_c.iter().zip(&new_c).any(|(o, n)| o != n) {
                errs.push(FieldError::forbidden("status.conditions", format!("updates may not change the status of a condition of type \"{t}\"")));
            }
        }
        errs
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            table::name_column(),
            table::age_column(),
            Column::new("SignerName", "string", |o| json!(s(&o["spec"]["signerName"]))),
            Column::new("Requestor", "string", |o| json!(s(&o["spec"]["username"]))),
            Column::new("RequestedDuration", "string", |o| match o["spec"]["expirationSeconds"].as_i64() {
                Some(secs) => json!(table::human_duration(secs)),
                None => json!("<none>"),
            }),
            Column::new("Condition", "string", |o| json!(condition_summary(o))),
        ]
    }
}

/// `Approved,Issued`, `Pending`..., as kubectl prints a CSR's conditions.
fn condition_summary(o: &Value) -> String {
    let mut parts: Vec<&str> = arr(&o["status"]["conditions"]).iter().map(|c| s(&c["type"])).filter(|t| !t.is_empty()).collect();
    if !s(&o["status"]["certificate"]).is_empty() {
        parts.push("Issued");
    }
    if parts.is_empty() {
        "Pending".into()
    } else {
        parts.join(",")
    }
}

fn validate_signer_name(errs: &mut FieldErrors, signer: &str) {
    let Some((domain, path)) = signer.split_once('/') else {
        errs.push(FieldError::invalid("spec.signerName", signer, "must be a fully qualified domain and path of the form 'example.com/signer-name'"));
        return;
    };
    if path.is_empty() {
        errs.push(FieldError::invalid("spec.signerName", signer, "validating path: must not be empty"));
    }
    let msgs = validation::dns1123_subdomain(domain);
    if !msgs.is_empty() {
        errs.push(FieldError::invalid("spec.signerName", signer, format!("validating domain: {}", msgs.join(", "))));
    }
}

/// Upstream's `validateConditions`: types required, no duplicate Approved/Denied/Failed,
/// Approved and Denied exclusive, their status `True`.
fn validate_conditions(errs: &mut FieldErrors, obj: &Value) {
    let conds = arr(&obj["status"]["conditions"]);
    let mut seen: Vec<&str> = Vec::new();
    for (i, c) in conds.iter().enumerate() {
        let t = s(&c["type"]);
        let path = format!("status.conditions[{i}]");
        if t.is_empty() {
            errs.push(FieldError::required(format!("{path}.type"), ""));
            continue;
        }
        if STICKY.contains(&t) {
            if seen.contains(&t) {
                errs.push(FieldError::duplicate(format!("{path}.type"), t));
            }
            seen.push(t);
        }
        let status = s(&c["status"]);
        if matches!(t, "Approved" | "Denied") {
            if status != "True" {
                errs.push(FieldError::not_supported(format!("{path}.status"), status, &["True"]));
            }
        } else if !matches!(status, "True" | "False" | "Unknown") {
            errs.push(FieldError::not_supported(format!("{path}.status"), status, &["False", "True", "Unknown"]));
        }
    }
    if seen.contains(&"Approved") && seen.contains(&"Denied") {
        errs.push(FieldError::invalid("status.conditions", "", "Approved and Denied conditions are mutually exclusive"));
    }
}

/// Upstream's `populateConditionTimestamps`: `lastUpdateTime` now when unset;
/// `lastTransitionTime` kept from an old condition of the same type and status, else now.
fn populate_condition_timestamps(new: &mut Value, old: &Value) {
    let now = meta::now();
    let old_conds = arr(&old["status"]["conditions"]).to_vec();
    if let Some(conds) = new["status"].get_mut("conditions").and_then(Value::as_array_mut) {
        for c in conds {
            if s(&c["lastUpdateTime"]).is_empty() {
                c["lastUpdateTime"] = json!(now);
            }
            if s(&c["lastTransitionTime"]).is_empty() {
                let kept = old_conds
                    .iter()
                    .find(|o| o["type"] == c["type"] && o["status"] == c["status"])
                    .map(|o| o["lastTransitionTime"].clone())
                    .filter(|t| !s(t).is_empty());
                c["lastTransitionTime"] = kept.unwrap_or_else(|| json!(now));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csr() -> Value {
        json!({"metadata": {"name": "c"}, "spec": {"request": "cmVx", "signerName": "example.com/e2e", "usages": ["client auth"]}})
    }

    #[test]
    fn create_records_requestor() {
        let ctx = ReqCtx { user: "alice".into(), groups: vec!["system:authenticated".into()], ..Default::default() };
        let mut c = csr();
        c["spec"]["username"] = json!("mallory");
        CsrStrategy.prepare_for_create(&ctx, &mut c);
        assert_eq!(c["spec"]["username"], "alice");
        assert_eq!(c["spec"]["groups"], json!(["system:authenticated"]));
        assert!(CsrStrategy.validate(&ctx, &c).is_empty());
    }

    #[test]
    fn approval_conditions() {
        let ctx = ReqCtx::default();
        let old = csr();
        let mut new = old.clone();
        new["status"] = json!({"conditions": [{"type": "Approved", "status": "True", "reason": "r"}]});
        CsrStrategy.prepare_for_status_update(&ctx, &mut new, &old);
        assert!(!s(&new["status"]["conditions"][0]["lastUpdateTime"]).is_empty());
        assert!(CsrStrategy.validate_status_update(&ctx, &new, &old).is_empty());
        // neither removed nor joined by Denied
        let mut gone = new.clone();
        gone["status"]["conditions"] = json!([]);
        assert!(CsrStrategy.validate_status_update(&ctx, &gone, &new)[0].to_string().contains("may not remove a condition of type \"Approved\""));
        let mut both = new.clone();
        both["status"]["conditions"].as_array_mut().unwrap().push(json!({"type": "Denied", "status": "True"}));
        assert!(CsrStrategy.validate_status_update(&ctx, &both, &new).iter().any(|e| e.to_string().contains("mutually exclusive")));
    }
}
