"""ResourceQuota (resource_quota.go): the API-only tests, and the T2 ones that need the
resource quota controller (status.used) and quota admission (refusals)."""

import re
import time
from fractions import Fraction

from conformance.framework import ApiError, conformance, expect, expect_equal, expect_error, rand_suffix, wait_for


@conformance("[sig-api-machinery] ResourceQuota should be able to update and delete ResourceQuota. [Conformance]")
def rq_update_delete(f):
    p = f.path("resourcequotas", "test-quota")
    f.create(f.path("resourcequotas"), {"metadata": {"name": "test-quota"},
                                        "spec": {"hard": {"cpu": "1", "memory": "500Mi"}}})
    q = f.get(p)
    expect_equal(q["spec"]["hard"], {"cpu": "1", "memory": "500Mi"}, "hard limits")
    q["spec"]["hard"] = {"cpu": "2", "memory": "1Gi"}
    f.update(p, q)
    q = f.get(p)
    expect_equal(q["spec"]["hard"], {"cpu": "2", "memory": "1Gi"}, "updated hard limits")
    f.delete(p)
    expect_error(404, f.get, p)


@conformance("[sig-api-machinery] ResourceQuota should manage the lifecycle of a ResourceQuota [Conformance]")
def rq_lifecycle(f):
    name = f"e2e-quota-{rand_suffix()}"
    sel = f"e2e-rq-label={name}"
    p = f.path("resourcequotas", name)
    f.create(f.path("resourcequotas"), {"metadata": {"name": name, "labels": {"e2e-rq-label": name}},
                                        "spec": {"hard": {"cpu": "1", "memory": "500Mi"}}})
    q = f.get(p)
    expect_equal(q["spec"]["hard"], {"cpu": "1", "memory": "500Mi"}, "hard limits")
    lst = f.list("/api/v1/resourcequotas", labelSelector=sel)
    expect_equal(len(lst["items"]), 1, "quotas listed cluster-wide by label")
    patched = f.patch(p, {"metadata": {"labels": {name: "patched"}}, "spec": {"hard": {"memory": "750Mi"}}}, "strategic")
    expect_equal(patched["metadata"]["labels"].get(name), "patched", "patched label")
    expect_equal(patched["spec"]["hard"]["memory"], "750Mi", "patched memory limit")
    f.call("DELETE", f.path("resourcequotas"), query={"labelSelector": sel})
    expect_error(404, f.get, p)


# ---- T2: the resource quota controller and admission ----

QUOTA_TIMEOUT = 60.0  # upstream's resourceQuotaTimeout
_SUFFIX = {"n": Fraction(1, 10**9), "u": Fraction(1, 10**6), "m": Fraction(1, 1000), "": Fraction(1),
           "k": Fraction(10**3), "M": Fraction(10**6), "G": Fraction(10**9), "T": Fraction(10**12),
           "P": Fraction(10**15), "E": Fraction(10**18), "Ki": Fraction(2**10), "Mi": Fraction(2**20),
           "Gi": Fraction(2**30), "Ti": Fraction(2**40), "Pi": Fraction(2**50), "Ei": Fraction(2**60)}


def qty(q):
    """A quantity's value, to compare as upstream's Quantity.Cmp does."""
    m = re.fullmatch(r"([+-]?[0-9.]+)([a-zA-Z]*)", str(q))
    return Fraction(m.group(1)) * _SUFFIX[m.group(2)]


def new_test_quota(name):
    """Upstream's newTestResourceQuota."""
    return {"metadata": {"name": name}, "spec": {"hard": {
        "pods": "5", "services": "10", "services.nodeports": "1", "services.loadbalancers": "1",
        "replicationcontrollers": "10", "resourcequotas": "1", "cpu": "1", "memory": "500Mi",
        "configmaps": "10", "secrets": "10", "persistentvolumeclaims": "10", "requests.storage": "10Gi",
        "ephemeral-storage": "50Gi", "gold.storageclass.storage.k8s.io/persistentvolumeclaims": "10",
        "gold.storageclass.storage.k8s.io/requests.storage": "10Gi", "count/replicasets.apps": "5",
        "requests.example.com/dongle": "3"}}}


