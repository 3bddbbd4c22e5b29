//! The cluster zone: which records a name has, after upstream's DNS specification for
//! Kubernetes (kubernetes/dns `docs/specification.md`) and CoreDNS's kubernetes plugin.
//!
//! - `SVC.NS.svc.ZONE`: A/AAAA of the ClusterIPs; for a headless Service the ready
//!   addresses of its EndpointSlices; for an ExternalName Service a CNAME.
//! - `HOST.SVC.NS.svc.ZONE`: a headless Service's endpoint, by its `hostname` or else its
//!   dashed address (`10-42-0-5`).
//! - `_PORT._PROTO.SVC.NS.svc.ZONE`: SRV per named port (the Service name as target, or each
//!   headless endpoint), with the targets' addresses as additional records.
//! - `A-B-C-D.NS.pod.ZONE`: the address written in the name (CoreDNS's `pods insecure`).
//! - PTR for ClusterIPs and headless endpoints.
//!
//! Anything else in the zone is NXDOMAIN; names that exist without the asked type answer
//! NOERROR with no records (NODATA); both carry the zone's SOA in the authority section.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA, CNAME, PTR, SOA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// TTL of every record served from the cluster zone (CoreDNS's kubernetes plugin default).
pub const TTL: u32 = 5;

/// The label linking an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The objects the zone is made from (reflector caches in the agent, plain lists in tests).
pub trait Catalog: Send + Sync {
    fn services(&self) -> Vec<Arc<Service>>;
    fn slices(&self) -> Vec<Arc<EndpointSlice>>;
}

/// What to do with a question.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// Not in the cluster zone (nor a known reverse name): ask the upstream resolvers.
    Forward,
    /// An authoritative answer from the zone.
    Answer(Answer),
}

#[derive(Debug, Default, PartialEq)]
pub struct Answer {
    pub rcode: ResponseCode,
    pub answers: Vec<Record>,
    pub additionals: Vec<Record>,
    /// The zone's SOA, for negative answers (NXDOMAIN, NODATA).
    pub authority: Vec<Record>,
    /// An ExternalName's target, for the server to resolve (A/AAAA questions) and append.
    pub chase: Option<Name>,
}

/// The cluster zone (`cluster.local`).
#[derive(Clone, Debug)]
pub struct Zone {
    /// Lowercase, without the final dot.
    domain: String,
}

impl Zone {
    pub fn new(domain: &str) -> Zone {
        Zone { domain: domain.trim_end_matches('.').to_ascii_lowercase() }
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    fn fqdn(&self, prefix: &str) -> Name {
        let text = if prefix.is_empty() { format!("{}.", self.domain) } else { format!("{prefix}.{}.", self.domain) };
        Name::from_ascii(&text).unwrap_or_else(|_| Name::root())
    }

    pub fn soa(&self) -> Record {
        let soa = SOA::new(self.fqdn("ns.dns"), self.fqdn("hostmaster"), serial(), 7200, 1800, 86400, TTL);
        Record::from_rdata(self.fqdn(""), TTL, RData::SOA(soa))
    }

    /// The labels of `name` before the zone, or `None` when the name is outside it.
    fn labels_in_zone(&self, name: &str) -> Option<Vec<String>> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if name == self.domain {
            return Some(Vec::new());
        }
        let prefix = name.strip_suffix(&self.domain)?.strip_suffix('.')?;
        Some(prefix.split('.').map(str::to_string).collect())
    }

