"""Namespaces [Serial] (namespace.go): patch, status, update, finalizers."""

from conformance.framework import ApiError, conformance, expect, expect_equal, expect_error, rand_suffix, wait_for


@conformance("[sig-api-machinery] Namespaces [Serial] should patch a Namespace [Conformance]")
def ns_patch(f):
    name = f"nspatchtest-{rand_suffix(8)}"
    f.create("/api/v1/namespaces", {"metadata": {"name": name}})
    f.defer(f.delete_ignore, f"/api/v1/namespaces/{name}")
    f.patch(f"/api/v1/namespaces/{name}", {"metadata": {"labels": {"testLabel": "testValue"}}}, "strategic")
    ns = f.get(f"/api/v1/namespaces/{name}")
    expect_equal(ns["metadata"].get("labels", {}).get("testLabel"), "testValue", "patched label")


@conformance("[sig-api-machinery] Namespaces [Serial] should apply changes to a namespace status [Conformance]")
def ns_status(f):
    p = f"/api/v1/namespaces/{f.ns}"
    st = f.get(p + "/status")
    expect_equal(st["status"].get("phase"), "Active", "namespace phase")
    cond = {"type": "StatusPatch", "status": "True", "reason": "E2E", "message": "Patched by an e2e test"}
    patched = f.patch(p + "/status", {"metadata": {"annotations": {"e2e-patched-ns-status": f.ns}},
                                      "status": {"conditions": [cond]}})
    expect_equal(patched["metadata"].get("annotations", {}).get("e2e-patched-ns-status"), f.ns, "patched annotation")
    expect_equal(patched["status"]["conditions"][-1]["reason"], "E2E", "reason of the patched condition")
    cur = f.get(p)
    cur["status"].setdefault("conditions", []).append(
        {"type": "StatusUpdate", "status": "True", "reason": "E2E", "message": "Updated by an e2e test"})
    updated = f.update(p + "/status", cur)
    expect_equal(len(updated["status"]["conditions"]), 2, "conditions after the status update")
    expect_equal(updated["status"]["conditions"][-1]["message"], "Updated by an e2e test", "updated condition")


@conformance("[sig-api-machinery] Namespaces [Serial] should apply an update to a Namespace [Conformance]")
def ns_update(f):
    p = f"/api/v1/namespaces/{f.ns}"
    cur = f.get(p)
    cur["metadata"].setdefault("labels", {})[f.ns] = "updated"
    updated = f.update(p, cur)
    expect_equal(updated["metadata"]["labels"].get(f.ns), "updated", "updated label")


@conformance("[sig-api-machinery] Namespaces [Serial] should apply a finalizer to a Namespace [Conformance]")
def ns_finalizer(f):
    fake = "e2e.example.com/fakeFinalizer"
    name = f"e2e-ns-{rand_suffix()}"
    f.create("/api/v1/namespaces", {"metadata": {"name": name}})
    f.defer(f.delete_ignore, f"/api/v1/namespaces/{name}")
    p = f"/api/v1/namespaces/{name}"
    ns = f.get(p)
    ns["spec"]["finalizers"] = (ns["spec"].get("finalizers") or []) + [fake]
    res = f.update(p + "/finalize", ns)
    expect(fake in res["spec"].get("finalizers", []), f"finalizers after adding: {res['spec']}")
    ns = f.get(p)
    expect(fake in ns["spec"].get("finalizers", []), f"stored finalizers after adding: {ns['spec']}")
    ns["spec"]["finalizers"] = [x for x in ns["spec"]["finalizers"] if x != fake]
    res = f.update(p + "/finalize", ns)
    expect(fake not in res["spec"].get("finalizers", []), f"finalizers after removing: {res['spec']}")
    expect("kubernetes" in res["spec"].get("finalizers", []), f"the kubernetes finalizer was lost: {res['spec']}")


@conformance("[sig-api-machinery] Namespaces [Serial] should ensure that all services are removed when a namespace is deleted [Conformance]")
def ns_delete_removes_services(f):
    ns = f.create("/api/v1/namespaces", {"metadata": {"generateName": "nsdeletetest-"}})["metadata"]["name"]
    f.defer(f.delete_ignore, f"/api/v1/namespaces/{ns}")
    wait_for(lambda: f.get(f"/api/v1/namespaces/{ns}/serviceaccounts/default"), 30,
             what="the default service account of the namespace")
    f.create(f"/api/v1/namespaces/{ns}/services", {
        "metadata": {"name": "test-service", "labels": {"foo": "bar", "baz": "blah"}},
        "spec": {"ports": [{"port": 80, "targetPort": 80}]},
    })
    f.delete(f"/api/v1/namespaces/{ns}")

    def gone():
        try:
            f.get(f"/api/v1/namespaces/{ns}")
            return False
        except ApiError as e:
            if e.status == 404:
                return True
            raise
    wait_for(gone, 60, 1.0, what="the namespace to be removed")
    f.create("/api/v1/namespaces", {"metadata": {"name": ns}})
    expect_error(404, f.get, f"/api/v1/namespaces/{ns}/services/test-service")
