"""SIG Node API tests: Lease, PodTemplates, Node lifecycle, QoS class, RuntimeClass,
sysctl validation."""

import datetime
import uuid

from conformance.apiops import api_operations
from conformance.framework import (ApiError, TestFailure, conformance, expect, expect_equal, expect_error,
                                   rand_suffix, wait_for)


def micro_now(offset=0):
    t = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=offset)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@conformance("[sig-node] Lease lease API should be available [Conformance]")
def lease_api(f):
    coll = f.path("leases", group="coordination.k8s.io")
    name = "lease"
    p = f"{coll}/{name}"
    spec = {"holderIdentity": "holder", "leaseDurationSeconds": 30, "acquireTime": micro_now(),
            "renewTime": micro_now(), "leaseTransitions": 0}
    f.create(coll, {"metadata": {"name": name}, "spec": spec})
    got = f.get(p)
    expect_equal(got["spec"], spec, "lease spec read back (MicroTime precision kept)")
    spec2 = {"holderIdentity": "holder2", "leaseDurationSeconds": 30, "acquireTime": micro_now(1),
             "renewTime": micro_now(2), "leaseTransitions": 1}
    got["spec"] = spec2
    f.update(p, got)
    got = f.get(p)
    expect_equal(got["spec"], spec2, "updated lease spec")
    patch = {"holderIdentity": "holder3", "leaseDurationSeconds": 30, "acquireTime": micro_now(3),
             "renewTime": micro_now(4), "leaseTransitions": 2}
    f.patch(p, {"spec": patch}, "strategic")
    got = f.get(p)
    expect_equal(got["spec"], patch, "patched lease spec")
    f.create(coll, {"metadata": {"name": "lease2", "labels": {"deletecollection": "true"}},
                    "spec": {"holderIdentity": "holder", "leaseDurationSeconds": 30}})
    expect_equal(len(f.list(coll)["items"]), 2, "leases listed")
    f.call("DELETE", coll, query={"labelSelector": "deletecollection=true"})
    expect_equal(len(f.list(coll)["items"]), 1, "leases left after deletecollection")
    f.delete(p)
    expect_error(404, f.get, p)
    all_leases = f.list("/apis/coordination.k8s.io/v1/leases")
    expect("items" in all_leases, "cluster-wide lease list")


def pod_template(name, labels=None):
    return {"metadata": {"name": name, "labels": labels or {}},
            "template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:1.25"}]}}}


@conformance("[sig-node] PodTemplates should run the lifecycle of PodTemplates [Conformance]")
def podtemplate_lifecycle(f):
    name = "nginx-pod-template-" + rand_suffix()
    f.create(f.path("podtemplates"), pod_template(name, {"podtemplate-static": "true"}))
    lst = f.list("/api/v1/podtemplates", labelSelector="podtemplate-static=true")
    expect(any(t["metadata"]["name"] == name for t in lst["items"]), "pod template not listed")
    f.patch(f.path("podtemplates", name), {"metadata": {"labels": {"podtemplate": "patched"}}}, "strategic")
    got = f.get(f.path("podtemplates", name))
    expect_equal(got["metadata"]["labels"].get("podtemplate"), "patched", "patched label")
    f.call("DELETE", f.path("podtemplates"), query={"labelSelector": "podtemplate-static=true"})
    lst = f.list("/api/v1/podtemplates", labelSelector="podtemplate-static=true")
    expect(not any(t["metadata"]["name"] == name for t in lst["items"]), "pod template still listed")


@conformance("[sig-node] PodTemplates should delete a collection of pod templates [Conformance]")
def podtemplate_deletecollection(f):
    for i in (1, 2, 3):
        f.create(f.path("podtemplates"), pod_template(f"test-podtemplate-{i}", {"podtemplate-set": "true"}))
    expect_equal(len(f.list(f.path("podtemplates"), labelSelector="podtemplate-set=true")["items"]), 3, "templates")
    f.call("DELETE", f.path("podtemplates"), query={"labelSelector": "podtemplate-set=true"})
    wait_for(lambda: not f.list(f.path("podtemplates"), labelSelector="podtemplate-set=true")["items"],
             timeout=30, what="pod templates deleted")


@conformance("[sig-node] PodTemplates should replace a pod template [Conformance]")
def podtemplate_replace(f):
    name = "podtemplate-" + rand_suffix()
    f.create(f.path("podtemplates"), pod_template(name))
    p = f.path("podtemplates", name)
    cur = f.get(p)
    cur["template"]["spec"]["terminationGracePeriodSeconds"] = 1
    cur["template"]["metadata"] = {"labels": {"replaced": "true"}}
    f.update(p, cur)
    got = f.get(p)
    expect_equal(got["template"]["spec"].get("terminationGracePeriodSeconds"), 1, "replaced grace period")
    expect_equal(got["template"]["metadata"]["labels"], {"replaced": "true"}, "replaced template labels")


