//! Turns a pod's container into what the runtime runs: the argv (image entrypoint and cmd
//! merged with command/args, `$(VAR)` expanded), the environment (image env, service links,
//! `env` with `valueFrom`, `envFrom`), the user, mounts and cgroup limits.

use std::collections::BTreeMap;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::{Container, EnvVar, Pod};
use serde_json::Value;

use crate::images::ImageConfig;
use crate::kubelet::volumes::PodVolumes;
use crate::runtime::{ContainerSpec, Mount};

/// Objects an environment may draw on, fetched by the caller: ConfigMaps and Secrets of the
/// pod's namespace by name (`None` when absent), and service link variables.
#[derive(Default)]
pub struct EnvSources {
    pub config_maps: BTreeMap<String, Option<BTreeMap<String, String>>>,
    pub secrets: BTreeMap<String, Option<BTreeMap<String, String>>>,
    pub service_env: Vec<(String, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// Upstream's `CreateContainerConfigError` messages.
    #[error("configmap {0:?} not found")]
    ConfigMapMissing(String),
    #[error("secret {0:?} not found")]
    SecretMissing(String),
    #[error("couldn't find key {key} in {kind} {namespace}/{name}")]
    KeyMissing { kind: &'static str, namespace: String, name: String, key: String },
    #[error("{0}")]
    Invalid(String),
}

/// Names of ConfigMaps and Secrets the containers' environment refers to.
pub fn env_refs(pod: &Pod) -> (Vec<String>, Vec<String>) {
    let mut cms = Vec::new();
    let mut secrets = Vec::new();
    let spec = pod.spec.as_ref();
    let containers = spec.map(|s| s.init_containers.iter().flatten().chain(s.containers.iter())).into_iter().flatten();
    for c in containers {
        for e in c.env.iter().flatten() {
            if let Some(src) = &e.value_from {
                if let Some(r) = &src.config_map_key_ref {
                    cms.push(r.name.clone());
                }
                if let Some(r) = &src.secret_key_ref {
                    secrets.push(r.name.clone());
                }
            }
        }
        for e in c.env_from.iter().flatten() {
            if let Some(r) = &e.config_map_ref {
                cms.push(r.name.clone());
            }
            if let Some(r) = &e.secret_ref {
                secrets.push(r.name.clone());
            }
        }
    }
    cms.sort();
    cms.dedup();
    secrets.sort();
    secrets.dedup();
    (cms, secrets)
}

/// The container's environment in order (later entries win, as in a shell).
pub fn environment(pod: &Pod, c: &Container, image: &ImageConfig, src: &EnvSources, host_ip: &str, pod_ip: &str) -> Result<Vec<(String, String)>, SpecError> {
    let mut env: Vec<(String, String)> = image.env.iter().filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect();
    env.extend(src.service_env.iter().cloned());
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(r) = &from.config_map_ref {
            match src.config_maps.get(&r.name).cloned().flatten() {
                Some(data) => env.extend(data.into_iter().map(|(k, v)| (format!("{prefix}{k}"), v))),
                None if r.optional == Some(true) => {}
                None => return Err(SpecError::ConfigMapMissing(r.name.clone())),
            }
        }
        if let Some(r) = &from.secret_ref {
            match src.secrets.get(&r.name).cloned().flatten() {
                Some(data) => env.extend(data.into_iter().map(|(k, v)| (format!("{prefix}{k}"), v))),
                None if r.optional == Some(true) => {}
                None => return Err(SpecError::SecretMissing(r.name.clone())),
            }
        }
    }
    for var in c.env.iter().flatten() {
        if let Some(value) = env_value(pod, c, var, src, &namespace, host_ip, pod_ip)? {
            // `$(VAR)` refers to variables defined before this one.
            let expanded = expand(&value, &env);
            env.push((var.name.clone(), expanded));
        }
    }
    // Keep the last definition of each name, in first-definition order.
    let mut out: Vec<(String, String)> = Vec::new();
    for (k, v) in env {
        match out.iter_mut().find(|(n, _)| *n == k) {
            Some(slot) => slot.1 = v,
            None => out.push((k, v)),
        }
    }
    Ok(out)
}

fn env_value(pod: &Pod, c: &Container, var: &EnvVar, src: &EnvSources, namespace: &str, host_ip: &str, pod_ip: &str) -> Result<Option<String>, SpecError> {
    let Some(from) = &var.value_from else {
        return Ok(Some(var.value.clone().unwrap_or_default()));
    };
    if let Some(f) = &from.field_ref {
        return Ok(Some(field_value(pod, &f.field_path, host_ip, pod_ip)));
    }
    if let Some(r) = &from.resource_field_ref {
        let target = r.container_name.as_deref().and_then(|n| pod.spec.as_ref()?.containers.iter().find(|c| c.name == n)).unwrap_or(c);
        return Ok(Some(resource_value(target, &r.resource, r.divisor.as_ref().map(|q| q.0.as_str()))));
    }
    let lookup = |kind: &'static str, maps: &BTreeMap<String, Option<BTreeMap<String, String>>>, name: &str, key: &str, optional: bool| {
        match maps.get(name).cloned().flatten() {
            Some(data) => match data.get(key) {
                Some(v) => Ok(Some(v.clone())),
                None if optional => Ok(None),
                None => Err(SpecError::KeyMissing { kind, namespace: namespace.to_string(), name: name.to_string(), key: key.to_string() }),
            },
            None if optional => Ok(None),
            None if kind == "configmap" => Err(SpecError::ConfigMapMissing(name.to_string())),
            None => Err(SpecError::SecretMissing(name.to_string())),
        }
    };
    if let Some(r) = &from.config_map_key_ref {
        return lookup("configmap", &src.config_maps, &r.name, &r.key, r.optional == Some(true));
    }
    if let Some(r) = &from.secret_key_ref {
        return lookup("secret", &src.secrets, &r.name, &r.key, r.optional == Some(true));
    }
    Ok(None)
}

