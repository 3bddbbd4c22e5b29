//! `krust server`: prepares the data dir (token, certificates, kubeconfig), opens the
//! datastore, and serves the API until SIGINT or SIGTERM.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};

use crate::cli::ServerArgs;
use crate::datastore::{self, Endpoint};
use crate::files::ServerPaths;
use crate::pki::{self, San};
use crate::{controller_manager, join, kine, kubeconfig, node, serve, token};

/// Names every API server certificate covers, as k3s's: how clients on this machine and
/// pods (through the `kubernetes` Service) reach it.
const DEFAULT_SANS: &[&str] = &[
    "localhost",
    "127.0.0.1",
    "::1",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
];

/// The etcd datastore's TLS files (`--datastore-cafile/-certfile/-keyfile`), if any is given.
fn datastore_tls(args: &ServerArgs) -> Option<kine_sqlite::TlsFiles> {
    let files = kine_sqlite::TlsFiles {
        ca: args.datastore_cafile.clone(),
        cert: args.datastore_certfile.clone(),
        key: args.datastore_keyfile.clone(),
    };
    (files != kine_sqlite::TlsFiles::default()).then_some(files)
}

/// Kubeconfigs hold the admin key: private unless `--write-kubeconfig-mode` says otherwise.
const KUBECONFIG_MODE: u32 = 0o600;