@conformance("[sig-node] Node Lifecycle should run through the lifecycle of a node [Conformance]")
def node_lifecycle(f):
    name = "e2e-fake-node-" + rand_suffix()
    p = f"/api/v1/nodes/{name}"
    f.defer(f.delete_ignore, p)
    lst = f.list("/api/v1/nodes", fieldSelector=f"metadata.name={name}")
    w = f.watch("/api/v1/nodes", fieldSelector=f"metadata.name={name}", resourceVersion=lst["metadata"]["resourceVersion"])
    try:
        f.create("/api/v1/nodes", {"metadata": {"name": name}, "status": {"phase": "Running"}})
        w.until(lambda t, o: t == "ADDED", what="ADDED of the node")
        got = f.get(p)
        expect_equal(got["metadata"]["name"], name, "node name")
        f.patch(p, {"metadata": {"labels": {name: "patched"}}})
        w.until(lambda t, o: t == "MODIFIED" and (o["metadata"].get("labels") or {}).get(name) == "patched",
                what="MODIFIED with the patched label")
        lst = f.list("/api/v1/nodes", labelSelector=f"{name}=patched")
        expect_equal([n["metadata"]["name"] for n in lst["items"]], [name], "nodes listed by label")
        st = f.get(p + "/status")
        expect_equal(st["metadata"]["name"], name, "node read through /status")
        f.patch(p + "/status", {"status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]}})
        cur = f.get(p)
        expect_equal(cur["status"].get("addresses"), [{"type": "InternalIP", "address": "10.0.0.1"}], "patched status")

        def update():
            # Upstream wraps this in RetryOnConflict: node controllers (IPAM) write nodes too.
            cur = f.get(p)
            cur["metadata"]["labels"][name] = "updated"
            return f.update(p, cur)
        upd = f.retry_on_conflict(update)
        expect_equal(upd["metadata"]["labels"][name], "updated", "updated label")
        w.until(lambda t, o: t == "MODIFIED" and (o["metadata"].get("labels") or {}).get(name) == "updated",
                what="MODIFIED with the updated label")
        f.delete(p)
        w.until(lambda t, o: t == "DELETED", what="DELETED of the node")
        expect_error(404, f.get, p)
    finally:
        w.stop()


def pod(name, **spec):
    s = {"containers": [{"name": "agnhost", "image": "registry.k8s.io/e2e-test-images/agnhost:2.53", "args": ["pause"]}]}
    s.update(spec)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": s}


@conformance("[sig-node] Pods Extended Pods Set QOS Class should be set on Pods with matching resource requests and limits for memory and cpu [Conformance]")
def qos_class(f):
    body = pod("pod-qos-class-" + uuid.uuid4().hex[:8])
    body["spec"]["containers"][0]["resources"] = {"limits": {"cpu": "100m", "memory": "100Mi"},
                                                  "requests": {"cpu": "100m", "memory": "100Mi"}}
    created = f.create(f.path("pods"), body)
    expect_equal((created.get("status") or {}).get("qosClass"), "Guaranteed", "qosClass on create")
    got = f.get(f.path("pods", body["metadata"]["name"]))
    expect_equal((got.get("status") or {}).get("qosClass"), "Guaranteed", "stored qosClass")


def expect_runtimeclass_rejected(f, rc_name):
    body = pod("test-runtimeclass-" + rand_suffix(), runtimeClassName=rc_name)
    e = expect_error(403, f.create, f.path("pods"), body)
    expect("RuntimeClass" in str(e.body) and rc_name in str(e.body), f"rejection does not name the RuntimeClass: {e}")


@conformance("[sig-node] RuntimeClass should reject a Pod requesting a non-existent RuntimeClass [NodeConformance] [Conformance]")
def runtimeclass_nonexistent(f):
    expect_runtimeclass_rejected(f, f.ns + "-nonexistent")


@conformance("[sig-node] RuntimeClass should reject a Pod requesting a deleted RuntimeClass [NodeConformance] [Conformance]")
def runtimeclass_deleted(f):
    name = f"{f.ns}-delete-me"
    p = f"/apis/node.k8s.io/v1/runtimeclasses/{name}"
    f.create("/apis/node.k8s.io/v1/runtimeclasses", {"metadata": {"name": name}, "handler": "runc"})
    f.defer(f.delete_ignore, p)
    f.delete(p)
    wait_for(lambda: f.request("GET", p).status == 404, timeout=30, what="RuntimeClass deleted")
    expect_runtimeclass_rejected(f, name)


@conformance("[sig-node] RuntimeClass should support RuntimeClasses API operations [Conformance]")
def runtimeclass_api(f):
    api_operations(f, "node.k8s.io", "v1", "runtimeclasses",
                   lambda name, labels: {"metadata": {"name": name, "labels": labels}, "handler": f"{f.ns}-handler"},
                   namespaced=False)


@conformance("[sig-node] Sysctls [LinuxOnly] [NodeConformance] should reject invalid sysctls [MinimumKubeletVersion:1.21] [Conformance]")
def invalid_sysctls(f):
    body = pod("sysctl-" + uuid.uuid4().hex[:8], securityContext={"sysctls": [
        {"name": "foo-", "value": "bar"}, {"name": "kernel.shmmax", "value": "100000000"},
        {"name": "safe-and-unsafe", "value": "100000000"}, {"name": "bar..", "value": "42"}]})
    try:
        f.create(f.path("pods"), body)
    except ApiError as e:
        msg = str(e.body)
        expect('Invalid value: "foo-"' in msg, f"error lacks foo-: {msg[:300]}")
        expect('Invalid value: "bar.."' in msg, f"error lacks bar..: {msg[:300]}")
        expect("safe-and-unsafe" not in msg, f"error names the valid sysctl safe-and-unsafe: {msg[:300]}")
        expect("kernel.shmmax" not in msg, f"error names the valid sysctl kernel.shmmax: {msg[:300]}")
        return
    raise TestFailure("a pod with invalid sysctl names was accepted")
