//! The nftables ruleset of the proxy, as text for `nft -f`.

use std::fmt::Write;
use std::net::Ipv4Addr;

/// A ready endpoint.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Backend {
    pub ip: Ipv4Addr,
    pub port: u16,
}

/// One port of one Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    /// `namespace/name:port-name`, for chain names and comments.
    pub id: String,
    pub cluster_ip: Ipv4Addr,
    pub port: u16,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    pub node_port: Option<u16>,
    pub backends: Vec<Backend>,
    /// `sessionAffinity: ClientIP`: how long (seconds) a client sticks to its endpoint.
    pub affinity_timeout: Option<u32>,
}

/// Clients remembered by the affinity sets of the table being replaced, by set name:
/// (client address, seconds left). Rewriting the table must not forget them.
pub type Affinity = std::collections::BTreeMap<String, Vec<(Ipv4Addr, u64)>>;

/// Marks packets to masquerade on the way out (hairpin and NodePort traffic).
const MASQ_MARK: u32 = 0x4000;

/// A short stable chain name for a service port (FNV-1a of its id).
fn chain(prefix: &str, id: &str) -> String {
    format!("{prefix}-{:08x}", crate::hash::fnv1a32(id))
}

/// An endpoint's key: chains and affinity sets are named after the endpoint itself (not its
/// position), so a client's affinity survives other endpoints coming and going.
fn endpoint_key(p: &ServicePort, b: &Backend) -> String {
    format!("{}#{}:{}", p.id, b.ip, b.port)
}

