//! `krust`: a small Kubernetes distribution in one binary, driven like k3s.

mod cli;
mod cluster_dns;
mod conns;
mod controller_manager;
mod datastore;
mod files;
mod join;
mod kine;
mod kubeconfig;
mod node;
mod node_password;
mod pki;
mod serve;
mod server;
mod token;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use crate::cli::{Cli, Command};

fn main() -> ExitCode {
    // Taken first so the "ready in" figure covers the whole start, as a person measures it.
    let started = Instant::now();
    // The container runtime re-executes this binary, single-threaded, to create containers
    // (libcontainer's clone must not run in a multi-threaded process): serve that first,
    // before any thread exists.
    agent::runtime::run_helper_if_requested();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("krust: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(started))
}

async fn run(started: Instant) -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    // Every connection, watch and container log is a descriptor: start with as many as allowed.
    match conns::raise_nofile_limit() {
        Ok(limit) => tracing::debug!(limit, "open files limit"),
        Err(e) => tracing::warn!(error = %e, "could not raise the open files limit"),
    }
    // Several TLS clients (kube, the registry client) share rustls; with more than one
    // crypto backend linked in, the process-wide choice must be made explicitly.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let result = match cli.command {
        Command::Server(args) => server::run(args, started).await,
        Command::Kine(args) => kine::run(args, started).await,
        Command::Agent(args) => node::run(args, started).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` prints the whole context chain on one line: what failed, and why.
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr at `info` unless `RUST_LOG` says otherwise; colours only on a terminal,
/// so log files stay plain text.
fn init_tracing() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
