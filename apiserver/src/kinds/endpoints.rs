//! Endpoints and EndpointSlices: address and port validation, `kubectl get` columns.

use std::collections::HashSet;

use serde_json::{json, Value};

use super::common::{self, arr, int, s};
use crate::registry::table::{self, Column};
use crate::registry::{ReqCtx, Strategy};
use crate::validation::{FieldError, FieldErrors};

pub struct EndpointsStrategy;
pub struct EndpointSliceStrategy;

fn validate_port(errs: &mut FieldErrors, p: &Value, path: &str, require_name: bool, names: &mut HashSet<String>) {
    let name = s(&p["name"]);
    if require_name && name.is_empty() {
        errs.push(FieldError::required(format!("{path}.name"), ""));
    } else if !name.is_empty() {
        common::dns1123_label(errs, name, &format!("{path}.name"));
        if !names.insert(name.to_string()) {
            errs.push(FieldError::duplicate(format!("{path}.name"), name));
        }
    }
    if let Some(n) = int(&p["port"]) {
        if !(0..=65535).contains(&n) {
            errs.push(FieldError::invalid(format!("{path}.port"), n, "must be between 0 and 65535, inclusive"));
        }
    }
    common::validate_enum(errs, &p["protocol"], &format!("{path}.protocol"), common::PROTOCOLS);
}

impl Strategy for EndpointsStrategy {
    fn apply_defaults(&self, obj: &mut Value) {
        common::each_mut(obj, "subsets", |ss| common::each_mut(ss, "ports", |p| common::set_default(p, "protocol", "TCP")));
    }

    fn validate(&self, _ctx: &ReqCtx, obj: &Value) -> FieldErrors {
        let mut errs = Vec::new();
        for (i, ss) in arr(&obj["subsets"]).iter().enumerate() {
            for list in ["addresses", "notReadyAddresses"] {
                for (j, a) in arr(&ss[list]).iter().enumerate() {
                    let ip = s(&a["ip"]);
                    if !common::is_ip(ip) {
                        errs.push(FieldError::invalid(
                            format!("subsets[{i}].{list}[{j}].ip"),
                            ip,
                            "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
                        ));
                    }
                }
            }
            let ports = arr(&ss["ports"]);
            let mut names = HashSet::new();
            for (j, p) in ports.iter().enumerate() {
                validate_port(&mut errs, p, &format!("subsets[{i}].ports[{j}]"), ports.len() > 1, &mut names);
            }
        }
        errs
    }

    fn columns(&self) -> Vec<Column> {
        vec![table::name_column(), Column::new("Endpoints", "string", |o| json!(format_endpoints(o))), table::age_column()]
    }
}

/// `kubectl`'s `formatEndpoints`: at most three `ip:port`, then `+ N more...`.
fn format_endpoints(ep: &Value) -> String {
    let subsets = arr(&ep["subsets"]);
    if subsets.is_empty() {
        return "<none>".into();
    }
    let (max, mut list, mut count, mut more) = (3usize, Vec::new(), 0usize, false);
    let join = |ip: &str, port: i64| if ip.contains(':') { format!("[{ip}]:{port}") } else { format!("{ip}:{port}") };
    for ss in subsets {
        let addrs = arr(&ss["addresses"]);
        let ports = arr(&ss["ports"]);
        if ports.is_empty() {
            count += addrs.len();
            for a in addrs {
                if list.len() == max {
                    more = true;
                    break;
                }
                list.push(s(&a["ip"]).to_string());
            }
            continue;
        }
        for p in ports {
            count += addrs.len();
            for a in addrs {
                if list.len() == max {
                    more = true;
                    break;
                }
                list.push(join(s(&a["ip"]), int(&p["port"]).unwrap_or(0)));
            }
        }
    }
    let ret = list.join(",");
    if more { format!("{ret} + {} more...", count - max) } else { ret }
}

impl Strategy for EndpointSliceStrategy {
    fn apply_defaults(&self, obj: &mut Value) {
        common::each_mut(obj, "ports", |p| common::set_default(p, "protocol", "TCP"));
    }

    fn validate(&self, _ctx: &ReqCtx, obj: &Value) -> FieldErrors {
        let mut errs = Vec::new();
        let at = s(&obj["addressType"]);
        common::validate_enum(&mut errs, &obj["addressType"], "addressType", &["IPv4", "IPv6", "FQDN"]);
        for (i, e) in arr(&obj["endpoints"]).iter().enumerate() {
            let addrs = arr(&e["addresses"]);
            if addrs.is_empty() || addrs.len() > 100 {
                errs.push(FieldError::required(format!("endpoints[{i}].addresses"), "must contain at least 1 address"));
            }
            for (j, a) in addrs.iter().enumerate() {
                let a = s(a);
                let ok = match at {
                    "IPv4" => a.parse::<std::net::Ipv4Addr>().is_ok(),
                    "IPv6" => a.parse::<std::net::Ipv6Addr>().is_ok(),
                    _ => crate::validation::dns1123_subdomain(a).is_empty(),
                };
                if !ok {
                    errs.push(FieldError::invalid(format!("endpoints[{i}].addresses[{j}]"), a, format!("must be a valid {at} address")));
                }
            }
        }
        let ports = arr(&obj["ports"]);
        let mut names = HashSet::new();
        for (i, p) in ports.iter().enumerate() {
            validate_port(&mut errs, p, &format!("ports[{i}]"), false, &mut names);
        }
        errs
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            table::name_column(),
            Column::new("AddressType", "string", |o| json!(s(&o["addressType"]))),
            Column::new("Ports", "string", |o| {
                let ports: Vec<String> = arr(&o["ports"]).iter().map(|p| int(&p["port"]).map_or("<unset>".into(), |n| n.to_string())).collect();
                json!(if ports.is_empty() { "<unset>".to_string() } else { ports.join(",") })
            }),
            Column::new("Endpoints", "string", |o| {
                let all: Vec<&str> = arr(&o["endpoints"]).iter().flat_map(|e| arr(&e["addresses"]).iter().map(s)).collect();
                json!(match all.len() {
                    0 => "<unset>".to_string(),
                    n if n > 3 => format!("{} + {} more...", all[..3].join(","), n - 3),
                    _ => all.join(","),
                })
            }),
            table::age_column(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let ctx = ReqCtx::default();
        let mut ep = json!({"subsets": [{"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}], "ports": [{"port": 80}, {"port": 443, "name": "https"}]}]});
        EndpointsStrategy.apply_defaults(&mut ep);
        let errs = EndpointsStrategy.validate(&ctx, &ep);
        assert_eq!(errs[0].to_string(), "subsets[0].ports[0].name: Required value");
        assert_eq!(format_endpoints(&ep), "10.0.0.1:80,10.0.0.2:80,10.0.0.1:443 + 1 more...");
        assert_eq!(format_endpoints(&json!({})), "<none>");
    }
}