def scoped_quota(name, scope):
    """Upstream's newTestResourceQuotaWithScope."""
    hard = {"pods": "5"}
    if scope in ("Terminating", "NotTerminating"):
        hard.update({"requests.cpu": "1", "requests.memory": "500Mi", "limits.cpu": "2", "limits.memory": "1Gi"})
    return {"metadata": {"name": name}, "spec": {"hard": hard, "scopes": [scope]}}


def quota_pod(name, requests=None, limits=None, deadline=None):
    """Upstream's newTestPodForQuota: never schedulable."""
    spec = {"nodeSelector": {"x-test.k8s.io/unsatisfiable": "not-schedulable"},
            "containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10",
                            "resources": {"requests": requests or {}, "limits": limits or {}}}]}
    if deadline is not None:
        spec["activeDeadlineSeconds"] = deadline
    return {"metadata": {"name": name}, "spec": spec}


def wait_for_used(f, name, used):
    """Upstream's waitForResourceQuota: status.used shows these amounts (others ignored)."""
    last = {}

    def ok():
        q = f.get(f.path("resourcequotas", name))
        last["used"] = (q.get("status") or {}).get("used")
        have = last["used"]
        return have is not None and all(k in have and qty(have[k]) == qty(v) for k, v in used.items())
    wait_for(ok, timeout=QUOTA_TIMEOUT, interval=0.5, what=f"quota {name} used {used}")


def ensure_used(f, name, used, seconds=10):
    """Upstream's ensureResourceQuota: the usage stays as it is."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        have = (f.get(f.path("resourcequotas", name)).get("status") or {}).get("used") or {}
        expect(all(k in have and qty(have[k]) == qty(v) for k, v in used.items()), f"quota {name} used {have}, want {used}")
        time.sleep(1)


def count_stable(f, resource, stable_polls):
    """Upstream's count loops: the number of objects, once unchanged for some polls."""
    found, unchanged = -1, 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        n = len(f.list(f.path(resource))["items"])
        if n == found:
            unchanged += 1
            if unchanged > stable_polls:
                return n
        else:
            found, unchanged = n, 0
        time.sleep(1)
    return found


def create_quota(f, body):
    return f.create(f.path("resourcequotas"), body)


@conformance("[sig-api-machinery] ResourceQuota should create a ResourceQuota and ensure its status is promptly calculated. [Conformance]")
def rq_status_promptly(f):
    c = count_stable(f, "resourcequotas", 4)
    create_quota(f, new_test_quota("test-quota"))
    wait_for_used(f, "test-quota", {"resourcequotas": str(c + 1)})


@conformance("[sig-api-machinery] ResourceQuota should create a ResourceQuota and capture the life of a service. [Conformance]")
def rq_service(f):
    c = count_stable(f, "resourcequotas", 4)
    create_quota(f, new_test_quota("test-quota"))
    wait_for_used(f, "test-quota", {"resourcequotas": str(c + 1)})

    def svc(name, typ, allocate=None):
        spec = {"type": typ, "ports": [{"port": 80, "targetPort": 80}]}
        if typ == "LoadBalancer":
            spec["allocateLoadBalancerNodePorts"] = allocate
        return {"metadata": {"name": name}, "spec": spec}
    f.create(f.path("services"), svc("test-service", "ClusterIP"))
    f.create(f.path("services"), svc("test-service-np", "NodePort"))
    err = expect_error(403, f.create, f.path("services"), svc("test-service-lb", "LoadBalancer", True))
    expect("exceeded quota: test-quota" in str(err.body), f"refusal names the quota: {err.body}")
    wait_for_used(f, "test-quota", {"resourcequotas": str(c + 1), "services": "2", "services.nodeports": "1"})
    f.delete(f.path("services", "test-service"))
    f.delete(f.path("services", "test-service-np"))
    wait_for_used(f, "test-quota", {"resourcequotas": str(c + 1), "services": "0", "services.nodeports": "0"})


