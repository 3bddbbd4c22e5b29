"""SIG Storage API tests: CSIDriver, CSINode, CSIStorageCapacity, inline CSI volumes in the
Pod API, PV/PVC status, StorageClass, VolumeAttachment."""

import uuid

from conformance.apiops import api_operations
from conformance.framework import conformance, expect, expect_equal, expect_error, rand_suffix, wait_for

ST = "/apis/storage.k8s.io/v1"


def cluster_lifecycle(f, plural, make, mutate):
    """create / get / list by label / patch / update / watch / delete / deletecollection for a
    cluster-scoped storage kind."""
    coll = f"{ST}/{plural}"
    label = f"e2e-{rand_suffix()}"
    sel = f"e2e-test={label}"
    names = [f"{plural[:-1]}-{label}-{i}" for i in (1, 2)]
    for n in names:
        f.create(coll, make(n, {"e2e-test": label}))
        f.defer(f.delete_ignore, f"{coll}/{n}")
    got = f.get(f"{coll}/{names[0]}")
    expect_equal(got["metadata"]["name"], names[0], "name")
    lst = f.list(coll, labelSelector=sel)
    expect_equal(len(lst["items"]), 2, "listed by label")
    w = f.watch(coll, labelSelector=sel, resourceVersion=lst["metadata"]["resourceVersion"])
    try:
        patched = f.patch(f"{coll}/{names[0]}", {"metadata": {"labels": {f"{label}-patched": "true"}}})
        expect_equal(patched["metadata"]["labels"].get(f"{label}-patched"), "true", "patched label")
        cur = f.get(f"{coll}/{names[0]}")
        mutate(cur)
        cur["metadata"]["labels"][f"{label}-updated"] = "true"
        upd = f.update(f"{coll}/{names[0]}", cur)
        expect_equal(upd["metadata"]["labels"].get(f"{label}-updated"), "true", "updated label")
        w.until(lambda t, o: t == "MODIFIED" and f"{label}-updated" in (o["metadata"].get("labels") or {}),
                what="MODIFIED event of the update")
        f.delete(f"{coll}/{names[0]}")
        w.until(lambda t, o: t == "DELETED" and o["metadata"]["name"] == names[0], what="DELETED event")
        expect_error(404, f.get, f"{coll}/{names[0]}")
        f.call("DELETE", coll, query={"labelSelector": sel})
        wait_for(lambda: not f.list(coll, labelSelector=sel)["items"], timeout=30, what="deletecollection")
    finally:
        w.stop()


@conformance("[sig-storage] CSIInlineVolumes should run through the lifecycle of a CSIDriver [Conformance]")
def csidriver_lifecycle(f):
    def make(name, labels):
        return {"metadata": {"name": name, "labels": labels},
                "spec": {"attachRequired": True, "podInfoOnMount": True,
                         "volumeLifecycleModes": ["Ephemeral", "Persistent"]}}

    def mutate(o):
        o["metadata"].setdefault("annotations", {})["updated"] = "true"
    cluster_lifecycle(f, "csidrivers", make, mutate)


@conformance("[sig-storage] CSINodes CSI Conformance should run through the lifecycle of a csinode [Conformance]")
def csinode_lifecycle(f):
    def make(name, labels):
        return {"metadata": {"name": name, "labels": labels}, "spec": {"drivers": []}}

    def mutate(o):
        o["spec"]["drivers"] = [{"name": "e2e.csi.example.com", "nodeID": "node-1", "topologyKeys": []}]
    cluster_lifecycle(f, "csinodes", make, mutate)


@conformance("[sig-storage] StorageClasses CSI Conformance should run through the lifecycle of a StorageClass [Conformance]")
def storageclass_lifecycle(f):
    def make(name, labels):
        return {"metadata": {"name": name, "labels": labels}, "provisioner": "e2e-fake-provisioner"}

    def mutate(o):
        o["metadata"].setdefault("annotations", {})["updated"] = "true"
    cluster_lifecycle(f, "storageclasses", make, mutate)


def va(name, labels):
    return {"metadata": {"name": name, "labels": labels},
            "spec": {"attacher": "e2e-test.storage.k8s.io", "nodeName": "e2e-node",
                     "source": {"persistentVolumeName": "pv-" + name}}}


@conformance("[sig-storage] VolumeAttachment Conformance should run through the lifecycle of a VolumeAttachment [Conformance]")
def volumeattachment_lifecycle(f):
    def mutate(o):
        o["metadata"].setdefault("annotations", {})["updated"] = "true"
    cluster_lifecycle(f, "volumeattachments", va, mutate)


