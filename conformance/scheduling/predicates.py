"""SIG Scheduling predicates (test/e2e/scheduling/predicates.go): what the scheduler refuses,
seen through the pod's PodScheduled condition and the scheduler's FailedScheduling event."""

from conformance.framework import TestFailure, conformance, expect, wait_for


def pause_pod(name, labels, node_selector):
    """Upstream's `initPausePod` for a `pausePodConfig` with these fields."""
    return {"metadata": {"name": name, "labels": labels},
            "spec": {"nodeSelector": node_selector,
                     "containers": [{"name": name, "image": "registry.k8s.io/pause:3.10"}]}}


def schedule_failure_event(f, pod_name):
    """Upstream's `scheduleFailureEvent` predicate over the namespace's events."""
    for e in f.list(f.path("events"))["items"]:
        if e["metadata"]["name"].startswith(pod_name) and e.get("type") == "Warning" \
                and e.get("reason") == "FailedScheduling":
            return e
    return None


def condition(pod, type_):
    return next((c for c in (pod.get("status") or {}).get("conditions") or [] if c["type"] == type_), None)


def pods_scheduled(f):
    """Upstream's `GetPodsScheduled`: (scheduled, not scheduled) pods of the namespace; a pod
    without a node must carry PodScheduled=False, counted when its reason is Unschedulable."""
    scheduled, not_scheduled = [], []
    for p in f.list(f.path("pods"))["items"]:
        name = p["metadata"]["name"]
        cond = condition(p, "PodScheduled")
        if cond is None:
            raise TestFailure(f"did not find 'scheduled' condition for pod {name}")
        if p["spec"].get("nodeName"):
            expect(cond["status"] == "True", f"pod {name} has a node but PodScheduled is {cond['status']}")
            scheduled.append(name)
        else:
            expect(cond["status"] == "False", f"pod {name} has no node but PodScheduled is {cond['status']}")
            if cond.get("reason") == "Unschedulable":
                not_scheduled.append(name)
    return scheduled, not_scheduled


def verify_result(f, expected_scheduled, expected_not_scheduled):
    scheduled, not_scheduled = pods_scheduled(f)
    expect(len(not_scheduled) == expected_not_scheduled,
           f"not scheduled pods: expected {expected_not_scheduled}, got {not_scheduled}")
    expect(len(scheduled) == expected_scheduled, f"scheduled pods: expected {expected_scheduled}, got {scheduled}")


@conformance("[sig-scheduling] SchedulerPredicates [Serial] validates that NodeSelector is respected if not matching [Conformance]")
def node_selector_not_matching(f):
    # Trying to schedule Pod with nonempty NodeSelector.
    pod_name = "restricted-pod"
    f.create(f.path("pods"), pause_pod(pod_name, {"name": "restricted"}, {"label": "nonempty"}))
    # WaitForSchedulerAfterAction(..., expectSuccess=false): a FailedScheduling event within a minute.
    wait_for(lambda: schedule_failure_event(f, pod_name), timeout=60, interval=1,
             what=f"a FailedScheduling event for {pod_name}")
    verify_result(f, 0, 1)
