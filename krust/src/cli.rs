//! The command line. Flag names follow k3s (`k3s server --help`) so that people and
//! scripts that know k3s can drive krust the same way.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "krust",
    version,
    about = "A small Kubernetes distribution in one binary"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the control plane: API server over an embedded SQLite datastore.
    Server(ServerArgs),
    /// Run a node that joins a server: registers the Node and runs its pods.
    Agent(AgentArgs),
    /// Serve the embedded SQLite datastore over the etcd v3 gRPC API (HTTP/2, TLS when
    /// asked), so that `etcdctl` and etcd clients can use it.
    Kine(KineArgs),
}

#[derive(Debug, Clone, Args)]
pub struct KineArgs {
    /// Address to serve the etcd v3 API on (plain HTTP/2 unless --listen-cert/-key are
    /// given; a non-loopback address needs TLS or --listen-insecure).
    #[arg(long, default_value = "127.0.0.1:2379")]
    pub listen: SocketAddr,

    /// Certificate (PEM) to serve the etcd v3 API over TLS with (needs --listen-key).
    #[arg(long, value_name = "FILE", alias = "datastore-listen-cert", requires = "listen_key")]
    pub listen_cert: Option<PathBuf>,

    /// Private key (PEM) of --listen-cert.
    #[arg(long, value_name = "FILE", alias = "datastore-listen-key", requires = "listen_cert")]
    pub listen_key: Option<PathBuf>,

    /// Clients must present a certificate signed by this CA (PEM), as etcd's
    /// --client-cert-auth with --trusted-ca-file.
    #[arg(long, value_name = "FILE", alias = "datastore-listen-client-ca", requires = "listen_cert")]
    pub listen_client_ca: Option<PathBuf>,

    /// Serve a non-loopback --listen address without TLS anyway.
    #[arg(long, alias = "datastore-listen-insecure")]
    pub listen_insecure: bool,

    /// krust's data folder: serves the server's store, DATA_DIR/server/db/state.db.
    #[arg(
        short = 'd',
        long,
        env = "KRUST_DATA_DIR",
        default_value = "/var/lib/krust"
    )]
    pub data_dir: PathBuf,

    /// The SQLite database file to serve (created if missing); overrides --data-dir.
    #[arg(long)]
    pub db: Option<PathBuf>,

    /// Seconds between datastore compactions (kine's default: 5 minutes).
    #[arg(long, default_value_t = 300)]
    pub compact_interval: u64,

    /// Revisions of history kept by each compaction (kine's default: 1000).
    #[arg(long, default_value_t = 1000)]
    pub compact_retain: i64,
}