@conformance("[sig-storage] VolumeAttachment Conformance should apply changes to a volumeattachment status [Conformance]")
def volumeattachment_status(f):
    name = "va-" + rand_suffix()
    p = f"{ST}/volumeattachments/{name}"
    f.create(f"{ST}/volumeattachments", va(name, {"e2e": "true"}))
    f.defer(f.delete_ignore, p)
    st = f.get(p + "/status")
    expect_equal(st["metadata"]["name"], name, "read through /status")
    patched = f.patch(p + "/status", {"status": {"attached": True}})
    expect_equal(patched["status"].get("attached"), True, "patched status.attached")
    cur = f.get(p)
    cur["status"]["attached"] = False
    cur["status"]["attachmentMetadata"] = {"e2e": "updated"}
    upd = f.update(p + "/status", cur)
    expect_equal(upd["status"].get("attached"), False, "updated status.attached")
    expect_equal(upd["status"].get("attachmentMetadata"), {"e2e": "updated"}, "updated attachmentMetadata")
    f.delete(p)
    expect_error(404, f.get, p)


@conformance("[sig-storage] CSIStorageCapacity should support CSIStorageCapacities API operations [Conformance]")
def csistoragecapacity_api(f):
    def make(name, labels):
        return {"metadata": {"name": name, "labels": labels}, "storageClassName": "e2e-fake-storage-class",
                "capacity": "1Gi"}
    api_operations(f, "storage.k8s.io", "v1", "csistoragecapacities", make)


@conformance("[sig-storage] CSIInlineVolumes should support CSIVolumeSource in Pod API [Conformance]")
def csi_inline_pod(f):
    name = "pod-csi-inline-volumes-" + rand_suffix()
    body = {"metadata": {"name": name},
            "spec": {"containers": [{"name": "pod-csi-inline-volumes", "image": "registry.k8s.io/e2e-test-images/busybox:1.36.1-1",
                                     "volumeMounts": [{"name": "csi-inline-vol", "mountPath": "/data"}]}],
                     "volumes": [{"name": "csi-inline-vol", "csi": {"driver": "e2e.example.com"}}]}}
    created = f.create(f.path("pods"), body)
    expect_equal(created["spec"]["volumes"][0].get("csi", {}).get("driver"), "e2e.example.com", "csi volume")
    got = f.get(f.path("pods", name))
    expect_equal(got["spec"]["volumes"][0].get("csi", {}).get("driver"), "e2e.example.com", "stored csi volume")
    lst = f.list(f.path("pods"))
    expect(any(p["metadata"]["name"] == name for p in lst["items"]), "pod not listed")
    f.delete(f.path("pods", name), {"gracePeriodSeconds": 0})
    wait_for(lambda: f.request("GET", f.path("pods", name)).status == 404, timeout=30, what="pod deleted")


@conformance("[sig-storage] PersistentVolumes CSI Conformance should apply changes to a pv/pvc status [Conformance]")
def pv_pvc_status(f):
    pv_name = "pv-" + rand_suffix()
    pvp = f"/api/v1/persistentvolumes/{pv_name}"
    f.create("/api/v1/persistentvolumes", {
        "metadata": {"name": pv_name},
        "spec": {"capacity": {"storage": "3Gi"}, "accessModes": ["ReadWriteOnce"],
                 "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "manual",
                 "hostPath": {"path": "/tmp/" + pv_name}}})
    f.defer(f.delete_ignore, pvp)
    pvc_name = "pvc-" + rand_suffix()
    pvcp = f.path("persistentvolumeclaims", pvc_name)
    f.create(f.path("persistentvolumeclaims"), {
        "metadata": {"name": pvc_name},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "manual",
                 "resources": {"requests": {"storage": "1Gi"}}}})
    # PV status
    st = f.get(pvp + "/status")
    expect_equal(st["metadata"]["name"], pv_name, "PV read through /status")
    patched = f.patch(pvp + "/status", {"status": {"message": "fake-message"}})
    expect_equal(patched["status"].get("message"), "fake-message", "patched PV status message")
    cur = f.get(pvp)
    cur["status"]["message"] = "fake-update-message"
    expect_equal(f.update(pvp + "/status", cur)["status"].get("message"), "fake-update-message", "updated PV status")
    # PVC status
    st = f.get(pvcp + "/status")
    expect_equal(st["metadata"]["name"], pvc_name, "PVC read through /status")
    cond = {"type": "StatusPatched", "status": "True", "reason": "E2E", "message": "Set from an e2e test"}
    patched = f.patch(pvcp + "/status", {"status": {"conditions": [cond]}})
    expect(any(c["type"] == "StatusPatched" for c in patched["status"].get("conditions") or []), "patched PVC condition")
    cur = f.get(pvcp)
    cur["status"]["conditions"] = [dict(cond, type="StatusUpdated", message="Updated from an e2e test")]
    upd = f.update(pvcp + "/status", cur)
    expect(any(c["type"] == "StatusUpdated" for c in upd["status"].get("conditions") or []), "updated PVC condition")
    f.delete(pvcp)
    f.delete(pvp)
