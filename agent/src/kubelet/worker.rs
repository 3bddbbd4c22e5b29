//! One task per pod bound to this node: brings the pod's sandbox, volumes, init containers
//! and containers to what the spec asks, restarts containers per `restartPolicy` with
//! exponential back-off, runs probes, reports `status`, and on deletion stops everything
//! gracefully, cleans up and removes the pod object.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, Preconditions};
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::images::{Image, ImageError, PullPolicy};
use crate::kubelet::probes::{self, Outcome, ProbeState};
use crate::kubelet::spec::{self, EnvSources};
use crate::kubelet::volumes::{self, PodVolumes, VolumeSources};
use crate::kubelet::Kubelet;
use crate::runtime::{ContainerState, PortMapping, Sandbox, SandboxSpec};

/// How often a worker looks at its containers when nothing else wakes it.
const TICK: Duration = Duration::from_millis(500);
/// Upstream's container restart back-off: 10 s doubling up to 5 minutes.
const BACKOFF_INITIAL: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// How often projected volumes (configMap, secret, downwardAPI) are refreshed.
const VOLUME_REFRESH: Duration = Duration::from_secs(5);

/// What the worker knows about one container of the pod.
#[derive(Default)]
struct Record {
    /// The runtime id of the current instance.
    id: Option<String>,
    restart_count: i32,
    /// `lastState.terminated` of the previous instance.
    last_terminated: Option<Value>,
    /// Why it is not running (reason, message).
    waiting: Option<(String, String)>,
    backoff: Option<Duration>,
    backoff_until: Option<Instant>,
    image: Option<Image>,
    started_instant: Option<Instant>,
    ready: bool,
    started: bool,
    liveness: Option<ProbeState>,
    readiness: Option<ProbeState>,
    startup: Option<ProbeState>,
    /// Set when the kubelet killed it (liveness failure), to report the reason.
    killed_for: Option<String>,
    /// `imageID` reported by an earlier agent process for an adopted container.
    image_id: Option<String>,
    /// The state when the pod finished: the runtime forgets containers with the sandbox.
    final_state: Option<ContainerState>,
}

pub struct Worker {
    kubelet: Arc<Kubelet>,
    uid: String,
    sandbox: Option<Sandbox>,
    sandbox_error: Option<String>,
    volumes: Option<PodVolumes>,
    volumes_refreshed: Option<Instant>,
    init: BTreeMap<String, Record>,
    main: BTreeMap<String, Record>,
    start_time: String,
    last_status: Option<Value>,
    /// Set once the pod reached Succeeded or Failed: nothing runs any more.
    terminal: bool,
    /// Projected service account tokens: `<volume>/<path>` → (token, fetched, lifetime).
    tokens: BTreeMap<String, (String, Instant, Duration)>,
}

fn is_deleting(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

fn restart_policy(pod: &Pod) -> &str {
    pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()).unwrap_or("Always")
}

fn full_name(pod: &Pod) -> String {
    format!("{}_{}({})", pod.metadata.name.as_deref().unwrap_or_default(), pod.metadata.namespace.as_deref().unwrap_or_default(), pod.metadata.uid.as_deref().unwrap_or_default())
}

/// A short stable id for a container instance: runtime paths (and unix sockets under
/// them) must stay short, so pod uid, name and restart count are hashed (FNV-1a 64).
pub fn instance_id(uid: &str, name: &str, restart: i32) -> String {
    format!("{:016x}", crate::hash::fnv1a64(&format!("{uid}/{name}/{restart}")))
}

impl Worker {
    pub fn new(kubelet: Arc<Kubelet>, uid: String) -> Self {
        Worker {
            kubelet,
            uid,
            sandbox: None,
            sandbox_error: None,
            volumes: None,
            volumes_refreshed: None,
            init: BTreeMap::new(),
            main: BTreeMap::new(),
            start_time: crate::node::now_rfc3339(),
            last_status: None,
            terminal: false,
            tokens: BTreeMap::new(),
        }
    }

    /// Takes over containers an earlier agent process started: the pod's status names each
    /// instance (`containerID`) and its restart count, and the runtime still knows it. Without
    /// this, a restarted agent would start every container again.
    fn adopt(&mut self, pod: &Pod) {
        let Some(status) = pod.status.as_ref() else { return };
        let runtime = self.kubelet.runtime.clone();
        if let Some(sandbox) = runtime.sandbox(&self.uid) {
            self.sandbox = Some(sandbox);
        }
        let lists = [(true, status.init_container_statuses.iter().flatten()), (false, status.container_statuses.iter().flatten())];
        for (init, statuses) in lists {
            for cs in statuses {
                let Some(id) = cs.container_id.as_deref().and_then(|c| c.strip_prefix("krust://")) else { continue };
                if runtime.state(id).is_none() {
                    continue;
                }
                let rec = self.record(&cs.name, init);
                rec.id = Some(id.to_string());
                rec.restart_count = cs.restart_count;
                rec.started_instant = Some(Instant::now());
                rec.ready = cs.ready;
                rec.started = cs.started.unwrap_or(true);
                rec.image_id = Some(cs.image_id.clone());
                rec.last_terminated = cs.last_state.as_ref().and_then(|s| serde_json::to_value(s).ok()).filter(|v| v.get("terminated").is_some());
                tracing::info!(pod = %full_name(pod), container = %cs.name, id, "adopted a running container");
            }
        }
        if let Some(t) = &status.start_time {
            self.start_time = t.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
        }
    }

