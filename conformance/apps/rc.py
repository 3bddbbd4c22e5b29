"""ReplicationController (test/e2e/apps/rc.go): the scale subresource and releasing a pod whose
labels stop matching. Both count created pods only; none has to run."""

from conformance.framework import ApiError, conformance, expect, expect_equal, rand_suffix, wait_for

WEBSERVER = "registry.k8s.io/e2e-test-images/httpd:2.4.38-4"


def new_rc(name, replicas, labels, container=None):
    """Upstream's newRC."""
    return {"apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": labels,
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"terminationGracePeriodSeconds": 0,
                                           "containers": [{"name": container or "httpd", "image": WEBSERVER}]}}}}


def status_replicas(f, name, want):
    return lambda: (f.get(f.path("replicationcontrollers", name)).get("status") or {}).get("replicas", 0) == want


@conformance("[sig-apps] ReplicationController should get and update a ReplicationController scale [Conformance]")
def rc_scale(f):
    name = "e2e-rc-" + rand_suffix()
    f.create(f.path("replicationcontrollers"), new_rc(name, 1, {"name": name}))
    wait_for(status_replicas(f, name, 1), timeout=60, interval=1, what="rc status.replicas = 1")
    scale_path = f.path("replicationcontrollers", name, sub="scale")
    scale = f.get(scale_path)
    expect_equal(scale.get("kind"), "Scale", "scale kind")
    expect_equal((scale.get("status") or {}).get("replicas"), 1, "scale status.replicas")
    scale["metadata"]["resourceVersion"] = ""  # an unconditional update
    scale["spec"]["replicas"] = 2
    f.update(scale_path, scale)
    wait_for(status_replicas(f, name, 2), timeout=60, interval=1, what="rc status.replicas = 2")
    expect_equal(f.get(f.path("replicationcontrollers", name))["spec"]["replicas"], 2, "rc spec.replicas after the scale update")


@conformance("[sig-apps] ReplicationController should release no longer matching pods [Conformance]")
def rc_release(f):
    name = "pod-release"
    rc = f.create(f.path("replicationcontrollers"), new_rc(name, 1, {"name": name}, container=name))

    def created():
        pods = [p for p in f.list(f.path("pods"), labelSelector=f"name={name}")["items"]
                if not p["metadata"].get("deletionTimestamp")]
        return pods if len(pods) == 1 else None
    pod = wait_for(created, timeout=120, interval=1, what="the rc's pod")[0]
    pod_path = f.path("pods", pod["metadata"]["name"])

    def relabel():
        cur = f.get(pod_path)
        cur["metadata"]["labels"] = {"name": "not-matching-name"}
        try:
            return f.update(pod_path, cur)
        except ApiError as e:
            if e.status == 409:
                return None
            raise
    wait_for(relabel, timeout=60, interval=1, what="the pod's labels to change")

    def released():
        cur = f.get(pod_path)
        return not any(o.get("controller") and o.get("uid") == rc["metadata"]["uid"]
                       for o in cur["metadata"].get("ownerReferences") or [])
    wait_for(released, timeout=60, interval=1, what="the pod to be released by the rc")
    expect(f.get(pod_path)["metadata"].get("deletionTimestamp") is None, "the released pod is being deleted")