@conformance("[sig-api-machinery] ResourceQuota should create a ResourceQuota and capture the life of a secret. [Conformance]")
def rq_secret(f):
    found = count_stable(f, "secrets", 4)
    c = count_stable(f, "resourcequotas", 4)
    q = new_test_quota("test-quota")
    q["spec"]["hard"]["secrets"] = str(found + 1)
    create_quota(f, q)
    wait_for_used(f, "test-quota", {"resourcequotas": str(c + 1), "secrets": str(found)})
    f.create(f.path("secrets"), {"metadata": {"name": "test-secret"},
                                 "data": {"data-1": "dmFsdWUtMQo=", "data-2": "dmFsdWUtMgo=", "data-3": "dmFsdWUtMwo="}})
    wait_for_used(f, "test-quota", {"secrets": str(found + 1)})
    f.delete(f.path("secrets", "test-secret"))
    wait_for_used(f, "test-quota", {"secrets": str(found)})


@conformance("[sig-api-machinery] ResourceQuota should create a ResourceQuota and capture the life of a pod. [Conformance]")
def rq_pod(f):
    c = count_stable(f, "resourcequotas", 4)
    create_quota(f, new_test_quota("test-quota"))
    used = {"resourcequotas": str(c + 1)}
    wait_for_used(f, "test-quota", used)
    requests = {"cpu": "500m", "memory": "252Mi", "ephemeral-storage": "30Gi", "example.com/dongle": "2"}
    pod = f.create(f.path("pods"), quota_pod("test-pod", requests, {"example.com/dongle": "2"}))
    used.update({"pods": "1", "cpu": "500m", "memory": "252Mi", "ephemeral-storage": "30Gi", "requests.example.com/dongle": "2"})
    wait_for_used(f, "test-quota", used)
    expect_error(403, f.create, f.path("pods"), quota_pod("fail-pod", {"cpu": "600m", "memory": "100Mi"}))
    expect_error(403, f.create, f.path("pods"), quota_pod(
        "fail-pod-for-extended-resource",
        {"cpu": "500m", "memory": "100Mi", "ephemeral-storage": "30Gi", "example.com/dongle": "2"}, {"example.com/dongle": "2"}))
    pod["spec"]["containers"][0]["resources"]["requests"] = {"cpu": "100m", "memory": "100Mi", "ephemeral-storage": "10Gi"}
    try:
        f.update(f.path("pods", "test-pod"), pod)
        raise AssertionError("a pod's resource requirements were updated")
    except ApiError:
        pass
    wait_for_used(f, "test-quota", used)
    f.delete(f.path("pods", "test-pod"), {"gracePeriodSeconds": 0})
    used.update({"pods": "0", "cpu": "0", "memory": "0", "ephemeral-storage": "0", "requests.example.com/dongle": "0"})
    wait_for_used(f, "test-quota", used)


@conformance("[sig-api-machinery] ResourceQuota should create a ResourceQuota and capture the life of a configMap. [Conformance]")
def rq_configmap(f):
    found = count_stable(f, "configmaps", 15)
    c = count_stable(f, "resourcequotas", 4)
    q = new_test_quota("test-quota")
    q["spec"]["hard"]["configmaps"] = str(found + 1)
    create_quota(f, q)
    wait_for_used(f, "test-quota", {"resourcequotas": str(c + 1), "configmaps": str(found)})
    f.create(f.path("configmaps"), {"metadata": {"name": "test-configmap"}, "data": {"a": "b"}})
    wait_for_used(f, "test-quota", {"resourcequotas": str(c + 1), "configmaps": str(found + 1)})
    f.delete(f.path("configmaps", "test-configmap"))
    wait_for_used(f, "test-quota", {"resourcequotas": str(c + 1), "configmaps": str(found)})


