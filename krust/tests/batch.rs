//! The Job and CronJob controllers inside `krust server`, seen through kubectl, with
//! simulated nodes whose pods finish with the exit code their `sim.krust.io/exit-code`
//! annotation asks for (see `sim`).

mod common;
mod sim;

use std::time::{Duration, Instant};

use common::{jsonpath, poll, TestServer};
use sim::{Sim, SimNode};

const WAIT: Duration = Duration::from_secs(60);


/// `reason note` of the events.k8s.io Events about objects of `kind`, one a line.
fn events(server: &TestServer, kind: &str) -> String {
    let path = format!(r#"{{range .items[?(@.regarding.kind=="{kind}")]}}{{.reason}} {{.note}}{{"\n"}}{{end}}"#);
    jsonpath(server, &["get", "events.events.k8s.io"], &path)
}

/// Seconds since the epoch of an RFC 3339 time (through `date`, as `sim` does).
fn epoch(t: &str) -> i64 {
    let out = std::process::Command::new("date").args(["-u", "-d", t, "+%s"]).output().expect("running date");
    common::text(&out.stdout).trim().parse().unwrap_or_else(|_| panic!("not a time: {t}"))
}

fn nodes(server: &TestServer) -> Sim {
    Sim::start(&server.kubeconfig(), vec![SimNode::new("node-a"), SimNode::new("node-b")])
}

/// A Job whose pods exit with `code` after `secs` seconds.
fn job(name: &str, spec: &str, code: &str, secs: &str) -> String {
    format!(
        "apiVersion: batch/v1\nkind: Job\nmetadata: {{name: {name}}}\nspec:\n{spec}  template:\n    metadata: {{annotations: {{sim.krust.io/exit-code: \"{code}\", sim.krust.io/run-seconds: \"{secs}\"}}}}\n    spec:\n      restartPolicy: Never\n      containers: [{{name: c, image: busybox}}]\n"
    )
}

fn wait_condition(server: &TestServer, job: &str, cond: &str) {
    let out = server.kubectl(&["wait", &format!("--for=condition={cond}"), &format!("job/{job}"), "--timeout=60s"]);
    assert!(
        out.status.success(),
        "job/{job} never got {cond}: {}\n{}\n{}",
        common::text(&out.stderr),
        server.kubectl_ok(&["get", "job", job, "-o", "yaml"]),
        server.kubectl_ok(&["get", "pods", "-o", "wide", "--show-labels"])
    );
}

#[test]
fn jobs_run_to_completion() {
    let server = TestServer::start();
    let _sim = nodes(&server);
    server.kubectl_stdin_ok(&["apply", "-f", "-"], &job("work", "  completions: 3\n  parallelism: 2\n", "0", "1"));
    // A suspended Indexed Job, deleted 2 s after it completes.
    server.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &job("indexed", "  completions: 3\n  parallelism: 3\n  completionMode: Indexed\n  suspend: true\n  ttlSecondsAfterFinished: 2\n", "0", "0.5"),
    );

    // Never more than `parallelism` pods running at once.
    let running = || jsonpath(&server, &["get", "pods", "-l", "job-name=work"], r#"{range .items[?(@.status.phase=="Running")]}{.metadata.name}{"\n"}{end}"#).lines().count();
    let complete = || jsonpath(&server, &["get", "job", "work"], r#"{.status.conditions[?(@.type=="Complete")].status}"#) == "True";
    let start = Instant::now();
    let mut most = 0;
    while !complete() && start.elapsed() < WAIT {
        most = most.max(running());
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_condition(&server, "work", "Complete");
    assert!((1..=2).contains(&most), "at most 2 pods should run at once, saw {most}");
    let status = jsonpath(&server, &["get", "job", "work"], "{.status.succeeded} {.status.failed} {.status.active} {.status.ready} {.status.terminating}");
    assert_eq!(status, "3   0 0", "{}", server.kubectl_ok(&["get", "job", "work", "-o", "yaml"]));
    let conds = jsonpath(&server, &["get", "job", "work"], r#"{range .status.conditions[*]}{.type}={.status}/{.reason} {end}"#);
    assert_eq!(conds, "SuccessCriteriaMet=True/CompletionsReached Complete=True/CompletionsReached", "{conds}");
    assert!(!jsonpath(&server, &["get", "job", "work"], "{.status.startTime}").is_empty());
    assert!(!jsonpath(&server, &["get", "job", "work"], "{.status.completionTime}").is_empty());
    assert_eq!(jsonpath(&server, &["get", "job", "work"], "{.status.uncountedTerminatedPods}"), "{}");
    // Three pods succeeded, each labelled, owned by the Job, with the tracking finalizer gone.
    let pods = jsonpath(
        &server,
        &["get", "pods", "-l", "batch.kubernetes.io/job-name=work"],
        r#"{range .items[*]}{.status.phase} {.metadata.labels.controller-uid} {.metadata.ownerReferences[0].kind} {.metadata.finalizers}{"\n"}{end}"#,
    );
    let uid = jsonpath(&server, &["get", "job", "work"], "{.metadata.uid}");
    assert_eq!(pods.lines().count(), 3, "{pods}");
    for line in pods.lines() {
        assert_eq!(line.trim(), format!("Succeeded {uid} Job"), "{pods}");
    }
    // Finished, the Job is left alone: no more status writes.
    let rv = jsonpath(&server, &["get", "job", "work"], "{.metadata.resourceVersion}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(jsonpath(&server, &["get", "job", "work"], "{.metadata.resourceVersion}"), rv, "a finished job keeps being written");
    let table = server.kubectl_ok(&["get", "job", "work"]);
    assert!(table.contains("Complete") && table.contains("3/3"), "{table}");
    let evs = events(&server, "Job");
    assert!(evs.contains("SuccessfulCreate Created pod: work-") && evs.contains("Completed Job completed"), "{evs}");

    // The suspended Job made no pods; resumed, it runs its indexes.
    let suspended = jsonpath(&server, &["get", "job", "indexed"], r#"{.status.conditions[?(@.type=="Suspended")].status}"#);
    assert_eq!(suspended, "True");
    assert_eq!(jsonpath(&server, &["get", "pods", "-l", "job-name=indexed"], "{.items[*].metadata.name}"), "");
    server.kubectl_ok(&["patch", "job", "indexed", "--type=merge", "-p", r#"{"spec":{"suspend":false}}"#]);
    wait_condition(&server, "indexed", "Complete");
    assert_eq!(jsonpath(&server, &["get", "job", "indexed"], "{.status.completedIndexes} {.status.succeeded}"), "0-2 3");
    let resumed = jsonpath(&server, &["get", "job", "indexed"], r#"{.status.conditions[?(@.type=="Suspended")].status}/{.status.conditions[?(@.type=="Suspended")].reason}"#);
    assert_eq!(resumed, "False/JobResumed");
    let indexes = jsonpath(
        &server,
        &["get", "pods", "-l", "job-name=indexed"],
        r#"{range .items[*]}{.metadata.annotations.batch\.kubernetes\.io/job-completion-index}:{.spec.hostname}:{.spec.containers[0].env[0].name} {end}"#,
    );
    let mut seen: Vec<&str> = indexes.split_whitespace().collect();
    seen.sort();
    assert_eq!(seen, ["0:indexed-0:JOB_COMPLETION_INDEX", "1:indexed-1:JOB_COMPLETION_INDEX", "2:indexed-2:JOB_COMPLETION_INDEX"]);
    // ttlSecondsAfterFinished: the Job goes, and its pods with it.
    assert!(
        poll(WAIT, || !server.kubectl(&["get", "job", "indexed"]).status.success()
            && jsonpath(&server, &["get", "pods", "-l", "job-name=indexed"], "{.items[*].metadata.name}").is_empty()),
        "the finished job was not deleted after its TTL: {}",
        server.kubectl_ok(&["get", "jobs,pods"])
    );
    assert!(server.kubectl(&["get", "job", "work"]).status.success(), "a job without a TTL stays");
}

#[test]
fn jobs_fail_on_backoff_limit_and_deadline() {
    let server = TestServer::start();
    let _sim = nodes(&server);
    // Pods that fail at once: the first retry comes after upstream's 10 s back-off.
    server.kubectl_stdin_ok(&["apply", "-f", "-"], &job("flaky", "  backoffLimit: 1\n", "1", "0"));
    // Pods that never finish, in a Job allowed 3 s.
    server.kubectl_stdin_ok(&["apply", "-f", "-"], &job("slow", "  parallelism: 2\n  completions: 4\n  activeDeadlineSeconds: 3\n", "0", "3600"));

    wait_condition(&server, "slow", "Failed");
    let reason = jsonpath(&server, &["get", "job", "slow"], r#"{.status.conditions[?(@.type=="Failed")].reason}|{.status.conditions[?(@.type=="Failed")].message}"#);
    assert_eq!(reason, "DeadlineExceeded|Job was active longer than specified deadline");
    assert_eq!(jsonpath(&server, &["get", "job", "slow"], r#"{.status.conditions[?(@.type=="FailureTarget")].reason}"#), "DeadlineExceeded");
    // Its running pods were deleted (and counted as failed).
    assert_eq!(jsonpath(&server, &["get", "job", "slow"], "{.status.failed} {.status.active} {.status.succeeded}"), "2");
    assert!(
        poll(WAIT, || jsonpath(&server, &["get", "pods", "-l", "job-name=slow"], "{.items[*].metadata.name}").is_empty()),
        "{}",
        server.kubectl_ok(&["get", "pods", "-o", "yaml"])
    );

    wait_condition(&server, "flaky", "Failed");
    let reason = jsonpath(&server, &["get", "job", "flaky"], r#"{.status.conditions[?(@.type=="Failed")].reason}|{.status.conditions[?(@.type=="Failed")].message}"#);
    assert_eq!(reason, "BackoffLimitExceeded|Job has reached the specified backoff limit");
    assert_eq!(jsonpath(&server, &["get", "job", "flaky"], "{.status.failed} {.status.succeeded} {.status.active}"), "2");
    let pods = jsonpath(&server, &["get", "pods", "-l", "job-name=flaky"], r#"{range .items[*]}{.status.phase}:{.metadata.finalizers} {end}"#);
    assert_eq!(pods.split_whitespace().collect::<Vec<_>>(), ["Failed:", "Failed:"], "{pods}");
    assert!(server.kubectl_ok(&["get", "job", "flaky"]).contains("Failed"));
    let evs = events(&server, "Job");
    assert!(evs.contains("BackoffLimitExceeded Job has reached the specified backoff limit"), "{evs}");
    assert!(evs.contains("DeadlineExceeded Job was active longer than specified deadline"), "{evs}");

    // A pod deleted while running counts as failed and is replaced; deleting the Job
    // (Background) lets the garbage collector remove its pods despite their finalizer.
    server.kubectl_stdin_ok(&["apply", "-f", "-"], &job("long", "", "0", "3600"));
    let running = || jsonpath(&server, &["get", "pods", "-l", "job-name=long"], r#"{range .items[?(@.status.phase=="Running")]}{.metadata.name} {end}"#);
    assert!(poll(WAIT, || running().split_whitespace().count() == 1));
    let first = running().trim().to_string();
    server.kubectl_ok(&["delete", "pod", &first, "--wait=false"]);
    assert!(
        poll(WAIT, || { let r = running(); r.split_whitespace().count() == 1 && !r.contains(&first) }),
        "the deleted pod was not replaced: {}",
        server.kubectl_ok(&["get", "pods", "-o", "wide"])
    );
    assert!(poll(WAIT, || jsonpath(&server, &["get", "job", "long"], "{.status.failed} {.status.active}") == "1 1"));
    server.kubectl_ok(&["delete", "job", "long", "--cascade=background", "--wait=false"]);
    assert!(
        poll(WAIT, || jsonpath(&server, &["get", "pods", "-l", "job-name=long"], "{.items[*].metadata.name}").is_empty()),
        "the pods of a deleted job stayed: {}",
        server.kubectl_ok(&["get", "pods", "-o", "yaml"])
    );
}

#[test]
fn cronjob_schedules_jobs_and_keeps_history() {
    let server = TestServer::start();
    let _sim = nodes(&server);
    let cj = r#"
apiVersion: batch/v1
kind: CronJob
metadata: {name: tick}
spec:
  schedule: "* * * * *"
  timeZone: Europe/Paris
  successfulJobsHistoryLimit: 2
  jobTemplate:
    metadata: {labels: {team: ops}}
    spec:
      template:
        metadata: {annotations: {sim.krust.io/exit-code: "0", sim.krust.io/run-seconds: "0"}}
        spec:
          restartPolicy: Never
          containers: [{name: c, image: busybox}]
"#;
    server.kubectl_stdin_ok(&["apply", "-f", "-"], cj);
    // Jobs made by hand from the CronJob are its own (kubectl sets it as their controller):
    // once three have succeeded, only the two newest stay (a scheduled one may be among
    // them when a minute starts meanwhile).
    for name in ["manual-1", "manual-2", "manual-3"] {
        server.kubectl_ok(&["create", "job", name, "--from=cronjob/tick"]);
        wait_condition(&server, name, "Complete");
    }
    let jobs = || jsonpath(&server, &["get", "jobs"], "{.items[*].metadata.name}");
    let complete = || jsonpath(&server, &["get", "jobs"], r#"{range .items[*]}{.status.conditions[?(@.type=="Complete")].status}{"\n"}{end}"#);
    assert!(
        poll(WAIT, || { let j = jobs(); j.contains("manual-3") && !j.contains("manual-1") && complete().lines().filter(|l| *l == "True").count() == 2 }),
        "history limit: {}",
        jobs()
    );
    let evs = events(&server, "CronJob");
    assert!(evs.contains("SuccessfulDelete Deleted job manual-1"), "{evs}");

    // The schedule fires within a minute.
    let scheduled = || jobs().split_whitespace().find(|n| n.starts_with("tick-")).map(String::from);
    assert!(poll(Duration::from_secs(70), || scheduled().is_some()), "no scheduled job: {}", server.kubectl_ok(&["get", "cronjob", "tick", "-o", "yaml"]));
    let name = scheduled().unwrap();
    let minutes: i64 = name.trim_start_matches("tick-").parse().unwrap();
    let stamp = jsonpath(&server, &["get", "job", &name], r#"{.metadata.annotations.batch\.kubernetes\.io/cronjob-scheduled-timestamp}"#);
    assert!(stamp.ends_with("+01:00") || stamp.ends_with("+02:00"), "scheduled in Paris time: {stamp}");
    assert_eq!(epoch(&stamp), minutes * 60, "{stamp}");
    assert_eq!(jsonpath(&server, &["get", "job", &name], "{.metadata.labels.team} {.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}"), "ops CronJob/tick");
    let last = jsonpath(&server, &["get", "cronjob", "tick"], "{.status.lastScheduleTime}");
    assert_eq!(epoch(&last), minutes * 60, "{last}");
    wait_condition(&server, &name, "Complete");
    // Done: out of `active`, lastSuccessfulTime set, and the history holds the two newest.
    assert!(
        poll(WAIT, || jsonpath(&server, &["get", "cronjob", "tick"], "{.status.active}").is_empty()
            && !jsonpath(&server, &["get", "cronjob", "tick"], "{.status.lastSuccessfulTime}").is_empty()
            && complete().lines().filter(|l| *l == "True").count() == 2
            && jobs().split_whitespace().count() == 2
            && jobs().contains(&name)),
        "{}\n{}",
        server.kubectl_ok(&["get", "cronjob", "tick", "-o", "yaml"]),
        jobs()
    );
    let evs = events(&server, "CronJob");
    assert!(evs.contains(&format!("SuccessfulCreate Created job {name}")) && evs.contains(&format!("SawCompletedJob Saw completed job: {name}")), "{evs}");
}
