"""Garbage collector (garbage_collector.go): owner references between pods, and the
ReplicationController / Deployment tests (the controllers only have to create the objects;
pods stay Pending without nodes, which upstream's GC tests do not look at)."""

import itertools
import time

from conformance.framework import ApiError, TestFailure, conformance, expect, expect_equal, wait_for

NGINX = "registry.k8s.io/e2e-test-images/nginx:1.14-4"
_label_count = itertools.count(1)


def uniq_label(key, value):
    """Upstream's getUniqLabel: a label made unique by a process-wide counter."""
    n = next(_label_count)
    return {f"{key}-{n:05d}": f"{value}-{n:05d}"}


def pod_template(labels):
    return {"metadata": {"labels": labels},
            "spec": {"terminationGracePeriodSeconds": 0, "containers": [{"name": "nginx", "image": NGINX}]}}


def owner_rc(name, replicas, labels):
    return {"apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": labels, "template": pod_template(labels)}}


def owner_deployment(name, labels):
    """e2edeployment.NewDeployment(name, 2, labels, "nginx", image, RollingUpdate)."""
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": 2, "selector": {"matchLabels": labels}, "strategy": {"type": "RollingUpdate"},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"terminationGracePeriodSeconds": 0,
                                           "containers": [{"name": "nginx", "image": NGINX}]}}}}


def delete_options(policy, uid):
    return {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": policy,
            "preconditions": {"uid": uid}}


def estimate_maximum_pods(f, lo, hi):
    """Upstream's estimateMaximumPods: half the allocatable pods of the ready, schedulable
    nodes (10 for a node without a `pods` figure), within [lo, hi]. Upstream requires at least
    one such node; a T2 run has none (--disable-agent), and the pods never need to run, so
    no nodes counts as the lower bound."""
    total = 0
    for n in f.list("/api/v1/nodes")["items"]:
        if (n.get("spec") or {}).get("unschedulable"):
            continue
        if any(t.get("effect") in ("NoSchedule", "NoExecute") for t in (n.get("spec") or {}).get("taints") or []):
            continue
        conds = {c["type"]: c["status"] for c in (n.get("status") or {}).get("conditions") or []}
        if conds.get("Ready") != "True":
            continue
        pods = ((n.get("status") or {}).get("allocatable") or {}).get("pods")
        total += int(pods) if pods and str(pods).isdigit() else 10
    return max(lo, min(hi, int(total * 0.5)))


def count(f, resource, group="", version="v1"):
    return len(f.list(f.path(resource, group=group, version=version))["items"])


def remaining(f, **want):
    """Upstream's verifyRemainingObjects: True when every kind has the wanted count."""
    paths = {"pods": ("pods", ""), "rcs": ("replicationcontrollers", ""),
             "deployments": ("deployments", "apps"), "replicasets": ("replicasets", "apps")}
    ok = True
    for kind, n in want.items():
        res, group = paths[kind]
        if count(f, res, group) != n:
            ok = False
    return ok


def wait_for_replicas(f, name, timeout=120):
    """Upstream's waitForReplicas: rc.status.replicas reaches spec.replicas."""
    def done():
        rc = f.get(f.path("replicationcontrollers", name))
        return (rc.get("status") or {}).get("replicas", 0) == rc["spec"]["replicas"]
    wait_for(done, timeout=timeout, interval=1, what=f"rc {name} status.replicas to reach spec.replicas")


def wait_rc_gone(f, name, timeout):
    p = f.path("replicationcontrollers", name)

    def gone():
        try:
            f.get(p)
            return False
        except ApiError as e:
            if e.status == 404:
                return True
            raise
    wait_for(gone, timeout=timeout, interval=1, what=f"rc {name} to be deleted")


def gc_pod(name):
    return {"metadata": {"name": name},
            "spec": {"terminationGracePeriodSeconds": 30,
                     "containers": [{"name": "nginx", "image": "registry.k8s.io/e2e-test-images/nginx:1.14-4"}]}}


@conformance("[sig-api-machinery] Garbage collector should not be blocked by dependency circle [Conformance]")
def gc_dependency_circle(f):
    pods = f.path("pods")
    made = {n: f.create(pods, gc_pod(n)) for n in ("pod1", "pod2", "pod3")}

    def add_ref(name, owner):
        ref = {"apiVersion": "v1", "kind": "Pod", "name": owner, "uid": made[owner]["metadata"]["uid"],
               "controller": True, "blockOwnerDeletion": True}
        f.patch(f.path("pods", name), {"metadata": {"ownerReferences": [ref]}}, "strategic")
    add_ref("pod1", "pod3")
    add_ref("pod2", "pod1")
    add_ref("pod3", "pod2")
    # Deleting one in the foreground must delete all three.
    f.delete(f.path("pods", "pod1"), {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Foreground",
                                      "preconditions": {"uid": made["pod1"]["metadata"]["uid"]}})
    left = wait_for(lambda: not f.list(pods)["items"] or None, 90, 1.0, what="all pods of the circle to be deleted")
    expect(left, "pods remain")


