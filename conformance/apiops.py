"""The shape shared by upstream's "should support <Kind> API operations" tests: discovery of
the group/version/resource, create three labelled objects, get, list (namespace and
cluster-wide), watch, patch, update, observe the watch events, the status subresource
(get, patch, update), delete one, delete the collection."""

import copy
import uuid

from conformance.framework import ApiError, conformance, expect, expect_equal, expect_error, path_for


def check_discovery(f, group, version, plural, with_status=False):
    if group:
        groups = f.get("/apis")["groups"]
        g = next((g for g in groups if g["name"] == group), None)
        expect(g is not None, f"group {group} not in /apis")
        expect(any(v["version"] == version for v in g["versions"]), f"{group}/{version} not in /apis")
        g2 = f.get(f"/apis/{group}")
        expect(any(v["version"] == version for v in g2["versions"]), f"{version} not in /apis/{group}")
    rl = f.get(path_for("", group=group, version=version).rstrip("/"))
    names = [r["name"] for r in rl["resources"]]
    expect(plural in names, f"{plural} not in {group}/{version} discovery")
    if with_status:
        expect(f"{plural}/status" in names, f"{plural}/status not in {group}/{version} discovery")


def api_operations(f, group, version, plural, make, namespaced=True, status=None, discovery=True):
    """make(name, labels) -> object body. status: None, or a function(obj) -> a status
    value used for the /status update (a patch sets a marker annotation alongside)."""
    ns = f.ns if namespaced else None
    label = {"special-label": str(uuid.uuid4())}
    sel = f"special-label={label['special-label']}"
    coll = path_for(plural, namespace=ns, group=group, version=version)
    cluster_coll = path_for(plural, group=group, version=version)
    if discovery:
        check_discovery(f, group, version, plural, status is not None)

    prefix = f"e2e-{plural[:20]}-{uuid.uuid4().hex[:5]}"
    names = [f"{prefix}-{i}" for i in (1, 2, 3)]
    created = []
    for n in names:
        body = make(n, dict(label))
        created.append(f.create(coll, body))
        if not namespaced:
            f.defer(f.delete_ignore, path_for(plural, n, group=group, version=version))
    p1 = path_for(plural, names[0], namespace=ns, group=group, version=version)
    got = f.get(p1)
    expect_equal(got["metadata"]["uid"], created[0]["metadata"]["uid"], "uid of the fetched object")

    lst = f.list(coll, labelSelector=sel)
    expect_equal(len(lst["items"]), 3, "objects listed with the label selector")
    if namespaced:
        all_ns = f.list(cluster_coll, labelSelector=sel)
        expect_equal(len(all_ns["items"]), 3, "objects listed cluster-wide with the label selector")
    w = f.watch(coll, labelSelector=sel, resourceVersion=lst["metadata"]["resourceVersion"])
    try:
        patched = f.patch(p1, {"metadata": {"annotations": {"patched": "true"}}})
        expect_equal(patched["metadata"].get("annotations", {}).get("patched"), "true", "patched annotation")
        cur = f.get(p1)
        cur["metadata"].setdefault("annotations", {})["updated"] = "true"
        updated = f.update(p1, cur)
        expect_equal(updated["metadata"]["annotations"].get("updated"), "true", "updated annotation")

        def has_both(t, o):
            a = o["metadata"].get("annotations") or {}
            return t == "MODIFIED" and o["metadata"]["name"] == names[0] and a.get("patched") == "true" \
                and a.get("updated") == "true"
        w.until(has_both, timeout=30, what="MODIFIED event with both annotations")
    finally:
        w.stop()

    if status is not None:
        sp = p1 + "/status"
        st = f.get(sp)
        expect_equal(st["metadata"]["uid"], created[0]["metadata"]["uid"], "uid from /status")
        sp_res = f.patch(sp, {"metadata": {"annotations": {"patchedstatus": "true"}},
                              "status": status(st)})
        expect_equal(sp_res["metadata"]["annotations"].get("patchedstatus"), "true", "annotation patched via /status")
        cur = f.get(p1)
        cur["status"] = status(cur)
        cur["metadata"]["annotations"]["updatedstatus"] = "true"
        su = f.update(sp, cur)
        expect_equal(su["metadata"]["annotations"].get("updatedstatus"), "true", "annotation updated via /status")

    f.delete(p1)
    expect_error(404, f.get, p1)
    lst = f.list(coll, labelSelector=sel)
    expect_equal(len(lst["items"]), 2, "objects left after deleting one")
    f.call("DELETE", coll, query={"labelSelector": sel})
    lst = f.list(coll, labelSelector=sel)
    expect_equal(len(lst["items"]), 0, "objects left after deletecollection")