pub async fn run(args: ServerArgs, started: Instant) -> anyhow::Result<()> {
    let paths = ServerPaths::new(&args.data_dir);
    tracing::info!(data_dir = %args.data_dir.display(), "starting krust server");
    let secret = token::ensure(&paths.token(), args.token.as_deref())?;

    let pki = pki::ensure(&paths.tls(), &serving_sans(&args)).context("preparing certificates")?;
    let url = client_url(args.bind_address, args.https_listen_port);
    let kubeconfig_path = write_kubeconfigs(&args, &paths, &url, &pki)?;
    // The server's own parts act under their own identities, never the admin's.
    let own = controller_manager::write_kubeconfigs(&paths, &url, &pki)?;

    let endpoint = Endpoint::parse(args.datastore_endpoint.as_deref(), &paths.default_db())?;
    let compaction = datastore::Compaction {
        interval: std::time::Duration::from_secs(args.datastore_compact_interval.max(1)),
        keep: args.datastore_compact_retain.max(0),
    };
    // Checked before the datastore opens: a face that may not be served stops the start.
    let face = args.datastore_listen.map(|addr| kine::FaceTls::of_server(&args).options(addr).map(|o| (addr, o))).transpose()?;
    let backend = datastore::open_with(&endpoint, &datastore_tls(&args), compaction).await?;
    let (stop_grpc, grpc_stopped) = tokio::sync::watch::channel(false);
    let grpc = match face {
        Some((addr, opts)) => Some(kine::spawn_grpc(addr, opts, backend.clone(), grpc_stopped).await?),
        None => None,
    };
    let tokens = std::sync::Arc::new(
        apiserver::tokens::ServiceAccountTokens::from_pkcs8(&pki::service_account_key(&paths.tls())?).map_err(anyhow::Error::msg)?,
    );
    let api_config = apiserver::Config {
        watch_cache_size: args.default_watch_cache_size,
        service_cidr: args.service_cidr.clone(),
        service_node_port_range: args.service_node_port_range.clone(),
        advertise: apiserver::kubernetes_service::Advertise {
            address: advertise_address(&args).to_string(),
            port: args.advertise_port.unwrap_or(args.https_listen_port),
        },
        tokens: Some(tokens.clone()),
        api_audiences: args.api_audiences.clone(),
        kubelet_tls: Some(apiserver::handlers::proxy::KubeletTls {
            client_cert_pem: pki.kubelet_client_cert_pem.clone(),
            client_key_pem: pki.kubelet_client_key_pem.clone(),
            ca_pem: pki.server_ca_pem.clone(),
        }),
    };
    let issuer = std::sync::Arc::new(join::Issuer {
        tls_dir: paths.tls(),
        ca_pem: pki.server_ca_pem.clone(),
        client_ca_pem: pki.client_ca_pem.clone(),
        service_cidrs: join::parse_cidrs(&args.service_cidr)?,
        client: node::client_from(&own.supervisor).await?,
    });
    let router = apiserver::app_with(backend, api_config)
        .await
        .context("starting the API server")?
        .merge(join::routes(secret.clone(), issuer.clone()));
    let join_token = agent::join::Token::full(&pki.server_ca_pem, &secret);
    crate::files::write_atomic(&paths.node_token(), format!("{join_token}\n").as_bytes(), 0o600)?;
    let tls = serve::tls_config(&pki)?;

    // Registered before serving so a SIGTERM sent right after "ready" is not lost.
    let stop = stop_signal().context("installing signal handlers")?;
    let addr = SocketAddr::new(args.bind_address, args.https_listen_port);
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    tracing::info!("Listening on https://{addr}");
    tracing::info!(
        "krust server ready in {}ms: {url}, kubeconfig at {}",
        started.elapsed().as_millis(),
        kubeconfig_path.display()
    );
    tracing::info!(
        "agents join with: krust agent --server https://{}:{} --token-file {} (or --token K10...)",
        advertise_address(&args),
        args.https_listen_port,
        paths.node_token().display()
    );
    let controllers = if args.disable_controller_manager {
        tracing::info!("--disable-controller-manager: not running controllers");
        None
    } else {
        let config = controllers::Config {
            identity: controller_identity(),
            root_ca_pem: Some(pki.server_ca_pem.clone()),
            cluster_cidr: Some(args.cluster_cidr.clone()),
            node_monitor_grace_period: args.node_monitor_grace_period,
            hpa_sync_period: args.horizontal_pod_autoscaler_sync_period,
            ..Default::default()
        };
        Some(controller_manager::spawn(&own, config).await?)
    };
    // Pods' nameserver: the kube-dns Service, created once the API answers (below).
    let cluster_dns = crate::cluster_dns::spawn(&own.controller, args.node.cluster_dns).await?;
    let node_agent = if args.disable_agent {
        tracing::info!("--disable-agent: running the control plane only");
        None
    } else {
        Some(node::spawn_in_server(&args.node, &args.data_dir, &url, issuer)?)
    };
    serve::serve(listener, tls, router, serve_limits(&args), stop).await?;
    cluster_dns.abort();
    if let Some(handle) = node_agent {
        // (still starting, e.g. waiting for its pod CIDR: nothing of it to stop yet)
        let agent = if handle.is_finished() { handle.await.ok().flatten() } else { None };
        if let Some(agent) = &agent {
            agent.abort();
        }
        if args.node.clean {
            if let Ok(config) = node::agent_config(&args.node, &args.data_dir) {
                node::clean(agent.as_ref(), &config.node_name).await;
            }
        }
    }
    if let Some(c) = controllers {
        c.abort();
    }
    if let Some(grpc) = grpc {
        let _ = stop_grpc.send(true);
        let _ = grpc.await;
    }
    tracing::info!("krust server stopped");
    Ok(())
}

/// The address the `kubernetes` Service points at: the one asked for, the bind address,
/// or (binding to all) the address this host uses to reach other hosts.
fn advertise_address(args: &ServerArgs) -> IpAddr {
    if let Some(a) = args.advertise_address {
        return a;
    }
    if !args.bind_address.is_unspecified() {
        return args.bind_address;
    }
    outbound_address()
}