#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Folder to hold state (certificates, credentials, database).
    #[arg(
        short = 'd',
        long,
        env = "KRUST_DATA_DIR",
        default_value = "/var/lib/krust"
    )]
    pub data_dir: PathBuf,

    /// Address the API server listens on (0.0.0.0 = every IPv4 address).
    #[arg(long, default_value = "0.0.0.0")]
    pub bind_address: IpAddr,

    /// Port the API server listens on for HTTPS.
    #[arg(long, default_value_t = 6443)]
    pub https_listen_port: u16,

    /// Also write the admin kubeconfig to this path.
    #[arg(short = 'o', long, env = "KRUST_KUBECONFIG_OUTPUT")]
    pub write_kubeconfig: Option<PathBuf>,

    /// File mode of the kubeconfig written by --write-kubeconfig, in octal (e.g. 644).
    #[arg(long, env = "KRUST_KUBECONFIG_MODE", value_parser = parse_octal_mode)]
    pub write_kubeconfig_mode: Option<u32>,

    /// Where the cluster state lives. Default: embedded SQLite at
    /// DATA_DIR/server/db/state.db. Accepts sqlite://PATH, or an etcd cluster as
    /// http(s)://HOST:2379[,http(s)://HOST2:2379...].
    #[arg(short = 'E', long, env = "KRUST_DATASTORE_ENDPOINT")]
    pub datastore_endpoint: Option<String>,

    /// TLS CA file that signed the etcd datastore's certificates (https:// endpoints).
    #[arg(long, env = "KRUST_DATASTORE_CAFILE", value_name = "FILE")]
    pub datastore_cafile: Option<PathBuf>,

    /// TLS client certificate for the etcd datastore.
    #[arg(long, env = "KRUST_DATASTORE_CERTFILE", value_name = "FILE")]
    pub datastore_certfile: Option<PathBuf>,

    /// TLS client key for the etcd datastore.
    #[arg(long, env = "KRUST_DATASTORE_KEYFILE", value_name = "FILE")]
    pub datastore_keyfile: Option<PathBuf>,

    /// Do not run the node agent in this server (control plane only).
    #[arg(long)]
    pub disable_agent: bool,

    /// IPv4 range pod IPs come from; every node gets a /24 of it (k3s's default).
    #[arg(long, default_value = "10.42.0.0/16")]
    pub cluster_cidr: String,

    /// How long a node may go without reporting before it is marked NotReady (Ready=Unknown)
    /// and tainted unreachable (upstream's flag; e.g. 40s, 2m).
    #[arg(long, default_value = "40s", value_parser = parse_duration)]
    pub node_monitor_grace_period: std::time::Duration,

    /// How often HorizontalPodAutoscalers are evaluated (upstream's flag).
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub horizontal_pod_autoscaler_sync_period: std::time::Duration,

    #[command(flatten)]
    pub node: NodeArgs,

    /// Do not run the controller-manager (controllers and scheduler) in this server.
    #[arg(long)]
    pub disable_controller_manager: bool,

    /// Shared secret that agents will use to join; generated and stored when not given.
    #[arg(short = 't', long, env = "KRUST_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// Extra hostname or IP to put in the serving certificate (repeatable).
    #[arg(long = "tls-san", value_name = "SAN")]
    pub tls_san: Vec<String>,

    /// Seconds between datastore compactions (kine's default: 5 minutes). Hidden: for tests.
    #[arg(long, hide = true, default_value_t = 300)]
    pub datastore_compact_interval: u64,

    /// Revisions of history kept by each compaction (kine's default: 1000). Hidden: for tests.
    #[arg(long, hide = true, default_value_t = 1000)]
    pub datastore_compact_retain: i64,

    /// Events the watch cache keeps for watchers resuming from an older resourceVersion
    /// (older ones get 410 Gone and relist). Upstream's flag name.
    #[arg(long, default_value_t = apiserver::registry::cache::DEFAULT_WINDOW)]
    pub default_watch_cache_size: usize,

    /// Audiences bearer tokens presented to the API must be for (repeatable; upstream's
    /// default: the service account issuer, https://kubernetes.default.svc.cluster.local).
    #[arg(long = "api-audiences", value_name = "AUDIENCE", value_delimiter = ',')]
    pub api_audiences: Vec<String>,

    /// IPv4 range Service ClusterIPs are allocated from (k3s's default).
    #[arg(long, default_value = "10.43.0.0/16")]
    pub service_cidr: String,

    /// Port range NodePort Services are allocated from.
    #[arg(long, default_value = "30000-32767")]
    pub service_node_port_range: String,

    /// Address the `kubernetes` Service's endpoint advertises (default: the bind address, or
    /// this host's first non-loopback IPv4 address when binding to all addresses).
    #[arg(long)]
    pub advertise_address: Option<std::net::IpAddr>,

    /// Port the `kubernetes` Service's endpoint advertises (default: the HTTPS port).
    #[arg(long)]
    pub advertise_port: Option<u16>,

    /// Also serve the datastore over the etcd v3 gRPC API at this address, e.g.
    /// 127.0.0.1:2379, for etcdctl and etcd clients. Plain HTTP/2 unless
    /// --datastore-listen-cert/-key are given; a non-loopback address needs TLS or
    /// --datastore-listen-insecure.
    #[arg(long, value_name = "ADDR")]
    pub datastore_listen: Option<SocketAddr>,

    /// Certificate (PEM) to serve --datastore-listen over TLS with (needs --datastore-listen-key).
    #[arg(long, value_name = "FILE", requires_all = ["datastore_listen", "datastore_listen_key"])]
    pub datastore_listen_cert: Option<PathBuf>,

    /// Private key (PEM) of --datastore-listen-cert.
    #[arg(long, value_name = "FILE", requires = "datastore_listen_cert")]
    pub datastore_listen_key: Option<PathBuf>,

    /// Clients of --datastore-listen must present a certificate signed by this CA (PEM), as
    /// etcd's --client-cert-auth with --trusted-ca-file.
    #[arg(long, value_name = "FILE", requires = "datastore_listen_cert")]
    pub datastore_listen_client_ca: Option<PathBuf>,

    /// Serve a non-loopback --datastore-listen address without TLS anyway.
    #[arg(long, requires = "datastore_listen")]
    pub datastore_listen_insecure: bool,

    /// Streams a client may open at once on one HTTP/2 connection (upstream's flag; 0 = the
    /// default, 100).
    #[arg(long, default_value_t = 0)]
    pub http2_max_streams_per_connection: u32,

    /// Connections held at most that have not authenticated (no verified client certificate,
    /// no request with a valid token yet); past it the oldest of them is closed.
    #[arg(long, default_value_t = crate::conns::DEFAULT_MAX_UNAUTHENTICATED)]
    pub max_unauthenticated_connections: usize,

    /// How long a client may take to send a request head (kube-apiserver's fixed 32s).
    /// Hidden: for tests.
    #[arg(long, hide = true, default_value = "32s", value_parser = parse_duration)]
    pub read_header_timeout: std::time::Duration,

    /// How long a connection with no request in flight stays open (kube-apiserver's fixed
    /// 90s). Hidden: for tests.
    #[arg(long, hide = true, default_value = "90s", value_parser = parse_duration)]
    pub idle_timeout: std::time::Duration,
}

