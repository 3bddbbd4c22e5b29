"""Watchers (test/e2e/apimachinery/watch.go): watch notifications on ConfigMaps."""

import random
import threading
import time

from conformance.framework import conformance, expect, expect_equal, TestFailure

LABEL = "watch-this-configmap"
QUIET = 1.0  # seconds a watch must stay silent when no event is expected


def cm(name, label_value):
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "labels": {LABEL: label_value}}}


def set_mutation(f, name, value):
    return f.patch(f.path("configmaps", name), {"data": {"mutation": str(value)}})


def expect_event(w, etype, name, mutation=None, what=""):
    t, o = w.until(lambda t, o: True, what=f"{etype} of {name} {what}")
    expect_equal(t, etype, f"event type {what}")
    expect_equal(o["metadata"]["name"], name, f"object of {etype} {what}")
    if mutation is not None:
        expect_equal((o.get("data") or {}).get("mutation"), str(mutation), f"data.mutation of {etype} {what}")
    return o


def expect_no_event(w, what):
    ev = w.next_or_none(QUIET)
    while ev is not None and ev[0] == "BOOKMARK":
        ev = w.next_or_none(QUIET)
    if ev is not None:
        raise TestFailure(f"unexpected {ev[0]} of {ev[1].get('metadata', {}).get('name')} on {what}")


@conformance("[sig-api-machinery] Watchers should observe add, update, and delete watch notifications on configmaps [Conformance]")
def watch_add_update_delete(f):
    a, b = "multiple-watchers-a", "multiple-watchers-b"
    wa = f.watch(f.path("configmaps"), labelSelector=f"{LABEL}={a}")
    wb = f.watch(f.path("configmaps"), labelSelector=f"{LABEL}={b}")
    wab = f.watch(f.path("configmaps"), labelSelector=f"{LABEL} in ({a},{b})")
    try:
        # A: added, modified twice, deleted; seen by A and A-or-B, never by B
        f.create(f.path("configmaps"), cm("e2e-watch-test-configmap-a", a))
        for w in (wa, wab):
            expect_event(w, "ADDED", "e2e-watch-test-configmap-a")
        expect_no_event(wb, "watch B")
        for i in (1, 2):
            set_mutation(f, "e2e-watch-test-configmap-a", i)
            for w in (wa, wab):
                expect_event(w, "MODIFIED", "e2e-watch-test-configmap-a", i)
        expect_no_event(wb, "watch B")
        f.delete(f.path("configmaps", "e2e-watch-test-configmap-a"))
        for w in (wa, wab):
            expect_event(w, "DELETED", "e2e-watch-test-configmap-a", 2)
        expect_no_event(wb, "watch B")
        # B: added and deleted; seen by B and A-or-B, never by A
        f.create(f.path("configmaps"), cm("e2e-watch-test-configmap-b", b))
        for w in (wb, wab):
            expect_event(w, "ADDED", "e2e-watch-test-configmap-b")
        expect_no_event(wa, "watch A")
        f.delete(f.path("configmaps", "e2e-watch-test-configmap-b"))
        for w in (wb, wab):
            expect_event(w, "DELETED", "e2e-watch-test-configmap-b")
        expect_no_event(wa, "watch A")
    finally:
        for w in (wa, wb, wab):
            w.stop()


@conformance("[sig-api-machinery] Watchers should be able to start watching from a specific resource version [Conformance]")
def watch_from_rv(f):
    name = "e2e-watch-test-resource-version"
    f.create(f.path("configmaps"), cm(name, "from-resource-version"))
    first = set_mutation(f, name, 1)
    set_mutation(f, name, 2)
    f.delete(f.path("configmaps", name))
    with f.watch(f.path("configmaps"), labelSelector=f"{LABEL}=from-resource-version",
                 resourceVersion=first["metadata"]["resourceVersion"]) as w:
        expect_event(w, "MODIFIED", name, 2, "(second modification)")
        expect_event(w, "DELETED", name, 2)


