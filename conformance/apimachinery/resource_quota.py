"""ResourceQuota (resource_quota.go): the API-only tests."""

from conformance.framework import conformance, expect_equal, expect_error, rand_suffix


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
