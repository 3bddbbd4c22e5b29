"""DisruptionController (test/e2e/apps/disruption.go): the tests that need the disruption
controller but no running pod."""

from conformance.framework import Framework, conformance, expect_equal, expect_error, wait_for

DEFAULT_LABELS = {"foo": "bar"}


def create_pdb_min_available(f, ns, name, min_available, labels):
    """Upstream's createPDBMinAvailableOrDie, which waits for the controller to see it."""
    f.create(f.path("poddisruptionbudgets", group="policy", namespace=ns), {
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"selector": {"matchLabels": {"foo": "bar"}}, "minAvailable": min_available}})
    wait_for_processed(f, ns, name)


def wait_for_processed(f, ns, name):
    """Upstream's waitForPdbToBeProcessed: status.observedGeneration caught up."""
    p = f.path("poddisruptionbudgets", name, group="policy", namespace=ns)

    def processed():
        pdb = f.get(p)
        return (pdb.get("status") or {}).get("observedGeneration", 0) >= pdb["metadata"].get("generation", 0) \
            and "observedGeneration" in (pdb.get("status") or {})
    wait_for(processed, timeout=60, interval=0.5, what=f"pdb {name} processed")


@conformance("[sig-apps] DisruptionController Listing PodDisruptionBudgets for all namespaces should list and delete a collection of PodDisruptionBudgets [Conformance]")
def pdb_list_and_delete_collection(f):
    other = Framework(f.c, "disruption-2")
    other.setup()
    f.defer(other.teardown)
    special = {"foo_pdb": "bar_pdb"}
    sel = "foo_pdb=bar_pdb"
    create_pdb_min_available(f, f.ns, "foo", 2, special)
    create_pdb_min_available(f, f.ns, "foo2", "1%", special)
    create_pdb_min_available(f, other.ns, "foo3", 2, special)
    names = sorted(p["metadata"]["name"] for p in f.list("/apis/policy/v1/poddisruptionbudgets", labelSelector=sel)["items"])
    expect_equal(names, ["foo", "foo2", "foo3"], "PDBs in all namespaces")
    coll = f.path("poddisruptionbudgets", group="policy")
    names = sorted(p["metadata"]["name"] for p in f.list(coll, labelSelector=sel)["items"])
    expect_equal(names, ["foo", "foo2"], f"PDBs in namespace {f.ns}")
    f.call("DELETE", coll)
    wait_for(lambda: f.list(coll)["items"] == [], timeout=60, what="PDBs of the namespace deleted")


@conformance("[sig-apps] DisruptionController should create a PodDisruptionBudget [Conformance]")
def pdb_create(f):
    p = f.path("poddisruptionbudgets", "foo", group="policy")
    create_pdb_min_available(f, f.ns, "foo", "1%", DEFAULT_LABELS)

    def update():
        cur = f.get(p)
        cur["spec"]["minAvailable"] = "2%"
        return f.update(p, cur)
    updated = f.retry_on_conflict(update)
    expect_equal(updated["spec"]["minAvailable"], "2%", "updated minAvailable")
    wait_for_processed(f, f.ns, "foo")
    patched = f.patch(p, {"spec": {"minAvailable": "3%"}})
    expect_equal(patched["spec"]["minAvailable"], "3%", "patched minAvailable")
    wait_for_processed(f, f.ns, "foo")
    f.delete(p)
    expect_error(404, f.get, p)
