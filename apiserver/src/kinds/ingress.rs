//! Ingresses (networking.k8s.io/v1): rules, paths and backends as upstream validates them
//! (lightweight: no TLS or class-parameter checks), `kubectl get ingress` columns.

use serde_json::{json, Value};

use super::common::{self, arr, int, s};
use crate::registry::table::{self, Column};
use crate::registry::{ReqCtx, Strategy};
use crate::validation::{self, FieldError, FieldErrors};

pub struct IngressStrategy;

fn validate_backend(errs: &mut FieldErrors, b: &Value, path: &str) {
    let (res, svc) = (b["resource"].is_object(), b["service"].is_object());
    match (res, svc) {
        (true, true) => errs.push(FieldError::invalid(path, "", "cannot set both resource and service backends")),
        (true, false) => {
            let r = &b["resource"];
            if s(&r["kind"]).is_empty() {
                errs.push(FieldError::required(format!("{path}.resource.kind"), ""));
            }
            if s(&r["name"]).is_empty() {
                errs.push(FieldError::required(format!("{path}.resource.name"), ""));
            }
        }
        (false, true) => {
            let sv = &b["service"];
            let name = s(&sv["name"]);
            if name.is_empty() {
                errs.push(FieldError::required(format!("{path}.service.name"), ""));
            } else {
                validation::push_invalid(errs, &format!("{path}.service.name"), name, validation::dns1035_label(name));
            }
            let pname = s(&sv["port"]["name"]);
            let pnum = int(&sv["port"]["number"]).unwrap_or(0);
            match (pname.is_empty(), pnum == 0) {
                (false, false) => errs.push(FieldError::invalid(path, "", "cannot set both port name & port number")),
                (false, true) => {
                    for m in common::port_name_errors(pname) {
                        errs.push(FieldError::invalid(format!("{path}.service.port.name"), pname, m));
                    }
                }
                (true, false) => {
                    for m in common::port_num_errors(pnum) {
                        errs.push(FieldError::invalid(format!("{path}.service.port.number"), pnum, m));
                    }
                }
                (true, true) => errs.push(FieldError::required(path, "port name or number is required")),
            }
        }
        (false, false) => errs.push(FieldError::invalid(path, "", "resource or service backend is required")),
    }
}

fn validate_ingress(ing: &Value) -> FieldErrors {
    let mut errs = Vec::new();
    let spec = &ing["spec"];
    let rules = arr(&spec["rules"]);
    if rules.is_empty() && spec["defaultBackend"].is_null() {
        errs.push(FieldError::invalid("spec", spec["rules"].clone(), "either `defaultBackend` or `rules` must be specified"));
    }
    if spec["defaultBackend"].is_object() {
        validate_backend(&mut errs, &spec["defaultBackend"], "spec.defaultBackend");
    }
    for (i, r) in rules.iter().enumerate() {
        let rp = format!("spec.rules[{i}]");
        let host = s(&r["host"]);
        if !host.is_empty() {
            if common::is_ip(host) {
                errs.push(FieldError::invalid(format!("{rp}.host"), host, "must be a DNS name, not an IP address"));
            }
            let checked = host.strip_prefix("*.").unwrap_or(host);
            if checked.contains('*') {
                errs.push(FieldError::invalid(format!("{rp}.host"), host, "a wildcard DNS-1123 subdomain must start with '*.', followed by a valid DNS subdomain, which must consist of lower case alphanumeric characters, '-' or '.' and end with an alphanumeric character (e.g. '*.example.com', regex used for validation is '\\*\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"));
            } else {
                validation::push_invalid(&mut errs, &format!("{rp}.host"), host, validation::dns1123_subdomain(checked));
            }
        }
        if r["http"].is_object() {
            let paths = arr(&r["http"]["paths"]);
            if paths.is_empty() {
                errs.push(FieldError::required(format!("{rp}.http.paths"), ""));
            }
            for (j, p) in paths.iter().enumerate() {
                let pp = format!("{rp}.http.paths[{j}]");
                let path = s(&p["path"]);
                match p["pathType"].as_str() {
                    None => {
                        errs.push(FieldError::required(format!("{pp}.pathType"), "pathType must be specified"));
                        continue;
                    }
                    Some("Exact" | "Prefix") => {
                        if !path.starts_with('/') {
                            errs.push(FieldError::invalid(format!("{pp}.path"), path, "must be an absolute path"));
                        }
                        for seq in ["//", "/./", "/../", "%2f", "%2F"] {
                            if path.contains(seq) {
                                errs.push(FieldError::invalid(format!("{pp}.path"), path, format!("must not contain '{seq}'")));
                            }
                        }
                        for suffix in ["/..", "/."] {
                            if path.ends_with(suffix) {
                                errs.push(FieldError::invalid(format!("{pp}.path"), path, format!("cannot end with '{suffix}'")));
                            }
                        }
                    }
                    Some("ImplementationSpecific") => {
                        if !path.is_empty() && !path.starts_with('/') {
                            errs.push(FieldError::invalid(format!("{pp}.path"), path, "must be an absolute path"));
                        }
                    }
                    Some(other) => errs.push(FieldError::not_supported(format!("{pp}.pathType"), other, &["Exact", "ImplementationSpecific", "Prefix"])),
                }
                validate_backend(&mut errs, &p["backend"], &format!("{pp}.backend"));
            }
        }
    }
    if let Some(class) = spec["ingressClassName"].as_str() {
        validation::push_invalid(&mut errs, "spec.ingressClassName", class, validation::dns1123_subdomain(class));
    }
    errs
}

impl Strategy for IngressStrategy {
    fn validate(&self, _ctx: &ReqCtx, obj: &Value) -> FieldErrors {
        validate_ingress(obj)
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            table::name_column(),
            Column::new("Class", "string", |o| json!(o["spec"]["ingressClassName"].as_str().unwrap_or("<none>"))),
            Column::new("Hosts", "string", |o| json!(hosts(o))),
            Column::new("Address", "string", |o| json!(super::service::load_balancer_ips(&o["status"]["loadBalancer"]))),
            Column::new("Ports", "string", |o| json!(if arr(&o["spec"]["tls"]).is_empty() { "80" } else { "80, 443" })),
            table::age_column(),
        ]
    }
}

/// `kubectl`'s `formatHosts`.
fn hosts(o: &Value) -> String {
    let rules = arr(&o["spec"]["rules"]);
    let (max, mut list, mut more) = (3, Vec::new(), false);
    for r in rules {
        if list.len() == max {
            more = true;
        }
        if !more && !s(&r["host"]).is_empty() {
            list.push(s(&r["host"]));
        }
    }
    if list.is_empty() {
        return "*".into();
    }
    let ret = list.join(",");
    if more { format!("{ret} + {} more...", rules.len() - max) } else { ret }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ingress() {
        let ctx = ReqCtx::default();
        let ing = json!({"spec": {"rules": [{"host": "example.com", "http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}},
            {"path": "/x", "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}});
        let errs = IngressStrategy.validate(&ctx, &ing);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].to_string(), "spec.rules[0].http.paths[1].pathType: Required value: pathType must be specified");
        let cells: Vec<Value> = IngressStrategy.columns().iter().map(|c| (c.cell)(&ing)).collect();
        assert_eq!(cells[1], "<none>");
        assert_eq!(cells[2], "example.com");
        assert_eq!(cells[4], "80");
        assert!(IngressStrategy.validate(&ctx, &json!({"spec": {}}))[0].to_string().ends_with("either `defaultBackend` or `rules` must be specified"));
    }
}