    /// Answers `qname`/`qtype` from the zone, or says to forward it.
    pub fn resolve(&self, catalog: &dyn Catalog, qname: &Name, qtype: RecordType) -> Outcome {
        let text = qname.to_ascii();
        if qtype == RecordType::PTR {
            if let Some(ip) = reverse_ip(&text) {
                return match self.ptr(catalog, ip) {
                    Some(target) => Outcome::Answer(Answer {
                        answers: vec![Record::from_rdata(qname.clone(), TTL, RData::PTR(PTR(target)))],
                        ..Answer::default()
                    }),
                    None => Outcome::Forward,
                };
            }
        }
        let Some(labels) = self.labels_in_zone(&text) else { return Outcome::Forward };
        let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
        let found = match labels.as_slice() {
            [] if qtype == RecordType::SOA => Found::Records(vec![self.soa()], vec![]),
            [] | ["svc"] | [_, "svc"] | ["pod"] | [_, "pod"] => Found::Empty,
            [svc, ns, "svc"] => self.service(catalog, qname, ns, svc, qtype),
            [host, svc, ns, "svc"] => self.endpoint(catalog, qname, ns, svc, host, qtype),
            [port, proto, svc, ns, "svc"] if port.starts_with('_') && proto.starts_with('_') => {
                self.srv(catalog, qname, ns, svc, &port[1..], &proto[1..], qtype)
            }
            [dashed, _ns, "pod"] => match parse_dashed(dashed) {
                Some(ip) => address_records(qname, &[ip], qtype),
                None => Found::Missing,
            },
            _ => Found::Missing,
        };
        Outcome::Answer(match found {
            Found::Missing => Answer { rcode: ResponseCode::NXDomain, authority: vec![self.soa()], ..Answer::default() },
            Found::Empty => Answer { authority: vec![self.soa()], ..Answer::default() },
            Found::Records(answers, additionals) if answers.is_empty() => Answer { additionals, authority: vec![self.soa()], ..Answer::default() },
            Found::Records(answers, additionals) => Answer { answers, additionals, ..Answer::default() },
            Found::Alias(target) => {
                let cname = Record::from_rdata(qname.clone(), TTL, RData::CNAME(CNAME(target.clone())));
                let chase = matches!(qtype, RecordType::A | RecordType::AAAA).then_some(target);
                Answer { answers: vec![cname], chase, ..Answer::default() }
            }
        })
    }

    fn service(&self, catalog: &dyn Catalog, qname: &Name, ns: &str, name: &str, qtype: RecordType) -> Found {
        let Some(svc) = find_service(catalog, ns, name) else { return Found::Missing };
        let spec = svc.spec.clone().unwrap_or_default();
        if spec.type_.as_deref() == Some("ExternalName") {
            let target = spec.external_name.as_deref().unwrap_or_default().trim_end_matches('.').to_string();
            return match Name::from_ascii(format!("{target}.")) {
                Ok(t) if !target.is_empty() => Found::Alias(t),
                _ => Found::Empty,
            };
        }
        let ips: Vec<IpAddr> = if is_headless(&svc) {
            ready_endpoints(catalog, ns, name).into_iter().map(|(ip, _)| ip).collect()
        } else {
            cluster_ips(&svc)
        };
        address_records(qname, &ips, qtype)
    }

    fn endpoint(&self, catalog: &dyn Catalog, qname: &Name, ns: &str, svc: &str, host: &str, qtype: RecordType) -> Found {
        let Some(service) = find_service(catalog, ns, svc) else { return Found::Missing };
        if !is_headless(&service) {
            return Found::Missing;
        }
        let ips: Vec<IpAddr> = ready_endpoints(catalog, ns, svc).into_iter().filter(|(_, h)| h == host).map(|(ip, _)| ip).collect();
        if ips.is_empty() {
            return Found::Missing;
        }
        address_records(qname, &ips, qtype)
    }

