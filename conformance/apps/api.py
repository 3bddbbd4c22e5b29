"""SIG Apps tests that only need the API server: CronJob API operations and the Job
lifecycle (no pod has to run)."""

from conformance.apiops import api_operations
from conformance.framework import conformance, expect, expect_equal, expect_error, rand_suffix, wait_for


def job_template():
    return {"spec": {"template": {"spec": {"restartPolicy": "OnFailure", "containers": [
        {"name": "c", "image": "registry.k8s.io/e2e-test-images/busybox:1.36.1-1", "command": ["sleep", "300"]}]}}}}


@conformance("[sig-apps] CronJob should support CronJob API operations [Conformance]")
def cronjob_api(f):
    def make(name, labels):
        return {"metadata": {"name": name, "labels": labels},
                "spec": {"schedule": "@hourly", "concurrencyPolicy": "Allow", "suspend": True,
                         "jobTemplate": job_template()}}
    api_operations(f, "batch", "v1", "cronjobs", make,
                   status=lambda o: {"lastScheduleTime": "2024-01-01T00:00:00Z"})


@conformance("[sig-apps] Job should manage the lifecycle of a job [Conformance]")
def job_lifecycle(f):
    name = "e2e-" + rand_suffix()
    label = {"e2e-job-label": name}
    sel = f"e2e-job-label={name}"
    coll = f.path("jobs", group="batch")
    p = f"{coll}/{name}"
    lst = f.list(coll, labelSelector=sel)
    w = f.watch(coll, labelSelector=sel, resourceVersion=lst["metadata"]["resourceVersion"])
    try:
        body = {"metadata": {"name": name, "labels": dict(label)},
                "spec": dict(job_template()["spec"], suspend=True, parallelism=1, completions=1)}
        f.create(coll, body)
        w.until(lambda t, o: t == "ADDED", what="ADDED job")
        patched = f.patch(p, {"metadata": {"labels": {name: "patched"}}})
        expect_equal(patched["metadata"]["labels"].get(name), "patched", "patched label")
        w.until(lambda t, o: t == "MODIFIED" and (o["metadata"].get("labels") or {}).get(name) == "patched",
                what="MODIFIED with the patched label")
        def update():
            # Upstream's updateJobWithRetries: the Job controller writes the Job too.
            cur = f.get(p)
            cur["metadata"].setdefault("annotations", {})["updated"] = "true"
            return f.update(p, cur)
        upd = f.retry_on_conflict(update)
        expect_equal(upd["metadata"]["annotations"].get("updated"), "true", "updated annotation")
        w.until(lambda t, o: t == "MODIFIED" and (o["metadata"].get("annotations") or {}).get("updated") == "true",
                what="MODIFIED with the updated annotation")
        lst = f.list("/apis/batch/v1/jobs", labelSelector=sel)
        expect_equal(len(lst["items"]), 1, "jobs listed in all namespaces")
        st = f.get(p + "/status")
        expect_equal(st["metadata"]["name"], name, "job read via /status")
        patched = f.patch(p + "/status", {"metadata": {"annotations": {"patchedstatus": "true"}},
                                          "status": {"startTime": "2024-01-01T00:00:00Z"}})
        expect_equal(patched["metadata"]["annotations"].get("patchedstatus"), "true", "annotation patched via /status")
        def update_status():
            # Upstream wraps this in RetryOnConflict.
            cur = f.get(p)
            cur["status"]["startTime"] = "2024-01-01T00:00:01Z"
            return f.update(p + "/status", cur)
        upd = f.retry_on_conflict(update_status)
        expect_equal(upd["status"].get("startTime"), "2024-01-01T00:00:01Z", "updated startTime")
        f.call("DELETE", coll, query={"labelSelector": sel, "propagationPolicy": "Background"})
        w.until(lambda t, o: t == "DELETED", what="DELETED job")
        lst = f.list(coll, labelSelector=sel)
        expect_equal(lst["items"], [], "jobs left")
    finally:
        w.stop()
