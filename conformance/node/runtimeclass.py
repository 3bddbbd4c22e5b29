"""RuntimeClass scheduling (test/e2e/common/node/runtimeclass.go): a pod naming a RuntimeClass
is scheduled, with the class's overhead copied into the pod by admission. Upstream only waits
for the pod to be scheduled ("This test doesn't validate that the Pod will actually start"),
so a registered Node object the scheduler can bind to stands in for the cluster's nodes
(see `framework.schedulable_node`); nothing runs the pod."""

from conformance.framework import conformance, expect, expect_equal, schedulable_node, wait_for

PRECONFIGURED_HANDLER = "test-handler"  # upstream's e2eruntimeclass.PreconfiguredRuntimeClassHandler


def create_runtimeclass(f, name, handler, overhead=None):
    """Upstream's createRuntimeClass: a namespaced name, deleted after the test."""
    full = f"{f.ns}-{name}"
    body = {"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass", "metadata": {"name": full}, "handler": handler}
    if overhead:
        body["overhead"] = {"podFixed": overhead}
    f.create("/apis/node.k8s.io/v1/runtimeclasses", body)
    f.defer(f.delete_ignore, f"/apis/node.k8s.io/v1/runtimeclasses/{full}")
    return full


def runtimeclass_pod(rc_name):
    """Upstream's NewRuntimeClassPod."""
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "test-runtimeclass-"},
            "spec": {"runtimeClassName": rc_name, "restartPolicy": "Never", "automountServiceAccountToken": False,
                     "containers": [{"name": "test", "image": "registry.k8s.io/e2e-test-images/busybox:1.36.1-1",
                                     "command": ["true"]}]}}


def scheduled_pods(f):
    """Upstream's WaitForPodsWithLabelScheduled (empty selector): every pod has a node."""
    pods = f.list(f.path("pods"))["items"]
    if pods and all(p["spec"].get("nodeName") for p in pods):
        return pods
    return None


def schedule_with(f, overhead):
    schedulable_node(f)
    rc = create_runtimeclass(f, "preconfigured-handler", PRECONFIGURED_HANDLER, overhead)
    pod = f.create(f.path("pods"), runtimeclass_pod(rc))
    pods = wait_for(lambda: scheduled_pods(f), timeout=60, interval=1, what="the pod to be scheduled")
    expect_equal(len(pods), 1, "pods in the namespace")
    expect_equal(pods[0]["metadata"]["name"], pod["metadata"]["name"], "the scheduled pod")
    cond = next((c for c in pods[0].get("status", {}).get("conditions") or [] if c["type"] == "PodScheduled"), None)
    expect(cond is not None and cond["status"] == "True", f"PodScheduled condition: {cond}")
    return pods[0]


@conformance("[sig-node] RuntimeClass should schedule a Pod requesting a RuntimeClass without PodOverhead [NodeConformance] [Conformance]")
def runtimeclass_schedule_no_overhead(f):
    pod = schedule_with(f, None)
    expect(not pod["spec"].get("overhead"), f"overhead should not be set: {pod['spec'].get('overhead')}")


@conformance("[sig-node] RuntimeClass should schedule a Pod requesting a RuntimeClass and initialize its Overhead [NodeConformance] [Conformance]")
def runtimeclass_schedule_overhead(f):
    pod = schedule_with(f, {"cpu": "10m", "memory": "1Mi"})
    overhead = pod["spec"].get("overhead") or {}
    expect_equal(overhead.get("cpu"), "10m", "overhead cpu")
    expect_equal(overhead.get("memory"), "1Mi", "overhead memory")
