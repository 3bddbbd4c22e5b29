"""Upstream's `[sig-auth] SelfSubjectReview` tests (test/e2e/auth/selfsubjectreviews.go,
v1.32): discovery of the review in each authentication.k8s.io version, and a review made
while impersonating a user (uid, groups, extra) returns exactly that user. Tier AUTH
(`auth-tests.tsv`)."""

from conformance.framework import ApiError, conformance, expect_equal

GROUP = "authentication.k8s.io"
# restConfig(f): the impersonated identity.
IMPERSONATE = {"user": "jane-doe", "uid": "uniq-id", "groups": ["system:authenticated", "developers"],
               "extra": {"known-languages": ["python", "javascript"]}}


class Skip(Exception):
    """ginkgo.Skip: the version is not served; the entry passes without checking more."""


def discovered(f, version):
    groups = f.get("/apis")["groups"]
    if not any(g["name"] == GROUP and any(v["version"] == version for v in g["versions"]) for g in groups):
        raise Skip(f"expected SelfSubjectReview API group/version {version}")
    group = f.get(f"/apis/{GROUP}")
    if not any(v["version"] == version for v in group["versions"]):
        raise Skip(f"expected SelfSubjectReview API version {version}")
    resources = f.get(f"/apis/{GROUP}/{version}")["resources"]
    if not any(r["name"] == "selfsubjectreviews" for r in resources):
        raise Skip("expected selfsubjectreviews")


def table_entry(version):
    def test(f):
        try:
            discovered(f, version)
        except Skip:
            pass
    return test


for _version in ("v1alpha1", "v1beta1", "v1"):
    conformance(f"[sig-auth] SelfSubjectReview testing SSR in different API groups authentication/{_version}")(table_entry(_version))


def impersonation_headers():
    # client-go sends one Impersonate-Group / Impersonate-Extra-* header per value; urllib3
    # joins repeated names with ", " unless given as a list of tuples, so build them so.
    h = [("Impersonate-User", IMPERSONATE["user"]), ("Impersonate-Uid", IMPERSONATE["uid"])]
    h += [("Impersonate-Group", g) for g in IMPERSONATE["groups"]]
    h += [(f"Impersonate-Extra-{k}", v) for k, vs in IMPERSONATE["extra"].items() for v in vs]
    return h


@conformance("[sig-auth] SelfSubjectReview should support SelfSubjectReview API operations")
def ssr_operations(f):
    for version in ("v1alpha1", "v1beta1", "v1"):
        try:
            res = f.call("POST", f"/apis/{GROUP}/{version}/selfsubjectreviews",
                         {"apiVersion": f"{GROUP}/{version}", "kind": "SelfSubjectReview", "metadata": {}},
                         headers=impersonation_headers())
        except ApiError as e:
            if version != "v1" and e.status == 404:
                return  # upstream: the alpha (beta) API is disabled: the test ends here
            raise
        info = res["status"]["userInfo"]
        expect_equal(info.get("username"), IMPERSONATE["user"], "username")
        expect_equal(info.get("uid"), IMPERSONATE["uid"], "uid")
        expect_equal(info.get("groups"), IMPERSONATE["groups"], "groups")
        expect_equal(info.get("extra") or {}, IMPERSONATE["extra"], "extra")
