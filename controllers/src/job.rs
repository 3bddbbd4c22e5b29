//! The Job controller (upstream's `job` controller), and beside it the TTL-after-finished
//! controller (upstream's `ttl-after-finished`, [`run_ttl_after_finished`]), which runs as
//! its own controller under its own service account.
//!
//! A `Controller` over Jobs that `.owns(...)` pods. Each reconcile reads the Job and lists
//! the namespace's pods live, keeps those the Job controls, and then:
//! - **counts finished pods** the way upstream does with the `batch.kubernetes.io/job-tracking`
//!   finalizer, so no pod is counted twice or lost: a finished pod (Succeeded, Failed, or
//!   deleted before finishing: failed) still carrying the finalizer is first recorded by uid
//!   in `status.uncountedTerminatedPods` (a status write guarded by the Job's
//!   resourceVersion), then loses its finalizer, and only then moves into
//!   `status.succeeded`/`status.failed`; a uid whose pod no longer has the finalizer (or is
//!   gone) is moved once and forgotten;
//! - **decides the outcome**: more failures than `backoffLimit` (default 6; with
//!   `restartPolicy: OnFailure` container restarts count too) gives `FailureTarget` with
//!   reason `BackoffLimitExceeded`, running past `activeDeadlineSeconds` gives
//!   `DeadlineExceeded`; enough successes (`completions`, or with `completions` unset any
//!   success once no pod is active) give `SuccessCriteriaMet`. A Job with such a target
//!   condition deletes its active pods and, once every pod is counted, gets the terminal
//!   `Failed` or `Complete` condition (and `completionTime`), as upstream 1.31+;
//! - **manages pods**: a suspended Job deletes its active pods (`Suspended` condition); else
//!   it keeps `min(parallelism, completions - succeeded)` pods active (work-queue Jobs:
//!   `parallelism` until one succeeds), replacing failed ones after upstream's exponential
//!   back-off (10 s doubling, at most 6 min). Pods come from the template with the
//!   `batch.kubernetes.io/job-name`/`controller-uid` labels (and the legacy ones), the
//!   tracking finalizer and a controller ownerReference. `completionMode: Indexed` gives
//!   each pod a completion index (`batch.kubernetes.io/job-completion-index` annotation and
//!   label, `JOB_COMPLETION_INDEX` env, hostname `<job>-<index>`) and tracks
//!   `status.completedIndexes`;
//! - writes `status` (active, ready, terminating, succeeded, failed, startTime,
//!   completionTime, conditions, uncountedTerminatedPods, completedIndexes);
//!
//! Pods keeping the finalizer after their Job is gone (deleted with Background propagation,
//! so the garbage collector deletes them afterwards) are released by a second loop watching
//! Job pods, as upstream's orphan-pod handling.
//!
//! Not done: `podFailurePolicy`, `successPolicy`, `backoffLimitPerIndex`/`maxFailedIndexes`,
//! `managedBy`, adopting orphan pods that match a manual selector.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PostParams, Preconditions, PropagationPolicy};
use kube::runtime::controller::Action;
use kube::runtime::reflector::Store;
use kube::runtime::{watcher, Controller, WatchStreamExt};
use kube::ResourceExt;
use serde_json::{json, Value};

use crate::podutil::{self, controller_of};
use crate::Ctx;

const MANAGER: &str = "job-controller";
pub const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";
pub const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";
pub const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";
pub const CONTROLLER_UID_LABEL: &str = "batch.kubernetes.io/controller-uid";
const LEGACY_JOB_NAME_LABEL: &str = "job-name";
const LEGACY_CONTROLLER_UID_LABEL: &str = "controller-uid";
const BURST: usize = 500;
const RETRY: Duration = Duration::from_secs(1);
/// Upstream's `DefaultJobPodFailureBackOff` and `MaxJobPodFailureBackOff`.
const BACKOFF_BASE: i64 = 10;
const BACKOFF_MAX: i64 = 360;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0} of job {1}: {2}")]
    Api(&'static str, String, #[source] kube::Error),
}

pub async fn run(ctx: Arc<Ctx>) -> Result<(), crate::Error> {
    let jobs: Api<Job> = Api::all(ctx.client.clone());
    let pods: Api<Pod> = Api::all(ctx.client.clone());
    let controller = Controller::new(jobs, watcher::Config::default()).owns(pods, watcher::Config::default());
    let orphans = release_orphans(ctx.clone(), controller.store());
    let jobs = controller.run(reconcile, error_policy, ctx).for_each(|res| async move {
        if let Err(e) = res {
            tracing::debug!(error = %e, "job reconcile failed");
        }
    });
    tokio::join!(jobs, orphans);
    Ok(())
}

