//! `krust kine`: serves the embedded SQLite datastore over the etcd v3 gRPC API (kine's
//! role), and the same for `krust server --datastore-listen`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use kine_sqlite::grpc::{self, GrpcOptions};
use kine_sqlite::Backend;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::cli::KineArgs;
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
    let backend = datastore::open(&Endpoint::Sqlite(db.clone()), compaction).await?;
    let mut term = signal(SignalKind::terminate()).context("installing signal handlers")?;
    let mut int = signal(SignalKind::interrupt()).context("installing signal handlers")?;
    let listener = bind(args.listen).await?;
    let addr = listener.local_addr().unwrap_or(args.listen);
    tracing::info!(
        "krust kine ready in {}ms: etcd v3 API on http://{addr} serving {}",
        started.elapsed().as_millis(),
        db.display()
    );
    let stop = async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT received: shutting down"),
        }
    };
    grpc::serve(listener, backend, GrpcOptions::default(), stop)
        .await
        .context("serving the etcd v3 API")?;
    tracing::info!("krust kine stopped");
    Ok(())
}

/// Starts serving `backend` over the etcd v3 API on `addr` in the background, until
/// `stopped` turns true (or its sender is dropped). Binding happens before it returns.
pub async fn spawn_grpc(
    addr: SocketAddr,
    backend: Arc<dyn Backend>,
    mut stopped: watch::Receiver<bool>,
) -> anyhow::Result<JoinHandle<()>> {
    let listener = bind(addr).await?;
    let local = listener.local_addr().unwrap_or(addr);
    tracing::info!("Datastore etcd v3 API listening on http://{local}");
    Ok(tokio::spawn(async move {
        let stop = async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        if let Err(e) = grpc::serve(listener, backend, GrpcOptions::default(), stop).await {
            tracing::error!("datastore etcd v3 API failed: {e:#}");
        }
    }))
}

async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))
}
