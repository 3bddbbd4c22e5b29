"""PersistentVolumes CSI Conformance lifecycle (test/e2e/storage/persistent_volumes.go): PVs and
PVCs created, patched, updated and deleted singly and by collection; deletions wait for the
protection finalizers' controllers to let go."""

from conformance.framework import conformance, expect, expect_equal, wait_for

VOLUME_SELECTOR_KEY = "e2e-pv-pool"  # upstream's e2epv.VolumeSelectorKey


def make_pv(prefix, labels, storage_class, driver):
    """e2epv.MakePersistentVolume with a CSI source and the defaults (2Gi, Retain)."""
    return {"apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"generateName": prefix, "labels": dict(labels),
                         "annotations": {"pv.beta.kubernetes.io/gid": "777"}},
            "spec": {"persistentVolumeReclaimPolicy": "Retain", "capacity": {"storage": "2Gi"},
                     "accessModes": ["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany"],
                     "storageClassName": storage_class,
                     "csi": {"driver": driver, "volumeHandle": "e2e-conformance"}}}


def make_pvc(storage_class):
    """e2epv.MakePersistentVolumeClaim with the defaults (2Gi)."""
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"generateName": "pvc-"},
            "spec": {"accessModes": ["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany"],
                     "resources": {"requests": {"storage": "2Gi"}}, "storageClassName": storage_class}}


def create_pv_pvc(f, labels, driver):
    pv = f.create("/api/v1/persistentvolumes", make_pv(f.ns + "-", labels, f.ns, driver))
    f.defer(f.delete_ignore, f"/api/v1/persistentvolumes/{pv['metadata']['name']}")
    pvc = f.create(f.path("persistentvolumeclaims"), make_pvc(f.ns))
    return pv, pvc


def rv(obj):
    v = obj["metadata"].get("resourceVersion") or ""
    expect(v.isdigit(), f"invalid resourceVersion {v!r}")
    return int(v)


@conformance("[sig-storage] PersistentVolumes CSI Conformance should run through the lifecycle of a PV and a PVC [Conformance]")
def pv_pvc_lifecycle(f):
    import uuid
    labels = {VOLUME_SELECTOR_KEY: f.ns}
    sel = f"{VOLUME_SELECTOR_KEY}={f.ns}"
    driver = "inline-driver-" + str(uuid.uuid4())  # upstream only names the driver
    pvc_path = f.path("persistentvolumeclaims")
    create_pv_pvc(f, labels, driver)

    pvs = f.list("/api/v1/persistentvolumes", labelSelector=sel)["items"]
    expect_equal(len(pvs), 1, "PVs listed by label")
    pv = pvs[0]
    rv(pv)
    pvcs = f.list(pvc_path)["items"]
    expect_equal(len(pvcs), 1, "PVCs in the namespace")
    pvc = pvcs[0]
    rv(pvc)
    pv_name, pvc_name = pv["metadata"]["name"], pvc["metadata"]["name"]

    patched_pv = f.patch(f"/api/v1/persistentvolumes/{pv_name}", {"metadata": {"labels": {pv_name: "patched"}}}, "strategic")
    expect_equal((patched_pv["metadata"].get("labels") or {}).get(pv_name), "patched", "patched PV label")
    expect(rv(patched_pv) > rv(pv), "patched PV should have a larger resourceVersion")
    patched_pvc = f.patch(f.path("persistentvolumeclaims", pvc_name), {"metadata": {"labels": {pvc_name: "patched"}}}, "strategic")
    expect_equal((patched_pvc["metadata"].get("labels") or {}).get(pvc_name), "patched", "patched PVC label")
    expect(rv(patched_pvc) > rv(pvc), "patched PVC should have a larger resourceVersion")

    expect_equal(f.get(f"/api/v1/persistentvolumes/{pv_name}")["metadata"]["uid"], patched_pv["metadata"]["uid"], "PV uid")
    expect_equal(f.get(f.path("persistentvolumeclaims", pvc_name))["metadata"]["uid"], patched_pvc["metadata"]["uid"], "PVC uid")

    f.delete(f.path("persistentvolumeclaims", pvc_name))
    wait_for(lambda: not f.list(pvc_path)["items"], timeout=30, interval=1, what=f"PVC {pvc_name} to be deleted")
    f.delete(f"/api/v1/persistentvolumes/{pv_name}")
    wait_for(lambda: not f.list("/api/v1/persistentvolumes", labelSelector=sel)["items"], timeout=30, interval=1,
             what=f"PV {pv_name} to be deleted")

    # Another PV and PVC, updated and deleted by collection.
    pv, pvc = create_pv_pvc(f, labels, driver)
    pv_name, pvc_name = pv["metadata"]["name"], pvc["metadata"]["name"]

    def update_pv():
        cur = f.get(f"/api/v1/persistentvolumes/{pv_name}")
        cur["metadata"].setdefault("labels", {})[pv_name] = "updated"
        return f.update(f"/api/v1/persistentvolumes/{pv_name}", cur)
    upd = f.retry_on_conflict(update_pv)
    expect_equal(upd["metadata"]["labels"].get(pv_name), "updated", "updated PV label")

    def update_pvc():
        cur = f.get(f.path("persistentvolumeclaims", pvc_name))
        cur["metadata"]["labels"] = {pvc_name: "updated"}
        return f.update(f.path("persistentvolumeclaims", pvc_name), cur)
    upd = f.retry_on_conflict(update_pvc)
    expect_equal(upd["metadata"]["labels"].get(pvc_name), "updated", "updated PVC label")

    pvc_sel, pv_sel = f"{pvc_name}=updated", f"{pv_name}=updated"
    expect_equal(len(f.list("/api/v1/persistentvolumeclaims", labelSelector=pvc_sel)["items"]), 1,
                 "PVCs in all namespaces with the updated label")
    f.delete(pvc_path, labelSelector=pvc_sel)
    wait_for(lambda: not f.list(pvc_path, labelSelector=pvc_sel)["items"], timeout=30, interval=1,
             what=f"PVC {pvc_name} to be deleted by collection")
    f.delete("/api/v1/persistentvolumes", labelSelector=pv_sel)
    wait_for(lambda: not f.list("/api/v1/persistentvolumes", labelSelector=pv_sel)["items"], timeout=30, interval=1,
             what=f"PV {pv_name} to be deleted by collection")