/// Upstream's ttl-after-finished controller (its own service account, which may delete Jobs;
/// the Job controller's may not): deletes a finished Job `ttlSecondsAfterFinished` after it
/// finished, with Background propagation.
pub async fn run_ttl_after_finished(ctx: Arc<Ctx>) -> Result<(), crate::Error> {
    let jobs: Api<Job> = Api::all(ctx.client.clone());
    Controller::new(jobs, watcher::Config::default())
        .run(expire, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "ttl-after-finished sync failed");
            }
        })
        .await;
    Ok(())
}

/// Seconds until `job` expires, if it has finished and has a TTL.
fn expires_in(job: &Job, now: i64) -> Option<i64> {
    let ttl = job.spec.as_ref()?.ttl_seconds_after_finished?;
    let (_, at) = finished_at(&serde_json::to_value(&job.status).unwrap_or_default())?;
    Some(at + i64::from(ttl) - now)
}

async fn expire(obj: Arc<Job>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if obj.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let name = obj.name_any();
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    match expires_in(&obj, podutil::now_secs()) {
        None => return Ok(Action::await_change()),
        Some(left) if left > 0 => return Ok(Action::requeue(Duration::from_secs(left as u64))),
        Some(_) => {}
    }
    // As upstream: read the Job live before deleting it (its TTL may have changed).
    let live = jobs.get_opt(&name).await.map_err(|e| Error::Api("reading", name.clone(), e))?;
    let Some(job) = live.filter(|j| j.uid() == obj.uid()) else { return Ok(Action::await_change()) };
    match expires_in(&job, podutil::now_secs()) {
        Some(left) if left <= 0 => {}
        Some(left) => return Ok(Action::requeue(Duration::from_secs(left as u64))),
        None => return Ok(Action::await_change()),
    }
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        preconditions: Some(Preconditions { uid: job.uid(), resource_version: None }),
        ..Default::default()
    };
    match jobs.delete(&name, &dp).await {
        Ok(_) => tracing::info!(job = %name, "deleted a finished job after its ttlSecondsAfterFinished"),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
        Err(e) => return Err(Error::Api("deleting (ttlSecondsAfterFinished)", name, e)),
    }
    Ok(Action::await_change())
}

fn error_policy(job: Arc<Job>, err: &Error, _ctx: Arc<Ctx>) -> Action {
    tracing::debug!(job = %job.name_any(), error = %err, "job sync will be retried");
    Action::requeue(RETRY)
}

/// Removes the tracking finalizer from pods whose Job is gone (upstream's orphan pods).
async fn release_orphans(ctx: Arc<Ctx>, store: Store<Job>) {
    let pods: Api<Pod> = Api::all(ctx.client.clone());
    let mut events = watcher(pods, watcher::Config::default().labels(CONTROLLER_UID_LABEL)).default_backoff().applied_objects().boxed();
    while let Some(ev) = events.next().await {
        let Ok(pod) = ev else { continue };
        if !has_finalizer(&pod) {
            continue;
        }
        let ns = pod.namespace().unwrap_or_default();
        if let Some(owner) = controller_of(pod.owner_references()).filter(|r| r.kind == "Job") {
            if store.state().iter().any(|j| j.uid().as_deref() == Some(owner.uid.as_str())) {
                continue;
            }
            // The cache may lag behind a new Job: confirm its absence.
            let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
            match jobs.get_opt(&owner.name).await {
                Ok(Some(j)) if j.uid().as_deref() == Some(owner.uid.as_str()) => continue,
                Ok(_) => {}
                Err(_) => continue,
            }
        }
        let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
        if let Err(e) = remove_finalizer(&api, pod).await {
            tracing::debug!(error = %e, "releasing an orphan job pod failed");
        }
    }
}

fn has_finalizer(pod: &Pod) -> bool {
    pod.finalizers().iter().any(|f| f == TRACKING_FINALIZER)
}

