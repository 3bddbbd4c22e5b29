//! `krust kine`: serves the embedded SQLite datastore over the etcd v3 gRPC API (kine's
//! role), and the same for `krust server --datastore-listen`.
//!
//! Whoever reaches this face reads and writes every object, Secrets included, bypassing
//! the API's authorization. So it serves TLS when given a certificate, requires client
//! certificates when given a client CA (etcd's `--client-cert-auth`), and refuses to serve
//! a non-loopback address in the clear unless told `--…-insecure`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use kine_sqlite::grpc::{self, Certificate, GrpcOptions, Identity, ServerTlsConfig};
use kine_sqlite::Backend;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::cli::{KineArgs, ServerArgs};
use crate::datastore::{self, Endpoint};
use crate::files::ServerPaths;

pub async fn run(args: KineArgs, started: Instant) -> anyhow::Result<()> {
    let db = args
        .db
        .clone()
        .unwrap_or_else(|| ServerPaths::new(&args.data_dir).default_db());
    let compaction = datastore::Compaction {
        interval: Duration::from_secs(args.compact_interval.max(1)),
        keep: args.compact_retain.max(0),
    };
    let opts = FaceTls::of_kine(&args).options(args.listen)?;
    let backend = datastore::open(&Endpoint::Sqlite(db.clone()), compaction).await?;
    let mut term = signal(SignalKind::terminate()).context("installing signal handlers")?;
    let mut int = signal(SignalKind::interrupt()).context("installing signal handlers")?;
    let listener = bind(args.listen).await?;
    let addr = listener.local_addr().unwrap_or(args.listen);
    let url = url(&opts, addr);
    let server = grpc::prepare(listener, backend, opts).context("preparing the etcd v3 API")?;
    tracing::info!(
        "krust kine ready in {}ms: etcd v3 API on {url} serving {}",
        started.elapsed().as_millis(),
        db.display()
    );
    let stop = async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT received: shutting down"),
        }
    };
    server
        .serve(stop)
        .await
        .context("serving the etcd v3 API")?;
    tracing::info!("krust kine stopped");
    Ok(())
}

/// Starts serving `backend` over the etcd v3 API on `addr` in the background, until
/// `stopped` turns true (or its sender is dropped). Binding, and checking the TLS files,
/// happen before it returns.
pub async fn spawn_grpc(
    addr: SocketAddr,
    opts: GrpcOptions,
    backend: Arc<dyn Backend>,
    mut stopped: watch::Receiver<bool>,
) -> anyhow::Result<JoinHandle<()>> {
    let listener = bind(addr).await?;
    let url = url(&opts, listener.local_addr().unwrap_or(addr));
    let server = grpc::prepare(listener, backend, opts).context("preparing the datastore's etcd v3 API")?;
    tracing::info!("Datastore etcd v3 API listening on {url}");
    Ok(tokio::spawn(async move {
        let stop = async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        if let Err(e) = server.serve(stop).await {
            tracing::error!("datastore etcd v3 API failed: {e:#}");
        }
    }))
}

/// How the etcd face is secured: `krust server --datastore-listen-*` or `krust kine --listen-*`.
#[derive(Debug, Clone, Default)]
pub struct FaceTls {
    /// The address flag, for messages: `--datastore-listen` or `--listen`.
    flag: &'static str,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    client_ca: Option<PathBuf>,
    insecure: bool,
}

impl FaceTls {
    pub fn of_server(a: &ServerArgs) -> FaceTls {
        FaceTls {
            flag: "--datastore-listen",
            cert: a.datastore_listen_cert.clone(),
            key: a.datastore_listen_key.clone(),
            client_ca: a.datastore_listen_client_ca.clone(),
            insecure: a.datastore_listen_insecure,
        }
    }

    pub fn of_kine(a: &KineArgs) -> FaceTls {
        FaceTls {
            flag: "--listen",
            cert: a.listen_cert.clone(),
            key: a.listen_key.clone(),
            client_ca: a.listen_client_ca.clone(),
            insecure: a.listen_insecure,
        }
    }