@conformance("[sig-api-machinery] Garbage collector should delete pods created by rc when not orphaning [Conformance]")
def gc_delete_rc_background(f):
    labels = uniq_label("gctest", "delete_pods")
    rc = f.create(f.path("replicationcontrollers"), owner_rc("simpletest.rc", 2, labels))
    # Deliberately not waiting for all replicas: the GC and the rc manager must cope with an
    # rc deleted before it reaches stasis.
    wait_for(lambda: count(f, "pods") > 0, timeout=30, interval=1, what="the rc to create some pods")
    f.delete(f.path("replicationcontrollers", "simpletest.rc"), delete_options("Background", rc["metadata"]["uid"]))
    wait_for(lambda: remaining(f, rcs=0, pods=0), timeout=120, interval=1,
             what="the rc and all its pods to be garbage collected")


@conformance("[sig-api-machinery] Garbage collector should orphan pods created by rc if delete options say so [Conformance]")
def gc_orphan_rc_pods(f):
    labels = uniq_label("gctest", "orphan_pods")
    replicas = estimate_maximum_pods(f, 10, 100)
    rc = f.create(f.path("replicationcontrollers"), owner_rc("simpletest.rc", replicas, labels))
    wait_for_replicas(f, "simpletest.rc")
    f.delete(f.path("replicationcontrollers", "simpletest.rc"), delete_options("Orphan", rc["metadata"]["uid"]))
    wait_for(lambda: count(f, "replicationcontrollers") == 0, timeout=120, interval=1, what="the rc to be deleted")
    # Wait 30 seconds to see whether the garbage collector mistakenly deletes the pods.
    time.sleep(30)
    pods = f.list(f.path("pods"))["items"]
    expect_equal(len(pods), replicas, "pods left after orphaning")
    for p in pods:
        expect(p["metadata"].get("deletionTimestamp") is None, f"orphaned pod {p['metadata']['name']} is being deleted")
        expect(not any(r.get("uid") == rc["metadata"]["uid"] for r in p["metadata"].get("ownerReferences") or []),
               f"orphaned pod {p['metadata']['name']} still refers to the deleted rc")
    for p in pods:
        f.delete_ignore(f.path("pods", p["metadata"]["name"]))


@conformance("[sig-api-machinery] Garbage collector should delete RS created by deployment when not orphaning [Conformance]")
def gc_delete_deployment_background(f):
    labels = uniq_label("gctest", "delete_rs")
    d = f.create(f.path("deployments", group="apps"), owner_deployment("simpletest.deployment", labels))
    wait_for(lambda: count(f, "replicasets", "apps") > 0, timeout=60, interval=0.5,
             what="the Deployment to create a ReplicaSet")
    f.delete(f.path("deployments", "simpletest.deployment", group="apps"),
             delete_options("Background", d["metadata"]["uid"]))
    wait_for(lambda: remaining(f, deployments=0, replicasets=0, pods=0), timeout=120, interval=0.5,
             what="the deployment, its ReplicaSets and pods to be garbage collected")


@conformance("[sig-api-machinery] Garbage collector should orphan RS created by deployment when deleteOptions.PropagationPolicy is Orphan [Conformance]")
def gc_orphan_deployment_rs(f):
    labels = uniq_label("gctest", "orphan_rs")
    d = f.create(f.path("deployments", group="apps"), owner_deployment("simpletest.deployment", labels))

    def first_rs():
        items = f.list(f.path("replicasets", group="apps"))["items"]
        return items[0] if items else None
    rs = wait_for(first_rs, timeout=60, interval=0.5, what="the Deployment to create a ReplicaSet")
    generation = rs["metadata"].get("generation", 1)

    def rs_settled():
        cur = f.get(f.path("replicasets", rs["metadata"]["name"], group="apps"))
        st = cur.get("status") or {}
        return st.get("observedGeneration", 0) >= generation and st.get("replicas", 0) == rs["spec"]["replicas"]
    wait_for(rs_settled, timeout=60, interval=0.1, what="the ReplicaSet's status.replicas to reach spec.replicas")
    f.delete(f.path("deployments", "simpletest.deployment", group="apps"),
             delete_options("Orphan", d["metadata"]["uid"]))
    wait_for(lambda: count(f, "deployments", "apps") == 0, timeout=120, interval=0.5,
             what="the deployment to be deleted")
    # Once the deployment is gone the GC has done what it was going to do.
    rss = f.list(f.path("replicasets", group="apps"))["items"]
    pods = f.list(f.path("pods"))["items"]
    expect(len(rss) == 1 and len(pods) == 2,
           f"expected 1 ReplicaSet and 2 pods to remain, got {len(rss)} and {len(pods)}")
    for r in rss:
        ctl = [o for o in r["metadata"].get("ownerReferences") or [] if o.get("controller")]
        expect(not ctl, f"ReplicaSet {r['metadata']['name']} still has a controller ownerReference: {ctl}")