/// Removes the tracking finalizer, guarded by the pod's resourceVersion (re-reading the pod
/// on a conflict). A pod already gone is fine.
async fn remove_finalizer(api: &Api<Pod>, mut pod: Pod) -> Result<(), kube::Error> {
    for _ in 0..3 {
        if !has_finalizer(&pod) {
            return Ok(());
        }
        let rest: Vec<&String> = pod.finalizers().iter().filter(|f| *f != TRACKING_FINALIZER).collect();
        let patch = json!({"metadata": {"resourceVersion": pod.resource_version(),
            "finalizers": if rest.is_empty() { Value::Null } else { json!(rest) }}});
        match api.patch(&pod.name_any(), &crate::patch_params(MANAGER), &Patch::Merge(patch)).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
            // Re-read as upstream's lister would: its role has no `get` of pods.
            Err(kube::Error::Api(s)) if s.code == 409 => match crate::writes::lookup(api, &pod.name_any()).await? {
                Some(p) if p.uid() == pod.uid() => pod = p,
                _ => return Ok(()),
            },
            Err(e) => return Err(e),
        }
    }
    Err(kube::Error::Service("the pod kept changing while its finalizer was removed".into()))
}

fn phase(pod: &Pod) -> &str {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or_default()
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(phase(pod), "Succeeded" | "Failed")
}

/// Seconds since the epoch of an RFC 3339 time.
pub(crate) fn parse_time(v: &Value) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(v.as_str()?).ok().map(|t| t.timestamp())
}

fn rfc3339(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0).unwrap_or_default().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The completion index of a pod of an Indexed Job.
fn pod_index(pod: &Pod) -> Option<i32> {
    pod.annotations().get(COMPLETION_INDEX).or_else(|| pod.labels().get(COMPLETION_INDEX)).and_then(|v| v.parse().ok())
}

/// Parses `status.completedIndexes` ("1,3-5").
pub fn parse_indexes(s: &str) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<i32>(), b.parse::<i32>()) {
                    out.extend(a..=b);
                }
            }
            None => out.extend(part.parse::<i32>().ok()),
        }
    }
    out
}

/// Formats indexes as `status.completedIndexes` does: ascending, runs collapsed.
pub fn format_indexes(set: &BTreeSet<i32>) -> String {
    let mut parts = Vec::new();
    let mut iter = set.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end = iter.next().unwrap_or(end);
        }
        parts.push(if start == end { start.to_string() } else { format!("{start}-{end}") });
    }
    parts.join(",")
}

/// The pod to create for `job` (with its completion index when Indexed).
pub fn pod_from_template(job: &Job, index: Option<i32>) -> Pod {
    let name = job.name_any();
    let uid = job.uid().unwrap_or_default();
    let template = job.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
    let tmeta = template.metadata.unwrap_or_default();
    let mut pod = Pod { spec: template.spec, ..Default::default() };
    let mut labels = tmeta.labels.unwrap_or_default();
    for (k, v) in [(JOB_NAME_LABEL, &name), (LEGACY_JOB_NAME_LABEL, &name), (CONTROLLER_UID_LABEL, &uid), (LEGACY_CONTROLLER_UID_LABEL, &uid)] {
        labels.entry(k.to_string()).or_insert_with(|| v.clone());
    }
    let mut annotations = tmeta.annotations.unwrap_or_default();
    let mut finalizers = tmeta.finalizers.unwrap_or_default();
    finalizers.push(TRACKING_FINALIZER.into());
    pod.metadata.generate_name = Some(format!("{name}-"));
    if let Some(i) = index {
        pod.metadata.generate_name = Some(format!("{name}-{i}-"));
        annotations.insert(COMPLETION_INDEX.into(), i.to_string());
        labels.insert(COMPLETION_INDEX.into(), i.to_string());
        if let Some(spec) = pod.spec.as_mut() {
            if spec.hostname.is_none() {
                spec.hostname = Some(format!("{name}-{i}"));
            }
            let env: k8s_openapi::api::core::v1::EnvVar = serde_json::from_value(json!({"name": "JOB_COMPLETION_INDEX",
                "valueFrom": {"fieldRef": {"fieldPath": format!("metadata.annotations['{COMPLETION_INDEX}']")}}}))
            .unwrap_or_default();
            let containers = spec.containers.iter_mut().chain(spec.init_containers.iter_mut().flatten());
            for c in containers {
                let list = c.env.get_or_insert_with(Vec::new);
                if !list.iter().any(|e| e.name == env.name) {
                    list.push(env.clone());
                }
            }
        }
    }
    pod.metadata.labels = Some(labels);
    pod.metadata.annotations = (!annotations.is_empty()).then_some(annotations);
    pod.metadata.finalizers = Some(finalizers);
    pod.metadata.owner_references = Some(vec![podutil::controller_ref(job)]);
    pod
}

