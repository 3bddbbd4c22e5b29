"""SIG Auth tests that only need the API server: CertificateSigningRequest API operations,
ServiceAccounts (lifecycle, update, token automount admission) and SubjectReview."""

import subprocess
import tempfile
import base64
import os

from conformance.apiops import api_operations
from conformance.framework import (ApiError, TestFailure, conformance, expect, expect_equal, expect_error,
                                   rand_suffix, wait_for)


def csr_pem(cn):
    with tempfile.TemporaryDirectory() as d:
        key = os.path.join(d, "key.pem")
        subprocess.run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key],
                       check=True, capture_output=True)
        out = subprocess.run(["openssl", "req", "-new", "-key", key, "-subj", f"/CN={cn}/O=e2e"],
                             check=True, capture_output=True)
    return base64.b64encode(out.stdout).decode()


@conformance("[sig-auth] Certificates API [Privileged:ClusterAdmin] should support CSR API operations [Conformance]")
def csr_api(f):
    req = csr_pem("e2e.example.com")

    def make(name, labels):
        return {"metadata": {"name": name, "labels": labels},
                "spec": {"request": req, "signerName": "example.com/e2e-" + f.ns,
                         "usages": ["digital signature", "key encipherment", "client auth"]}}

    def status(o):
        return {"conditions": [{"type": "Approved", "status": "True", "reason": "E2E",
                                "message": "Set from an e2e test"}]}
    # the CSR-specific /approval subresource on a separate object first
    name = "e2e-csr-approval-" + rand_suffix()
    p = f"/apis/certificates.k8s.io/v1/certificatesigningrequests/{name}"
    f.create("/apis/certificates.k8s.io/v1/certificatesigningrequests", make(name, {}))
    f.defer(f.delete_ignore, p)
    got = f.get(p + "/approval")
    got["status"] = {"conditions": [{"type": "Approved", "status": "True", "reason": "E2E", "message": "Approved"}]}
    appr = f.update(p + "/approval", got)
    expect(any(c["type"] == "Approved" for c in appr["status"].get("conditions") or []), "approval condition")
    patched = f.patch(p + "/approval", {"metadata": {"annotations": {"patchedapproval": "true"}}})
    expect_equal(patched["metadata"]["annotations"].get("patchedapproval"), "true", "annotation patched via /approval")
    api_operations(f, "certificates.k8s.io", "v1", "certificatesigningrequests", make, namespaced=False, status=status)


@conformance("[sig-auth] ServiceAccounts should run through the lifecycle of a ServiceAccount [Conformance]")
def sa_lifecycle(f):
    name = "e2e-sa-" + rand_suffix()
    sel = "test-serviceaccount-static=true"
    lst = f.list(f.path("serviceaccounts"), labelSelector=sel)
    w = f.watch(f.path("serviceaccounts"), labelSelector=sel, resourceVersion=lst["metadata"]["resourceVersion"])
    try:
        f.create(f.path("serviceaccounts"), {"metadata": {"name": name, "labels": {"test-serviceaccount-static": "true"}}})
        w.until(lambda t, o: t == "ADDED" and o["metadata"]["name"] == name, what="ADDED service account")
        patched = f.patch(f.path("serviceaccounts", name),
                          {"metadata": {"labels": {"test-serviceaccount": "patched"}}, "automountServiceAccountToken": False},
                          "strategic")
        expect_equal(patched.get("automountServiceAccountToken"), False, "patched automountServiceAccountToken")
        w.until(lambda t, o: t == "MODIFIED" and (o["metadata"].get("labels") or {}).get("test-serviceaccount") == "patched",
                what="MODIFIED with the patched label")
        lst = f.list("/api/v1/serviceaccounts", labelSelector=sel)
        expect(any(s["metadata"]["name"] == name for s in lst["items"]), "service account listed in all namespaces")
        f.call("DELETE", f.path("serviceaccounts"), query={"labelSelector": sel})
        w.until(lambda t, o: t == "DELETED" and o["metadata"]["name"] == name, what="DELETED service account")
    finally:
        w.stop()


