"""SIG Network tests that only need the API server: EndpointSlice, Ingress, IngressClass,
Service and Endpoints API tests, and the `kubernetes` Service the API server maintains."""

import uuid

from conformance.apiops import api_operations
from conformance.framework import (ApiError, TestFailure, conformance, expect, expect_equal, expect_error,
                                   rand_suffix, wait_for)


@conformance("[sig-network] EndpointSlice should support creating EndpointSlice API operations [Conformance]")
def endpointslice_api(f):
    def make(name, labels):
        return {"metadata": {"name": name, "labels": labels}, "addressType": "IPv4",
                "endpoints": [{"addresses": ["1.2.3.4", "5.6.7.8"]}, {"addresses": ["2.2.3.4"]}],
                "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}
    api_operations(f, "discovery.k8s.io", "v1", "endpointslices", make)


@conformance("[sig-network] Ingress API should support creating Ingress API operations [Conformance]")
def ingress_api(f):
    def make(name, labels):
        return {"metadata": {"name": name, "labels": labels},
                "spec": {"defaultBackend": {"service": {"name": "default-backend", "port": {"number": 8080}}},
                         "rules": [{"host": "foo.bar.com", "http": {"paths": [{
                             "path": "/", "pathType": "Prefix",
                             "backend": {"service": {"name": "test-backend", "port": {"number": 8080}}}}]}}]}}
    api_operations(f, "networking.k8s.io", "v1", "ingresses", make,
                   status=lambda o: {"loadBalancer": {"ingress": [{"ip": "169.1.1.1"}]}})


@conformance("[sig-network] IngressClass API should support creating IngressClass API operations [Conformance]")
def ingressclass_api(f):
    def make(name, labels):
        return {"metadata": {"name": name, "labels": labels}, "spec": {"controller": "example.com/controller"}}
    api_operations(f, "networking.k8s.io", "v1", "ingressclasses", make, namespaced=False)


def service(name, labels=None, **spec):
    s = {"type": "ClusterIP", "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080}]}
    s.update(spec)
    return {"metadata": {"name": name, "labels": labels or {}}, "spec": s}


@conformance("[sig-network] Services should provide secure master service [Conformance]")
def secure_master(f):
    svc = f.get("/api/v1/namespaces/default/services/kubernetes")
    expect(any(p.get("name") == "https" and p.get("port") == 443 for p in svc["spec"].get("ports", [])),
           f"the kubernetes Service has no https port 443: {svc['spec'].get('ports')}")


@conformance("[sig-network] EndpointSlice should have Endpoints and EndpointSlices pointing to API Server [Conformance]")
def apiserver_endpoints(f):
    svc = f.get("/api/v1/namespaces/default/services/kubernetes")
    ep = f.get("/api/v1/namespaces/default/endpoints/kubernetes")
    expect(ep.get("subsets"), "the kubernetes Endpoints have no subsets")
    slices = f.list("/apis/discovery.k8s.io/v1/namespaces/default/endpointslices",
                    labelSelector="kubernetes.io/service-name=kubernetes")["items"]
    expect_equal(len(slices), 1, "EndpointSlices for the kubernetes Service")
    es = slices[0]
    ep_addrs = sorted(a["ip"] for s in ep["subsets"] for a in s.get("addresses", []))
    es_addrs = sorted(a for e in es.get("endpoints") or [] for a in e.get("addresses", []))
    expect_equal(es_addrs, ep_addrs, "addresses of the EndpointSlice vs the Endpoints")
    ep_ports = sorted(p["port"] for s in ep["subsets"] for p in s.get("ports", []))
    es_ports = sorted(p["port"] for p in es.get("ports") or [])
    expect_equal(es_ports, ep_ports, "ports of the EndpointSlice vs the Endpoints")
    expect(svc["spec"]["ports"], "kubernetes Service ports")


@conformance("[sig-network] Services should find a service from listing all namespaces [Conformance]")
def find_service_all_ns(f):
    f.create(f.path("services"), service("test-service-" + rand_suffix(), {"testservice": "true"}))
    lst = f.list("/api/v1/services", labelSelector="testservice=true")
    expect(any(s["metadata"]["namespace"] == f.ns for s in lst["items"]), "service not found across namespaces")


@conformance("[sig-network] Services should delete a collection of services [Conformance]")
def delete_service_collection(f):
    label = {"e2e-test-service": "delete"}
    for i in (1, 2, 3):
        f.create(f.path("services"), service(f"e2e-svc-{i}-{rand_suffix()}", label))
    expect_equal(len(f.list(f.path("services"), labelSelector="e2e-test-service=delete")["items"]), 3, "services")
    f.call("DELETE", f.path("services"), query={"labelSelector": "e2e-test-service=delete"})
    wait_for(lambda: not f.list(f.path("services"), labelSelector="e2e-test-service=delete")["items"],
             timeout=30, what="services deleted by collection")


@conformance("[sig-network] Services should complete a service status lifecycle [Conformance]")
def service_status_lifecycle(f):
    name = "test-service-" + rand_suffix()
    p = f.path("services", name)
    lst = f.list(f.path("services"), labelSelector="test-service-static=true")
    w = f.watch(f.path("services"), labelSelector="test-service-static=true", resourceVersion=lst["metadata"]["resourceVersion"])
    try:
        f.create(f.path("services"), service(name, {"test-service-static": "true"}))
        w.until(lambda t, o: t == "ADDED" and o["metadata"]["name"] == name, what="ADDED service")
        lst = f.list("/api/v1/services", labelSelector="test-service-static=true")
        expect(any(s["metadata"]["name"] == name for s in lst["items"]), "service listed")
        st = f.get(p + "/status")
        expect_equal(st["metadata"]["name"], name, "read via /status")
        lb = {"loadBalancer": {"ingress": [{"ip": "203.0.113.1"}]}}
        patched = f.patch(p + "/status", {"metadata": {"annotations": {"patchedstatus": "true"}}, "status": lb}, "strategic")
        expect_equal(patched["status"].get("loadBalancer"), lb["loadBalancer"], "patched load balancer status")
        w.until(lambda t, o: t == "MODIFIED" and (o["metadata"].get("annotations") or {}).get("patchedstatus") == "true",
                what="MODIFIED with the status patch")
        cur = f.get(p)
        cur["status"]["conditions"] = [{"type": "StatusUpdate", "status": "True", "reason": "E2E",
                                        "message": "Set from e2e test", "lastTransitionTime": "2024-01-01T00:00:00Z"}]
        upd = f.update(p + "/status", cur)
        expect(any(c["type"] == "StatusUpdate" for c in upd["status"].get("conditions") or []), "updated condition")
        w.until(lambda t, o: t == "MODIFIED" and any(c.get("type") == "StatusUpdate"
                                                     for c in (o.get("status") or {}).get("conditions") or []),
                what="MODIFIED with the updated condition")
        patched = f.patch(p, {"metadata": {"labels": {"test-service": "patched"}}}, "strategic")
        expect_equal(patched["metadata"]["labels"].get("test-service"), "patched", "patched label")
        w.until(lambda t, o: t == "MODIFIED" and (o["metadata"].get("labels") or {}).get("test-service") == "patched",
                what="MODIFIED with the patched label")
        f.delete(p)
        w.until(lambda t, o: t == "DELETED" and o["metadata"]["name"] == name, what="DELETED service")
    finally:
        w.stop()


@conformance("[sig-network] Services should test the lifecycle of an Endpoint [Conformance]")
def endpoint_lifecycle(f):
    name = "example-empty-" + rand_suffix()
    p = f.path("endpoints", name)
    sel = "test-endpoint-static=true"
    lst = f.list(f.path("endpoints"), labelSelector=sel)
    w = f.watch(f.path("endpoints"), labelSelector=sel, resourceVersion=lst["metadata"]["resourceVersion"])
    try:
        f.create(f.path("endpoints"), {"metadata": {"name": name, "labels": {"test-endpoint-static": "true"}},
                                       "subsets": [{"addresses": [{"ip": "10.0.0.24"}],
                                                    "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}]})
        w.until(lambda t, o: t == "ADDED", what="ADDED endpoints")
        got = f.get(p)
        expect_equal(got["subsets"][0]["addresses"][0]["ip"], "10.0.0.24", "endpoint address")
        lst = f.list("/api/v1/endpoints", labelSelector=sel)
        expect(any(e["metadata"]["name"] == name for e in lst["items"]), "endpoints listed in all namespaces")
        cur = f.get(p)
        cur["metadata"]["labels"]["test-service"] = "updated"
        f.update(p, cur)
        w.until(lambda t, o: t == "MODIFIED" and (o["metadata"].get("labels") or {}).get("test-service") == "updated",
                what="MODIFIED with the updated label")
        f.patch(p, {"metadata": {"labels": {"test-service": "patched"}},
                    "subsets": [{"addresses": [{"ip": "10.0.0.25"}],
                                 "ports": [{"name": "http-test", "port": 8080, "protocol": "TCP"}]}]}, "strategic")
        w.until(lambda t, o: t == "MODIFIED" and (o["metadata"].get("labels") or {}).get("test-service") == "patched",
                what="MODIFIED with the patched label")
        got = f.get(p)
        expect_equal(got["subsets"][0]["addresses"][0]["ip"], "10.0.0.25", "patched address")
        expect_equal(got["subsets"][0]["ports"][0]["port"], 8080, "patched port")
        f.call("DELETE", f.path("endpoints"), query={"labelSelector": sel})
        w.until(lambda t, o: t == "DELETED", what="DELETED endpoints")
    finally:
        w.stop()