    /// Drives the pod until it is deleted. `None` in the channel: the object is gone.
    pub async fn run(mut self, mut rx: watch::Receiver<Option<Arc<Pod>>>) {
        if let Some(pod) = rx.borrow().clone() {
            self.adopt(&pod);
        }
        loop {
            let pod = rx.borrow_and_update().clone();
            match pod {
                None => {
                    self.tear_down(Duration::from_secs(2), None).await;
                    return;
                }
                Some(pod) if is_deleting(&pod) => {
                    let grace = pod.metadata.deletion_grace_period_seconds.unwrap_or(30).max(0) as u64;
                    self.tear_down(Duration::from_secs(grace), Some(&pod)).await;
                    self.report(&pod).await;
                    self.remove_object(&pod).await;
                    return;
                }
                Some(pod) => {
                    self.sync(&pod).await;
                    self.report(&pod).await;
                }
            }
            tokio::select! {
                changed = rx.changed() => if changed.is_err() {
                    self.tear_down(Duration::from_secs(2), None).await;
                    return;
                },
                _ = tokio::time::sleep(TICK) => {}
            }
        }
    }

    async fn sync(&mut self, pod: &Pod) {
        if self.terminal {
            return;
        }
        let Some(spec) = pod.spec.as_ref() else { return };
        if let Err(message) = self.ensure_sandbox(pod).await {
            self.sandbox_error = Some(message);
            return;
        }
        self.sandbox_error = None;
        if let Err(message) = self.ensure_volumes(pod).await {
            for c in spec.init_containers.iter().flatten().chain(spec.containers.iter()) {
                let rec = self.record(&c.name, is_init(spec, &c.name));
                if rec.id.is_none() {
                    rec.waiting = Some(("ContainerCreating".into(), message.clone()));
                }
            }
            return;
        }
        // Init containers one at a time, in order, each to success.
        for c in spec.init_containers.iter().flatten() {
            match self.step(pod, c, true).await {
                Step::Done => continue,
                Step::Failed => {
                    self.finish(pod).await;
                    return;
                }
                Step::Busy => return,
            }
        }
        for c in &spec.containers {
            self.step(pod, c, false).await;
        }
        self.probe(pod).await;
        if self.all_done(pod) {
            self.finish(pod).await;
        }
    }

    fn record(&mut self, name: &str, init: bool) -> &mut Record {
        let map = if init { &mut self.init } else { &mut self.main };
        map.entry(name.to_string()).or_default()
    }

