//! ServiceAccounts: secret references and `kubectl get serviceaccounts` columns.

use serde_json::{json, Value};

use super::common::{self, arr, s};
use crate::registry::table::{self, Column};
use crate::registry::{ReqCtx, Strategy};
use crate::validation::{FieldError, FieldErrors};

pub struct ServiceAccountStrategy;

impl Strategy for ServiceAccountStrategy {
    fn validate(&self, _ctx: &ReqCtx, obj: &Value) -> FieldErrors {
        let mut errs = Vec::new();
        for (i, r) in arr(&obj["imagePullSecrets"]).iter().enumerate() {
            if s(&r["name"]).is_empty() {
                errs.push(FieldError::required(format!("imagePullSecrets[{i}].name"), ""));
            }
        }
        errs
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            table::name_column(),
            Column::new("Secrets", "string", |o| json!(common::len(&o["secrets"]))),
            table::age_column(),
        ]
    }
}