@conformance("[sig-api-machinery] ResourceQuota should create a ResourceQuota and capture the life of a replication controller. [Conformance]")
def rq_replication_controller(f):
    c = count_stable(f, "resourcequotas", 4)
    create_quota(f, new_test_quota("test-quota"))
    wait_for_used(f, "test-quota", {"resourcequotas": str(c + 1), "replicationcontrollers": "0"})
    f.create(f.path("replicationcontrollers"), {"metadata": {"name": "test-rc"}, "spec": {
        "replicas": 0, "selector": {"name": "test-rc"},
        "template": {"metadata": {"labels": {"name": "test-rc"}},
                     "spec": {"containers": [{"name": "test-rc", "image": "nginx"}]}}}})
    wait_for_used(f, "test-quota", {"replicationcontrollers": "1"})
    f.delete(f.path("replicationcontrollers", "test-rc"), {"propagationPolicy": "Background"})
    wait_for_used(f, "test-quota", {"replicationcontrollers": "0"})


@conformance("[sig-api-machinery] ResourceQuota should create a ResourceQuota and capture the life of a replica set. [Conformance]")
def rq_replica_set(f):
    c = count_stable(f, "resourcequotas", 4)
    create_quota(f, new_test_quota("test-quota"))
    wait_for_used(f, "test-quota", {"resourcequotas": str(c + 1), "count/replicasets.apps": "0"})
    f.create(f.path("replicasets", group="apps"), {"metadata": {"name": "test-rs"}, "spec": {
        "replicas": 0, "selector": {"matchLabels": {"name": "test-rs"}},
        "template": {"metadata": {"labels": {"name": "test-rs"}},
                     "spec": {"terminationGracePeriodSeconds": 0, "containers": [{"name": "test-rs", "image": "nginx"}]}}}})
    wait_for_used(f, "test-quota", {"count/replicasets.apps": "1"})
    f.delete(f.path("replicasets", "test-rs", group="apps"))
    wait_for_used(f, "test-quota", {"count/replicasets.apps": "0"})


@conformance("[sig-api-machinery] ResourceQuota should verify ResourceQuota with terminating scopes. [Conformance]")
def rq_terminating_scopes(f):
    create_quota(f, scoped_quota("quota-terminating", "Terminating"))
    zero = {"pods": "0", "requests.cpu": "0", "requests.memory": "0", "limits.cpu": "0", "limits.memory": "0"}
    wait_for_used(f, "quota-terminating", zero)
    create_quota(f, scoped_quota("quota-not-terminating", "NotTerminating"))
    wait_for_used(f, "quota-not-terminating", zero)
    requests, limits = {"cpu": "500m", "memory": "200Mi"}, {"cpu": "1", "memory": "400Mi"}
    charged = {"pods": "1", "requests.cpu": "500m", "requests.memory": "200Mi", "limits.cpu": "1", "limits.memory": "400Mi"}
    # A long-running pod counts against the NotTerminating quota only.
    f.create(f.path("pods"), quota_pod("test-pod", requests, limits))
    wait_for_used(f, "quota-not-terminating", charged)
    wait_for_used(f, "quota-terminating", zero)
    ensure_used(f, "quota-terminating", zero)
    f.delete(f.path("pods", "test-pod"), {"gracePeriodSeconds": 0})
    wait_for_used(f, "quota-not-terminating", zero)
    # A pod with activeDeadlineSeconds counts against the Terminating quota only.
    f.create(f.path("pods"), quota_pod("terminating-pod", requests, limits, deadline=3600))
    wait_for_used(f, "quota-terminating", charged)
    wait_for_used(f, "quota-not-terminating", zero)
    ensure_used(f, "quota-not-terminating", zero)
    f.delete(f.path("pods", "terminating-pod"), {"gracePeriodSeconds": 0})
    wait_for_used(f, "quota-terminating", zero)


