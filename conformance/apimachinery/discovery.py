"""Discovery (discovery.go), AggregatedDiscovery (aggregated_discovery.go) and server
version (server_version.go)."""

import re

from conformance import crdutil
from conformance.framework import conformance, expect, expect_equal, wait_for

LEGACY_GVR = [("", "v1", "namespaces")]
GVR = [
    ("admissionregistration.k8s.io", "v1", "validatingwebhookconfigurations"),
    ("apiextensions.k8s.io", "v1", "customresourcedefinitions"),
    ("apiregistration.k8s.io", "v1", "apiservices"),
    ("apps", "v1", "deployments"),
    ("authentication.k8s.io", "v1", "tokenreviews"),
    ("authorization.k8s.io", "v1", "selfsubjectaccessreviews"),
    ("autoscaling", "v1", "horizontalpodautoscalers"),
    ("autoscaling", "v2", "horizontalpodautoscalers"),
    ("batch", "v1", "jobs"),
    ("certificates.k8s.io", "v1", "certificatesigningrequests"),
    ("coordination.k8s.io", "v1", "leases"),
    ("discovery.k8s.io", "v1", "endpointslices"),
    ("events.k8s.io", "v1", "events"),
    ("networking.k8s.io", "v1", "ingresses"),
    ("node.k8s.io", "v1", "runtimeclasses"),
    ("policy", "v1", "poddisruptionbudgets"),
    ("scheduling.k8s.io", "v1", "priorityclasses"),
    ("storage.k8s.io", "v1", "csinodes"),
]
AGGREGATED_ACCEPT = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
# what client-go's discovery client sends, preferring the aggregated document
CLIENT_ACCEPT = ("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,"
                 "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,"
                 "application/json")


@conformance("[sig-api-machinery] server version should find the server version [Conformance]")
def server_version(f):
    v = f.get("/version")
    expect(v.get("major"), f"empty major in {v}")
    expect(v.get("minor"), f"empty minor in {v}")
    expect(re.match(r"^v\d+\.\d+\.\d+", v.get("gitVersion") or ""), f"gitVersion {v.get('gitVersion')!r}")
    expect(re.match(r"^\d+$", v["major"]), f"major {v['major']!r} is not a number")
    expect(re.match(r"^\d+\+?$", v["minor"]), f"minor {v['minor']!r} is not a number")


@conformance("[sig-api-machinery] Discovery should validate PreferredVersion for each APIGroup [Conformance]")
def preferred_version(f):
    groups = f.get("/apis/")["groups"]
    expect(groups, "no API groups in /apis")
    for g in groups:
        if g["name"].endswith(".example.com"):
            continue
        check = f.get(f"/apis/{g['name']}/")
        expect(check.get("versions"), f"no versions for {g['name']}")
        pref = (check.get("preferredVersion") or {}).get("groupVersion")
        expect(any(v["groupVersion"] == pref for v in check["versions"]),
               f"{g['name']}: preferredVersion {pref!r} not among {check['versions']}")


@conformance("[sig-api-machinery] Discovery should locate the groupVersion and a resource within each APIGroup [Conformance]")
def locate_group_version(f):
    for group, version, resource in LEGACY_GVR + GVR:
        path = f"/api/{version}" if not group else f"/apis/{group}/{version}"
        rl = f.get(path)
        expect_equal(rl.get("groupVersion"), f"{group}/{version}" if group else version, f"groupVersion of {path}")
        expect(any(r["name"] == resource for r in rl.get("resources", [])), f"{resource} not in {path}")


def gvr_in_aggregated(doc, gvr):
    group, version, resource = gvr
    for g in doc.get("items") or []:
        if g["metadata"].get("name", "") != group:
            continue
        for v in g.get("versions") or []:
            if v["version"] == version and any(r["resource"] == resource for r in v.get("resources") or []):
                return True
    return False


def aggregated(f, path, accept=AGGREGATED_ACCEPT):
    r = f.request("GET", path, headers={"Accept": accept})
    expect_equal(r.status, 200, f"status of GET {path} (Accept {accept})")
    ctype = r.header("Content-Type") or ""
    expect("g=apidiscovery.k8s.io" in ctype and "v=v2" in ctype and "as=APIGroupDiscoveryList" in ctype,
           f"GET {path}: Content-Type {ctype!r} is not the aggregated discovery v2 document")
    doc = r.json()
    expect_equal(doc.get("kind"), "APIGroupDiscoveryList", f"kind of {path}")
    return doc


@conformance("[sig-api-machinery] AggregatedDiscovery should support raw aggregated discovery endpoint Accept headers [Conformance]")
def aggregated_raw(f):
    apis = aggregated(f, "/apis")
    for gvr in GVR:
        expect(gvr_in_aggregated(apis, gvr), f"{gvr} missing in aggregated /apis")
    api = aggregated(f, "/api")
    for gvr in LEGACY_GVR:
        expect(gvr_in_aggregated(api, gvr), f"{gvr} missing in aggregated /api")


def groups_and_resources(f):
    """What client-go's AggregatedDiscoveryInterface.GroupsAndMaybeResources returns:
    the group list and resources per group/version, from the aggregated documents."""
    groups, by_gv = {}, {}
    for path in ("/api", "/apis"):
        doc = aggregated(f, path, CLIENT_ACCEPT)
        for g in doc.get("items") or []:
            name = g["metadata"].get("name", "")
            for v in g.get("versions") or []:
                groups.setdefault(name, []).append(v["version"])
                by_gv[(name, v["version"])] = [r["resource"] for r in v.get("resources") or []]
    return groups, by_gv


@conformance("[sig-api-machinery] AggregatedDiscovery should support aggregated discovery interface [Conformance]")
def aggregated_interface(f):
    groups, by_gv = groups_and_resources(f)
    for group, version, resource in GVR + LEGACY_GVR:
        expect(resource in by_gv.get((group, version), []), f"{group}/{version} {resource} not discovered")
        expect(version in groups.get(group, []), f"group {group!r} version {version} not discovered")


def test_crd(f):
    group = crdutil.random_group()
    body = crdutil.crd_body(group, "testcrds", "testcrd", singular="testcrd", list_kind="testcrdList")
    crdutil.create_crd(f, body)
    return (group, "v1", "testcrds")


@conformance("[sig-api-machinery] AggregatedDiscovery should support raw aggregated discovery request for CRDs [Conformance]")
def aggregated_raw_crd(f):
    gvr = test_crd(f)
    wait_for(lambda: gvr_in_aggregated(aggregated(f, "/apis"), gvr), timeout=30,
             what=f"{gvr} in aggregated discovery")


@conformance("[sig-api-machinery] AggregatedDiscovery should support aggregated discovery interface for CRDs [Conformance]")
def aggregated_interface_crd(f):
    group, version, resource = test_crd(f)
    wait_for(lambda: resource in groups_and_resources(f)[1].get((group, version), []), timeout=30,
             what=f"{group}/{version} {resource} in discovery")