/// How this machine runs as a node (server's own agent, or `krust agent`).
#[derive(Debug, Clone, Args)]
pub struct NodeArgs {
    /// Node name (default: the hostname).
    #[arg(long, env = "KRUST_NODE_NAME")]
    pub node_name: Option<String>,

    /// Address to advertise for the node (default: the address this host uses to reach others).
    #[arg(long)]
    pub node_ip: Option<IpAddr>,

    /// Extra node labels, KEY=VALUE (repeatable).
    #[arg(long = "node-label", value_name = "KEY=VALUE")]
    pub node_labels: Vec<String>,

    /// Cluster DNS address written into pods' resolv.conf (k3s's default).
    #[arg(long, default_value = "10.43.0.10")]
    pub cluster_dns: IpAddr,

    /// Cluster domain.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,

    /// Folder holding the CNI plugins (Debian's containernetworking-plugins).
    #[arg(long, default_value = "/usr/lib/cni")]
    pub cni_bin_dir: PathBuf,

    /// Bridge that pods attach to.
    #[arg(long, default_value = "cni0")]
    pub cni_bridge: String,

    /// k3s-style registries.yaml: mirrors, plain-HTTP endpoints, credentials.
    #[arg(long, default_value = "/etc/krust/registries.yaml")]
    pub private_registry: PathBuf,

    /// Port of the kubelet's HTTPS endpoint (logs, exec, port-forward).
    #[arg(long, default_value_t = 10250)]
    pub kubelet_port: u16,

    /// On stop, kill this node's containers, remove their sandboxes (network namespaces, pod
    /// IPs, mounts, cgroups) and this node's kube-proxy rules, as k3s-killall.sh does.
    /// Without it, pods keep running across an agent restart.
    #[arg(long)]
    pub clean: bool,
}

#[derive(Debug, Clone, Args)]
pub struct AgentArgs {
    /// The server to join, e.g. https://10.0.0.1:6443.
    #[arg(short = 's', long, env = "KRUST_URL")]
    pub server: String,

    /// The join token (the server keeps it in DATA_DIR/server/node-token).
    #[arg(short = 't', long, env = "KRUST_TOKEN", hide_env_values = true, required_unless_present = "token_file")]
    pub token: Option<String>,

    /// A file holding the join token.
    #[arg(long, env = "KRUST_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,

    /// Folder to hold state (credentials, images, pods).
    #[arg(short = 'd', long, env = "KRUST_DATA_DIR", default_value = "/var/lib/krust")]
    pub data_dir: PathBuf,

    #[command(flatten)]
    pub node: NodeArgs,
}

/// Parses a Go-style duration of one unit (`40s`, `2m`, `500ms`, `1h`); a bare number is seconds.
fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a duration such as 40s or 2m"))?;
    let ms = match unit {
        "ms" => n,
        "" | "s" => n * 1000,
        "m" => n * 60_000,
        "h" => n * 3_600_000,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s, m or h)")),
    };
    Ok(std::time::Duration::from_millis(ms))
}

