"""CronJob concurrency policies and suspend (test/e2e/apps/cronjob.go). Jobs stay active
because their pods never run (no nodes): upstream's `sleep 300` containers are active for
the same reason. Each schedule is `*/1 * * * ?`, so the tests wait for minute boundaries."""

import time

from conformance.framework import conformance, expect, expect_equal, wait_for

BUSYBOX = "registry.k8s.io/e2e-test-images/busybox:1.36.1-1"
CRONJOB_TIMEOUT = 150  # upstream waits 5 minutes; every wait here spans at most two ticks


def new_cronjob(name, policy, suspend=None):
    """Upstream's newTestCronJob with the sleep command and no history limits."""
    cj = {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": name},
          "spec": {"schedule": "*/1 * * * ?", "concurrencyPolicy": policy,
                   "jobTemplate": {"spec": {
                       "parallelism": 1, "completions": 1, "backoffLimit": 1,
                       "template": {"spec": {
                           "restartPolicy": "OnFailure",
                           "volumes": [{"name": "data", "emptyDir": {}}],
                           "containers": [{"name": "c", "image": BUSYBOX, "command": ["sleep", "300"],
                                           "volumeMounts": [{"mountPath": "/data", "name": "data"}]}]}}}}}}
    if suspend is not None:
        cj["spec"]["suspend"] = suspend
    return cj


def active_of(f, name):
    return (f.get(f.path("cronjobs", name, group="batch")).get("status") or {}).get("active") or []


def wait_active(f, name, n):
    """Upstream's waitForActiveJobs: at least n jobs in the CronJob's status.active."""
    wait_for(lambda: len(active_of(f, name)) >= n, timeout=CRONJOB_TIMEOUT, interval=2,
             what=f"{n} active jobs in CronJob {name}")


def finished(job):
    return any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
               for c in (job.get("status") or {}).get("conditions") or [])


def jobs(f):
    return f.list(f.path("jobs", group="batch"))["items"]


def active_jobs(f):
    return [j for j in jobs(f) if not finished(j)]


def delete_cronjob(f, name):
    f.delete(f.path("cronjobs", name, group="batch"),
             {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"})


def past_next_tick(margin=15):
    """Seconds from now until `margin` seconds after the next minute boundary: a span that
    contains one scheduled time of a `*/1` CronJob."""
    return 60 - (time.time() % 60) + margin


def observe(seconds, check, interval=2):
    """Calls check() until `seconds` have passed (gomega.Consistently)."""
    deadline = time.monotonic() + seconds
    while True:
        check()
        if time.monotonic() >= deadline:
            return
        time.sleep(interval)


@conformance("[sig-apps] CronJob should schedule multiple jobs concurrently [Conformance]", timeout=240)
def cronjob_concurrent(f):
    f.create(f.path("cronjobs", group="batch"), new_cronjob("concurrent", "Allow"))
    wait_active(f, "concurrent", 2)
    act = active_jobs(f)
    expect(len(act) >= 2, f"expected at least two running jobs, got {[j['metadata']['name'] for j in act]}")
    delete_cronjob(f, "concurrent")


@conformance("[sig-apps] CronJob should not schedule jobs when suspended [Slow] [Conformance]", timeout=240)
def cronjob_suspended(f):
    f.create(f.path("cronjobs", group="batch"), new_cronjob("suspended", "Allow", suspend=True))
    # Upstream watches status.active stay empty for 5 minutes; here until a scheduled time
    # has passed (and 15 s more for the controller to have acted on it).
    observe(past_next_tick(), lambda: expect(not active_of(f, "suspended"), "a suspended CronJob has active jobs"))
    expect_equal([j["metadata"]["name"] for j in jobs(f)], [], "jobs of a suspended CronJob")
    delete_cronjob(f, "suspended")


@conformance("[sig-apps] CronJob should not schedule new jobs when ForbidConcurrent [Slow] [Conformance]", timeout=240)
def cronjob_forbid(f):
    f.create(f.path("cronjobs", group="batch"), new_cronjob("forbid", "Forbid"))
    wait_active(f, "forbid", 1)
    expect_equal(len(active_of(f, "forbid")), 1, "status.active of the CronJob")
    expect_equal(len(active_jobs(f)), 1, "running jobs")

    def one():
        expect(len(active_of(f, "forbid")) < 2, f"unexpected active job number: {len(active_of(f, 'forbid'))}")
        expect_equal(len(jobs(f)), 1, "jobs while the first one is still running")
    # The next scheduled time must pass without a second job.
    observe(past_next_tick(), one)
    delete_cronjob(f, "forbid")


@conformance("[sig-apps] CronJob should replace jobs when ReplaceConcurrent [Conformance]", timeout=240)
def cronjob_replace(f):
    f.create(f.path("cronjobs", group="batch"), new_cronjob("replace", "Replace"))
    wait_active(f, "replace", 1)
    expect_equal(len(active_of(f, "replace")), 1, "status.active of the CronJob")
    all_jobs = jobs(f)
    expect_equal(len([j for j in all_jobs if not finished(j)]), 1, "running jobs")
    first = all_jobs[0]["metadata"]["name"]

    def replaced():
        alive = [j for j in jobs(f) if not j["metadata"].get("deletionTimestamp")]
        expect(len(alive) <= 1, f"more than one job is running: {[j['metadata']['name'] for j in alive]}")
        return len(alive) == 1 and alive[0]["metadata"]["name"] != first
    wait_for(replaced, timeout=CRONJOB_TIMEOUT, interval=2, what=f"job {first} to be replaced")
    delete_cronjob(f, "replace")