/// A downward API field (`metadata.name`, `metadata.labels['k']`, `status.podIP`, ...).
pub fn field_value(pod: &Pod, path: &str, host_ip: &str, pod_ip: &str) -> String {
    let m = &pod.metadata;
    let spec = pod.spec.as_ref();
    let keyed = |prefix: &str, map: &Option<BTreeMap<String, String>>| -> Option<String> {
        let key = path.strip_prefix(prefix)?.strip_prefix("['")?.strip_suffix("']")?;
        Some(map.as_ref().and_then(|m| m.get(key)).cloned().unwrap_or_default())
    };
    if let Some(v) = keyed("metadata.labels", &m.labels).or_else(|| keyed("metadata.annotations", &m.annotations)) {
        return v;
    }
    let map_text = |map: &Option<BTreeMap<String, String>>| {
        map.iter().flatten().map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n"))).collect::<Vec<_>>().join("\n")
    };
    match path {
        "metadata.name" => m.name.clone().unwrap_or_default(),
        "metadata.namespace" => m.namespace.clone().unwrap_or_default(),
        "metadata.uid" => m.uid.clone().unwrap_or_default(),
        "metadata.labels" => map_text(&m.labels),
        "metadata.annotations" => map_text(&m.annotations),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()).unwrap_or_default(),
        "status.hostIP" | "status.hostIPs" => host_ip.to_string(),
        "status.podIP" | "status.podIPs" => pod_ip.to_string(),
        _ => String::new(),
    }
}

/// `limits.cpu`, `requests.memory`, ... of a container, divided by `divisor` and rounded up.
/// An unset limit reports the node's allocatable (upstream), here the machine's.
pub fn resource_value(c: &Container, resource: &str, divisor: Option<&str>) -> String {
    let (list, name) = match resource.split_once('.') {
        Some(("limits", n)) => (c.resources.as_ref().and_then(|r| r.limits.as_ref()), n),
        Some(("requests", n)) => (c.resources.as_ref().and_then(|r| r.requests.as_ref()), n),
        _ => return String::new(),
    };
    let nano = |q: &str| controllers::scheduler::parse_quantity(q, 1e9) as f64;
    let value = match list.and_then(|l| l.get(name)) {
        Some(q) => nano(&q.0),
        None if name == "cpu" => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as f64 * 1e9,
        None if name == "memory" => crate::node::MachineInfo::read(std::path::Path::new("/")).memory_bytes as f64 * 1e9,
        None => 0.0,
    };
    let div = divisor.map(nano).filter(|d| *d > 0.0).unwrap_or(1e9);
    ((value / div).ceil() as i64).to_string()
}

