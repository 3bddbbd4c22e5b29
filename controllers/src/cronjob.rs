//! The CronJob controller (upstream's `cronjob` controller, the v2 one).
//!
//! A `Controller` over CronJobs that `.owns(...)` Jobs. Each reconcile reads the CronJob and
//! lists its namespace's Jobs live, keeps those it controls, and:
//! - updates `status.active` (finished or vanished Jobs leave it, with a `SawCompletedJob`
//!   event; an unfinished Job it controls joins it) and `status.lastSuccessfulTime`;
//! - deletes finished Jobs beyond `successfulJobsHistoryLimit` (default 3) and
//!   `failedJobsHistoryLimit` (default 1), oldest first, with Background propagation;
//! - unless suspended or being deleted, finds the most recent schedule time not yet run
//!   (after `status.lastScheduleTime`, else the creation time, and within
//!   `startingDeadlineSeconds`), in `spec.timeZone` (IANA, default UTC); a time too late for
//!   the starting deadline is skipped (`MissSchedule`); `concurrencyPolicy` Forbid skips
//!   while a Job is active (`JobAlreadyActive`, retried while within the deadline), Replace
//!   deletes the active Jobs first; then creates the Job `<cronjob>-<minutes since epoch>`
//!   from `jobTemplate` with the `batch.kubernetes.io/cronjob-scheduled-timestamp`
//!   annotation and a controller ownerReference, and records it in `status.active` and
//!   `status.lastScheduleTime`;
//! - requeues itself for the next schedule time (plus upstream's 100 ms).
//!
//! Schedules are standard 5-field cron (names of months and days, ranges, steps, `?`) and
//! the `@yearly`/`@annually`/`@monthly`/`@weekly`/`@daily`/`@midnight`/`@hourly` macros,
//! parsed by `croner` and evaluated in the time zone by `chrono-tz`; a `TZ=`/`CRON_TZ=`
//! prefix (accepted on old objects by upstream) names the zone too. The schedule logic takes
//! the current time as an argument, so it is unit-tested without waiting.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use futures::StreamExt;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use kube::api::{Api, DeleteParams, ListParams, PostParams, PropagationPolicy};
use kube::runtime::controller::Action;
use kube::runtime::{watcher, Controller};
use kube::ResourceExt;
use serde_json::{json, Value};

use crate::job::parse_time;
use crate::podutil::{self, controller_of};
use crate::Ctx;

const MANAGER: &str = "cronjob-controller";
pub const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
const RETRY: Duration = Duration::from_secs(2);
/// Upstream's `nextScheduleDelta`.
const NEXT_DELTA: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0} of cronjob {1}: {2}")]
    Api(&'static str, String, #[source] kube::Error),
}

/// A parsed schedule in its time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: croner::Cron,
    tz: Tz,
}

/// Parses a CronJob schedule in `time_zone` (UTC when `None`).
pub fn parse_schedule(schedule: &str, time_zone: Option<&str>) -> Result<Schedule, String> {
    let mut spec = schedule.trim();
    let mut zone = time_zone.map(str::to_string);
    for prefix in ["CRON_TZ=", "TZ="] {
        if let Some(rest) = spec.strip_prefix(prefix) {
            let (z, r) = rest.split_once(char::is_whitespace).ok_or_else(|| format!("provided bad spec {schedule:?}"))?;
            zone.get_or_insert_with(|| z.to_string());
            spec = r.trim();
        }
    }
    let tz = match zone.as_deref() {
        None | Some("") | Some("UTC") | Some("Etc/UTC") => Tz::UTC,
        Some("Local") => return Err("unknown time zone Local".into()),
        Some(z) => Tz::from_str(z).map_err(|_| format!("unknown time zone {z}"))?,
    };
    let spec = match spec.to_ascii_lowercase().as_str() {
        "@midnight" => "0 0 * * *".to_string(),
        s if s.starts_with("@every") => return Err(format!("unsupported descriptor: {spec}")),
        _ => spec.to_string(),
    };
    if !spec.starts_with('@') && spec.split_whitespace().count() != 5 {
        return Err(format!("expected exactly 5 fields, found {}: {spec:?}", spec.split_whitespace().count()));
    }
    let parser = croner::parser::CronParser::builder().seconds(croner::parser::Seconds::Disallowed).year(croner::parser::Year::Disallowed).build();
    let cron = parser.parse(&spec).map_err(|e| e.to_string())?;
    Ok(Schedule { cron, tz })
}