    #[allow(clippy::too_many_arguments)]
    fn srv(&self, catalog: &dyn Catalog, qname: &Name, ns: &str, name: &str, port: &str, proto: &str, qtype: RecordType) -> Found {
        let Some(svc) = find_service(catalog, ns, name) else { return Found::Missing };
        let spec = svc.spec.clone().unwrap_or_default();
        let matches = |n: Option<&str>, p: Option<&str>| n == Some(port) && p.unwrap_or("TCP").eq_ignore_ascii_case(proto);
        let Some(svc_port) = spec.ports.iter().flatten().find(|p| matches(p.name.as_deref(), p.protocol.as_deref())) else {
            return Found::Missing;
        };
        if qtype != RecordType::SRV {
            return Found::Empty;
        }
        let service_name = format!("{name}.{ns}.svc");
        let mut answers = Vec::new();
        let mut additionals = Vec::new();
        if is_headless(&svc) {
            let mut targets = BTreeSet::new();
            for slice in slices_of(catalog, ns, name) {
                let Some(p) = slice.ports.iter().flatten().find(|p| matches(p.name.as_deref(), p.protocol.as_deref())) else { continue };
                let Some(number) = p.port else { continue };
                for (ip, host) in slice_ready_endpoints(&slice) {
                    targets.insert((host, number, ip));
                }
            }
            let weight = (100 / targets.len().max(1)) as u16;
            for (host, number, ip) in targets {
                let target = self.fqdn(&format!("{host}.{service_name}"));
                answers.push(Record::from_rdata(qname.clone(), TTL, RData::SRV(SRV::new(0, weight, number as u16, target.clone()))));
                additionals.push(address_record(target, ip));
            }
        } else if spec.type_.as_deref() != Some("ExternalName") {
            let target = self.fqdn(&service_name);
            answers.push(Record::from_rdata(qname.clone(), TTL, RData::SRV(SRV::new(0, 100, svc_port.port as u16, target.clone()))));
            additionals.extend(cluster_ips(&svc).into_iter().map(|ip| address_record(target.clone(), ip)));
        }
        Found::Records(answers, additionals)
    }

    /// The name an address belongs to: a ClusterIP's Service, or a headless endpoint.
    fn ptr(&self, catalog: &dyn Catalog, ip: IpAddr) -> Option<Name> {
        let services = catalog.services();
        for svc in &services {
            if !is_headless(svc) && cluster_ips(svc).contains(&ip) {
                let (ns, name) = (svc.metadata.namespace.as_deref()?, svc.metadata.name.as_deref()?);
                return Some(self.fqdn(&format!("{name}.{ns}.svc")));
            }
        }
        for slice in catalog.slices() {
            let Some((ns, svc)) = slice_service(&slice) else { continue };
            let headless = services.iter().any(|s| s.metadata.namespace.as_deref() == Some(ns) && s.metadata.name.as_deref() == Some(svc) && is_headless(s));
            if !headless {
                continue;
            }
            if let Some((_, host)) = slice_ready_endpoints(&slice).into_iter().find(|(a, _)| *a == ip) {
                return Some(self.fqdn(&format!("{host}.{svc}.{ns}.svc")));
            }
        }
        None
    }
}

enum Found {
    /// The name does not exist.
    Missing,
    /// The name exists, without records of the asked type.
    Empty,
    /// Answers (possibly none of the asked type) and additional records.
    Records(Vec<Record>, Vec<Record>),
    /// An ExternalName's CNAME target.
    Alias(Name),
}

/// A serial that grows over time (CoreDNS uses the time of the last change).
fn serial() -> u32 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as u32).unwrap_or(1)
}

fn address_record(name: Name, ip: IpAddr) -> Record {
    match ip {
        IpAddr::V4(v4) => Record::from_rdata(name, TTL, RData::A(A(v4))),
        IpAddr::V6(v6) => Record::from_rdata(name, TTL, RData::AAAA(AAAA(v6))),
    }
}

/// A/AAAA records of `ips` for the asked type; other types: the name exists, no records.
fn address_records(qname: &Name, ips: &[IpAddr], qtype: RecordType) -> Found {
    let wanted: Vec<Record> = ips
        .iter()
        .filter(|ip| matches!((qtype, ip), (RecordType::A, IpAddr::V4(_)) | (RecordType::AAAA, IpAddr::V6(_))))
        .map(|ip| address_record(qname.clone(), *ip))
        .collect();
    Found::Records(wanted, vec![])
}