/// The whole table: deleted and re-created in one `nft -f` transaction. `kept` carries the
/// affinity sets' clients over from the table being replaced.
pub fn render(table: &str, ports: &[ServicePort], kept: &Affinity) -> String {
    let mut t = String::new();
    // Creating first makes the delete valid when the table does not exist yet.
    let _ = writeln!(t, "add table ip {table}\ndelete table ip {table}\ntable ip {table} {{");
    let mut svc_elems = Vec::new();
    let mut np_elems = Vec::new();
    let mut chains = String::new();
    for p in ports {
        let svc = chain("svc", &p.id);
        svc_elems.push(format!("{} . {} . {} : goto {svc}", p.cluster_ip, p.protocol, p.port));
        if let Some(np) = p.node_port {
            // NodePort traffic comes from anywhere: masquerade it so replies return here.
            let npc = chain("np", &p.id);
            np_elems.push(format!("{} . {np} : goto {npc}", p.protocol));
            let _ = writeln!(chains, "  chain {npc} {{\n    meta mark set meta mark | {MASQ_MARK:#x}\n    goto {svc}\n  }}");
        }
        let _ = writeln!(chains, "  chain {svc} {{");
        let _ = writeln!(chains, "    comment \"{}\"", p.id.replace('"', ""));
        if p.backends.is_empty() {
            // No ready endpoint: refuse at once, as upstream's reject rule.
            let reject = if p.protocol == "tcp" { "reject with tcp reset" } else { "reject" };
            let _ = writeln!(chains, "    {reject}");
        } else {
            if p.affinity_timeout.is_some() {
                // ClientIP affinity (upstream's nftables proxy does the same): a client
                // seen recently goes back to the endpoint that remembered it.
                for b in &p.backends {
                    let key = endpoint_key(p, b);
                    let _ = writeln!(chains, "    ip saddr @{} goto {}", chain("aff", &key), chain("ep", &key));
                }
            }
            let arms: Vec<String> = p.backends.iter().enumerate().map(|(i, b)| format!("{i} : goto {}", chain("ep", &endpoint_key(p, b)))).collect();
            let _ = writeln!(chains, "    numgen random mod {} vmap {{ {} }}", p.backends.len(), arms.join(", "));
        }
        let _ = writeln!(chains, "  }}");
        for b in &p.backends {
            let key = endpoint_key(p, b);
            let ep = chain("ep", &key);
            if let Some(timeout) = p.affinity_timeout {
                let aff = chain("aff", &key);
                let _ = writeln!(chains, "  set {aff} {{\n    type ipv4_addr; flags dynamic,timeout; timeout {timeout}s;");
                let elems: Vec<String> = kept.get(&aff).into_iter().flatten().map(|(ip, left)| format!("{ip} timeout {timeout}s expires {}s", left.max(&1))).collect();
                if !elems.is_empty() {
                    let _ = writeln!(chains, "    elements = {{ {} }}", elems.join(", "));
                }
                let _ = writeln!(chains, "  }}");
            }
            let _ = writeln!(chains, "  chain {ep} {{");
            if p.affinity_timeout.is_some() {
                let _ = writeln!(chains, "    update @{} {{ ip saddr }}", chain("aff", &key));
            }
            // Hairpin: an endpoint reaching itself through the Service must see the reply
            // come back through the bridge, hence masquerade.
            let _ = writeln!(chains, "    ip saddr {} meta mark set meta mark | {MASQ_MARK:#x}", b.ip);
            let _ = writeln!(chains, "    meta l4proto {} dnat to {}:{}", p.protocol, b.ip, b.port);
            let _ = writeln!(chains, "  }}");
        }
    }
    let _ = writeln!(t, "  map service_ips {{\n    type ipv4_addr . inet_proto . inet_service : verdict");
    if !svc_elems.is_empty() {
        let _ = writeln!(t, "    elements = {{ {} }}", svc_elems.join(", "));
    }
    let _ = writeln!(t, "  }}");
    let _ = writeln!(t, "  map service_nodeports {{\n    type inet_proto . inet_service : verdict");
    if !np_elems.is_empty() {
        let _ = writeln!(t, "    elements = {{ {} }}", np_elems.join(", "));
    }
    let _ = writeln!(t, "  }}");
    let _ = writeln!(t, "  chain services {{");
    let _ = writeln!(t, "    ip daddr . meta l4proto . th dport vmap @service_ips");
    // NodePorts on this node's own addresses (not loopback, as upstream's default).
    let _ = writeln!(t, "    fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service_nodeports");
    let _ = writeln!(t, "  }}");
    let _ = writeln!(t, "  chain prerouting {{\n    type nat hook prerouting priority dstnat; policy accept;\n    jump services\n  }}");
    // The output hook needs priority -100 (dstnat) for locally generated packets.
    let _ = writeln!(t, "  chain output {{\n    type nat hook output priority -100; policy accept;\n    jump services\n  }}");
    let _ = writeln!(t, "  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n    meta mark & {MASQ_MARK:#x} == {MASQ_MARK:#x} masquerade\n  }}");
    t.push_str(&chains);
    t.push_str("}\n");
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_maps_and_chains() {
        let p = ServicePort {
            id: "default/web:http".into(),
            cluster_ip: "10.43.0.20".parse().unwrap(),
            port: 80,
            protocol: "tcp".into(),
            node_port: Some(30080),
            backends: vec![Backend { ip: "10.42.1.5".parse().unwrap(), port: 8080 }, Backend { ip: "10.42.1.6".parse().unwrap(), port: 8080 }],
            affinity_timeout: None,
        };
        let empty = ServicePort { id: "default/none:".into(), cluster_ip: "10.43.0.21".parse().unwrap(), port: 80, protocol: "tcp".into(), node_port: None, backends: vec![], affinity_timeout: None };
        let sticky = ServicePort { id: "default/sticky:".into(), cluster_ip: "10.43.0.22".parse().unwrap(), affinity_timeout: Some(600), node_port: None, ..p.clone() };
        let remembered = chain("aff", &endpoint_key(&sticky, &sticky.backends[1]));
        let kept: Affinity = [(remembered.clone(), vec![("10.42.0.9".parse().unwrap(), 30)])].into();
        let text = render("krust_n1", &[p, empty, sticky], &kept);
        assert!(text.starts_with("add table ip krust_n1\ndelete table ip krust_n1\n"));
        assert!(text.contains("10.43.0.20 . tcp . 80 : goto svc-"));
        assert!(text.contains("numgen random mod 2 vmap"));
        assert!(text.contains("dnat to 10.42.1.6:8080"));
        assert!(text.contains("reject with tcp reset"));
        assert!(text.contains("tcp . 30080 : goto np-"));
        // Affinity: remembered clients go back to their endpoint, and survive the rewrite.
        assert!(text.contains(&format!("ip saddr @{remembered} goto ep-")));
        assert!(text.contains(&format!("update @{remembered} {{ ip saddr }}")));
        assert!(text.contains("10.42.0.9 timeout 600s expires 30s"));
        // The kernel's parser accepts it (check mode: nothing is changed).
        let checked = std::process::Command::new("nft")
            .args(["-c", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().expect("stdin").write_all(text.as_bytes())?;
                c.wait_with_output()
            });
        match checked {
            Ok(out) => assert!(out.status.success(), "nft -c refused:\n{}\n{text}", String::from_utf8_lossy(&out.stderr)),
            Err(e) => eprintln!("SKIPPED the nft check: {e}"),
        }
    }
}
