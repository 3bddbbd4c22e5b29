//! The kubelet: watches the pods bound to this node and runs one [`worker::Worker`] per
//! pod. Pod folders live in `DATA_DIR/agent/pods/<uid>/`, container logs in
//! `DATA_DIR/agent/logs/<namespace>_<name>_<uid>/<container>/<restart>.log` (the layout of
//! upstream's `/var/log/pods`), in the CRI log format.

pub mod auth;
pub mod probes;
pub mod server;
pub mod spdy;
pub mod spec;
pub mod stats;
pub mod stream;
pub mod volumes;
pub mod worker;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use base64::Engine;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference, Pod, Secret};
use kube::api::Api;
use controllers::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use tokio::sync::watch;

use crate::images::{Credentials, ImageStore};
use crate::runtime::{DnsConfig, Runtime};
use crate::Config;

pub struct Kubelet {
    pub client: kube::Client,
    pub config: Arc<Config>,
    pub runtime: Arc<Runtime>,
    pub images: Arc<ImageStore>,
    /// Pods running here and their latest resource usage.
    pub stats: stats::Stats,
    recorder: Recorder,
}

impl Kubelet {
    pub fn new(client: kube::Client, config: Arc<Config>, runtime: Arc<Runtime>, images: Arc<ImageStore>) -> Self {
        let reporter = Reporter { controller: "kubelet".into(), instance: Some(config.node_name.clone()) };
        let recorder = Recorder::new(client.clone(), reporter);
        Kubelet { client, config, runtime, images, stats: stats::Stats::default(), recorder }
    }

    pub fn pod_dir(&self, uid: &str) -> PathBuf {
        self.config.data_dir.join("pods").join(uid)
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.config.data_dir.join("logs")
    }

    /// Where the log of instance `restart` of container `name` goes.
    pub fn log_path(&self, pod: &Pod, name: &str, restart: i32) -> PathBuf {
        self.pod_logs_dir(pod).join(name).join(format!("{restart}.log"))
    }

    pub fn pod_logs_dir(&self, pod: &Pod) -> PathBuf {
        let m = &pod.metadata;
        self.logs_dir().join(format!(
            "{}_{}_{}",
            m.namespace.as_deref().unwrap_or_default(),
            m.name.as_deref().unwrap_or_default(),
            m.uid.as_deref().unwrap_or_default()
        ))
    }

    /// Removes the log folder of the pod with this uid.
    pub fn remove_logs(&self, uid: &str) {
        let Ok(entries) = std::fs::read_dir(self.logs_dir()) else { return };
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().ends_with(&format!("_{uid}")) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }

    /// The pod's resolv.conf: cluster DNS for ClusterFirst pods when a DNS address is set,
    /// else the host's resolvers (as upstream's `Default` policy).
    pub fn dns_config(&self, pod: &Pod) -> Option<DnsConfig> {
        let spec = pod.spec.as_ref()?;
        let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
        let host_network = spec.host_network == Some(true);
        let cluster = match (policy, host_network) {
            ("ClusterFirst", false) | ("ClusterFirstWithHostNet", _) => self.config.cluster_dns,
            _ => None,
        };
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let domain = &self.config.cluster_domain;
        let mut cfg = match cluster {
            Some(ip) => DnsConfig {
                nameservers: vec![ip.to_string()],
                searches: vec![format!("{ns}.svc.{domain}"), format!("svc.{domain}"), domain.clone()],
                options: vec!["ndots:5".into()],
            },
            None if policy == "None" => DnsConfig { nameservers: vec![], searches: vec![], options: vec![] },
            None => host_resolv_conf(),
        };
        if let Some(pc) = &spec.dns_config {
            cfg.nameservers.extend(pc.nameservers.iter().flatten().cloned());
            cfg.searches.extend(pc.searches.iter().flatten().cloned());
            for o in pc.options.iter().flatten() {
                let name = o.name.clone().unwrap_or_default();
                cfg.options.retain(|x| x.split(':').next() != Some(name.as_str()));
                cfg.options.push(match &o.value {
                    Some(v) => format!("{name}:{v}"),
                    None => name,
                });
            }
        }
        Some(cfg)
    }

    pub async fn config_map(&self, ns: &str, name: &str) -> Result<Option<ConfigMap>, kube::Error> {
        worker::get_opt(Api::<ConfigMap>::namespaced(self.client.clone(), ns), name).await
    }

    pub async fn secret(&self, ns: &str, name: &str) -> Result<Option<Secret>, kube::Error> {
        worker::get_opt(Api::<Secret>::namespaced(self.client.clone(), ns), name).await
    }

    /// Registry credentials from the pod's `imagePullSecrets` (`.dockerconfigjson`).
    pub async fn pull_secrets(&self, pod: &Pod) -> Vec<(String, Credentials)> {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let mut out = Vec::new();
        for r in pod.spec.iter().flat_map(|s| s.image_pull_secrets.iter().flatten()) {
            let Ok(Some(secret)) = self.secret(ns, &r.name).await else { continue };
            let data = secret.data.unwrap_or_default();
            let Some(raw) = data.get(".dockerconfigjson").or_else(|| data.get(".dockercfg")) else { continue };
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(&raw.0) else { continue };
            let auths = v.get("auths").unwrap_or(&v);
            for (host, entry) in auths.as_object().into_iter().flatten() {
                let (mut user, mut pass) = (entry["username"].as_str().unwrap_or_default().to_string(), entry["password"].as_str().unwrap_or_default().to_string());
                if let Some(auth) = entry["auth"].as_str() {
                    if let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(auth) {
                        if let Some((u, p)) = String::from_utf8_lossy(&decoded).split_once(':') {
                            user = u.to_string();
                            pass = p.to_string();
                        }
                    }
                }
                let host = host.trim_start_matches("https://").trim_start_matches("http://").trim_end_matches('/').to_string();
                out.push((host, Credentials { username: user, password: pass }));
            }
        }
        out
    }