@conformance("[sig-auth] ServiceAccounts should update a ServiceAccount [Conformance]")
def sa_update(f):
    name = "e2e-sa-" + rand_suffix()
    p = f.path("serviceaccounts", name)
    f.create(f.path("serviceaccounts"), {"metadata": {"name": name}})
    cur = f.get(p)
    cur["automountServiceAccountToken"] = True
    upd = f.update(p, cur)
    expect_equal(upd.get("automountServiceAccountToken"), True, "updated automountServiceAccountToken")
    patched = f.patch(p, {"automountServiceAccountToken": False, "metadata": {"labels": {"e2e": "patched"}}})
    expect_equal(patched.get("automountServiceAccountToken"), False, "patched automountServiceAccountToken")
    expect_equal(patched["metadata"]["labels"].get("e2e"), "patched", "patched label")


@conformance("[sig-auth] ServiceAccounts should allow opting out of API token automount [Conformance]")
def sa_automount_opt_out(f):
    f.create(f.path("serviceaccounts"), {"metadata": {"name": "mount"}, "automountServiceAccountToken": True})
    f.create(f.path("serviceaccounts"), {"metadata": {"name": "nomount"}, "automountServiceAccountToken": False})
    # the namespace's default ServiceAccount comes from the serviceaccounts controller
    wait_for(lambda: f.request("GET", f.path("serviceaccounts", "default")).status == 200, timeout=10,
             what="the default ServiceAccount of the namespace")
    mount_path = "/var/run/secrets/kubernetes.io/serviceaccount"
    cases = [
        ("default", None, True), ("mount", None, True), ("nomount", None, False),
        ("default", True, True), ("mount", True, True), ("nomount", True, True),
        ("default", False, False), ("mount", False, False), ("nomount", False, False),
    ]
    for i, (sa, pod_auto, want) in enumerate(cases):
        spec = {"serviceAccountName": sa,
                "containers": [{"name": "token-test", "image": "registry.k8s.io/e2e-test-images/agnhost:2.53"}]}
        if pod_auto is not None:
            spec["automountServiceAccountToken"] = pod_auto
        created = f.create(f.path("pods"), {"metadata": {"name": f"pod-sa-{i}"}, "spec": spec})
        mounts = created["spec"]["containers"][0].get("volumeMounts") or []
        has = any(m.get("mountPath") == mount_path for m in mounts)
        expect_equal(has, want, f"token mounted for service account {sa} with pod automount {pod_auto}")


@conformance("[sig-auth] SubjectReview should support SubjectReview API operations [Conformance]")
def subject_review(f):
    user = "e2e-user-" + rand_suffix()
    attrs = {"namespace": f.ns, "verb": "list", "resource": "configmaps"}
    sar = f.create("/apis/authorization.k8s.io/v1/subjectaccessreviews", {
        "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {"user": user, "resourceAttributes": attrs}})
    expect_equal(sar["status"].get("allowed"), False, f"SubjectAccessReview for {user} allowed")
    lsar = f.create(f.path("localsubjectaccessreviews", group="authorization.k8s.io"), {
        "apiVersion": "authorization.k8s.io/v1", "kind": "LocalSubjectAccessReview",
        "metadata": {"namespace": f.ns}, "spec": {"user": user, "resourceAttributes": attrs}})
    expect_equal(lsar["status"].get("allowed"), sar["status"].get("allowed"), "LocalSubjectAccessReview agrees")
    expect_equal(lsar["status"].get("denied", False), sar["status"].get("denied", False), "denied agrees")


@conformance("[sig-auth] ServiceAccounts should guarantee kube-root-ca.crt exist in any namespace [Conformance]")
def root_ca_configmap(f):
    p = f.path("configmaps", "kube-root-ca.crt")
    wait_for(lambda: f.get(p), 30, 0.5, what="the root ca configmap")
    f.delete(p, {"gracePeriodSeconds": 0})
    wait_for(lambda: f.get(p), 30, 0.5, what="a new root ca configmap")
    f.update(p, {"metadata": {"name": "kube-root-ca.crt"}, "data": {"ca.crt": ""}})
    wait_for(lambda: f.get(p).get("data", {}).get("ca.crt"), 30, 0.5, what="the root ca configmap reconciled")
