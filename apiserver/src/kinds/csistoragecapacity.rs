//! CSIStorageCapacities (storage.k8s.io/v1): upstream's validation (storage class name,
//! non-negative quantities, node topology selector) and `kubectl get` columns.

use serde_json::{json, Value};

use super::common::{dns1123_subdomain, parse_quantity, s, validate_label_selector};
use crate::registry::table::{self, Column};
use crate::registry::{ReqCtx, Strategy};
use crate::validation::{FieldError, FieldErrors};

pub struct CsiStorageCapacityStrategy;

impl Strategy for CsiStorageCapacityStrategy {
    fn validate(&self, _ctx: &ReqCtx, obj: &Value) -> FieldErrors {
        let mut errs = Vec::new();
        let class = s(&obj["storageClassName"]);
        if class.is_empty() {
            errs.push(FieldError::required("storageClassName", ""));
        } else {
            dns1123_subdomain(&mut errs, class, "storageClassName");
        }
        for field in ["capacity", "maximumVolumeSize"] {
            if let Some(q) = obj[field].as_str() {
                if q.starts_with('-') || parse_quantity(q).is_err() {
                    errs.push(FieldError::invalid(field, q, "must be greater than or equal to 0"));
                }
            }
        }
        if !obj["nodeTopology"].is_null() {
            validate_label_selector(&mut errs, &obj["nodeTopology"], "nodeTopology");
        }
        errs
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            table::name_column(),
            Column::new("StorageClassName", "string", |o| json!(s(&o["storageClassName"]))),
            Column::new("Capacity", "string", |o| table::or_none(s(&o["capacity"]))),
            table::age_column(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        let ctx = ReqCtx::default();
        let ok = json!({"metadata": {"name": "c"}, "storageClassName": "fast", "capacity": "1Gi"});
        assert!(CsiStorageCapacityStrategy.validate(&ctx, &ok).is_empty());
        let bad = json!({"metadata": {"name": "c"}, "capacity": "-1Gi"});
        assert_eq!(CsiStorageCapacityStrategy.validate(&ctx, &bad).len(), 2);
    }
}