    async fn ensure_sandbox(&mut self, pod: &Pod) -> Result<(), String> {
        if self.sandbox.is_some() {
            return Ok(());
        }
        let spec = pod.spec.as_ref().ok_or("pod has no spec")?;
        let ports: Vec<PortMapping> = spec
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .filter_map(|p| {
                let host_port = u16::try_from(p.host_port?).ok().filter(|h| *h > 0)?;
                Some(PortMapping {
                    host_port,
                    container_port: u16::try_from(p.container_port).ok()?,
                    protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()).to_lowercase(),
                    host_ip: p.host_ip.clone().filter(|h| !h.is_empty()),
                })
            })
            .collect();
        let hostname = spec.hostname.clone().unwrap_or_else(|| pod.metadata.name.clone().unwrap_or_default());
        let sandbox_spec = SandboxSpec {
            pod_id: self.uid.clone(),
            hostname,
            host_network: spec.host_network == Some(true),
            port_mappings: ports,
            dns: self.kubelet.dns_config(pod),
            hosts_entries: spec.host_aliases.iter().flatten().flat_map(|a| a.hostnames.iter().flatten().map(move |h| (a.ip.clone(), h.clone()))).collect(),
        };
        match self.kubelet.runtime.run_sandbox(&sandbox_spec).await {
            Ok(sandbox) => {
                tracing::info!(pod = %full_name(pod), ip = ?sandbox.ip, "pod sandbox ready");
                self.sandbox = Some(sandbox);
                Ok(())
            }
            Err(e) => {
                let message = format!("failed to create pod sandbox: {e}");
                tracing::warn!(pod = %full_name(pod), "{message}");
                self.kubelet.event(pod, true, "FailedCreatePodSandBox", &message).await;
                Err(message)
            }
        }
    }

    fn pod_ip(&self) -> Option<IpAddr> {
        match &self.sandbox {
            Some(s) => s.ip.or(Some(self.kubelet.config.node_ip)),
            None => None,
        }
    }

    fn ips(&self) -> (String, String) {
        (self.kubelet.config.node_ip.to_string(), self.pod_ip().map(|i| i.to_string()).unwrap_or_default())
    }

    async fn ensure_volumes(&mut self, pod: &Pod) -> Result<(), String> {
        let fresh = self.volumes_refreshed.is_some_and(|t| t.elapsed() < VOLUME_REFRESH);
        if self.volumes.is_some() && fresh {
            return Ok(());
        }
        let (cms, secrets) = volumes::volume_refs(pod);
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let mut src = VolumeSources::default();
        for name in cms {
            let data = self.kubelet.config_map(&ns, &name).await.map_err(|e| e.to_string())?;
            src.config_maps.insert(name, data.map(|cm| {
                let mut m: BTreeMap<String, Vec<u8>> = cm.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())).collect();
                m.extend(cm.binary_data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)));
                m
            }));
        }
        for name in secrets {
            let data = self.kubelet.secret(&ns, &name).await.map_err(|e| e.to_string())?;
            src.secrets.insert(name, data.map(|s| s.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect()));
        }
        self.refresh_tokens(pod).await?;
        src.tokens = self.tokens.iter().map(|(k, (t, _, _))| (k.clone(), t.clone())).collect();
        let (host_ip, pod_ip) = self.ips();
        let dir = self.kubelet.pod_dir(&self.uid);
        match volumes::prepare(pod, &dir, &src, &host_ip, &pod_ip) {
            Ok(v) => {
                self.volumes = Some(v);
                self.volumes_refreshed = Some(Instant::now());
                Ok(())
            }
            // Volumes already set up keep serving; a missing source blocks only new pods.
            Err(e) if self.volumes.is_some() => {
                tracing::debug!(pod = %full_name(pod), error = %e, "refreshing volumes failed");
                Ok(())
            }
            Err(e) => {
                let message = format!("MountVolume.SetUp failed: {e}");
                self.kubelet.event(pod, true, "FailedMount", &message).await;
                Err(message)
            }
        }
    }

    /// Requests (TokenRequest, bound to this pod) the projected service account tokens that
    /// are missing or past 80% of their lifetime, as upstream's kubelet token manager.
    async fn refresh_tokens(&mut self, pod: &Pod) -> Result<(), String> {
        let wants = volumes::token_requests(pod);
        if wants.is_empty() {
            return Ok(());
        }
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let sa = pod.spec.as_ref().and_then(|s| s.service_account_name.clone()).unwrap_or_else(|| "default".into());
        let api: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(self.kubelet.client.clone(), &ns);
        for w in wants {
            let fresh = self.tokens.get(&w.key).is_some_and(|(_, at, life)| at.elapsed() < life.mul_f64(0.8));
            if fresh {
                continue;
            }
            let req: k8s_openapi::api::authentication::v1::TokenRequest = serde_json::from_value(json!({
                "spec": {
                    "audiences": w.audience.iter().collect::<Vec<_>>(),
                    "expirationSeconds": w.expiration_seconds,
                    "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": pod.metadata.name, "uid": pod.metadata.uid},
                }
            }))
            .map_err(|e| e.to_string())?;
            match api.create_token_request(&sa, &Default::default(), &req).await {
                Ok(tr) => {
                    let token = tr.status.map(|s| s.token).unwrap_or_default();
                    let life = Duration::from_secs(w.expiration_seconds.max(600) as u64);
                    self.tokens.insert(w.key, (token, Instant::now(), life));
                }
                // A token already issued keeps serving until it expires.
                Err(e) if self.tokens.contains_key(&w.key) => tracing::warn!(pod = %full_name(pod), error = %e, "refreshing a service account token failed"),
                Err(e) => return Err(format!("failed to fetch token for service account {ns}/{sa}: {e}")),
            }
        }
        Ok(())
    }

    /// Brings one container one step forward.
    async fn step(&mut self, pod: &Pod, c: &Container, init: bool) -> Step {
        let policy = restart_policy(pod).to_string();
        let runtime = self.kubelet.runtime.clone();
        let rec = self.record(&c.name, init);
        if let Some(id) = rec.id.clone() {
            match runtime.state(&id) {
                Some(ContainerState::Running { .. }) | Some(ContainerState::Created) => {
                    return if init { Step::Busy } else { Step::Done };
                }
                Some(ContainerState::Exited { exit_code, .. }) => {
                    let restart = match (init, policy.as_str()) {
                        (true, "Never") => false,
                        (true, _) => exit_code != 0,
                        (false, "Always") => true,
                        (false, "OnFailure") => exit_code != 0,
                        (false, _) => false,
                    };
                    if !restart {
                        return match (init, exit_code) {
                            (true, 0) => Step::Done,
                            (true, _) => Step::Failed,
                            (false, _) => Step::Done,
                        };
                    }
                    // Restart, after the back-off (the first restart is immediate).
                    let now = Instant::now();
                    match rec.backoff_until {
                        None => {
                            let next = rec.backoff.map_or(Duration::ZERO, |b| b);
                            rec.backoff_until = Some(now + next);
                            rec.backoff = Some(rec.backoff.map_or(BACKOFF_INITIAL, |b| (b * 2).min(BACKOFF_MAX)));
                            if next > Duration::ZERO {
                                let message = format!("back-off {}s restarting failed container={} pod={}", next.as_secs(), c.name, full_name(pod));
                                rec.waiting = Some(("CrashLoopBackOff".into(), message.clone()));
                                self.kubelet.event(pod, true, "BackOff", &format!("Back-off restarting failed container {} in pod {}", c.name, full_name(pod))).await;
                                return Step::Busy;
                            }
                        }
                        Some(until) if until > now => return Step::Busy,
                        Some(_) => {}
                    }
                    let rec = self.record(&c.name, init);
                    rec.backoff_until = None;
                    // A container that ran long enough (10 min upstream) resets its back-off.
                    if rec.started_instant.is_some_and(|t| t.elapsed() > Duration::from_secs(600)) {
                        rec.backoff = None;
                    }
                    rec.last_terminated = runtime.state(&id).map(|s| terminated_json(&s, &id, rec.killed_for.take()));
                    rec.restart_count += 1;
                    let _ = runtime.remove_container(&id).await;
                    rec.id = None;
                }
                None => {
                    // The runtime lost it (e.g. removed behind our back): start again.
                    rec.id = None;
                }
            }
        }
        match self.start(pod, c, init).await {
            Ok(()) => Step::Busy,
            Err(()) => Step::Busy,
        }
    }

    /// Pulls the image and starts a new instance of `c`.
    async fn start(&mut self, pod: &Pod, c: &Container, init: bool) -> Result<(), ()> {
        let kubelet = self.kubelet.clone();
        let image_ref = c.image.clone().unwrap_or_default();
        let policy = match c.image_pull_policy.as_deref() {
            Some("Always") => PullPolicy::Always,
            Some("Never") => PullPolicy::Never,
            Some("IfNotPresent") => PullPolicy::IfNotPresent,
            _ => PullPolicy::from_k8s("", &image_ref),
        };
        {
            let rec = self.record(&c.name, init);
            if let Some(until) = rec.backoff_until.filter(|_| rec.id.is_none() && rec.image.is_none()) {
                if until > Instant::now() {
                    return Err(());
                }
            }
            if rec.waiting.is_none() {
                rec.waiting = Some(("ContainerCreating".into(), String::new()));
            }
        }
        let image = match self.record(&c.name, init).image.clone() {
            Some(i) if matches!(policy, PullPolicy::IfNotPresent | PullPolicy::Never) => i,
            _ => {
                let secrets = kubelet.pull_secrets(pod).await;
                match kubelet.images.ensure(&image_ref, policy, &secrets).await {
                    Ok(i) => {
                        let rec = self.record(&c.name, init);
                        if rec.image.is_none() {
                            kubelet.event(pod, false, "Pulled", &format!("Container image \"{image_ref}\" is ready")).await;
                        }
                        rec.backoff_until = None;
                        i
                    }
                    Err(e) => {
                        let (reason, message) = match &e {
                            ImageError::NeverPull { .. } => ("ErrImageNeverPull".to_string(), format!("Container image \"{image_ref}\" is not present with pull policy of Never")),
                            other => ("ErrImagePull".to_string(), format!("failed to pull image \"{image_ref}\": {other}")),
                        };
                        kubelet.event(pod, true, "Failed", &message).await;
                        let rec = self.record(&c.name, init);
                        // Repeated failures back off (ImagePullBackOff), as upstream.
                        let next = rec.backoff.map_or(BACKOFF_INITIAL, |b| (b * 2).min(BACKOFF_MAX));
                        let was_backing_off = rec.waiting.as_ref().is_some_and(|(r, _)| r == "ErrImagePull" || r == "ImagePullBackOff");
                        rec.backoff = Some(next);
                        rec.backoff_until = Some(Instant::now() + next);
                        rec.waiting = Some((if was_backing_off { "ImagePullBackOff".into() } else { reason }, message));
                        return Err(());
                    }
                }
            }
        };
        self.record(&c.name, init).image = Some(image.clone());
        let (host_ip, pod_ip) = self.ips();
        let env = match self.env_sources(pod).await.and_then(|src| spec::environment(pod, c, &image.config, &src, &host_ip, &pod_ip).map_err(|e| e.to_string())) {
            Ok(env) => env,
            Err(message) => {
                self.record(&c.name, init).waiting = Some(("CreateContainerConfigError".into(), message.clone()));
                kubelet.event(pod, true, "Failed", &format!("Error: {message}")).await;
                return Err(());
            }
        };
        let restart = self.record(&c.name, init).restart_count;
        let id = instance_id(&self.uid, &c.name, restart);
        let log_path = kubelet.log_path(pod, &c.name, restart);
        let volumes = self.volumes.clone().unwrap_or_default();
        let spec = match spec::container_spec(pod, c, &id, &image, env, &volumes, log_path) {
            Ok(s) => s,
            Err(e) => {
                let message = e.to_string();
                self.record(&c.name, init).waiting = Some(("CreateContainerConfigError".into(), message.clone()));
                kubelet.event(pod, true, "Failed", &format!("Error: {message}")).await;
                return Err(());
            }
        };
        let Some(sandbox) = self.sandbox.clone() else { return Err(()) };
        // An instance with this id may survive from a failed earlier attempt.
        let _ = kubelet.runtime.remove_container(&id).await;
        match kubelet.runtime.start_container(&sandbox, &spec).await {
            Ok(()) => {
                let started = Instant::now();
                let rec = self.record(&c.name, init);
                rec.id = Some(id);
                rec.waiting = None;
                rec.started_instant = Some(started);
                rec.ready = false;
                rec.started = c.startup_probe.is_none();
                rec.liveness = c.liveness_probe.as_ref().map(|p| ProbeState::new(p, started));
                rec.readiness = c.readiness_probe.as_ref().map(|p| ProbeState::new(p, started));
                rec.startup = c.startup_probe.as_ref().map(|p| ProbeState::new(p, started));
                if c.readiness_probe.is_none() {
                    rec.ready = true;
                }
                kubelet.event(pod, false, "Started", &format!("Started container {}", c.name)).await;
                Ok(())
            }
            Err(e) => {
                let message = e.to_string();
                let rec = self.record(&c.name, init);
                rec.waiting = Some(("RunContainerError".into(), message.clone()));
                let next = rec.backoff.map_or(BACKOFF_INITIAL, |b| (b * 2).min(BACKOFF_MAX));
                rec.backoff = Some(next);
                rec.backoff_until = Some(Instant::now() + next);
                kubelet.event(pod, true, "Failed", &format!("Error: {message}")).await;
                Err(())
            }
        }
    }

    /// The environment's ConfigMaps, Secrets and service links.
    async fn env_sources(&self, pod: &Pod) -> Result<EnvSources, String> {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let (cms, secrets) = spec::env_refs(pod);
        let mut src = EnvSources::default();
        for name in cms {
            let cm = self.kubelet.config_map(&ns, &name).await.map_err(|e| e.to_string())?;
            src.config_maps.insert(name, cm.map(|cm| cm.data.unwrap_or_default()));
        }
        for name in secrets {
            let s = self.kubelet.secret(&ns, &name).await.map_err(|e| e.to_string())?;
            src.secrets.insert(name, s.map(|s| s.data.unwrap_or_default().into_iter().map(|(k, v)| (k, String::from_utf8_lossy(&v.0).to_string())).collect()));
        }
        src.service_env = self.kubelet.service_env(pod).await;
        Ok(src)
    }

    /// Runs due probes of running containers; a failed liveness (or startup) probe kills
    /// the container, which then restarts per the restart policy.
    async fn probe(&mut self, pod: &Pod) {
        let Some(spec) = pod.spec.as_ref() else { return };
        let pod_ip = self.pod_ip();
        let runtime = self.kubelet.runtime.clone();
        for c in &spec.containers {
            let Some(rec) = self.main.get_mut(&c.name) else { continue };
            let Some(id) = rec.id.clone() else { continue };
            if !matches!(runtime.state(&id), Some(ContainerState::Running { .. })) {
                rec.ready = false;
                continue;
            }
            let now = Instant::now();
            if let (Some(p), Some(st)) = (&c.startup_probe, rec.startup.as_mut()) {
                if st.verdict != Some(true) {
                    if st.next_due <= now {
                        let outcome = probes::run(p, c, &id, pod_ip, &runtime).await;
                        match st.record(p, &outcome) {
                            Some(true) => rec.started = true,
                            Some(false) => {
                                let why = failure_text(&outcome);
                                self.kubelet.event(pod, true, "Unhealthy", &format!("Startup probe failed: {why}")).await;
                                self.kill_for(pod, c, "startup probe failed").await;
                            }
                            None => {}
                        }
                    }
                    continue;
                }
            }
            let rec = self.main.get_mut(&c.name).expect("record exists");
            if let (Some(p), Some(st)) = (&c.liveness_probe, rec.liveness.as_mut()) {
                if st.next_due <= now {
                    let outcome = probes::run(p, c, &id, pod_ip, &runtime).await;
                    if outcome != Outcome::Success {
                        let why = failure_text(&outcome);
                        self.kubelet.event(pod, true, "Unhealthy", &format!("Liveness probe failed: {why}")).await;
                    }
                    let rec = self.main.get_mut(&c.name).expect("record exists");
                    if rec.liveness.as_mut().and_then(|st| st.record(p, &outcome)) == Some(false) {
                        self.kill_for(pod, c, "liveness probe failed").await;
                        continue;
                    }
                }
            }
            let rec = self.main.get_mut(&c.name).expect("record exists");
            if let (Some(p), Some(st)) = (&c.readiness_probe, rec.readiness.as_mut()) {
                if st.next_due <= now {
                    let outcome = probes::run(p, c, &id, pod_ip, &runtime).await;
                    if let Some(v) = st.record(p, &outcome) {
                        rec.ready = v;
                    }
                }
            }
        }
    }

    async fn kill_for(&mut self, pod: &Pod, c: &Container, why: &str) {
        let Some(rec) = self.main.get_mut(&c.name) else { return };
        let Some(id) = rec.id.clone() else { return };
        rec.killed_for = Some(why.to_string());
        rec.ready = false;
        let grace = pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds).unwrap_or(30).max(0) as u64;
        self.kubelet.event(pod, false, "Killing", &format!("Container {} failed {why}, will be restarted", c.name)).await;
        let _ = self.kubelet.runtime.stop_container(&id, Duration::from_secs(grace)).await;
    }

    /// True when no container will run again: restartPolicy Never/OnFailure and all exited
    /// (for OnFailure: successfully).
    fn all_done(&self, pod: &Pod) -> bool {
        let Some(spec) = pod.spec.as_ref() else { return false };
        let policy = restart_policy(pod);
        if policy == "Always" {
            return false;
        }
        spec.containers.iter().all(|c| {
            let Some(id) = self.main.get(&c.name).and_then(|r| r.id.clone()) else { return false };
            match self.kubelet.runtime.state(&id) {
                Some(ContainerState::Exited { exit_code, .. }) => policy == "Never" || exit_code == 0,
                _ => false,
            }
        })
    }

    /// The pod has finished: release its sandbox (the IP) but keep logs until deletion.
    async fn finish(&mut self, pod: &Pod) {
        self.terminal = true;
        tracing::info!(pod = %full_name(pod), "pod finished");
        let runtime = self.kubelet.runtime.clone();
        for rec in self.main.values_mut().chain(self.init.values_mut()) {
            rec.final_state = rec.id.as_deref().and_then(|id| runtime.state(id));
        }
        if self.sandbox.take().is_some() {
            if let Err(e) = self.kubelet.runtime.remove_sandbox(&self.uid).await {
                tracing::warn!(pod = %full_name(pod), error = %e, "removing the sandbox failed");
            }
        }
    }

    /// Stops every container (preStop hooks first, SIGTERM, SIGKILL after `grace`), then
    /// removes containers, sandbox and volumes.
    async fn tear_down(&mut self, grace: Duration, pod: Option<&Pod>) {
        let deadline = Instant::now() + grace;
        let runtime = self.kubelet.runtime.clone();
        let mut stops = Vec::new();
        let containers: Vec<(String, String, Option<Container>)> = self
            .main
            .iter()
            .chain(self.init.iter())
            .filter_map(|(name, r)| {
                let c = pod.and_then(|p| p.spec.as_ref()).and_then(|s| s.containers.iter().find(|c| &c.name == name)).cloned();
                r.id.clone().map(|id| (name.clone(), id, c))
            })
            .collect();
        for (name, id, c) in containers {
            let runtime = runtime.clone();
            let kubelet = self.kubelet.clone();
            let pod = pod.cloned();
            stops.push(async move {
                if matches!(runtime.state(&id), Some(ContainerState::Running { .. })) {
                    if let Some(argv) = c.as_ref().and_then(|c| c.lifecycle.as_ref()?.pre_stop.as_ref()?.exec.as_ref()?.command.clone()) {
                        let left = deadline.saturating_duration_since(Instant::now());
                        let _ = runtime.exec_sync(&id, &argv, left).await;
                    }
                    if let Some(pod) = &pod {
                        kubelet.event(pod, false, "Killing", &format!("Stopping container {name}")).await;
                    }
                    let left = deadline.saturating_duration_since(Instant::now());
                    let _ = runtime.stop_container(&id, left).await;
                }
                let _ = runtime.remove_container(&id).await;
            });
        }
        futures::future::join_all(stops).await;
        if let Err(e) = runtime.remove_sandbox(&self.uid).await {
            tracing::warn!(uid = %self.uid, error = %e, "removing the sandbox failed");
        }
        self.sandbox = None;
        self.kubelet.stats.pods.lock().expect("stats lock").remove(&self.uid);
        volumes::clean_up(&self.kubelet.pod_dir(&self.uid));
        self.kubelet.remove_logs(&self.uid);
    }

    /// Deletes the pod object now that nothing of it runs (grace period 0, this uid only).
    async fn remove_object(&self, pod: &Pod) {
        let api: Api<Pod> = Api::namespaced(self.kubelet.client.clone(), pod.metadata.namespace.as_deref().unwrap_or("default"));
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions { uid: Some(self.uid.clone()), resource_version: None }),
            ..Default::default()
        };
        match api.delete(pod.metadata.name.as_deref().unwrap_or_default(), &dp).await {
            Ok(_) => tracing::info!(pod = %full_name(pod), "pod deleted"),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => tracing::warn!(pod = %full_name(pod), error = %e, "deleting the pod failed"),
        }
    }

    /// Tells the stats sampler which containers of this pod run now.
    fn publish_entry(&self, pod: &Pod) {
        let runtime = &self.kubelet.runtime;
        let containers: Vec<(String, String)> = self
            .main
            .iter()
            .filter_map(|(name, r)| r.id.clone().filter(|id| matches!(runtime.state(id), Some(ContainerState::Running { .. }))).map(|id| (name.clone(), id)))
            .collect();
        let entry = crate::kubelet::stats::PodEntry {
            name: pod.metadata.name.clone().unwrap_or_default(),
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            start_time: self.start_time.clone(),
            containers,
        };
        self.kubelet.stats.pods.lock().expect("stats lock").insert(self.uid.clone(), entry);
    }

    /// Patches `status` when it changed.
    async fn report(&mut self, pod: &Pod) {
        self.publish_entry(pod);
        let status = self.status(pod);
        if self.last_status.as_ref() == Some(&status) {
            return;
        }
        let api: Api<Pod> = Api::namespaced(self.kubelet.client.clone(), pod.metadata.namespace.as_deref().unwrap_or("default"));
        let patch = json!({"status": status});
        match api.patch_status(pod.metadata.name.as_deref().unwrap_or_default(), &crate::node::params(), &Patch::Merge(&patch)).await {
            Ok(_) => self.last_status = Some(status),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => tracing::warn!(pod = %full_name(pod), error = %e, "updating pod status failed"),
        }
    }

    fn container_status(&self, c: &Container, rec: Option<&Record>, init: bool) -> Value {
        let runtime = &self.kubelet.runtime;
        let empty = Record::default();
        let rec = rec.unwrap_or(&empty);
        let observed = rec.id.as_deref().and_then(|id| runtime.state(id).or_else(|| rec.final_state.clone()).map(|s| (id, s)));
        let state = match observed {
            _ if rec.waiting.is_some() && rec.id.is_none() || rec.backoff_until.is_some() && rec.waiting.is_some() => {
                let (reason, message) = rec.waiting.clone().unwrap_or_default();
                let mut w = json!({"reason": reason});
                if !message.is_empty() {
                    w["message"] = json!(message);
                }
                json!({"waiting": w})
            }
            Some((_, ContainerState::Running { started_at, .. })) => json!({"running": {"startedAt": rfc3339(&started_at)}}),
            Some((id, s @ ContainerState::Exited { .. })) => json!({"terminated": terminated_json(&s, id, rec.killed_for.clone())["terminated"]}),
            _ => json!({"waiting": {"reason": "ContainerCreating"}}),
        };
        let running = state.get("running").is_some();
        let mut v = json!({
            "name": c.name,
            "image": c.image.clone().unwrap_or_default(),
            "imageID": rec.image.as_ref().map(|i| i.repo_digest.clone()).or_else(|| rec.image_id.clone()).unwrap_or_default(),
            "restartCount": rec.restart_count,
            "ready": running && rec.ready && !init,
            "started": running && rec.started,
            "state": state,
            "lastState": rec.last_terminated.clone().unwrap_or(json!({})),
        });
        if let Some(id) = &rec.id {
            v["containerID"] = json!(format!("krust://{id}"));
        }
        if init {
            let done = rec.id.as_deref().and_then(|id| runtime.state(id)).or_else(|| rec.final_state.clone());
            v["ready"] = json!(matches!(done, Some(ContainerState::Exited { exit_code: 0, .. })));
        }
        v
    }

    fn status(&self, pod: &Pod) -> Value {
        let Some(spec) = pod.spec.as_ref() else { return json!({}) };
        let init_statuses: Vec<Value> = spec.init_containers.iter().flatten().map(|c| self.container_status(c, self.init.get(&c.name), true)).collect();
        let statuses: Vec<Value> = spec.containers.iter().map(|c| self.container_status(c, self.main.get(&c.name), false)).collect();
        let initialized = init_statuses.iter().all(|s| s["state"]["terminated"]["exitCode"] == 0);
        let init_failed = init_statuses.iter().any(|s| s["state"]["terminated"]["exitCode"].as_i64().is_some_and(|c| c != 0)) && restart_policy(pod) == "Never";
        let all_ready = statuses.iter().all(|s| s["ready"] == true);
        let any_running = statuses.iter().any(|s| s["state"].get("running").is_some());
        let terminated: Vec<i64> = statuses.iter().filter_map(|s| s["state"]["terminated"]["exitCode"].as_i64()).collect();
        let all_terminated = terminated.len() == statuses.len() && !statuses.is_empty();
        let phase = if init_failed {
            "Failed"
        } else if !initialized {
            "Pending"
        } else if self.terminal || (all_terminated && restart_policy(pod) != "Always" && (restart_policy(pod) == "Never" || terminated.iter().all(|c| *c == 0))) {
            if terminated.iter().all(|c| *c == 0) { "Succeeded" } else { "Failed" }
        } else if any_running || statuses.iter().any(|s| s["restartCount"].as_i64().unwrap_or(0) > 0 || s["state"].get("terminated").is_some()) {
            "Running"
        } else {
            "Pending"
        };
        let gates_ok = spec.readiness_gates.iter().flatten().all(|g| {
            pod.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|cs| cs.iter().any(|c| c.type_ == g.condition_type && c.status == "True"))
        });
        let ready = all_ready && gates_ok && phase == "Running";
        let previous: Vec<Value> = pod.status.as_ref().and_then(|s| s.conditions.as_ref()).map(|cs| cs.iter().filter_map(|c| serde_json::to_value(c).ok()).collect()).unwrap_or_default();
        let condition = |type_: &str, ok: bool, reason: Option<&str>| {
            let status = if ok { "True" } else { "False" };
            let since = previous
                .iter()
                .find(|c| c["type"] == type_ && c["status"] == status)
                .map(|c| c["lastTransitionTime"].clone())
                .unwrap_or_else(|| json!(crate::node::now_rfc3339()));
            let mut c = json!({"type": type_, "status": status, "lastProbeTime": null, "lastTransitionTime": since});
            if let Some(r) = reason.filter(|_| !ok) {
                c["reason"] = json!(r);
            }
            c
        };
        let ours = ["PodReadyToStartContainers", "Initialized", "ContainersReady", "Ready", "PodScheduled"];
        let mut conditions: Vec<Value> = previous.iter().filter(|c| !ours.contains(&c["type"].as_str().unwrap_or_default())).cloned().collect();
        let sandbox_ok = self.sandbox.is_some();
        let not_ready_reason = if phase == "Succeeded" || phase == "Failed" { "PodCompleted" } else { "ContainersNotReady" };
        conditions.push(condition("PodReadyToStartContainers", sandbox_ok, None));
        conditions.push(condition("Initialized", initialized, Some(if phase == "Succeeded" || phase == "Failed" { "PodCompleted" } else { "ContainersNotInitialized" })));
        conditions.push(condition("Ready", ready, Some(not_ready_reason)));
        conditions.push(condition("ContainersReady", all_ready && phase == "Running", Some(not_ready_reason)));
        conditions.push(condition("PodScheduled", true, None));
        let (host_ip, pod_ip) = self.ips();
        let mut status = json!({
            "phase": phase,
            "conditions": conditions,
            "hostIP": host_ip,
            "hostIPs": [{"ip": host_ip}],
            "startTime": self.start_time,
            "containerStatuses": statuses,
            "qosClass": qos_class(pod),
        });
        if !init_statuses.is_empty() {
            status["initContainerStatuses"] = json!(init_statuses);
        }
        if !pod_ip.is_empty() {
            status["podIP"] = json!(pod_ip);
            status["podIPs"] = json!([{"ip": pod_ip}]);
        }
        if let Some(message) = &self.sandbox_error {
            status["message"] = json!(message);
        }
        status
    }
}