    /// Service link variables, unless the pod turned them off (the `kubernetes` Service's
    /// are always there, as upstream).
    pub async fn service_env(&self, pod: &Pod) -> Vec<(String, String)> {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let links = pod.spec.as_ref().and_then(|s| s.enable_service_links).unwrap_or(true);
        let mut env = Vec::new();
        for svc in worker::list_services(&self.client, ns).await {
            let is_master = svc["metadata"]["name"] == "kubernetes" && svc["metadata"]["namespace"] == "default";
            if links || is_master {
                env.extend(spec::service_env(&svc));
            }
        }
        env
    }

    /// Records an Event about the pod (failures are only logged).
    pub async fn event(&self, pod: &Pod, warning: bool, reason: &str, note: &str) {
        let reference = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: pod.metadata.name.clone(),
            namespace: pod.metadata.namespace.clone(),
            uid: pod.metadata.uid.clone(),
            resource_version: pod.metadata.resource_version.clone(),
            field_path: None,
        };
        let ev = Event {
            type_: if warning { EventType::Warning } else { EventType::Normal },
            reason: reason.into(),
            note: Some(note.chars().take(1000).collect()),
            action: reason.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &reference).await {
            tracing::debug!(error = %e, reason, "publishing an event failed");
        }
    }

    /// Watches this node's pods forever, one worker per pod uid.
    pub async fn run(self: Arc<Self>) {
        let api: Api<Pod> = Api::all(self.client.clone());
        let selector = format!("spec.nodeName={}", self.config.node_name);
        let mut workers: HashMap<String, (watch::Sender<Option<Arc<Pod>>>, tokio::task::JoinHandle<()>)> = HashMap::new();
        let mut seen_in_relist: Option<HashSet<String>> = None;
        let mut stream = watcher(api, watcher::Config::default().fields(&selector)).boxed();
        self.clean_orphans_at_start().await;
        while let Some(ev) = stream.next().await {
            let ev = match ev {
                Ok(ev) => ev,
                Err(e) => {
                    tracing::warn!(error = %e, "watching pods failed; retrying");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    continue;
                }
            };
            workers.retain(|_, (_, h)| !h.is_finished());
            match ev {
                watcher::Event::Init => seen_in_relist = Some(HashSet::new()),
                watcher::Event::InitApply(pod) | watcher::Event::Apply(pod) => {
                    let uid = pod.metadata.uid.clone().unwrap_or_default();
                    if let Some(seen) = seen_in_relist.as_mut() {
                        seen.insert(uid.clone());
                    }
                    let pod = Arc::new(pod);
                    match workers.get(&uid) {
                        Some((tx, _)) => {
                            let _ = tx.send(Some(pod));
                        }
                        None => {
                            let (tx, rx) = watch::channel(Some(pod));
                            let worker = worker::Worker::new(self.clone(), uid.clone());
                            workers.insert(uid, (tx, tokio::spawn(worker.run(rx))));
                        }
                    }
                }
                watcher::Event::Delete(pod) => {
                    if let Some((tx, _)) = workers.get(pod.metadata.uid.as_deref().unwrap_or_default()) {
                        let _ = tx.send(None);
                    }
                }
                watcher::Event::InitDone => {
                    // Pods that vanished while the watch was down.
                    if let Some(seen) = seen_in_relist.take() {
                        for (uid, (tx, _)) in &workers {
                            if !seen.contains(uid) {
                                let _ = tx.send(None);
                            }
                        }
                    }
                }
            }
        }
    }

    /// Sandboxes left by an earlier run whose pods this agent no longer knows are removed
    /// when the first pod list comes in; here, those whose pod does not exist at all.
    async fn clean_orphans_at_start(&self) {
        let api: Api<Pod> = Api::all(self.client.clone());
        let Ok(list) = api.list(&kube::api::ListParams::default().fields(&format!("spec.nodeName={}", self.config.node_name))).await else { return };
        let live: HashSet<String> = list.items.iter().filter_map(|p| p.metadata.uid.clone()).collect();
        for id in self.runtime.list_containers() {
            // Containers of live pods are restarted by their workers (ids are stable).
            let _ = id;
        }
        for uid in self.runtime.list_sandboxes() {
            if !live.contains(&uid) {
                tracing::info!(uid, "removing the sandbox of a pod that no longer exists");
                let _ = self.runtime.remove_sandbox(&uid).await;
                volumes::clean_up(&self.pod_dir(&uid));
                self.remove_logs(&uid);
            }
        }
    }
}

/// The host's nameservers and search domains, from /etc/resolv.conf.
fn host_resolv_conf() -> DnsConfig {
    let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let mut cfg = DnsConfig { nameservers: vec![], searches: vec![], options: vec![] };
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => cfg.nameservers.extend(words.next().map(String::from)),
            Some("search") => cfg.searches.extend(words.map(String::from)),
            Some("options") => cfg.options.extend(words.map(String::from)),
            _ => {}
        }
    }
    cfg
}

pub type Labels = BTreeMap<String, String>;
