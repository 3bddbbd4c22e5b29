"""ReplicationController (test/e2e/apps/rc.go): the failure condition a pod quota causes."""

from conformance.framework import conformance, wait_for


def replica_failure(rc):
    return next((c for c in (rc.get("status") or {}).get("conditions") or [] if c["type"] == "ReplicaFailure"), None)


@conformance("[sig-apps] ReplicationController should surface a failure condition on a common issue like exceeded quota [Conformance]")
def rc_exceeded_quota(f):
    name = "condition-test"
    f.create(f.path("resourcequotas"), {"metadata": {"name": name}, "spec": {"hard": {"pods": "2"}}})
    wait_for(lambda: ((f.get(f.path("resourcequotas", name)).get("status") or {}).get("hard") or {}).get("pods") == "2",
             timeout=60, what="quota status.hard.pods = 2")
    p = f.path("replicationcontrollers", name)
    f.create(f.path("replicationcontrollers"), {"metadata": {"name": name}, "spec": {
        "replicas": 3, "selector": {"name": name},
        "template": {"metadata": {"labels": {"name": name}},
                     "spec": {"containers": [{"name": "httpd", "image": "registry.k8s.io/e2e-test-images/httpd:2.4.38-4"}]}}}})

    def failing():
        rc = f.get(p)
        return (rc.get("status") or {}).get("observedGeneration", 0) >= rc["metadata"]["generation"] and replica_failure(rc) is not None
    wait_for(failing, timeout=60, interval=1, what="ReplicaFailure condition")

    def scale_down():
        rc = f.get(p)
        rc["spec"]["replicas"] = 2
        return f.update(p, rc)
    rc = f.retry_on_conflict(scale_down)
    generation = rc["metadata"]["generation"]

    def recovered():
        rc = f.get(p)
        return (rc.get("status") or {}).get("observedGeneration", 0) >= generation and replica_failure(rc) is None
    wait_for(recovered, timeout=60, interval=1, what="no ReplicaFailure condition")