fn condition(type_: &str, status: &str, reason: &str, message: &str, now: &str) -> Value {
    json!({"type": type_, "status": status, "reason": reason, "message": message, "lastProbeTime": now, "lastTransitionTime": now})
}

fn find_cond<'a>(conds: &'a [Value], type_: &str) -> Option<&'a Value> {
    conds.iter().find(|c| c["type"] == type_)
}

fn cond_true(conds: &[Value], type_: &str) -> bool {
    find_cond(conds, type_).is_some_and(|c| c["status"] == "True")
}

/// Sets a condition, keeping its transition time when its status does not change.
fn set_cond(conds: &mut Vec<Value>, new: Value) {
    match conds.iter_mut().find(|c| c["type"] == new["type"]) {
        Some(c) if c["status"] == new["status"] && c["reason"] == new["reason"] => {}
        Some(c) => *c = new,
        None => conds.push(new),
    }
}

/// The time the Job finished (its Complete or Failed condition), if it did.
fn finished_at(status: &Value) -> Option<(String, i64)> {
    let conds = status["conditions"].as_array()?;
    let c = conds.iter().find(|c| (c["type"] == "Complete" || c["type"] == "Failed") && c["status"] == "True")?;
    let at = parse_time(&status["completionTime"]).or_else(|| parse_time(&c["lastTransitionTime"])).unwrap_or_else(podutil::now_secs);
    Some((c["type"].as_str().unwrap_or_default().to_string(), at))
}

fn uid_set(v: &Value) -> BTreeSet<String> {
    v.as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect()).unwrap_or_default()
}

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

/// The status fields this controller writes, for comparing and patching.
fn written_fields(st: &Value) -> Value {
    let mut out = serde_json::Map::new();
    for k in ["active", "ready", "terminating", "succeeded", "failed", "startTime", "completionTime", "conditions", "completedIndexes"] {
        out.insert(k.into(), st[k].clone());
    }
    let u = &st["uncountedTerminatedPods"];
    let list = |v: &Value| if v.as_array().is_some_and(|a| !a.is_empty()) { v.clone() } else { Value::Null };
    out.insert("uncountedTerminatedPods".into(), json!({"succeeded": list(&u["succeeded"]), "failed": list(&u["failed"])}));
    Value::Object(out)
}

/// What one reconcile works on: the live Job and its status, written back when it changes.
struct Sync<'a> {
    ctx: &'a Ctx,
    job: Job,
    jobs: Api<Job>,
    pods: Api<Pod>,
    name: String,
    /// The status as last written.
    written: Value,
}

impl Sync<'_> {
    /// Writes `st` if it differs from what is stored, guarded by the Job's resourceVersion.
    async fn write_status(&mut self, st: &Value) -> Result<(), Error> {
        let new = written_fields(st);
        if new == self.written {
            return Ok(());
        }
        let patch = json!({"metadata": {"resourceVersion": self.job.resource_version()}, "status": new});
        self.job = crate::writes::update(&self.jobs, &self.name, MANAGER, crate::writes::Part::Status, &patch)
            .await
            .map_err(|e| Error::Api("updating the status", self.name.clone(), e))?;
        self.written = written_fields(&serde_json::to_value(&self.job.status).unwrap_or_default());
        Ok(())
    }

    async fn delete_pods(&self, victims: &[&Pod]) -> BTreeSet<String> {
        let mut deleted = BTreeSet::new();
        for pod in victims.iter().take(BURST) {
            match self.pods.delete(&pod.name_any(), &DeleteParams::default()).await {
                Ok(_) => {
                    podutil::event(self.ctx, &self.job, false, "SuccessfulDelete", "Delete", format!("Deleted pod: {}", pod.name_any())).await;
                    deleted.insert(pod.uid().unwrap_or_default());
                }
                Err(kube::Error::Api(s)) if s.code == 404 => {
                    deleted.insert(pod.uid().unwrap_or_default());
                }
                Err(e) => {
                    podutil::event(self.ctx, &self.job, true, "FailedDelete", "Delete", format!("Error deleting: {e}")).await;
                }
            }
        }
        deleted
    }

    async fn create_pods(&self, indexes: Vec<Option<i32>>) -> Result<(), Error> {
        let pp = PostParams { field_manager: Some(MANAGER.into()), ..Default::default() };
        for index in indexes.into_iter().take(BURST) {
            match self.pods.create(&pp, &pod_from_template(&self.job, index)).await {
                Ok(p) => podutil::event(self.ctx, &self.job, false, "SuccessfulCreate", "Create", format!("Created pod: {}", p.name_any())).await,
                Err(e) => {
                    podutil::event(self.ctx, &self.job, true, "FailedCreate", "Create", format!("Error creating: {e}")).await;
                    return Err(Error::Api("creating pods", self.name.clone(), e));
                }
            }
        }
        Ok(())
    }
}