@conformance("[sig-api-machinery] Watchers should be able to restart watching from the last resource version observed by the previous watch [Conformance]")
def watch_restart(f):
    name = "e2e-watch-test-watch-closed"
    sel = f"{LABEL}=watch-closed-and-restarted"
    w = f.watch(f.path("configmaps"), labelSelector=sel)
    f.create(f.path("configmaps"), cm(name, "watch-closed-and-restarted"))
    set_mutation(f, name, 1)
    expect_event(w, "ADDED", name)
    last = expect_event(w, "MODIFIED", name, 1)
    w.stop()
    # changes while no watch is open
    set_mutation(f, name, 2)
    f.delete(f.path("configmaps", name))
    with f.watch(f.path("configmaps"), labelSelector=sel,
                 resourceVersion=last["metadata"]["resourceVersion"]) as w2:
        expect_event(w2, "MODIFIED", name, 2, "after restart")
        expect_event(w2, "DELETED", name, 2, "after restart")


@conformance("[sig-api-machinery] Watchers should observe an object deletion if it stops meeting the requirements of the selector [Conformance]")
def watch_selector_change(f):
    name = "e2e-watch-test-label-changed"
    value = "label-changed-and-restored"
    with f.watch(f.path("configmaps"), labelSelector=f"{LABEL}={value}") as w:
        f.create(f.path("configmaps"), cm(name, value))
        set_mutation(f, name, 1)
        f.patch(f.path("configmaps", name), {"metadata": {"labels": {LABEL: "wrong-value"}}})
        expect_event(w, "ADDED", name)
        expect_event(w, "MODIFIED", name, 1)
        expect_event(w, "DELETED", name, 1, "(label no longer matches)")
        set_mutation(f, name, 2)
        expect_no_event(w, "the selector watch while the label does not match")
        f.patch(f.path("configmaps", name), {"metadata": {"labels": {LABEL: value}}})
        set_mutation(f, name, 3)
        f.delete(f.path("configmaps", name))
        expect_event(w, "ADDED", name, 2, "(label restored)")
        expect_event(w, "MODIFIED", name, 3)
        expect_event(w, "DELETED", name, 3)


@conformance("[sig-api-machinery] Watchers should receive events on concurrent watches in same order [Conformance]")
def watch_concurrent_order(f):
    iterations = 100
    rv = f.list(f.path("configmaps"))["metadata"]["resourceVersion"]
    stop = threading.Event()
    errors = []

    def produce():
        existing = []
        n = 0
        try:
            while not stop.is_set():
                op = random.randrange(3) if existing else 0
                if op == 0:
                    name = f"cm-{n}"
                    n += 1
                    f.create(f.path("configmaps"), {"metadata": {"name": name}})
                    existing.append(name)
                elif op == 1:
                    f.patch(f.path("configmaps", random.choice(existing)),
                            {"data": {"mutation": str(n)}})
                    n += 1
                else:
                    name = existing.pop(random.randrange(len(existing)))
                    f.delete(f.path("configmaps", name))
                time.sleep(0.005)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    watches = []

    def next_rv(w):
        while True:
            t, o = w.next(timeout=30)
            if t == "BOOKMARK":
                continue
            expect(t in ("ADDED", "MODIFIED", "DELETED"), f"unexpected event {t}: {o}")
            return o["metadata"]["resourceVersion"]

    try:
        for i in range(iterations):
            watches.append(f.watch(f.path("configmaps"), resourceVersion=rv))
            rv = next_rv(watches[0])
            for j, w in enumerate(watches[1:], start=1):
                got = next_rv(w)
                if got != rv:
                    raise TestFailure(f"iteration {i}: watch {j} got resourceVersion {got}, watch 0 got {rv}")
    finally:
        stop.set()
        producer.join(10)
        for w in watches:
            w.stop()
    if errors:
        raise TestFailure(f"event producer failed: {errors[0]}")