/// The address this host uses to reach other hosts (loopback when it has none).
pub fn outbound_address() -> IpAddr {
    // A UDP "connect" sends nothing; it only asks the kernel which source address it would
    // use. The target is a documentation address (TEST-NET-1), never contacted.
    std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.connect("192.0.2.1:9").map(|_| s))
        .and_then(|s| s.local_addr())
        .map(|a| a.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// The connection limits the flags ask for (`--http2-max-streams-per-connection` 0: the default).
fn serve_limits(args: &ServerArgs) -> serve::Limits {
    let defaults = serve::Limits::default();
    serve::Limits {
        timeouts: crate::conns::Timeouts { read_header: args.read_header_timeout, idle: args.idle_timeout },
        http2_max_streams: match args.http2_max_streams_per_connection {
            0 => defaults.http2_max_streams,
            n => n,
        },
        max_unauthenticated: args.max_unauthenticated_connections,
    }
}

/// This server's name in the controller-manager Lease: hostname and a random suffix, so
/// two servers on one host differ.
fn controller_identity() -> String {
    format!("{}_{:08x}", hostname().unwrap_or_else(|| "krust".into()), rand_suffix())
}

fn rand_suffix() -> u32 {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    t.subsec_nanos() ^ std::process::id()
}

/// The names the serving certificate must cover: the defaults, this machine's hostname, the
/// bind address when it is a specific one, and every `--tls-san`.
fn serving_sans(args: &ServerArgs) -> BTreeSet<San> {
    let mut names: Vec<String> = DEFAULT_SANS.iter().map(|s| s.to_string()).collect();
    names.extend(hostname());
    if !args.bind_address.is_unspecified() {
        names.push(args.bind_address.to_string());
    }
    names.extend(args.tls_san.iter().cloned());
    names.iter().map(|n| San::parse(n)).collect()
}

/// This machine's hostname, when it is usable as a DNS name in a certificate.
pub fn hostname() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim().to_ascii_lowercase();
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    valid.then_some(name)
}

/// The URL local clients use: loopback when listening on every address, as k3s writes.
fn client_url(bind: IpAddr, port: u16) -> String {
    let host = match bind {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    // SocketAddr's Display brackets IPv6 hosts, as URLs need.
    format!("https://{}", SocketAddr::new(host, port))
}

/// Writes `DATA_DIR/server/cred/admin.kubeconfig` and, if asked, `--write-kubeconfig`.
/// Returns the path to tell the person about: the one they asked for, else the default.
fn write_kubeconfigs(
    args: &ServerArgs,
    paths: &ServerPaths,
    url: &str,
    pki: &pki::Pki,
) -> anyhow::Result<PathBuf> {
    let text = kubeconfig::render_admin(url, pki)?;
    let mode = args.write_kubeconfig_mode.unwrap_or(KUBECONFIG_MODE);
    let admin = paths.admin_kubeconfig();
    match &args.write_kubeconfig {
        Some(path) => {
            kubeconfig::write(&admin, &text, KUBECONFIG_MODE)?;
            kubeconfig::write(path, &text, mode)
                .with_context(|| format!("--write-kubeconfig {}", path.display()))?;
            Ok(path.clone())
        }
        // Like k3s, the mode applies to the default kubeconfig when no other path is given.
        None => {
            kubeconfig::write(&admin, &text, mode)?;
            Ok(admin)
        }
    }
}

/// Resolves on the first SIGINT or SIGTERM.
pub fn stop_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT received: shutting down"),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(extra: &[&str]) -> ServerArgs {
        let mut argv = vec!["krust", "server"];
        argv.extend_from_slice(extra);
        let crate::cli::Command::Server(args) = crate::cli::Cli::parse_from(argv).command else {
            panic!("not server")
        };
        args
    }

    #[test]
    fn urls_for_clients() {
        assert_eq!(
            client_url("0.0.0.0".parse().unwrap(), 6443),
            "https://127.0.0.1:6443"
        );
        assert_eq!(
            client_url("127.0.0.1".parse().unwrap(), 7000),
            "https://127.0.0.1:7000"
        );
        assert_eq!(
            client_url("::".parse().unwrap(), 6443),
            "https://[::1]:6443"
        );
        assert_eq!(
            client_url("fd00::5".parse().unwrap(), 6443),
            "https://[fd00::5]:6443"
        );
    }

    #[test]
    fn sans_include_defaults_bind_address_and_extras() {
        let sans = serving_sans(&args(&[
            "--bind-address",
            "10.0.0.7",
            "--tls-san",
            "API.example",
        ]));
        for name in DEFAULT_SANS.iter().chain(&["10.0.0.7", "api.example"]) {
            assert!(sans.contains(&San::parse(name)), "{name}");
        }
        let sans = serving_sans(&args(&[]));
        assert!(!sans.contains(&San::parse("0.0.0.0")));
    }
}
