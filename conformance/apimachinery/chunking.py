"""Servers with support for API chunking (chunking.go): paged lists of 400 PodTemplates."""

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from conformance.framework import (ApiError, Cluster, TestFailure, conformance, expect, expect_equal,
                                   rand_suffix, path_for)

TOTAL = 400


def create_templates(c, ns):
    def one(i):
        body = {"metadata": {"name": f"template-{i:04d}"},
                "template": {"spec": {"containers": [{"name": "test", "image": "busybox"}]}}}
        for attempt in range(5):
            try:
                c.create(path_for("podtemplates", namespace=ns), body)
                return
            except ApiError as e:
                if e.status == 409:
                    return
                if attempt == 4:
                    raise
                time.sleep(0.1)
    with ThreadPoolExecutor(8) as ex:
        list(ex.map(one, range(TOTAL)))


def check_remaining(lst, found):
    cont = lst["metadata"].get("continue")
    rem = lst["metadata"].get("remainingItemCount")
    if not cont:
        expect(rem is None, f"remainingItemCount {rem} set on the last page")
    else:
        expect(rem is not None, "remainingItemCount missing on a page with a continue token")
        expect_equal(rem + len(lst["items"]) + found, TOTAL, "remainingItemCount + items seen")


@conformance("[sig-api-machinery] Servers with support for API chunking should return chunks of results for list calls [Conformance]")
def chunks(f):
    create_templates(f.c, f.ns)
    path = f.path("podtemplates")
    for _ in range(3):
        found, last_rv, cont = 0, None, None
        while True:
            limit = random.randint(1, TOTAL // 10)
            lst = f.list(path, limit=limit, **({"continue": cont} if cont else {}))
            expect(len(lst["items"]) <= limit, f"{len(lst['items'])} items for limit {limit}")
            rv = lst["metadata"]["resourceVersion"]
            last_rv = last_rv or rv
            expect_equal(rv, last_rv, "resourceVersion of every page")
            check_remaining(lst, found)
            for item in lst["items"]:
                expect_equal(item["metadata"]["name"], f"template-{found:04d}", "name of next item")
                found += 1
            cont = lst["metadata"].get("continue")
            if not cont:
                break
        expect_equal(found, TOTAL, "items over all pages")
    lst = f.list(path, limit=TOTAL + 1)
    expect_equal(len(lst["items"]), TOTAL, "items of a list with limit above the total")


@conformance("[sig-api-machinery] Servers with support for API chunking should support continue listing from the last key if the original version has been compacted away, though the list is inconsistent [Slow] [Conformance]")
def chunks_compacted(f):
    # Upstream waits for the cluster's periodic etcd compaction (every 5 minutes). When the
    # harness starts krust itself it runs this test on a second server that compacts every
    # second keeping few revisions; a background writer stands in for the steady writes of
    # a live cluster (leases, events) that move the compaction point past the list.
    stop = threading.Event()
    server = None
    if f.c.start_server is not None:
        server = f.c.start_server(["--datastore-compact-interval", "1", "--datastore-compact-retain", "20"])
        c = Cluster(server.kubeconfig)
        ns = f"chunking-{rand_suffix()}"
        c.create("/api/v1/namespaces", {"metadata": {"name": ns}})
    else:
        c, ns = f.c, f.ns
    try:
        create_templates(c, ns)
        path = path_for("podtemplates", namespace=ns)
        limit = TOTAL // 10
        first = c.list(path, limit=limit)
        token, first_rv = first["metadata"]["continue"], first["metadata"]["resourceVersion"]

        def background_writes():
            lease = path_for("configmaps", "chunking-heartbeat", namespace=ns)
            c.create(path_for("configmaps", namespace=ns), {"metadata": {"name": "chunking-heartbeat"}})
            i = 0
            while not stop.is_set():
                i += 1
                try:
                    c.patch(lease, {"data": {"beat": str(i)}})
                except ApiError:
                    pass
                time.sleep(0.05)
        threading.Thread(target=background_writes, daemon=True).start()

        deadline = time.monotonic() + (60 if server else 600)
        inconsistent = None
        while inconsistent is None:
            try:
                c.list(path, limit=limit, **{"continue": token})
            except ApiError as e:
                if e.status != 410:
                    raise TestFailure(f"expected 410 Expired for a compacted continue token, got {e}")
                inconsistent = (e.body.get("metadata") or {}).get("continue")
                if not inconsistent:
                    raise TestFailure("the 410 for an expired token carried no new continue token")
                break
            if time.monotonic() > deadline:
                raise TestFailure("the continue token never expired")
            time.sleep(1 if server else 20)

        lst = c.list(path, limit=limit, **{"continue": inconsistent})
        expect(lst["metadata"]["resourceVersion"] != first_rv, "inconsistent page has the first page's resourceVersion")
        expect_equal(len(lst["items"]), limit, "items on the inconsistent page")
        found = limit
        for item in lst["items"]:
            expect_equal(item["metadata"]["name"], f"template-{found:04d}", "name of next item")
            found += 1
        cont, last_rv = lst["metadata"].get("continue"), lst["metadata"]["resourceVersion"]
        while cont:
            lst = c.list(path, limit=limit, **{"continue": cont})
            check_remaining(lst, found)
            expect_equal(lst["metadata"]["resourceVersion"], last_rv, "resourceVersion of the remaining pages")
            for item in lst["items"]:
                expect_equal(item["metadata"]["name"], f"template-{found:04d}", "name of next item")
                found += 1
            cont = lst["metadata"].get("continue")
        expect_equal(found, TOTAL, "items over all pages")
    finally:
        stop.set()
        if server is not None:
            server.stop()