/// Parses a Unix file mode written in octal, as k3s's `--write-kubeconfig-mode 644`.
fn parse_octal_mode(s: &str) -> Result<u32, String> {
    let mode = u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .map_err(|_| format!("{s:?} is not an octal file mode such as 644 or 0600"))?;
    if mode > 0o7777 {
        return Err(format!("{s:?} is out of range for a file mode"));
    }
    Ok(mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("40s"), Ok(std::time::Duration::from_secs(40)));
        assert_eq!(parse_duration("2m"), Ok(std::time::Duration::from_secs(120)));
        assert_eq!(parse_duration("500ms"), Ok(std::time::Duration::from_millis(500)));
        assert_eq!(parse_duration("7"), Ok(std::time::Duration::from_secs(7)));
        assert!(parse_duration("1d").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn octal_modes_parse_like_chmod() {
        assert_eq!(parse_octal_mode("644"), Ok(0o644));
        assert_eq!(parse_octal_mode("0600"), Ok(0o600));
        assert!(parse_octal_mode("999").is_err());
        assert!(parse_octal_mode("77777").is_err());
    }

    #[test]
    fn server_defaults_match_k3s() {
        let cli = Cli::try_parse_from(["krust", "server"]).unwrap();
        let Command::Server(args) = cli.command else {
            panic!("not server")
        };
        assert_eq!(args.data_dir, PathBuf::from("/var/lib/krust"));
        assert_eq!(args.https_listen_port, 6443);
        assert_eq!(args.bind_address.to_string(), "0.0.0.0");
        assert!(args.tls_san.is_empty());
        assert_eq!(args.datastore_compact_interval, 300);
        assert_eq!(args.datastore_compact_retain, 1000);
        assert_eq!(args.datastore_listen, None);
    }

    #[test]
    fn kine_flags() {
        let cli = Cli::try_parse_from(["krust", "kine", "--db", "/tmp/x.db"]).unwrap();
        let Command::Kine(args) = cli.command else {
            panic!("not kine")
        };
        assert_eq!(args.listen.to_string(), "127.0.0.1:2379");
        assert_eq!(args.db, Some(PathBuf::from("/tmp/x.db")));
        let cli = Cli::try_parse_from(["krust", "server", "--datastore-listen", "127.0.0.1:2399"])
            .unwrap();
        let Command::Server(args) = cli.command else {
            panic!("not server")
        };
        assert_eq!(args.datastore_listen.unwrap().port(), 2399);
    }

    #[test]
    fn datastore_tls_flags() {
        let cli = Cli::try_parse_from([
            "krust",
            "server",
            "--datastore-endpoint",
            "https://10.0.0.1:2379,https://10.0.0.2:2379",
            "--datastore-cafile",
            "/etc/etcd/ca.crt",
            "--datastore-certfile",
            "/etc/etcd/client.crt",
            "--datastore-keyfile",
            "/etc/etcd/client.key",
        ])
        .unwrap();
        let Command::Server(args) = cli.command else {
            panic!("not server")
        };
        assert_eq!(args.datastore_cafile, Some(PathBuf::from("/etc/etcd/ca.crt")));
        assert_eq!(args.datastore_certfile, Some(PathBuf::from("/etc/etcd/client.crt")));
        assert_eq!(args.datastore_keyfile, Some(PathBuf::from("/etc/etcd/client.key")));
    }

    #[test]
    fn repeatable_and_short_flags() {
        let cli = Cli::try_parse_from([
            "krust",
            "server",
            "-o",
            "/tmp/k.yaml",
            "--write-kubeconfig-mode",
            "644",
            "--tls-san",
            "a.example",
            "--tls-san",
            "10.0.0.1",
            "--disable-agent",
        ])
        .unwrap();
        let Command::Server(args) = cli.command else {
            panic!("not server")
        };
        assert_eq!(args.write_kubeconfig, Some(PathBuf::from("/tmp/k.yaml")));
        assert_eq!(args.write_kubeconfig_mode, Some(0o644));
        assert_eq!(args.tls_san, vec!["a.example", "10.0.0.1"]);
        assert!(args.disable_agent);
    }
}
