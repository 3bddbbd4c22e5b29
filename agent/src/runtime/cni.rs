//! CNI: runs the plugins of the pod network (loopback, bridge + host-local, portmap) directly,
//! the way a runtime runs a conflist, and remembers what it did for DEL.

use std::net::IpAddr;
use std::path::Path;
use std::process::Stdio;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use super::{CniConfig, IoContext, PortMapping, RuntimeError};

const CNI_VERSION: &str = "1.0.0";

/// One plugin invocation of an ADD, kept for the matching DEL.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct PluginRun {
    pub plugin: String,
    pub ifname: String,
    /// The network config given to the plugin (without prevResult).
    pub config: Value,
    pub result: Option<Value>,
}

/// What ADD did: saved as `cni.json` in the sandbox dir.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct CniState {
    pub container_id: String,
    pub runs: Vec<PluginRun>,
}

fn loopback_config() -> Value {
    json!({"cniVersion": CNI_VERSION, "name": CniConfig::NETWORK_NAME, "type": "loopback"})
}

fn bridge_config(cfg: &CniConfig) -> Value {
    let mut v = json!({
        "cniVersion": CNI_VERSION,
        "name": CniConfig::NETWORK_NAME,
        "type": "bridge",
        "bridge": cfg.bridge,
        "isGateway": true,
        "ipMasq": true,
        "hairpinMode": true,
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": cfg.pod_cidr}]],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dataDir": cfg.ipam_data_dir(),
        },
    });
    if let Some(mtu) = cfg.mtu {
        v["mtu"] = json!(mtu);
    }
    v
}

fn portmap_config(mappings: &[PortMapping]) -> Value {
    let pm: Vec<Value> = mappings
        .iter()
        .map(|m| {
            json!({
                "hostPort": m.host_port,
                "containerPort": m.container_port,
                "protocol": if m.protocol.is_empty() { "tcp".to_string() } else { m.protocol.to_lowercase() },
                "hostIP": m.host_ip.clone().unwrap_or_default(),
            })
        })
        .collect();
    json!({
        "cniVersion": CNI_VERSION,
        "name": CniConfig::NETWORK_NAME,
        "type": "portmap",
        "capabilities": {"portMappings": true},
        "snat": true,
        "runtimeConfig": {"portMappings": pm},
    })
}

/// Executes one plugin; returns its parsed stdout (ADD) or `Value::Null`.
async fn exec_plugin(
    cfg: &CniConfig,
    command: &str,
    container_id: &str,
    netns: Option<&Path>,
    ifname: &str,
    plugin: &str,
    config: &Value,
) -> Result<Value, RuntimeError> {
    let bin = cfg.plugin_dir.join(plugin);
    let mut cmd = tokio::process::Command::new(&bin);
    cmd.env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", container_id)
        .env(
            "CNI_NETNS",
            netns.map(|p| p.as_os_str()).unwrap_or_default(),
        )
        .env("CNI_IFNAME", ifname)
        .env("CNI_PATH", &cfg.plugin_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if std::env::var_os("PATH").is_none() {
        cmd.env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        );
    }
    let mut child = cmd
        .spawn()
        .ctx(|| format!("running CNI plugin {}", bin.display()))?;
    let input = serde_json::to_vec(config).expect("json");
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(&input)
            .await
            .ctx(|| format!("writing config to CNI plugin {plugin}"))?;
    }
    let out = child
        .wait_with_output()
        .await
        .ctx(|| format!("waiting for CNI plugin {plugin}"))?;
    let err = |message: String| RuntimeError::Cni {
        plugin: plugin.to_string(),
        command: command.to_string(),
        message,
    };
    if !out.status.success() {
        let msg = match serde_json::from_slice::<Value>(&out.stdout) {
            Ok(v) if v.get("msg").is_some() => format!(
                "{} (code {}){}",
                v["msg"].as_str().unwrap_or_default(),
                v["code"],
                v.get("details")
                    .and_then(|d| d.as_str())
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default()
            ),
            _ => format!(
                "{}: {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        };
        return Err(err(msg));
    }
    if command == "ADD" {
        serde_json::from_slice(&out.stdout).map_err(|e| {
            err(format!(
                "unparsable result: {e}: {}",
                String::from_utf8_lossy(&out.stdout)
            ))
        })
    } else {
        Ok(Value::Null)
    }
}

/// The first IP address of a CNI result.
pub(crate) fn result_ip(result: &Value) -> Option<IpAddr> {
    result["ips"]
        .as_array()?
        .iter()
        .filter_map(|ip| ip["address"].as_str())
        .filter_map(|a| a.split('/').next()?.parse().ok())
        .next()
}

/// CNI ADD of loopback, bridge and (with port mappings) portmap. On failure, what was added is
/// deleted again. The returned state is what [`del`] needs.
pub(crate) async fn add(
    cfg: &CniConfig,
    container_id: &str,
    netns: &Path,
    port_mappings: &[PortMapping],
) -> Result<(CniState, Option<IpAddr>), RuntimeError> {
    let mut state = CniState {
        container_id: container_id.to_string(),
        runs: Vec::new(),
    };
    let mut plugins = vec![
        ("loopback", "lo", loopback_config()),
        ("bridge", "eth0", bridge_config(cfg)),
    ];
    if !port_mappings.is_empty() {
        plugins.push(("portmap", "eth0", portmap_config(port_mappings)));
    }
    let mut prev: Option<Value> = None;
    for (plugin, ifname, config) in plugins {
        let mut input = config.clone();
        if let Some(p) = &prev {
            input["prevResult"] = p.clone();
        }
        // Record before running, so a failed ADD is undone too (DEL is idempotent).
        state.runs.push(PluginRun {
            plugin: plugin.to_string(),
            ifname: ifname.to_string(),
            config,
            result: None,
        });
        match exec_plugin(
            cfg,
            "ADD",
            container_id,
            Some(netns),
            ifname,
            plugin,
            &input,
        )
        .await
        {
            Ok(result) => {
                if plugin != "loopback" {
                    prev = Some(result.clone());
                }
                state.runs.last_mut().unwrap().result = Some(result);
            }
            Err(e) => {
                if let Err(e2) = del(cfg, &state, Some(netns)).await {
                    tracing::warn!(error = %e2, container_id, "CNI DEL after a failed ADD failed");
                }
                return Err(e);
            }
        }
    }
    let ip = prev.as_ref().and_then(result_ip);
    Ok((state, ip))
}

/// CNI DEL in reverse order. Every plugin is tried; the first error is returned.
pub(crate) async fn del(
    cfg: &CniConfig,
    state: &CniState,
    netns: Option<&Path>,
) -> Result<(), RuntimeError> {
    // prevResult for DEL: the result of the last plugin of the chain (our bridge result).
    let prev = state
        .runs
        .iter()
        .filter(|r| r.plugin != "loopback")
        .filter_map(|r| r.result.clone())
        .next_back();
    let mut first_err = None;
    for run in state.runs.iter().rev() {
        let mut input = run.config.clone();
        if run.plugin != "loopback" {
            if let Some(p) = &prev {
                input["prevResult"] = p.clone();
            }
        }
        if let Err(e) = exec_plugin(
            cfg,
            "DEL",
            &state.container_id,
            netns,
            &run.ifname,
            &run.plugin,
            &input,
        )
        .await
        {
            first_err.get_or_insert(e);
        }
    }
    match first_err {
        None => Ok(()),
        Some(e) => Err(e),
    }
}