/// Expands `$(NAME)` from `env`; `$$(NAME)` is an escaped literal; unknown names stay as is.
pub fn expand(s: &str, env: &[(String, String)]) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) => {
                    let name = &inner[..end];
                    match env.iter().rev().find(|(k, _)| k == name) {
                        Some((_, v)) => out.push_str(v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &inner[end + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = inner;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The argv: `command` replaces the image's entrypoint (and drops its cmd); `args` replaces cmd.
pub fn argv(c: &Container, image: &ImageConfig, env: &[(String, String)]) -> Vec<String> {
    let command = c.command.clone().unwrap_or_default();
    let args = c.args.clone().unwrap_or_default();
    let v = match (command.is_empty(), args.is_empty()) {
        (false, _) => command.into_iter().chain(args).collect::<Vec<_>>(),
        (true, false) => image.entrypoint.iter().cloned().chain(args).collect(),
        (true, true) => image.entrypoint.iter().chain(image.cmd.iter()).cloned().collect(),
    };
    v.iter().map(|a| expand(a, env)).collect()
}

/// uid and gid from securityContext (container over pod), else the image's `User` if numeric.
fn user(pod: &Pod, c: &Container, image: &ImageConfig) -> (u32, u32, Vec<u32>) {
    let psc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let csc = c.security_context.as_ref();
    let (img_uid, img_gid) = image
        .user
        .as_deref()
        .map(|u| {
            let (a, b) = u.split_once(':').unwrap_or((u, ""));
            (a.parse::<u32>().ok(), b.parse::<u32>().ok())
        })
        .unwrap_or((None, None));
    let uid = csc.and_then(|s| s.run_as_user).or(psc.and_then(|s| s.run_as_user)).map(|u| u as u32).or(img_uid).unwrap_or(0);
    let gid = csc.and_then(|s| s.run_as_group).or(psc.and_then(|s| s.run_as_group)).map(|g| g as u32).or(img_gid).unwrap_or(0);
    let mut extra: Vec<u32> = psc.and_then(|s| s.supplemental_groups.clone()).unwrap_or_default().into_iter().map(|g| g as u32).collect();
    if let Some(fs) = psc.and_then(|s| s.fs_group) {
        extra.push(fs as u32);
    }
    (uid, gid, extra)
}

pub struct Built {
    pub spec: ContainerSpec,
}

/// Everything the runtime needs to start `c` (instance `id`) of `pod`.
#[allow(clippy::too_many_arguments)]
pub fn container_spec(
    pod: &Pod,
    c: &Container,
    id: &str,
    image: &crate::images::Image,
    env: Vec<(String, String)>,
    volumes: &PodVolumes,
    log_path: PathBuf,
) -> Result<ContainerSpec, SpecError> {
    let args = argv(c, &image.config, &env);
    if args.is_empty() {
        return Err(SpecError::Invalid("no command specified".into()));
    }
    let (uid, gid, additional_gids) = user(pod, c, &image.config);
    let mut mounts = Vec::new();
    for vm in c.volume_mounts.iter().flatten() {
        let source = volumes.path(&vm.name).ok_or_else(|| SpecError::Invalid(format!("volume {:?} not found", vm.name)))?;
        let source = match vm.sub_path.as_deref().filter(|s| !s.is_empty()) {
            Some(sub) => {
                if sub.starts_with('/') || sub.split('/').any(|p| p == "..") {
                    return Err(SpecError::Invalid(format!("subPath {sub:?} must be a relative path without '..'")));
                }
                let p = source.join(sub);
                if !p.exists() {
                    let _ = std::fs::create_dir_all(&p);
                }
                p
            }
            None => source,
        };
        mounts.push(Mount { source, destination: vm.mount_path.clone(), read_only: vm.read_only == Some(true) });
    }
    let sc = c.security_context.as_ref();
    let caps = sc.and_then(|s| s.capabilities.as_ref());
    let limits = c.resources.as_ref().and_then(|r| r.limits.as_ref());
    let requests = c.resources.as_ref().and_then(|r| r.requests.as_ref());
    let milli = |l: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>, n: &str| l.and_then(|l| l.get(n)).map(|q| controllers::scheduler::parse_quantity(&q.0, 1000.0));
    let bytes = |l: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>, n: &str| l.and_then(|l| l.get(n)).map(|q| controllers::scheduler::parse_quantity(&q.0, 1.0));
    // Upstream's conversions: shares = milliCPU * 1024 / 1000 (min 2), quota per 100 ms period.
    let cpu_request = milli(requests, "cpu").or(milli(limits, "cpu"));
    let cpu_shares = Some(cpu_request.map_or(2, |m| (m * 1024 / 1000).max(2)) as u64);
    let cpu_limit = milli(limits, "cpu");
    let cpu_period = cpu_limit.map(|_| 100_000u64);
    let cpu_quota = cpu_limit.map(|m| (m * 100).max(1000));
    let cwd = c.working_dir.clone().filter(|w| !w.is_empty()).or_else(|| image.config.working_dir.clone().filter(|w| !w.is_empty())).unwrap_or_else(|| "/".into());
    Ok(ContainerSpec {
        id: id.to_string(),
        pod_id: pod.metadata.uid.clone().unwrap_or_default(),
        name: c.name.clone(),
        layers: image.layers.clone(),
        args,
        env: env.into_iter().map(|(k, v)| format!("{k}={v}")).collect(),
        cwd,
        uid,
        gid,
        additional_gids,
        mounts,
        readonly_rootfs: sc.and_then(|s| s.read_only_root_filesystem) == Some(true),
        privileged: sc.and_then(|s| s.privileged) == Some(true),
        cap_add: caps.and_then(|c| c.add.clone()).unwrap_or_default(),
        cap_drop: caps.and_then(|c| c.drop.clone()).unwrap_or_default(),
        cpu_shares,
        cpu_quota,
        cpu_period,
        memory_limit: bytes(limits, "memory"),
        log_path,
        tty: c.tty == Some(true),
        stdin: c.stdin == Some(true),
        stdin_once: c.stdin_once == Some(true),
    })
}

/// Docker-style service link variables for one Service (`enableServiceLinks`).
pub fn service_env(svc: &Value) -> Vec<(String, String)> {
    let name = svc["metadata"]["name"].as_str().unwrap_or_default().to_uppercase().replace('-', "_");
    let ip = svc["spec"]["clusterIP"].as_str().unwrap_or_default();
    if ip.is_empty() || ip == "None" {
        return Vec::new();
    }
    let ports = svc["spec"]["ports"].as_array().cloned().unwrap_or_default();
    let Some(first) = ports.first() else { return Vec::new() };
    let mut env = vec![
        (format!("{name}_SERVICE_HOST"), ip.to_string()),
        (format!("{name}_SERVICE_PORT"), first["port"].to_string()),
    ];
    let proto0 = first["protocol"].as_str().unwrap_or("TCP").to_lowercase();
    env.push((format!("{name}_PORT"), format!("{proto0}://{ip}:{}", first["port"])));
    for p in &ports {
        let port = p["port"].to_string();
        let proto = p["protocol"].as_str().unwrap_or("TCP");
        if let Some(pn) = p["name"].as_str().filter(|n| !n.is_empty()) {
            env.push((format!("{name}_SERVICE_PORT_{}", pn.to_uppercase().replace('-', "_")), port.clone()));
        }
        let base = format!("{name}_PORT_{port}_{proto}");
        env.push((base.clone(), format!("{}://{ip}:{port}", proto.to_lowercase())));
        env.push((format!("{base}_PROTO"), proto.to_lowercase()));
        env.push((format!("{base}_PORT"), port.clone()));
        env.push((format!("{base}_ADDR"), ip.to_string()));
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expansion_follows_upstream() {
        let env = vec![("A".to_string(), "1".to_string()), ("B".to_string(), "x".to_string())];
        assert_eq!(expand("$(A)-$(B)", &env), "1-x");
        assert_eq!(expand("$$(A)", &env), "$(A)");
        assert_eq!(expand("$(C)", &env), "$(C)");
        assert_eq!(expand("$(A", &env), "$(A");
        assert_eq!(expand("a$b", &env), "a$b");
    }

    #[test]
    fn argv_merges_image_and_container() {
        let image = ImageConfig { entrypoint: vec!["/ep".into()], cmd: vec!["c1".into()], env: vec![], working_dir: None, user: None };
        let mut c = Container { name: "x".into(), ..Default::default() };
        assert_eq!(argv(&c, &image, &[]), ["/ep", "c1"]);
        c.args = Some(vec!["a".into()]);
        assert_eq!(argv(&c, &image, &[]), ["/ep", "a"]);
        c.command = Some(vec!["sh".into()]);
        assert_eq!(argv(&c, &image, &[]), ["sh", "a"]);
    }
}
