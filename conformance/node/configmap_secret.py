"""ConfigMap and Secrets API tests of SIG Node (configmap.go, secrets.go) and SIG Storage's
immutability tests (configmap_volume.go, secrets_volume.go)."""

import base64
import uuid

from conformance.framework import ApiError, TestFailure, conformance, expect, expect_equal, expect_error


def b64(s):
    return base64.b64encode(s.encode()).decode()


@conformance("[sig-node] ConfigMap should run through a ConfigMap lifecycle [Conformance]")
def configmap_lifecycle(f):
    name = f"test-configmap-{uuid.uuid4().hex[:8]}"
    f.create(f.path("configmaps"), {"metadata": {"name": name, "labels": {"test-configmap-static": "true"}},
                                    "data": {"valueName": "value"}})
    f.patch(f.path("configmaps", name), {"metadata": {"labels": {"test-configmap": "patched"}},
                                         "data": {"valueName": "value1"}}, "strategic")
    lst = f.list("/api/v1/configmaps", labelSelector="test-configmap-static=true")
    found = [c for c in lst["items"] if c["metadata"]["name"] == name and c["metadata"]["namespace"] == f.ns]
    expect_equal(len(found), 1, "configmap found when listing all namespaces")
    expect_equal(found[0]["data"]["valueName"], "value1", "patched data")
    expect_equal(found[0]["metadata"]["labels"].get("test-configmap"), "patched", "patched label")
    f.call("DELETE", f.path("configmaps"), query={"labelSelector": "test-configmap-static=true"})
    lst = f.list("/api/v1/configmaps", labelSelector="test-configmap-static=true")
    expect(not [c for c in lst["items"] if c["metadata"]["name"] == name], "configmap still listed after deletecollection")


@conformance("[sig-node] ConfigMap should fail to create ConfigMap with empty key [Conformance]")
def configmap_empty_key(f):
    expect_error(422, f.create, f.path("configmaps"),
                 {"metadata": {"name": f"configmap-test-emptykey-{uuid.uuid4().hex[:8]}"}, "data": {"": "value-1"}})


@conformance("[sig-node] Secrets should fail to create secret due to empty secret key [Conformance]")
def secret_empty_key(f):
    expect_error(422, f.create, f.path("secrets"),
                 {"metadata": {"name": f"secret-emptykey-test-{uuid.uuid4().hex[:8]}"}, "data": {"": b64("value-1")}})


@conformance("[sig-node] Secrets should patch a secret [Conformance]")
def secret_patch(f):
    name = "test-secret-" + uuid.uuid4().hex[:8]
    f.create(f.path("secrets"), {"metadata": {"name": name, "labels": {"testsecret-constant": "true"}},
                                 "data": {"key": b64("value")}, "type": "Opaque"})
    lst = f.list("/api/v1/secrets", labelSelector="testsecret-constant=true")
    expect(any(s["metadata"]["name"] == name for s in lst["items"]), "secret not listed in all namespaces")
    f.patch(f.path("secrets", name), {"metadata": {"labels": {"testsecret": "true"}}, "data": {"key": b64("value1")}},
            "strategic")
    s = f.get(f.path("secrets", name))
    expect_equal(base64.b64decode(s["data"]["key"]).decode(), "value1", "patched secret data")
    expect_equal(s["metadata"]["labels"].get("testsecret"), "true", "patched label")
    f.call("DELETE", f.path("secrets"), query={"labelSelector": "testsecret=true"})
    lst = f.list("/api/v1/secrets", labelSelector="testsecret-constant=true")
    expect(not any(s["metadata"]["name"] == name for s in lst["items"]), "secret still listed after deletecollection")


def immutable(f, resource, datafield, enc):
    name = f"immutable-{uuid.uuid4().hex[:8]}"
    p = f.path(resource, name)
    f.create(f.path(resource), {"metadata": {"name": name}, datafield: {"data-1": enc("value-1")}})
    cur = f.get(p)
    cur[datafield]["data-2"] = enc("value-2")
    f.update(p, cur)
    cur = f.get(p)
    cur["immutable"] = True
    cur = f.update(p, cur)
    cur[datafield]["data-3"] = enc("value-3")
    e = expect_error(422, f.update, p, cur)
    expect("field is immutable when `immutable` is set" in str(e.body), f"error for a data update: {e}")
    cur = f.get(p)
    cur["immutable"] = False
    e = expect_error(422, f.update, p, cur)
    expect("field is immutable when `immutable` is set" in str(e.body), f"error for unsetting immutable: {e}")
    f.delete(p)
    expect_error(404, f.get, p)


@conformance("[sig-storage] ConfigMap should be immutable if `immutable` field is set [Conformance]")
def configmap_immutable(f):
    immutable(f, "configmaps", "data", lambda s: s)


@conformance("[sig-storage] Secrets should be immutable if `immutable` field is set [Conformance]")
def secret_immutable(f):
    immutable(f, "secrets", "data", b64)