/// The sum of container restarts of the Job's pending and running pods (upstream's
/// `pastBackoffLimitOnFailure` input).
fn restarts(pods: &[&Pod]) -> i64 {
    pods.iter()
        .filter(|p| matches!(phase(p), "Running" | "Pending"))
        .filter_map(|p| p.status.as_ref())
        .flat_map(|s| s.container_statuses.iter().flatten().chain(s.init_container_statuses.iter().flatten()))
        .map(|c| i64::from(c.restart_count))
        .sum()
}

/// When the newest failed pod finished (its containers' termination, else now-ish).
fn last_failure(pods: &[Pod]) -> Option<i64> {
    pods.iter()
        .filter(|p| phase(p) == "Failed")
        .filter_map(|p| {
            let s = p.status.as_ref()?;
            let finished = s
                .container_statuses
                .iter()
                .flatten()
                .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref().map(|t| t.0.as_second()))
                .max();
            finished.or_else(|| {
                s.conditions.iter().flatten().filter_map(|c| c.last_transition_time.as_ref().map(|t| t.0.as_second())).max()
            })
        })
        .max()
}

async fn reconcile(obj: Arc<Job>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let name = obj.name_any();
    let ns = obj.namespace().unwrap_or_default();
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    // Read live: counters must never be computed from a stale status.
    let job = match jobs.get_opt(&name).await.map_err(|e| Error::Api("reading", name.clone(), e))? {
        Some(j) if j.uid() == obj.uid() => j,
        _ => return Ok(Action::await_change()),
    };
    let uid = job.uid().unwrap_or_default();
    let all = pods_api.list(&ListParams::default()).await.map_err(|e| Error::Api("listing the pods", name.clone(), e))?.items;
    let pods: Vec<Pod> = all.into_iter().filter(|p| controller_of(p.owner_references()).is_some_and(|r| r.uid == uid)).collect();
    let spec = job.spec.clone().unwrap_or_default();
    let mut st = serde_json::to_value(&job.status).unwrap_or_default();
    if !st.is_object() {
        st = json!({});
    }
    let written = written_fields(&st);
    let mut sync = Sync { ctx: &ctx, job, jobs, pods: pods_api, name: name.clone(), written };
    let now = podutil::now_secs();
    let now_s = rfc3339(now);

    // A finished or deleted Job only lets go of its pods (and, finished, waits for its TTL).
    let finished = finished_at(&st);
    if finished.is_some() || sync.job.metadata.deletion_timestamp.is_some() {
        let mut failed = None;
        for pod in pods.iter().filter(|p| has_finalizer(p)) {
            if let Err(e) = remove_finalizer(&sync.pods, pod.clone()).await {
                failed = Some(e);
            }
        }
        if let Some(e) = failed {
            return Err(Error::Api("removing pod finalizers", name, e));
        }
        if finished.is_some() {
            let active: Vec<&Pod> = pods.iter().filter(|p| podutil::is_active(p)).collect();
            sync.delete_pods(&active).await;
        }
        return Ok(Action::await_change());
    }

    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    let only_failed = spec.pod_replacement_policy.as_deref() == Some("Failed");
    let mut conds: Vec<Value> = st["conditions"].as_array().cloned().unwrap_or_default();
    let finishing = cond_true(&conds, "FailureTarget") || cond_true(&conds, "SuccessCriteriaMet");

    // 1. Record newly finished pods as uncounted (before any finalizer goes).
    let mut unc_s = uid_set(&st["uncountedTerminatedPods"]["succeeded"]);
    let mut unc_f = uid_set(&st["uncountedTerminatedPods"]["failed"]);
    let mut completed = parse_indexes(st["completedIndexes"].as_str().unwrap_or_default());
    let mut newly = false;
    for pod in pods.iter().filter(|p| has_finalizer(p)) {
        let puid = pod.uid().unwrap_or_default();
        if unc_s.contains(&puid) || unc_f.contains(&puid) {
            continue;
        }
        let deleted = pod.metadata.deletion_timestamp.is_some();
        if phase(pod) == "Succeeded" {
            unc_s.insert(puid);
            if let (true, Some(i)) = (indexed, pod_index(pod)) {
                completed.insert(i);
            }
        } else if phase(pod) == "Failed" || (deleted && !only_failed) || finishing && deleted {
            unc_f.insert(puid);
        } else {
            continue;
        }
        newly = true;
    }
    let set_uncounted = |st: &mut Value, s: &BTreeSet<String>, f: &BTreeSet<String>| {
        st["uncountedTerminatedPods"] = json!({"succeeded": s, "failed": f});
    };
    if newly {
        set_uncounted(&mut st, &unc_s, &unc_f);
        if indexed {
            st["completedIndexes"] = json!(format_indexes(&completed));
        }
        sync.write_status(&st).await?;
    }

    // 2. Remove the finalizers of the recorded pods.
    let mut with_finalizer: BTreeSet<String> = pods.iter().filter(|p| has_finalizer(p)).filter_map(|p| p.uid()).collect();
    let mut finalizer_error = None;
    for pod in pods.iter().filter(|p| has_finalizer(p)) {
        let puid = pod.uid().unwrap_or_default();
        if !unc_s.contains(&puid) && !unc_f.contains(&puid) {
            continue;
        }
        match remove_finalizer(&sync.pods, pod.clone()).await {
            Ok(()) => {
                with_finalizer.remove(&puid);
            }
            Err(e) => finalizer_error = Some(e),
        }
    }

    // 3. Move the uids whose pods no longer hold the finalizer into the counters.
    let mut succeeded = int(&st["succeeded"]);
    let mut failed = int(&st["failed"]);
    for (set, counter) in [(&mut unc_s, &mut succeeded), (&mut unc_f, &mut failed)] {
        let done: Vec<String> = set.iter().filter(|u| !with_finalizer.contains(*u)).cloned().collect();
        for u in done {
            set.remove(&u);
            *counter += 1;
        }
    }
    set_uncounted(&mut st, &unc_s, &unc_f);
    let total_succeeded = succeeded + unc_s.len() as i64;
    let total_failed = failed + unc_f.len() as i64;

    // 4. Decide.
    let mut active: Vec<&Pod> = pods.iter().filter(|p| podutil::is_active(p)).collect();
    let parallelism = i64::from(spec.parallelism.unwrap_or(1)).max(0);
    let completions = spec.completions.map(i64::from);
    let backoff_limit = i64::from(spec.backoff_limit.unwrap_or(6));
    let restart_on_failure = spec.template.spec.as_ref().and_then(|s| s.restart_policy.as_deref()) == Some("OnFailure");
    let suspended = spec.suspend.unwrap_or(false);
    let mut requeue: Option<i64> = None;
    let mut start = parse_time(&st["startTime"]);

    if !finishing {
        let past_restarts = restart_on_failure && {
            let r = restarts(&active);
            if backoff_limit == 0 { r > 0 } else { r >= backoff_limit }
        };
        let deadline = spec.active_deadline_seconds.filter(|_| !suspended).and_then(|d| start.map(|s| s + d));
        let succeeded_enough = match completions {
            Some(c) if indexed => completed.len() as i64 >= c,
            Some(c) => total_succeeded >= c,
            None => total_succeeded > 0 && active.is_empty(),
        };
        let failure = if total_failed > backoff_limit || past_restarts {
            Some(("BackoffLimitExceeded", "Job has reached the specified backoff limit"))
        } else if deadline.is_some_and(|d| d <= now) {
            Some(("DeadlineExceeded", "Job was active longer than specified deadline"))
        } else {
            None
        };
        if let Some((reason, message)) = failure {
            set_cond(&mut conds, condition("FailureTarget", "True", reason, message, &now_s));
            podutil::event(&ctx, &sync.job, true, reason, "Failed", message.into()).await;
        } else if succeeded_enough {
            set_cond(&mut conds, condition("SuccessCriteriaMet", "True", "CompletionsReached", "Reached expected number of succeeded pods", &now_s));
        } else if let Some(d) = deadline {
            requeue = Some(d - now);
        }
    }
    let finishing = cond_true(&conds, "FailureTarget") || cond_true(&conds, "SuccessCriteriaMet");

    if finishing {
        // Stop what still runs; once every pod is counted, the terminal condition.
        let deleted = sync.delete_pods(&active).await;
        active.retain(|p| !deleted.contains(&p.uid().unwrap_or_default()));
        if with_finalizer.is_empty() && unc_s.is_empty() && unc_f.is_empty() && active.is_empty() {
            if let Some(t) = find_cond(&conds, "FailureTarget").filter(|c| c["status"] == "True").cloned() {
                let (reason, message) = (t["reason"].as_str().unwrap_or_default(), t["message"].as_str().unwrap_or_default());
                set_cond(&mut conds, condition("Failed", "True", reason, message, &now_s));
            } else {
                set_cond(&mut conds, condition("Complete", "True", "CompletionsReached", "Reached expected number of succeeded pods", &now_s));
                st["completionTime"] = json!(now_s);
                podutil::event(&ctx, &sync.job, false, "Completed", "Completed", "Job completed".into()).await;
            }
        } else if !with_finalizer.is_empty() {
            requeue = Some(1);
        }
    } else if suspended {
        let deleted = sync.delete_pods(&active).await;
        active.retain(|p| !deleted.contains(&p.uid().unwrap_or_default()));
        if !cond_true(&conds, "Suspended") {
            set_cond(&mut conds, condition("Suspended", "True", "JobSuspended", "Job suspended", &now_s));
            podutil::event(&ctx, &sync.job, false, "Suspended", "Suspended", "Job suspended".into()).await;
        }
    } else {
        if cond_true(&conds, "Suspended") {
            set_cond(&mut conds, condition("Suspended", "False", "JobResumed", "Job resumed", &now_s));
            podutil::event(&ctx, &sync.job, false, "Resumed", "Resumed", "Job resumed".into()).await;
            start = Some(now);
        }
        if start.is_none() {
            start = Some(now);
        }
        if let (Some(d), None) = (spec.active_deadline_seconds, requeue) {
            requeue = Some(start.unwrap_or(now) + d - now);
        }
        let terminating = pods.iter().filter(|p| p.metadata.deletion_timestamp.is_some() && !is_terminal(p)).count() as i64;
        let occupied = active.len() as i64 + if only_failed { terminating } else { 0 };
        let want = match completions {
            None if total_succeeded > 0 => active.len() as i64,
            None => parallelism,
            Some(c) if indexed => (c - completed.len() as i64).clamp(0, parallelism),
            Some(c) => (c - total_succeeded).clamp(0, parallelism),
        };
        if occupied < want {
            // Upstream's back-off before replacing failed pods.
            let delay = if total_failed > 0 { (BACKOFF_BASE << (total_failed - 1).min(10)).min(BACKOFF_MAX) } else { 0 };
            let wait = last_failure(&pods).map_or(0, |t| t + delay - now);
            if wait > 0 {
                requeue = Some(requeue.map_or(wait, |r| r.min(wait)));
            } else {
                let n = (want - occupied) as usize;
                let indexes: Vec<Option<i32>> = if indexed {
                    let busy: BTreeSet<i32> = active.iter().filter_map(|p| pod_index(p)).collect();
                    (0..completions.unwrap_or(0) as i32).filter(|i| !completed.contains(i) && !busy.contains(i)).take(n).map(Some).collect()
                } else {
                    vec![None; n]
                };
                sync.create_pods(indexes).await?;
            }
        } else if active.len() as i64 > want {
            let mut victims = active.clone();
            // Least valuable first: not ready, then newest.
            victims.sort_by_key(|p| (podutil::is_ready(p), std::cmp::Reverse(p.metadata.creation_timestamp.as_ref().map_or(0, |t| t.0.as_second()))));
            let deleted = sync.delete_pods(&victims[..(active.len() - want as usize)]).await;
            active.retain(|p| !deleted.contains(&p.uid().unwrap_or_default()));
        }
    }

    // 5. Status. Pods just created show up on the next pass (their creation wakes us).
    let fresh = sync.pods.list(&ListParams::default()).await.map_err(|e| Error::Api("listing the pods", name.clone(), e))?.items;
    let mine: Vec<&Pod> = fresh.iter().filter(|p| controller_of(p.owner_references()).is_some_and(|r| r.uid == uid)).collect();
    let active_now: Vec<&&Pod> = mine.iter().filter(|p| podutil::is_active(p)).collect();
    let nonzero = |n: i64| if n == 0 { Value::Null } else { json!(n) };
    st["active"] = nonzero(active_now.len() as i64);
    st["ready"] = json!(active_now.iter().filter(|p| podutil::is_ready(p)).count());
    st["terminating"] = json!(mine.iter().filter(|p| p.metadata.deletion_timestamp.is_some() && !is_terminal(p)).count());
    st["succeeded"] = nonzero(succeeded);
    st["failed"] = nonzero(failed);
    st["startTime"] = start.map_or(Value::Null, |s| json!(rfc3339(s)));
    st["conditions"] = if conds.is_empty() { Value::Null } else { json!(conds) };
    if indexed {
        st["completedIndexes"] = json!(format_indexes(&completed));
    }
    sync.write_status(&st).await?;

    if let Some(e) = finalizer_error {
        return Err(Error::Api("removing pod finalizers", name, e));
    }
    Ok(match requeue {
        Some(s) => Action::requeue(Duration::from_secs(s.max(1) as u64)),
        None => Action::await_change(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completed_indexes_round_trip() {
        let set = parse_indexes("0,2-4,7");
        assert_eq!(set.iter().copied().collect::<Vec<_>>(), vec![0, 2, 3, 4, 7]);
        assert_eq!(format_indexes(&set), "0,2-4,7");
        assert_eq!(format_indexes(&BTreeSet::new()), "");
        assert_eq!(format_indexes(&[1, 2].into()), "1-2");
    }

    #[test]
    fn pods_from_the_template() {
        let job: Job = serde_json::from_value(json!({
            "metadata": {"name": "pi", "namespace": "default", "uid": "u-1"},
            "spec": {"completionMode": "Indexed", "completions": 3,
                     "template": {"metadata": {"labels": {"app": "pi"}}, "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "perl"}]}}}
        }))
        .unwrap();
        let pod = pod_from_template(&job, Some(2));
        assert_eq!(pod.metadata.generate_name.as_deref(), Some("pi-2-"));
        let labels = pod.labels();
        assert_eq!(labels[JOB_NAME_LABEL], "pi");
        assert_eq!(labels[CONTROLLER_UID_LABEL], "u-1");
        assert_eq!(labels["controller-uid"], "u-1");
        assert_eq!(labels["app"], "pi");
        assert_eq!(labels[COMPLETION_INDEX], "2");
        assert_eq!(pod.annotations()[COMPLETION_INDEX], "2");
        assert_eq!(pod.finalizers(), [TRACKING_FINALIZER.to_string()]);
        let spec = pod.spec.unwrap();
        assert_eq!(spec.hostname.as_deref(), Some("pi-2"));
        assert_eq!(spec.containers[0].env.as_ref().unwrap()[0].name, "JOB_COMPLETION_INDEX");
        let oref = &pod.metadata.owner_references.unwrap()[0];
        assert_eq!((oref.kind.as_str(), oref.controller), ("Job", Some(true)));
    }

    #[test]
    fn conditions_keep_their_transition_time() {
        let mut conds = vec![condition("Suspended", "True", "JobSuspended", "Job suspended", "t1")];
        set_cond(&mut conds, condition("Suspended", "True", "JobSuspended", "Job suspended", "t2"));
        assert_eq!(conds[0]["lastTransitionTime"], "t1");
        set_cond(&mut conds, condition("Suspended", "False", "JobResumed", "Job resumed", "t3"));
        assert_eq!((conds.len(), conds[0]["lastTransitionTime"].clone()), (1, json!("t3")));
        assert!(!cond_true(&conds, "Suspended"));
    }

    #[test]
    fn written_status_shape() {
        let st = json!({"succeeded": 2, "uncountedTerminatedPods": {"succeeded": [], "failed": ["a"]}});
        let w = written_fields(&st);
        assert_eq!(w["uncountedTerminatedPods"], json!({"succeeded": null, "failed": ["a"]}));
        assert_eq!(written_fields(&json!({"uncountedTerminatedPods": {}})), written_fields(&json!({})));
    }
}