impl Schedule {
    /// The first schedule time strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.find_next_occurrence(&t.with_timezone(&self.tz), false).ok().map(|t| t.with_timezone(&Utc))
    }

    /// The latest schedule time in `(earliest, now]` and how many there are (counted up to
    /// 101, enough for upstream's "too many missed start times" warning).
    pub fn most_recent(&self, earliest: DateTime<Utc>, now: DateTime<Utc>) -> (Option<DateTime<Utc>>, usize) {
        let Some(latest) = self.cron.find_previous_occurrence(&now.with_timezone(&self.tz), true).ok().map(|t| t.with_timezone(&Utc)) else {
            return (None, 0);
        };
        if latest <= earliest {
            return (None, 0);
        }
        let mut count = 0;
        let mut t = earliest;
        while count <= 100 {
            match self.next_after(t) {
                Some(n) if n <= now => {
                    count += 1;
                    t = n;
                }
                _ => break,
            }
        }
        (Some(latest), count)
    }

    /// `t` as RFC 3339 in the schedule's zone (the scheduled-timestamp annotation).
    pub fn format(&self, t: DateTime<Utc>) -> String {
        self.tz.from_utc_datetime(&t.naive_utc()).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    }
}

/// The name of the Job scheduled at `t` (upstream's `getJobName`: minutes since the epoch).
pub fn job_name(cronjob: &str, t: DateTime<Utc>) -> String {
    format!("{cronjob}-{}", t.timestamp().div_euclid(60))
}

pub async fn run(ctx: Arc<Ctx>) -> Result<(), crate::Error> {
    let cronjobs: Api<CronJob> = Api::all(ctx.client.clone());
    let jobs: Api<Job> = Api::all(ctx.client.clone());
    Controller::new(cronjobs, watcher::Config::default())
        .owns(jobs, watcher::Config::default())
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "cronjob reconcile failed");
            }
        })
        .await;
    Ok(())
}

fn error_policy(cj: Arc<CronJob>, err: &Error, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!(cronjob = %cj.name_any(), error = %err, "cronjob sync will be retried");
    Action::requeue(RETRY)
}

/// The Job's terminal condition ("Complete" or "Failed"), if it finished.
fn finished(job: &Job) -> Option<&str> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        .map(|c| c.type_.as_str())
}

fn job_ref(job: &Job) -> Value {
    json!({"apiVersion": "batch/v1", "kind": "Job", "name": job.name_any(), "namespace": job.namespace(),
           "uid": job.uid(), "resourceVersion": job.resource_version()})
}

fn time_of(t: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>) -> i64 {
    t.map_or(0, |t| t.0.as_second())
}

