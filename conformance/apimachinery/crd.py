"""CustomResourceDefinition resources and Watch (custom_resource_definition.go,
crd_watch.go)."""

import uuid

from conformance import crdutil
from conformance.framework import conformance, expect, expect_equal, expect_error, wait_for

CRD_PATH = crdutil.CRD_PATH


def random_crd(scope="Cluster", schema=None):
    group = crdutil.random_group("mygroup")
    plural = f"e2e-test-crd-{uuid.uuid4().hex[:6]}s"
    return crdutil.crd_body(group, plural, "E2e-test-crd-" + plural[13:-1], scope=scope, schema=schema)


@conformance("[sig-api-machinery] CustomResourceDefinition resources [Privileged:ClusterAdmin] Simple CustomResourceDefinition creating/deleting custom resource definition objects works [Conformance]")
def crd_create_delete(f):
    crd = crdutil.create_crd(f, random_crd())
    f.delete(f"{CRD_PATH}/{crd['metadata']['name']}")
    wait_for(lambda: f.request("GET", f"{CRD_PATH}/{crd['metadata']['name']}").status == 404,
             timeout=30, what="CRD gone")


@conformance("[sig-api-machinery] CustomResourceDefinition resources [Privileged:ClusterAdmin] Simple CustomResourceDefinition listing custom resource definition objects works [Conformance]")
def crd_list(f):
    label = str(uuid.uuid4())
    sel = f"e2e-list-test-uuid={label}"
    names = set()
    for _ in range(10):
        body = random_crd()
        body["metadata"]["labels"] = {"e2e-list-test-uuid": label}
        crd = crdutil.create_crd(f, body, wait=False)
        names.add(crd["metadata"]["name"])
    lst = f.list(CRD_PATH, labelSelector=sel)
    expect_equal({c["metadata"]["name"] for c in lst["items"]}, names, "CRDs listed by label")
    f.call("DELETE", CRD_PATH, query={"labelSelector": sel})
    wait_for(lambda: not f.list(CRD_PATH, labelSelector=sel)["items"], timeout=30,
             what="CRDs deleted by collection")


@conformance("[sig-api-machinery] CustomResourceDefinition resources [Privileged:ClusterAdmin] Simple CustomResourceDefinition getting/updating/patching custom resource definition status sub-resource works [Conformance]")
def crd_status(f):
    crd = crdutil.create_crd(f, random_crd())
    p = f"{CRD_PATH}/{crd['metadata']['name']}"
    st = f.get(p + "/status")
    expect_equal(st["metadata"]["name"], crd["metadata"]["name"], "name from /status")
    st["status"].setdefault("conditions", []).append(
        {"type": "StatusUpdate", "status": "True", "reason": "E2E", "message": "Set from e2e test"})
    upd = f.update(p + "/status", st)
    expect(any(c["type"] == "StatusUpdate" and c["message"] == "Set from e2e test"
               for c in upd["status"]["conditions"]), f"updated status conditions {upd['status']}")
    cond = {"type": "StatusPatched", "status": "True", "reason": "E2E", "message": "Set from an e2e test"}
    conds = upd["status"]["conditions"] + [cond]
    pat = f.patch(p + "/status", {"status": {"conditions": conds}})
    expect(any(c["type"] == "StatusPatched" for c in pat["status"]["conditions"]),
           f"patched status conditions {pat['status']}")


@conformance("[sig-api-machinery] CustomResourceDefinition resources [Privileged:ClusterAdmin] should include custom resource definition resources in discovery documents [Conformance]")
def crd_discovery(f):
    groups = f.get("/apis")["groups"]
    g = next((g for g in groups if g["name"] == "apiextensions.k8s.io"), None)
    expect(g is not None, "apiextensions.k8s.io not in /apis")
    expect(any(v["groupVersion"] == "apiextensions.k8s.io/v1" for v in g["versions"]), "v1 not listed")
    expect_equal(g["preferredVersion"]["groupVersion"], "apiextensions.k8s.io/v1", "preferred version in /apis")
    g2 = f.get("/apis/apiextensions.k8s.io")
    expect(any(v["groupVersion"] == "apiextensions.k8s.io/v1" for v in g2["versions"]), "v1 not in group")
    expect_equal(g2["preferredVersion"]["groupVersion"], "apiextensions.k8s.io/v1", "preferred version")
    rl = f.get("/apis/apiextensions.k8s.io/v1")
    expect(any(r["name"] == "customresourcedefinitions" for r in rl["resources"]), "customresourcedefinitions not discovered")