    /// The face's options for `addr`: TLS from the files, or an error when `addr` would be
    /// served in the clear beyond this machine without `--…-insecure`.
    pub fn options(&self, addr: SocketAddr) -> anyhow::Result<GrpcOptions> {
        let flag = self.flag;
        let tls = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => Some(self.tls_config(cert, key)?),
            (None, None) => None,
            _ => anyhow::bail!("{flag}-cert and {flag}-key go together"),
        };
        match &tls {
            None if !addr.ip().is_loopback() && !self.insecure => anyhow::bail!(
                "refusing to serve the etcd v3 API on {addr} without TLS: it is not a loopback address, and whoever reaches it reads and writes every object, Secrets included. \
                 Give {flag}-cert and {flag}-key (and {flag}-client-ca to require client certificates), or {flag}-insecure to serve it in the clear anyway"
            ),
            None if !addr.ip().is_loopback() => tracing::warn!("{flag}-insecure: serving the etcd v3 API on {addr} without TLS"),
            Some(_) if self.client_ca.is_none() && !addr.ip().is_loopback() => {
                tracing::warn!("the etcd v3 API on {addr} takes clients without certificates: give {flag}-client-ca to require them")
            }
            _ => {}
        }
        Ok(GrpcOptions { tls, ..GrpcOptions::default() })
    }

    fn tls_config(&self, cert: &std::path::Path, key: &std::path::Path) -> anyhow::Result<ServerTlsConfig> {
        let flag = self.flag;
        let read = |path: &std::path::Path, which: &str| std::fs::read(path).with_context(|| format!("reading {flag}-{which} {}", path.display()));
        let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(read(cert, "cert")?, read(key, "key")?));
        if let Some(ca) = &self.client_ca {
            tls = tls.client_ca_root(Certificate::from_pem(read(ca, "client-ca")?));
        }
        Ok(tls)
    }
}

/// The face's URL, as a person types it into `etcdctl --endpoints`.
fn url(opts: &GrpcOptions, addr: SocketAddr) -> String {
    let scheme = if opts.tls.is_some() { "https" } else { "http" };
    format!("{scheme}://{addr}")
}

async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn kine(extra: &[&str]) -> FaceTls {
        let mut argv = vec!["krust", "kine"];
        argv.extend_from_slice(extra);
        let crate::cli::Command::Kine(args) = crate::cli::Cli::parse_from(argv).command else {
            panic!("not kine")
        };
        FaceTls::of_kine(&args)
    }

    #[test]
    fn plain_only_on_loopback_unless_insecure() {
        let plain = kine(&[]);
        assert!(plain.options("127.0.0.1:2379".parse().unwrap()).unwrap().tls.is_none());
        assert!(plain.options("[::1]:2379".parse().unwrap()).is_ok());
        for addr in ["0.0.0.0:2379", "10.0.0.5:2379", "[::]:2379"] {
            let err = plain.options(addr.parse().unwrap()).unwrap_err().to_string();
            assert!(err.contains("without TLS") && err.contains("--listen-insecure"), "{addr}: {err}");
        }
        assert!(kine(&["--listen-insecure"]).options("0.0.0.0:2379".parse().unwrap()).is_ok());
        // The server's spellings are accepted by `krust kine` too.
        assert!(kine(&["--datastore-listen-insecure"]).insecure);
    }

    #[test]
    fn tls_files_are_read_at_start() {
        let err = kine(&["--listen-cert", "/nonexistent.crt", "--listen-key", "/nonexistent.key"])
            .options("0.0.0.0:2379".parse().unwrap())
            .unwrap_err();
        assert!(format!("{err:#}").contains("reading --listen-cert /nonexistent.crt"), "{err:#}");
        assert!(crate::cli::Cli::try_parse_from(["krust", "kine", "--listen-key", "k"]).is_err());
    }
}