@conformance("[sig-api-machinery] Garbage collector should keep the rc around until all its pods are deleted if the deleteOptions says so [Conformance]")
def gc_foreground_rc(f):
    labels = uniq_label("gctest", "delete_pods_foreground")
    replicas = estimate_maximum_pods(f, 10, 100)
    rc = f.create(f.path("replicationcontrollers"), owner_rc("simpletest.rc", replicas, labels))
    wait_for_replicas(f, "simpletest.rc")
    f.delete(f.path("replicationcontrollers", "simpletest.rc"), delete_options("Foreground", rc["metadata"]["uid"]))
    # In the foreground the rc stays (with the foregroundDeletion finalizer) while pods remain.
    p = f.path("replicationcontrollers", "simpletest.rc")

    def rc_gone():
        try:
            cur = f.get(p)
        except ApiError as e:
            if e.status == 404:
                return True
            raise
        pods = f.list(f.path("pods"))["items"]
        if not pods:
            return False  # the GC removes the finalizer next
        expect("foregroundDeletion" in (cur["metadata"].get("finalizers") or []),
               "rc still has pods but no foregroundDeletion finalizer")
        return False
    wait_for(rc_gone, timeout=90, interval=1, what="the rc to be deleted")
    pods = f.list(f.path("pods"))["items"]
    expect_equal(len(pods), 0, "pods left once the rc is gone")


@conformance("[sig-api-machinery] Garbage collector should not delete dependents that have both valid owner and owner that's waiting for dependents to be deleted [Conformance]")
def gc_valid_and_pending_owners(f):
    replicas = estimate_maximum_pods(f, 10, 100)
    half = replicas // 2
    rc1 = f.create(f.path("replicationcontrollers"),
                   owner_rc("simpletest-rc-to-be-deleted", replicas, uniq_label("gctest_d", "valid_and_pending_owners_d")))
    rc2 = f.create(f.path("replicationcontrollers"),
                   owner_rc("simpletest-rc-to-stay", 0, uniq_label("gctest_s", "valid_and_pending_owners_s")))
    wait_for_replicas(f, "simpletest-rc-to-be-deleted")
    # Half of rc1's pods get rc2 as a second (non-controller) owner.
    pods = f.list(f.path("pods"))["items"]
    ref = {"apiVersion": "v1", "kind": "ReplicationController", "name": rc2["metadata"]["name"],
           "uid": rc2["metadata"]["uid"]}
    shared = set()
    for pod in pods[:half]:
        got = f.patch(f.path("pods", pod["metadata"]["name"]), {"metadata": {"ownerReferences": [ref]}}, "strategic")
        expect_equal(len(got["metadata"].get("ownerReferences") or []), 2,
                     f"owner references of {pod['metadata']['name']} after the strategic merge patch")
        shared.add(pod["metadata"]["name"])
    f.delete(f.path("replicationcontrollers", rc1["metadata"]["name"]),
             delete_options("Foreground", rc1["metadata"]["uid"]))
    wait_rc_gone(f, rc1["metadata"]["name"], 90)
    pods = f.list(f.path("pods"))["items"]
    expect_equal(len(pods), half, "pods left")
    for pod in pods:
        m = pod["metadata"]
        expect(m["name"] in shared, f"pod {m['name']} survived but had only the deleted owner")
        expect(m.get("deletionTimestamp") is None, f"pod {m['name']} has a deletionTimestamp")
        refs = m.get("ownerReferences") or []
        expect(len(refs) == 1 and refs[0]["uid"] == rc2["metadata"]["uid"],
               f"pod {m['name']} should only have rc2 as owner, got {refs}")
    for pod in pods:
        f.delete_ignore(f.path("pods", pod["metadata"]["name"]))