@conformance("[sig-api-machinery] ResourceQuota should verify ResourceQuota with best effort scope. [Conformance]")
def rq_best_effort_scope(f):
    create_quota(f, scoped_quota("quota-besteffort", "BestEffort"))
    wait_for_used(f, "quota-besteffort", {"pods": "0"})
    create_quota(f, scoped_quota("quota-not-besteffort", "NotBestEffort"))
    wait_for_used(f, "quota-not-besteffort", {"pods": "0"})
    f.create(f.path("pods"), quota_pod("pfpod"))
    wait_for_used(f, "quota-besteffort", {"pods": "1"})
    wait_for_used(f, "quota-not-besteffort", {"pods": "0"})
    f.delete(f.path("pods", "pfpod"), {"gracePeriodSeconds": 0})
    wait_for_used(f, "quota-besteffort", {"pods": "0"})
    f.create(f.path("pods"), quota_pod("burstable-pod", {"cpu": "500m", "memory": "200Mi"}, {"cpu": "1", "memory": "400Mi"}))
    wait_for_used(f, "quota-not-besteffort", {"pods": "1"})
    wait_for_used(f, "quota-besteffort", {"pods": "0"})
    f.delete(f.path("pods", "burstable-pod"), {"gracePeriodSeconds": 0})
    wait_for_used(f, "quota-not-besteffort", {"pods": "0"})


@conformance("[sig-api-machinery] ResourceQuota should apply changes to a resourcequota status [Conformance]")
def rq_status_changes(f):
    name = f"e2e-rq-status-{rand_suffix()}"
    sel = f"e2e-rq-label={name}"
    p = f.path("resourcequotas", name)
    lst = f.list("/api/v1/resourcequotas", labelSelector=sel)
    w = f.watch(f.path("resourcequotas"), labelSelector=sel, resourceVersion=lst["metadata"]["resourceVersion"])
    try:
        create_quota(f, {"metadata": {"name": name, "labels": {"e2e-rq-label": name}},
                         "spec": {"hard": {"cpu": "500m", "memory": "500Mi"}}})
        q = f.get(p)
        expect_equal((qty(q["spec"]["hard"]["cpu"]), qty(q["spec"]["hard"]["memory"])), (qty("500m"), qty("500Mi")), "spec.hard")

        def update_status():
            cur = f.get(p)
            cur["status"] = {"hard": dict(cur["spec"]["hard"])}
            return f.update(p + "/status", cur)
        updated = f.retry_on_conflict(update_status)

        def same_hard(o, want):
            have = (o.get("status") or {}).get("hard") or {}
            return set(have) == set(want) and all(qty(have[k]) == qty(v) for k, v in want.items())
        w.until(lambda t, o: o["metadata"]["name"] == name and same_hard(o, updated["spec"]["hard"]), what="status.hard = spec.hard")
        patched_spec = f.patch(p, {"spec": {"hard": {"cpu": "1", "memory": "1Gi"}}}, "strategic")
        patched = f.patch(p + "/status", {"status": {"hard": dict(patched_spec["spec"]["hard"])}}, "strategic")
        w.until(lambda t, o: o["metadata"]["name"] == name and same_hard(o, patched["spec"]["hard"]), what="patched status.hard")
        st = f.get(p + "/status")
        expect_equal((qty(st["status"]["hard"]["cpu"]), qty(st["status"]["hard"]["memory"])), (qty("1"), qty("1Gi")), "status.hard via /status")
        repatched = f.patch(p + "/status", {"status": {"hard": {"cpu": "2", "memory": "2Gi"}}}, "strategic")
        expect_equal((qty(repatched["status"]["hard"]["cpu"]), qty(repatched["status"]["hard"]["memory"])), (qty("2"), qty("2Gi")), "repatched status.hard")
        w.until(lambda t, o: o["metadata"]["name"] == name and same_hard(o, {"cpu": "2", "memory": "2Gi"}), what="repatched status.hard")

        def reset():
            q = f.get(p)
            hard = (q.get("status") or {}).get("hard") or {}
            return qty(hard.get("cpu", "0")) == qty("1") and qty(hard.get("memory", "0")) == qty("1Gi") \
                and qty(q["spec"]["hard"]["cpu"]) == qty("1")
        wait_for(reset, timeout=6 * 60, interval=1, what="the controller resets status.hard to spec.hard")
    finally:
        w.stop()