@conformance("[sig-api-machinery] CustomResourceDefinition resources [Privileged:ClusterAdmin] custom resource defaulting for requests and from storage works [Conformance]")
def crd_defaulting(f):
    schema = {"openAPIV3Schema": {"type": "object", "properties": {
        "a": {"type": "string", "default": "A"}}}}
    body = random_crd(scope="Cluster", schema=schema)
    crd = crdutil.create_crd(f, body)
    spec = crd["spec"]
    coll = f"/apis/{spec['group']}/v1/{spec['names']['plural']}"
    kind, api_version = spec["names"]["kind"], f"{spec['group']}/v1"
    f.defer(f.delete_ignore, coll + "/foo")
    f.defer(f.delete_ignore, coll + "/bar")
    foo = f.create(coll, {"apiVersion": api_version, "kind": kind, "metadata": {"name": "foo"}})
    expect_equal(foo.get("a"), "A", "default applied on create")
    # change the default: drop a's default, add b with a default
    cur = f.get(f"{CRD_PATH}/{crd['metadata']['name']}")
    cur["spec"]["versions"][0]["schema"] = {"openAPIV3Schema": {"type": "object", "properties": {
        "a": {"type": "string"}, "b": {"type": "string", "default": "B"}}}}
    f.update(f"{CRD_PATH}/{crd['metadata']['name']}", cur)

    def new_default():
        f.delete_ignore(coll + "/bar")
        bar = f.create(coll, {"apiVersion": api_version, "kind": kind, "metadata": {"name": "bar"}})
        return bar if bar.get("b") == "B" else None
    bar = wait_for(new_default, timeout=30, what="the new default b to apply on create")
    expect("a" not in bar, f"the removed default a was applied: {bar}")
    foo = f.get(coll + "/foo")
    expect_equal(foo.get("a"), "A", "a persisted in storage")
    expect_equal(foo.get("b"), "B", "b defaulted when read from storage")


@conformance("[sig-api-machinery] CustomResourceDefinition Watch [Privileged:ClusterAdmin] CustomResourceDefinition Watch watch on custom resource definition objects [Conformance]")
def crd_watch(f):
    group = crdutil.random_group("mygroup")
    crd = crdutil.create_crd(f, crdutil.crd_body(group, "noxus", "WishIHadChosenNoxu", scope="Cluster",
                                                 singular="nonenglishnoxu", list_kind="NoxuItemList"))
    coll = f"/apis/{group}/v1/noxus"
    av = f"{group}/v1"

    def cr(name):
        return {"apiVersion": av, "kind": "WishIHadChosenNoxu", "metadata": {"name": name},
                "content": {"key": "value"}, "num": {"num1": 9223372036854775807, "num2": 1000000}}
    with f.watch(coll) as w:
        f.create(coll, cr("name1"))
        t, o = w.until(lambda t, o: True, what="ADDED name1")
        expect_equal((t, o["metadata"]["name"]), ("ADDED", "name1"), "first event")
        f.create(coll, cr("name2"))
        t, o = w.until(lambda t, o: True, what="ADDED name2")
        expect_equal((t, o["metadata"]["name"]), ("ADDED", "name2"), "second event")
        for name in ("name1", "name2"):
            f.patch(f"{coll}/{name}", {"dummy": "test"})
            t, o = w.until(lambda t, o: True, what=f"MODIFIED {name}")
            expect_equal((t, o["metadata"]["name"], o.get("dummy")), ("MODIFIED", name, "test"), "modify event")
        for name in ("name1", "name2"):
            f.delete(f"{coll}/{name}")
            t, o = w.until(lambda t, o: True, what=f"DELETED {name}")
            expect_equal((t, o["metadata"]["name"]), ("DELETED", name), "delete event")
