"""SIG Scheduling API tests: LimitRange (limit_range.go) and PriorityClass endpoints
(preemption.go)."""

from conformance.framework import (ApiError, TestFailure, conformance, expect, expect_equal, expect_error,
                                   rand_suffix, wait_for)


def limits(mn, mx, default, default_req, ratio):
    return {"limits": [{"type": "Container", "min": mn, "max": mx, "default": default,
                        "defaultRequest": default_req, "maxLimitRequestRatio": ratio}]}


def pod(name, resources):
    c = {"name": "pause", "image": "registry.k8s.io/pause:3.10"}
    if resources is not None:
        c["resources"] = resources
    return {"metadata": {"name": name}, "spec": {"containers": [c]}}


def expect_resources(got, requests, lim, what):
    r = got["spec"]["containers"][0].get("resources") or {}
    expect_equal(r.get("requests"), requests, f"requests of {what}")
    expect_equal(r.get("limits"), lim, f"limits of {what}")


@conformance("[sig-scheduling] LimitRange should create a LimitRange with defaults and ensure pod has those defaults applied. [Conformance]")
def limitrange_defaults(f):
    mn = {"cpu": "50m", "memory": "100Mi", "ephemeral-storage": "214748364800m"}
    mx = {"cpu": "500m", "memory": "500Mi", "ephemeral-storage": "536870912k"}
    default_req = {"cpu": "100m", "memory": "200Mi", "ephemeral-storage": "214748364800m"}
    default = {"cpu": "500m", "memory": "500Mi", "ephemeral-storage": "536870912k"}
    ratio = {}
    lr_name = "limit-range-" + rand_suffix()
    p = f.path("limitranges", lr_name)
    f.create(f.path("limitranges"), {"metadata": {"name": lr_name, "labels": {"time": "now"}},
                                     "spec": limits(mn, mx, default, default_req, ratio)})
    lst = f.list(f.path("limitranges"), labelSelector="time=now")
    expect_equal(len(lst["items"]), 1, "limit ranges listed by label")
    got = f.get(p)
    expect_equal(got["spec"]["limits"][0].get("min"), mn, "stored min")
    # a pod without resources gets the defaults
    created = f.create(f.path("pods"), pod("pod-no-resources", None))
    expect_resources(created, default_req, default, "a pod without resources")
    # a pod with partial resources gets the rest
    created = f.create(f.path("pods"), pod("pod-partial-resources",
                                           {"requests": {"cpu": "300m"}, "limits": {"cpu": "300m"}}))
    expect_resources(created, {"cpu": "300m", "memory": "200Mi", "ephemeral-storage": "214748364800m"},
                     {"cpu": "300m", "memory": "500Mi", "ephemeral-storage": "536870912k"}, "a pod with partial resources")
    # beyond min / max is forbidden
    expect_error(403, f.create, f.path("pods"), pod("pod-under-min",
                                                    {"requests": {"cpu": "10m"}, "limits": {"cpu": "10m"}}))
    expect_error(403, f.create, f.path("pods"), pod("pod-over-max",
                                                    {"requests": {"cpu": "600m"}, "limits": {"cpu": "600m"}}))
    # an updated LimitRange takes effect
    got["spec"]["limits"][0]["min"] = {"cpu": "1m", "memory": "10Mi", "ephemeral-storage": "10Mi"}
    f.update(p, got)
    f.create(f.path("pods"), pod("pod-after-update", {"requests": {"cpu": "10m"}, "limits": {"cpu": "10m"}}))
    f.delete(p)
    expect_error(404, f.get, p)
    f.create(f.path("pods"), pod("pod-after-delete", {"requests": {"cpu": "600m"}, "limits": {"cpu": "600m"}}))


@conformance("[sig-scheduling] LimitRange should list, patch and delete a LimitRange by collection [Conformance]")
def limitrange_collection(f):
    name = "e2e-limitrange-" + rand_suffix()
    sel = f"e2e-test={name}"
    spec = limits({"cpu": "1m", "memory": "1Mi"}, {"cpu": "1", "memory": "1Gi"}, {"cpu": "500m", "memory": "500Mi"},
                  {"cpu": "100m", "memory": "200Mi"}, {})
    f.create(f.path("limitranges"), {"metadata": {"name": name, "labels": {"e2e-test": name}}, "spec": spec})
    lst = f.list("/api/v1/limitranges", labelSelector=sel)
    expect_equal(len(lst["items"]), 1, "limit ranges listed cluster-wide")
    new_min = {"cpu": "9m", "memory": "3Mi"}
    patched = f.patch(f.path("limitranges", name), {"metadata": {"labels": {f"{name}-patched": "true"}},
                                                    "spec": {"limits": [dict(spec["limits"][0], min=new_min)]}},
                      "strategic")
    expect_equal(patched["metadata"]["labels"].get(f"{name}-patched"), "true", "patched label")
    expect_equal(patched["spec"]["limits"][0]["min"], new_min, "patched min")
    f.call("DELETE", f.path("limitranges"), query={"labelSelector": sel})
    wait_for(lambda: not f.list("/api/v1/limitranges", labelSelector=sel)["items"], timeout=30,
             what="limit ranges deleted")


@conformance("[sig-scheduling] SchedulerPreemption [Serial] PriorityClass endpoints verify PriorityClass endpoints can be operated with different HTTP methods [Conformance]")
def priorityclass_endpoints(f):
    coll = "/apis/scheduling.k8s.io/v1/priorityclasses"
    label = f"e2e-pc-{rand_suffix()}"
    names = [f"{label}-p{i}" for i in range(1, 5)]
    for i, n in enumerate(names):
        f.create(coll, {"metadata": {"name": n, "labels": {"e2e": label}}, "value": 100 + i})
        f.defer(f.delete_ignore, f"{coll}/{n}")
    # the value is immutable
    cur = f.get(f"{coll}/{names[0]}")
    cur["value"] = cur["value"] * 10
    expect_error(422, f.update, f"{coll}/{names[0]}", cur)
    # the description is not
    for n in names:
        f.patch(f"{coll}/{n}", {"description": "patched description"}, "strategic")
        cur = f.get(f"{coll}/{n}")
        expect_equal(cur.get("description"), "patched description", "patched description")
        cur["description"] = "updated description"
        f.update(f"{coll}/{n}", cur)
    lst = f.list(coll, labelSelector=f"e2e={label}")
    expect_equal(sorted(p["metadata"]["name"] for p in lst["items"]), names, "priority classes listed")
    for p in lst["items"]:
        expect_equal(p.get("description"), "updated description", "listed description")
    for n in names:
        f.delete(f"{coll}/{n}")
    expect_equal(f.list(coll, labelSelector=f"e2e={label}")["items"], [], "priority classes left")
