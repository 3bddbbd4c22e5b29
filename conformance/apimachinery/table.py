"""Servers with support for Table transformation (table_conversion.go)."""

from conformance.framework import conformance, expect_equal


@conformance("[sig-api-machinery] Servers with support for Table transformation should return a 406 for a backend which does not implement metadata [Conformance]")
def table_406(f):
    sar = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
           "spec": {"nonResourceAttributes": {"path": "/", "verb": "get"}}}
    r = f.request("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", body=sar,
                  headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"})
    expect_equal(r.status, 406, f"status of a Table request for SelfSubjectAccessReview (body {r.data[:200]!r})")
