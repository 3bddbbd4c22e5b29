"""Events (core/v1) and Events API (events.k8s.io/v1) tests (events.go, v1events.go)."""

import datetime

from conformance.framework import conformance, expect, expect_equal, expect_error, rand_suffix, wait_for


def now(micro=False):
    t = datetime.datetime.now(datetime.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if micro else "%Y-%m-%dT%H:%M:%SZ")


def core_event(f, name, labels=None):
    return {"metadata": {"name": name, "labels": labels or {}},
            "involvedObject": {"kind": "Pod", "name": "e2e-pod", "namespace": f.ns, "apiVersion": "v1"},
            "reason": "Testing", "message": "This is a test event", "type": "Normal", "count": 1,
            "firstTimestamp": now(), "lastTimestamp": now(),
            "source": {"component": "e2e-test"}, "reportingComponent": "", "reportingInstance": ""}


@conformance("[sig-instrumentation] Events should manage the lifecycle of an event [Conformance]")
def core_event_lifecycle(f):
    name = "event-test-" + rand_suffix()
    p = f.path("events", name)
    f.create(f.path("events"), core_event(f, name, {"testevent-constant": "true"}))
    lst = f.list("/api/v1/events", labelSelector="testevent-constant=true")
    expect(any(e["metadata"]["name"] == name for e in lst["items"]), "event listed in all namespaces")
    patched = f.patch(p, {"message": "This is a test event - patched", "metadata": {"labels": {"testevent": "patched"}}},
                      "strategic")
    got = f.get(p)
    expect_equal(got["message"], "This is a test event - patched", "patched message")
    got["series"] = {"count": 100, "lastObservedTime": now(micro=True)}
    upd = f.update(p, got)
    expect_equal(upd.get("series", {}).get("count"), 100, "updated series count")
    f.delete(p)
    lst = f.list("/api/v1/events", labelSelector="testevent-constant=true")
    expect(not any(e["metadata"]["name"] == name for e in lst["items"]), "event still listed after delete")


@conformance("[sig-instrumentation] Events should delete a collection of events [Conformance]")
def core_event_collection(f):
    for i in (1, 2, 3):
        f.create(f.path("events"), core_event(f, f"test-event-{i}", {"testevent-set": "true"}))
    expect_equal(len(f.list(f.path("events"), labelSelector="testevent-set=true")["items"]), 3, "events listed")
    f.call("DELETE", f.path("events"), query={"labelSelector": "testevent-set=true"})
    wait_for(lambda: not f.list(f.path("events"), labelSelector="testevent-set=true")["items"], timeout=30,
             what="events deleted by collection")


EV = ("events.k8s.io", "v1")


def v1_event(f, name, labels=None):
    return {"apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": name, "labels": labels or {}},
            "eventTime": now(micro=True), "reportingController": "test-controller",
            "reportingInstance": "test-node", "action": "Do", "reason": "Test", "type": "Normal",
            "note": "This is " + name,
            "regarding": {"kind": "Pod", "name": "e2e-pod", "namespace": f.ns, "apiVersion": "v1"},
            "series": {"count": 2, "lastObservedTime": now(micro=True)}}


@conformance("[sig-instrumentation] Events API should ensure that an event can be fetched, patched, deleted, and listed [Conformance]")
def v1_event_lifecycle(f):
    name = "event-test"
    coll = f.path("events", group=EV[0], version=EV[1])
    p = f"{coll}/{name}"
    f.create(coll, v1_event(f, name, {"testevent-constant": "true"}))
    lst = f.list("/apis/events.k8s.io/v1/events", labelSelector="testevent-constant=true")
    expect(any(e["metadata"]["name"] == name and e["metadata"]["namespace"] == f.ns for e in lst["items"]),
           "event listed in all namespaces")
    got = f.get(p)
    expect_equal(got["note"], "This is " + name, "note")
    expect_equal(got["series"]["count"], 2, "series count")
    patched = f.patch(p, {"note": "This is an updated note", "series": {"count": 3}}, "strategic")
    expect_equal(patched["note"], "This is an updated note", "patched note")
    got = f.get(p)
    got["note"] = "This is a replaced note"
    got["series"]["count"] = 4
    upd = f.update(p, got)
    expect_equal((upd["note"], upd["series"]["count"]), ("This is a replaced note", 4), "updated note and series")
    f.delete(p)
    expect_error(404, f.get, p)
    lst = f.list(coll)
    expect(not any(e["metadata"]["name"] == name for e in lst["items"]), "event still listed after delete")


@conformance("[sig-instrumentation] Events API should delete a collection of events [Conformance]")
def v1_event_collection(f):
    coll = f.path("events", group=EV[0], version=EV[1])
    for i in (1, 2, 3):
        f.create(coll, v1_event(f, f"event-test-{i}", {"testevent-set": "true"}))
    expect_equal(len(f.list(coll, labelSelector="testevent-set=true")["items"]), 3, "events listed")
    f.call("DELETE", coll, query={"labelSelector": "testevent-set=true"})
    wait_for(lambda: not f.list(coll, labelSelector="testevent-set=true")["items"], timeout=30,
             what="events deleted by collection")