enum Step {
    /// Nothing more to do now (init: completed successfully).
    Done,
    /// Starting, running, or backing off.
    Busy,
    /// An init container failed for good.
    Failed,
}

fn is_init(spec: &k8s_openapi::api::core::v1::PodSpec, name: &str) -> bool {
    spec.init_containers.iter().flatten().any(|c| c.name == name)
}

fn failure_text(o: &Outcome) -> String {
    match o {
        Outcome::Success => String::new(),
        Outcome::Failure(m) => m.clone(),
    }
}

fn rfc3339(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// `{"terminated": {...}}` for an exited instance.
fn terminated_json(s: &ContainerState, id: &str, killed_for: Option<String>) -> Value {
    match s {
        ContainerState::Exited { exit_code, signal, started_at, finished_at, reason } => {
            let mut t = json!({
                "exitCode": exit_code,
                "reason": reason,
                "startedAt": rfc3339(started_at),
                "finishedAt": rfc3339(finished_at),
                "containerID": format!("krust://{id}"),
            });
            if let Some(sig) = signal {
                t["signal"] = json!(sig);
            }
            if let Some(why) = killed_for {
                t["message"] = json!(format!("killed: {why}"));
            }
            json!({"terminated": t})
        }
        _ => json!({}),
    }
}

/// Upstream's QoS classes: Guaranteed when every container's limits equal its requests
/// for cpu and memory, BestEffort when none has any, Burstable otherwise.
pub fn qos_class(pod: &Pod) -> &'static str {
    let Some(spec) = pod.spec.as_ref() else { return "BestEffort" };
    let containers: Vec<&Container> = spec.containers.iter().chain(spec.init_containers.iter().flatten()).collect();
    let mut any = false;
    let mut guaranteed = true;
    for c in containers {
        let r = c.resources.as_ref();
        let limits = r.and_then(|r| r.limits.clone()).unwrap_or_default();
        let requests = r.and_then(|r| r.requests.clone()).unwrap_or_default();
        for name in ["cpu", "memory"] {
            let l = limits.get(name);
            let q = requests.get(name).or(l);
            any |= l.is_some() || q.is_some();
            if l.is_none() || l.map(|x| &x.0) != q.map(|x| &x.0) {
                guaranteed = false;
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// The services of the pod's namespace (and the `kubernetes` one) as environment variables.
pub async fn list_services(client: &kube::Client, namespace: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for ns in [namespace, "default"] {
        let api: Api<Service> = Api::namespaced(client.clone(), ns);
        if let Ok(list) = api.list(&ListParams::default()).await {
            for s in list.items {
                if ns == "default" && namespace != "default" && s.metadata.name.as_deref() != Some("kubernetes") {
                    continue;
                }
                if let Ok(v) = serde_json::to_value(&s) {
                    out.push(v);
                }
            }
        }
        if namespace == "default" {
            break;
        }
    }
    out
}

pub async fn get_opt<K>(api: Api<K>, name: &str) -> Result<Option<K>, kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.get(name).await {
        Ok(o) => Ok(Some(o)),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
        Err(e) => Err(e),
    }
}

pub type Cm = ConfigMap;
pub type Sec = Secret;