fn utc(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).unwrap_or_default()
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The Job to create for the time `scheduled` (upstream's `getJobFromTemplate2`).
pub fn job_from_template(cj: &CronJob, sched: &Schedule, scheduled: DateTime<Utc>) -> Job {
    let template = cj.spec.as_ref().map(|s| s.job_template.clone()).unwrap_or_default();
    let tmeta = template.metadata.unwrap_or_default();
    let mut annotations = tmeta.annotations.unwrap_or_default();
    annotations.insert(SCHEDULED_TIMESTAMP.into(), sched.format(scheduled));
    let mut job = Job { spec: template.spec, ..Default::default() };
    job.metadata.name = Some(job_name(&cj.name_any(), scheduled));
    job.metadata.namespace = cj.namespace();
    job.metadata.labels = tmeta.labels;
    job.metadata.annotations = Some(annotations);
    job.metadata.owner_references = Some(vec![podutil::controller_ref(cj)]);
    job
}

async fn reconcile(obj: Arc<CronJob>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let name = obj.name_any();
    let ns = obj.namespace().unwrap_or_default();
    let cronjobs: Api<CronJob> = Api::namespaced(ctx.client.clone(), &ns);
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let cj = match cronjobs.get_opt(&name).await.map_err(|e| Error::Api("reading", name.clone(), e))? {
        Some(c) if c.uid() == obj.uid() => c,
        _ => return Ok(Action::await_change()),
    };
    let uid = cj.uid().unwrap_or_default();
    let spec = cj.spec.clone().unwrap_or_default();
    let all = jobs.list(&ListParams::default()).await.map_err(|e| Error::Api("listing the jobs", name.clone(), e))?.items;
    let children: Vec<Job> = all.into_iter().filter(|j| controller_of(j.owner_references()).is_some_and(|r| r.uid == uid)).collect();

    let old = serde_json::to_value(&cj.status).unwrap_or_default();
    let old_active: Vec<Value> = old["active"].as_array().cloned().unwrap_or_default();
    let mut active: Vec<Value> = Vec::new();
    for r in &old_active {
        match children.iter().find(|j| j.uid().as_deref() == r["uid"].as_str()) {
            Some(j) if finished(j).is_some() => {
                let note = format!("Saw completed job: {}, condition: {}", j.name_any(), finished(j).unwrap_or_default());
                podutil::event(&ctx, &cj, false, "SawCompletedJob", "Completed", note).await;
            }
            Some(_) => active.push(r.clone()),
            None => {}
        }
    }
    for j in children.iter().filter(|j| finished(j).is_none()) {
        if !active.iter().any(|r| r["uid"].as_str() == j.uid().as_deref()) {
            active.push(job_ref(j));
        }
    }
    let mut last_success = parse_time(&old["lastSuccessfulTime"]);
    for j in children.iter().filter(|j| finished(j) == Some("Complete")) {
        let done = time_of(j.status.as_ref().and_then(|s| s.completion_time.as_ref()));
        if done > 0 && last_success.is_none_or(|l| done > l) {
            last_success = Some(done);
        }
    }
    let mut last_schedule = parse_time(&old["lastScheduleTime"]);

    // History limits: the oldest finished Jobs beyond them go.
    for (kind, limit) in [("Complete", spec.successful_jobs_history_limit.unwrap_or(3)), ("Failed", spec.failed_jobs_history_limit.unwrap_or(1))] {
        let mut done: Vec<&Job> = children.iter().filter(|j| finished(j) == Some(kind) && j.metadata.deletion_timestamp.is_none()).collect();
        let excess = done.len().saturating_sub(limit.max(0) as usize);
        done.sort_by_key(|j| (time_of(j.status.as_ref().and_then(|s| s.start_time.as_ref())), time_of(j.metadata.creation_timestamp.as_ref())));
        for j in done.into_iter().take(excess) {
            delete_job(&ctx, &cj, &jobs, j).await;
        }
    }

    let now = Utc::now();
    let mut requeue: Option<Duration> = None;
    if cj.metadata.deletion_timestamp.is_none() && !spec.suspend.unwrap_or(false) {
        match parse_schedule(&spec.schedule, spec.time_zone.as_deref()) {
            Err(e) => {
                let (reason, note) = if e.starts_with("unknown time zone") {
                    ("UnknownTimeZone", format!("invalid timeZone: {:?}: {e}", spec.time_zone.as_deref().unwrap_or_default()))
                } else {
                    ("UnparseableSchedule", format!("unparseable schedule: {:?} : {e}", spec.schedule))
                };
                podutil::event(&ctx, &cj, true, reason, "Schedule", note).await;
            }
            Ok(sched) => {
                let created = cj.metadata.creation_timestamp.as_ref().map_or(now.timestamp(), |t| t.0.as_second());
                let mut earliest = utc(last_schedule.unwrap_or(created));
                if let Some(d) = spec.starting_deadline_seconds {
                    earliest = earliest.max(now - chrono::Duration::seconds(d));
                }
                if let Some(next) = sched.next_after(now) {
                    requeue = Some((next - now).to_std().unwrap_or_default() + NEXT_DELTA);
                }
                let (due, missed) = sched.most_recent(earliest, now);
                if missed > 100 {
                    let note = format!("too many missed start times: {missed}. Set or decrease .spec.startingDeadlineSeconds or check clock skew");
                    podutil::event(&ctx, &cj, true, "TooManyMissedTimes", "Schedule", note).await;
                }
                if let Some(t) = due {
                    let too_late = spec.starting_deadline_seconds.is_some_and(|d| t + chrono::Duration::seconds(d) < now);
                    let policy = spec.concurrency_policy.as_deref().unwrap_or("Allow");
                    if too_late {
                        let note = format!("Missed scheduled time to start a job: {}", sched.format(t));
                        podutil::event(&ctx, &cj, true, "MissSchedule", "Schedule", note).await;
                    } else if policy == "Forbid" && !active.is_empty() {
                        let note = "Not starting job because prior execution is running and concurrency policy is Forbid".to_string();
                        podutil::event(&ctx, &cj, false, "JobAlreadyActive", "Schedule", note).await;
                    } else {
                        if policy == "Replace" {
                            for r in std::mem::take(&mut active) {
                                if let Some(j) = children.iter().find(|j| j.uid().as_deref() == r["uid"].as_str()) {
                                    delete_job(&ctx, &cj, &jobs, j).await;
                                }
                            }
                        }
                        let job = job_from_template(&cj, &sched, t);
                        let pp = PostParams { field_manager: Some(MANAGER.into()), ..Default::default() };
                        match jobs.create(&pp, &job).await {
                            Ok(j) => {
                                podutil::event(&ctx, &cj, false, "SuccessfulCreate", "Create", format!("Created job {}", j.name_any())).await;
                                active.push(job_ref(&j));
                                last_schedule = Some(t.timestamp());
                            }
                            Err(kube::Error::Api(s)) if s.code == 409 => {
                                // Created before (say, by a pass whose status write failed).
                                let existing = jobs.get_opt(&job.name_any()).await.map_err(|e| Error::Api("reading a job", name.clone(), e))?;
                                if let Some(j) = existing.filter(|j| controller_of(j.owner_references()).is_some_and(|r| r.uid == uid)) {
                                    if finished(&j).is_none() && !active.iter().any(|r| r["uid"].as_str() == j.uid().as_deref()) {
                                        active.push(job_ref(&j));
                                    }
                                    last_schedule = Some(t.timestamp());
                                }
                            }
                            Err(e) => {
                                podutil::event(&ctx, &cj, true, "FailedCreate", "Create", format!("Error creating job: {e}")).await;
                                return Err(Error::Api("creating a job", name, e));
                            }
                        }
                    }
                }
            }
        }
    }

    let new = json!({
        "active": if active.is_empty() { Value::Null } else { json!(active) },
        "lastScheduleTime": last_schedule.map(|t| rfc3339(utc(t))),
        "lastSuccessfulTime": last_success.map(|t| rfc3339(utc(t))),
    });
    let old_fields = json!({
        "active": if old_active.is_empty() { Value::Null } else { json!(old_active) },
        "lastScheduleTime": old["lastScheduleTime"], "lastSuccessfulTime": old["lastSuccessfulTime"],
    });
    if new != old_fields {
        crate::writes::update(&cronjobs, &name, MANAGER, crate::writes::Part::Status, &json!({"status": new}))
            .await
            .map_err(|e| Error::Api("updating the status", name.clone(), e))?;
    }
    Ok(requeue.map_or(Action::await_change(), Action::requeue))
}

async fn delete_job(ctx: &Ctx, cj: &CronJob, jobs: &Api<Job>, job: &Job) {
    let dp = DeleteParams { propagation_policy: Some(PropagationPolicy::Background), ..Default::default() };
    match jobs.delete(&job.name_any(), &dp).await {
        Ok(_) => podutil::event(ctx, cj, false, "SuccessfulDelete", "Delete", format!("Deleted job {}", job.name_any())).await,
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => podutil::event(ctx, cj, true, "FailedDelete", "Delete", format!("Deleted job: {e}")).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn schedules_in_a_time_zone() {
        // 09:00 in New York: 14:00 UTC in winter, 13:00 UTC once DST starts (2024-03-10).
        let s = parse_schedule("0 9 * * *", Some("America/New_York")).unwrap();
        assert_eq!(s.next_after(at("2024-03-08T15:00:00Z")), Some(at("2024-03-09T14:00:00Z")));
        assert_eq!(s.next_after(at("2024-03-09T15:00:00Z")), Some(at("2024-03-10T13:00:00Z")));
        assert_eq!(s.format(at("2024-03-10T13:00:00Z")), "2024-03-10T09:00:00-04:00");
        // The same schedule in UTC (the default).
        let u = parse_schedule("0 9 * * *", None).unwrap();
        assert_eq!(u.next_after(at("2024-03-09T15:00:00Z")), Some(at("2024-03-10T09:00:00Z")));
        assert_eq!(u.format(at("2024-03-10T09:00:00Z")), "2024-03-10T09:00:00Z");
        // A TZ= prefix names the zone as well.
        let t = parse_schedule("CRON_TZ=Asia/Tokyo 30 8 * * *", None).unwrap();
        assert_eq!(t.next_after(at("2024-01-01T00:00:00Z")), Some(at("2024-01-01T23:30:00Z")));
    }

    #[test]
    fn macros_names_and_errors() {
        let from = at("2024-05-15T10:20:30Z");
        let next = |s: &str| parse_schedule(s, None).unwrap().next_after(from).unwrap();
        assert_eq!(next("@hourly"), at("2024-05-15T11:00:00Z"));
        assert_eq!(next("@daily"), at("2024-05-16T00:00:00Z"));
        assert_eq!(next("@midnight"), at("2024-05-16T00:00:00Z"));
        assert_eq!(next("@weekly"), at("2024-05-19T00:00:00Z"));
        assert_eq!(next("@monthly"), at("2024-06-01T00:00:00Z"));
        assert_eq!(next("@yearly"), at("2025-01-01T00:00:00Z"));
        assert_eq!(next("*/15 * * * *"), at("2024-05-15T10:30:00Z"));
        assert_eq!(next("0 0 * * MON-FRI"), at("2024-05-16T00:00:00Z"));
        assert_eq!(next("0 0 1 JAN ?"), at("2025-01-01T00:00:00Z"));
        // Day of month and day of week both restricted: either matches (cron's OR).
        assert_eq!(next("0 0 1 * SUN"), at("2024-05-19T00:00:00Z"));
        assert!(parse_schedule("* * * *", None).is_err());
        assert!(parse_schedule("0 * * * * *", None).is_err());
        assert!(parse_schedule("61 * * * *", None).is_err());
        assert!(parse_schedule("@every 1m", None).is_err());
        assert!(parse_schedule("* * * * *", Some("Mars/Olympus")).unwrap_err().starts_with("unknown time zone"));
    }

    #[test]
    fn most_recent_unmet_time() {
        let s = parse_schedule("*/5 * * * *", None).unwrap();
        let now = at("2024-05-15T10:22:00Z");
        assert_eq!(s.most_recent(at("2024-05-15T10:20:00Z"), now), (None, 0));
        assert_eq!(s.most_recent(at("2024-05-15T10:19:59Z"), now), (Some(at("2024-05-15T10:20:00Z")), 1));
        assert_eq!(s.most_recent(at("2024-05-15T10:00:00Z"), now), (Some(at("2024-05-15T10:20:00Z")), 4));
        // Exactly on a schedule time counts.
        assert_eq!(s.most_recent(at("2024-05-15T10:00:00Z"), at("2024-05-15T10:25:00Z")).0, Some(at("2024-05-15T10:25:00Z")));
        // Many missed times are counted up to 101.
        assert_eq!(s.most_recent(at("2024-05-01T00:00:00Z"), now).1, 101);
        assert_eq!(job_name("backup", at("2024-05-15T10:20:00Z")), "backup-28596140");
    }

    #[test]
    fn jobs_from_the_template() {
        let cj: CronJob = serde_json::from_value(json!({
            "metadata": {"name": "backup", "namespace": "ops", "uid": "u-9"},
            "spec": {"schedule": "0 9 * * *", "timeZone": "Europe/Paris",
                     "jobTemplate": {"metadata": {"labels": {"team": "db"}}, "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}}}
        }))
        .unwrap();
        let s = parse_schedule("0 9 * * *", Some("Europe/Paris")).unwrap();
        let job = job_from_template(&cj, &s, at("2024-05-15T07:00:00Z"));
        assert_eq!(job.name_any(), "backup-28595940");
        assert_eq!(job.annotations()[SCHEDULED_TIMESTAMP], "2024-05-15T09:00:00+02:00");
        assert_eq!(job.labels()["team"], "db");
        let oref = &job.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!((oref.kind.as_str(), oref.name.as_str(), oref.controller), ("CronJob", "backup", Some(true)));
    }
}
