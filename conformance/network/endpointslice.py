"""EndpointSlice and EndpointSliceMirroring controllers (test/e2e/network/endpointslice.go,
endpointslicemirroring.go): objects for a Service whose selector matches nothing, and a custom
Endpoints of a selector-less Service mirrored into slices."""

from conformance.framework import ApiError, TestFailure, conformance, expect, expect_equal, wait_for

FOREVER = 30  # upstream's wait.ForeverTestTimeout


def slices_of(f, svc):
    return f.list(f.path("endpointslices", group="discovery.k8s.io"),
                  labelSelector=f"kubernetes.io/service-name={svc}")["items"]


def gone(f, path):
    try:
        f.get(path)
        return False
    except ApiError as e:
        if e.status == 404:
            return True
        raise


@conformance("[sig-network] EndpointSlice should create and delete Endpoints and EndpointSlices for a Service with a selector specified [Conformance]")
def endpointslice_selector_service(f):
    name = "example-empty-selector"
    f.create(f.path("services"), {"metadata": {"name": name}, "spec": {
        "selector": {"does-not-match-anything": "endpoints-and-endpoint-slices-should-still-be-created"},
        "ports": [{"name": "example", "port": 80, "protocol": "TCP"}]}})
    wait_for(lambda: f.get(f.path("endpoints", name)), timeout=FOREVER, interval=2, what="Endpoints for the Service")
    sl = wait_for(lambda: slices_of(f, name), timeout=FOREVER, interval=2, what="an EndpointSlice for the Service")[0]
    managed_by = (sl["metadata"].get("labels") or {}).get("endpointslice.kubernetes.io/managed-by")
    expect_equal(managed_by, "endpointslice-controller.k8s.io", "the slice's managed-by label")
    expect_equal(len(sl.get("endpoints") or []), 0, "endpoints in the slice")
    f.delete(f.path("services", name))
    wait_for(lambda: gone(f, f.path("endpoints", name)), timeout=FOREVER, interval=2,
             what="the Endpoints to be deleted with the Service")
    # Upstream allows 90 s: the garbage collector deletes the slices with their Service.
    wait_for(lambda: not slices_of(f, name), timeout=90, interval=2,
             what="the EndpointSlices to be deleted with the Service")


def check_mirrored(f, svc, ip, exactly_one):
    """Upstream's poll body: every slice has one port 80 and one endpoint with address `ip`."""
    items = slices_of(f, svc)
    if not items or (exactly_one and len(items) != 1):
        return False
    for s in items:
        ports = s.get("ports") or []
        eps = s.get("endpoints") or []
        if len(ports) != 1 or ports[0].get("port") != 80 or len(eps) != 1 or eps[0].get("addresses") != [ip]:
            if exactly_one:
                return False  # upstream logs and polls on for the update
            raise TestFailure(f"unexpected mirrored EndpointSlice: ports {ports}, endpoints {eps}")
    return True


@conformance("[sig-network] EndpointSliceMirroring should mirror a custom Endpoints resource through create update and delete [Conformance]")
def endpointslice_mirroring(f):
    name = "example-custom-endpoints"
    f.create(f.path("services"), {"metadata": {"name": name}, "spec": {
        "ports": [{"name": "example", "port": 80, "protocol": "TCP"}]}})
    ep = {"metadata": {"name": name}, "subsets": [{"ports": [{"port": 80}], "addresses": [{"ip": "10.1.2.3"}]}]}
    f.create(f.path("endpoints"), ep)
    wait_for(lambda: check_mirrored(f, name, "10.1.2.3", False), timeout=12, interval=2,
             what="a matching mirrored EndpointSlice")
    for s in slices_of(f, name):
        expect_equal((s["metadata"].get("labels") or {}).get("endpointslice.kubernetes.io/managed-by"),
                     "endpointslicemirroring-controller.k8s.io", "the mirrored slice's managed-by label")

    def update():
        cur = f.get(f.path("endpoints", name))
        cur["subsets"][0]["addresses"] = [{"ip": "10.2.3.4"}]
        return f.update(f.path("endpoints", name), cur)
    f.retry_on_conflict(update)
    wait_for(lambda: check_mirrored(f, name, "10.2.3.4", True), timeout=12, interval=2,
             what="the mirrored EndpointSlice to follow the update")
    f.delete(f.path("endpoints", name))
    wait_for(lambda: not slices_of(f, name), timeout=12, interval=2, what="the mirrored EndpointSlices to be deleted")
    expect(not gone(f, f.path("services", name)), "the Service went with its Endpoints")