fn find_service(catalog: &dyn Catalog, ns: &str, name: &str) -> Option<Arc<Service>> {
    catalog.services().into_iter().find(|s| s.metadata.namespace.as_deref() == Some(ns) && s.metadata.name.as_deref() == Some(name))
}

fn is_headless(svc: &Service) -> bool {
    let spec = svc.spec.as_ref();
    spec.and_then(|s| s.cluster_ip.as_deref()) == Some("None") && spec.and_then(|s| s.type_.as_deref()) != Some("ExternalName")
}

fn cluster_ips(svc: &Service) -> Vec<IpAddr> {
    let Some(spec) = &svc.spec else { return vec![] };
    let mut out: Vec<IpAddr> = spec.cluster_ips.iter().flatten().filter_map(|ip| ip.parse().ok()).collect();
    if let Some(ip) = spec.cluster_ip.as_deref().and_then(|ip| ip.parse().ok()) {
        if !out.contains(&ip) {
            out.insert(0, ip);
        }
    }
    out
}

fn slice_service(slice: &EndpointSlice) -> Option<(&str, &str)> {
    let ns = slice.metadata.namespace.as_deref()?;
    let svc = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
    Some((ns, svc.as_str()))
}

fn slices_of(catalog: &dyn Catalog, ns: &str, svc: &str) -> Vec<Arc<EndpointSlice>> {
    catalog.slices().into_iter().filter(|s| slice_service(s) == Some((ns, svc))).collect()
}

/// The ready addresses of a slice, each with its DNS host label: the endpoint's `hostname`,
/// or the address with dashes.
fn slice_ready_endpoints(slice: &EndpointSlice) -> Vec<(IpAddr, String)> {
    let mut out = Vec::new();
    for ep in &slice.endpoints {
        // Upstream: an unknown readiness (nil) is to be read as ready.
        if ep.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
            continue;
        }
        for addr in &ep.addresses {
            let Ok(ip) = addr.parse::<IpAddr>() else { continue };
            let host = ep.hostname.clone().filter(|h| !h.is_empty()).unwrap_or_else(|| dashed(ip));
            out.push((ip, host.to_ascii_lowercase()));
        }
    }
    out
}

/// Every ready endpoint of a Service's slices, without repeats, in a stable order.
fn ready_endpoints(catalog: &dyn Catalog, ns: &str, svc: &str) -> Vec<(IpAddr, String)> {
    let set: BTreeSet<(IpAddr, String)> = slices_of(catalog, ns, svc).iter().flat_map(|s| slice_ready_endpoints(s)).collect();
    set.into_iter().collect()
}

/// `10.42.0.5` → `10-42-0-5`; IPv6 `fd00::1` → `fd00--1`.
pub fn dashed(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string().replace('.', "-"),
        IpAddr::V6(v6) => v6.to_string().replace(':', "-"),
    }
}

fn parse_dashed(label: &str) -> Option<IpAddr> {
    if let Ok(v4) = label.replace('-', ".").parse::<Ipv4Addr>() {
        return Some(IpAddr::V4(v4));
    }
    label.replace('-', ":").parse::<Ipv6Addr>().ok().map(IpAddr::V6)
}

