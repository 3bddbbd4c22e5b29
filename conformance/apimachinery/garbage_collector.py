"""Garbage collector (garbage_collector.go): the tests that need no workload controller."""

from conformance.framework import conformance, expect, wait_for


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