/// `5.0.42.10.in-addr.arpa.` → 10.42.0.5 (IPv6 `ip6.arpa` nibbles too).
pub fn reverse_ip(name: &str) -> Option<IpAddr> {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    if let Some(rest) = name.strip_suffix(".in-addr.arpa") {
        let mut octets: Vec<u8> = rest.split('.').map(|o| o.parse().ok()).collect::<Option<_>>()?;
        if octets.len() != 4 {
            return None;
        }
        octets.reverse();
        return Some(IpAddr::V4(Ipv4Addr::new(octets[0], octets[1], octets[2], octets[3])));
    }
    let rest = name.strip_suffix(".ip6.arpa")?;
    let nibbles: Vec<u8> = rest.split('.').map(|n| u8::from_str_radix(n, 16).ok().filter(|_| n.len() == 1)).collect::<Option<_>>()?;
    if nibbles.len() != 32 {
        return None;
    }
    let mut bytes = [0u8; 16];
    for (i, pair) in nibbles.iter().rev().collect::<Vec<_>>().chunks(2).enumerate() {
        bytes[i] = (pair[0] << 4) | pair[1];
    }
    Some(IpAddr::V6(Ipv6Addr::from(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Lists(Vec<Arc<Service>>, Vec<Arc<EndpointSlice>>);

    impl Catalog for Lists {
        fn services(&self) -> Vec<Arc<Service>> {
            self.0.clone()
        }
        fn slices(&self) -> Vec<Arc<EndpointSlice>> {
            self.1.clone()
        }
    }

    fn catalog() -> Lists {
        let svc = |v: serde_json::Value| Arc::new(serde_json::from_value::<Service>(v).unwrap());
        let services = vec![
            svc(json!({"metadata": {"name": "web", "namespace": "default"}, "spec": {"clusterIP": "10.43.0.20", "clusterIPs": ["10.43.0.20"],
                "ports": [{"name": "http", "port": 80, "protocol": "TCP"}, {"name": "dns", "port": 53, "protocol": "UDP"}]}})),
            svc(json!({"metadata": {"name": "db", "namespace": "prod"}, "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}})),
            svc(json!({"metadata": {"name": "ext", "namespace": "default"}, "spec": {"type": "ExternalName", "externalName": "example.org"}})),
            svc(json!({"metadata": {"name": "alias", "namespace": "default"}, "spec": {"type": "ExternalName", "externalName": "web.default.svc.cluster.local"}})),
        ];
        let slice = serde_json::from_value::<EndpointSlice>(json!({
            "metadata": {"name": "db-abc", "namespace": "prod", "labels": {"kubernetes.io/service-name": "db"}},
            "addressType": "IPv4",
            "ports": [{"name": "pg", "port": 5433, "protocol": "TCP"}],
            "endpoints": [
                {"addresses": ["10.42.0.5"], "conditions": {"ready": true}, "hostname": "db-0"},
                {"addresses": ["10.42.0.6"], "conditions": {"ready": true}},
                {"addresses": ["10.42.0.7"], "conditions": {"ready": false}},
            ],
        }))
        .unwrap();
        Lists(services, vec![Arc::new(slice)])
    }

    fn ask(name: &str, qtype: RecordType) -> Outcome {
        Zone::new("cluster.local").resolve(&catalog(), &Name::from_ascii(name).unwrap(), qtype)
    }

    fn answer(name: &str, qtype: RecordType) -> Answer {
        match ask(name, qtype) {
            Outcome::Answer(a) => a,
            Outcome::Forward => panic!("{name} forwarded"),
        }
    }

    fn rdata(a: &Answer) -> Vec<String> {
        a.answers.iter().map(|r| r.data.to_string()).collect()
    }

    #[test]
    fn cluster_ip_services() {
        let a = answer("web.default.svc.cluster.local.", RecordType::A);
        assert_eq!(a.rcode, ResponseCode::NoError);
        assert_eq!(rdata(&a), ["10.43.0.20"]);
        assert_eq!(a.answers[0].ttl, TTL);
        // Case does not matter; an IPv4-only Service has no AAAA: NODATA with the SOA.
        assert_eq!(rdata(&answer("WEB.default.svc.Cluster.Local", RecordType::A)), ["10.43.0.20"]);
        let aaaa = answer("web.default.svc.cluster.local.", RecordType::AAAA);
        assert_eq!((aaaa.rcode, aaaa.answers.len(), aaaa.authority.len()), (ResponseCode::NoError, 0, 1));
        let missing = answer("nope.default.svc.cluster.local.", RecordType::A);
        assert_eq!(missing.rcode, ResponseCode::NXDomain);
        assert_eq!(missing.authority[0].record_type(), RecordType::SOA);
        // The search list's attempts with a foreign name are NXDOMAIN too.
        assert_eq!(answer("example.com.default.svc.cluster.local.", RecordType::A).rcode, ResponseCode::NXDomain);
    }

    #[test]
    fn srv_for_named_ports() {
        let a = answer("_http._tcp.web.default.svc.cluster.local.", RecordType::SRV);
        assert_eq!(rdata(&a), ["0 100 80 web.default.svc.cluster.local."]);
        assert_eq!(a.additionals[0].data.to_string(), "10.43.0.20");
        assert_eq!(rdata(&answer("_dns._udp.web.default.svc.cluster.local.", RecordType::SRV)), ["0 100 53 web.default.svc.cluster.local."]);
        assert_eq!(answer("_dns._tcp.web.default.svc.cluster.local.", RecordType::SRV).rcode, ResponseCode::NXDomain);
        let a = answer("_pg._tcp.db.prod.svc.cluster.local.", RecordType::SRV);
        assert_eq!(rdata(&a), ["0 50 5433 10-42-0-6.db.prod.svc.cluster.local.", "0 50 5433 db-0.db.prod.svc.cluster.local."]);
        assert_eq!(a.additionals.len(), 2);
    }

    #[test]
    fn headless_services_and_their_endpoints() {
        let a = answer("db.prod.svc.cluster.local.", RecordType::A);
        assert_eq!(rdata(&a), ["10.42.0.5", "10.42.0.6"]);
        assert_eq!(rdata(&answer("db-0.db.prod.svc.cluster.local.", RecordType::A)), ["10.42.0.5"]);
        assert_eq!(rdata(&answer("10-42-0-6.db.prod.svc.cluster.local.", RecordType::A)), ["10.42.0.6"]);
        assert_eq!(answer("db-9.db.prod.svc.cluster.local.", RecordType::A).rcode, ResponseCode::NXDomain);
    }

    #[test]
    fn external_names_pods_and_reverse() {
        let a = answer("ext.default.svc.cluster.local.", RecordType::A);
        assert_eq!(rdata(&a), ["example.org."]);
        assert_eq!(a.chase.unwrap().to_ascii(), "example.org.");
        assert_eq!(rdata(&answer("10-42-1-9.any.pod.cluster.local.", RecordType::A)), ["10.42.1.9"]);
        assert_eq!(answer("nothing.any.pod.cluster.local.", RecordType::A).rcode, ResponseCode::NXDomain);
        assert_eq!(rdata(&answer("20.0.43.10.in-addr.arpa.", RecordType::PTR)), ["web.default.svc.cluster.local."]);
        assert_eq!(rdata(&answer("5.0.42.10.in-addr.arpa.", RecordType::PTR)), ["db-0.db.prod.svc.cluster.local."]);
        assert_eq!(ask("9.9.9.9.in-addr.arpa.", RecordType::PTR), Outcome::Forward);
        assert_eq!(ask("example.org.", RecordType::A), Outcome::Forward);
        assert_eq!(ask("notcluster.local.", RecordType::A), Outcome::Forward);
        let soa = answer("cluster.local.", RecordType::SOA);
        assert_eq!(soa.answers[0].record_type(), RecordType::SOA);
        assert_eq!(answer("svc.cluster.local.", RecordType::A).rcode, ResponseCode::NoError);
    }

    #[test]
    fn reverse_names() {
        assert_eq!(reverse_ip("4.3.2.1.in-addr.arpa."), Some("1.2.3.4".parse().unwrap()));
        assert_eq!(reverse_ip("3.2.1.in-addr.arpa."), None);
        let v6 = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.";
        assert_eq!(reverse_ip(v6), Some("fd00::1".parse().unwrap()));
        assert_eq!(parse_dashed("fd00--1"), Some("fd00::1".parse().unwrap()));
    }
}
