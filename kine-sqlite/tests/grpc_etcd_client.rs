//! The etcd v3 gRPC face (`kine_sqlite::grpc`) driven by the upstream Rust `etcd-client`
//! crate, over a real TCP socket, against the SQLite backend.

#![cfg(feature = "etcd")]

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, EventType, GetOptions, PutOptions, Txn, TxnOp,
    TxnOpResponse, WatchOptions, WatchResponse, WatchStream,
};
use kine_sqlite::grpc::{self, GrpcOptions};
use kine_sqlite::{Backend, SqliteBackend};

const WAIT: Duration = Duration::from_secs(10);

struct Served {
    client: Client,
    _dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn serve() -> Served {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteBackend::open(&dir.path().join("state.db"))
        .await
        .unwrap();
    let backend: Arc<dyn Backend> = store;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let opts = GrpcOptions {
        progress_notify_interval: Duration::from_millis(300),
        ..Default::default()
    };
    tokio::spawn(grpc::serve(listener, backend, opts, async {
        let _ = stopped.await;
    }));
    let client = Client::connect([format!("http://{addr}")], None)
        .await
        .unwrap();
    Served {
        client,
        _dir: dir,
        _stop: stop,
    }
}

async fn next(ws: &mut WatchStream) -> WatchResponse {
    tokio::time::timeout(WAIT, ws.message())
        .await
        .expect("watch response in time")
        .expect("watch stream ok")
        .expect("watch stream open")
}

fn code(e: etcd_client::Error) -> (tonic::Code, String) {
    match e {
        etcd_client::Error::GRpcStatus(s) => (s.code(), s.message().to_owned()),
        other => panic!("not a gRPC status: {other}"),
    }
}

#[tokio::test]
async fn kv_put_get_range_delete() {
    let mut s = serve().await;
    let c = &mut s.client;
    let r1 = c
        .put("/a/1", "v1", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    c.put("/a/2", "v2", None).await.unwrap();
    c.put("/b", "x", None).await.unwrap();
    let prev = c
        .put("/a/1", "v1b", Some(PutOptions::new().with_prev_key()))
        .await
        .unwrap();
    assert_eq!(prev.prev_key().unwrap().value(), b"v1");

    let one = c.get("/a/1", None).await.unwrap();
    assert_eq!(one.kvs().len(), 1);
    let kv = &one.kvs()[0];
    assert_eq!(
        (kv.value(), kv.version(), kv.create_revision()),
        (&b"v1b"[..], 2, r1)
    );

    let all = c
        .get("/a", Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    let keys: Vec<_> = all
        .kvs()
        .iter()
        .map(|kv| kv.key_str().unwrap().to_owned())
        .collect();
    assert_eq!(keys, ["/a/1", "/a/2"]);
    assert_eq!(all.count(), 2);

    let limited = c
        .get("/", Some(GetOptions::new().with_prefix().with_limit(2)))
        .await
        .unwrap();
    assert_eq!(limited.kvs().len(), 2);
    assert!(limited.more());
    assert_eq!(limited.count(), 3);

    let from = c
        .get("/a/2", Some(GetOptions::new().with_from_key()))
        .await
        .unwrap();
    assert_eq!(from.kvs().len(), 2); // /a/2 and /b

    let ranged = c
        .get("/a/2", Some(GetOptions::new().with_range("/c")))
        .await
        .unwrap();
    assert_eq!(ranged.kvs().len(), 2);

    let old = c
        .get("/a/1", Some(GetOptions::new().with_revision(r1)))
        .await
        .unwrap();
    assert_eq!(old.kvs()[0].value(), b"v1");

    let counted = c
        .get(
            "/a",
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await
        .unwrap();
    assert_eq!((counted.count(), counted.kvs().len()), (2, 0));

    let del = c
        .delete(
            "/a",
            Some(DeleteOptions::new().with_prefix().with_prev_key()),
        )
        .await
        .unwrap();
    assert_eq!(del.deleted(), 2);
    assert_eq!(del.prev_kvs().len(), 2);
    assert_eq!(c.delete("/nope", None).await.unwrap().deleted(), 0);
    assert!(c.get("/a/1", None).await.unwrap().kvs().is_empty());

    // Compaction: reads below it fail the way etcd's do.
    let rev = c
        .put("/b", "y", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    c.compact(rev, None).await.unwrap();
    let (code_, msg) = code(
        c.get("/b", Some(GetOptions::new().with_revision(r1)))
            .await
            .unwrap_err(),
    );
    assert_eq!(code_, tonic::Code::OutOfRange);
    assert!(
        msg.contains("required revision has been compacted"),
        "{msg}"
    );
}

#[tokio::test]
async fn txn_shapes_kine_uses() {
    let mut s = serve().await;
    let c = &mut s.client;
    // Create if absent.
    let create = |v: &'static str| {
        Txn::new()
            .when([Compare::create_revision("/k", CompareOp::Equal, 0)])
            .and_then([TxnOp::put("/k", v, None)])
            .or_else([TxnOp::get("/k", None)])
    };
    let r = c.txn(create("one")).await.unwrap();
    assert!(r.succeeded());
    let rev = r.header().unwrap().revision();
    let r = c.txn(create("two")).await.unwrap();
    assert!(!r.succeeded());
    match &r.op_responses()[0] {
        TxnOpResponse::Get(g) => assert_eq!(g.kvs()[0].value(), b"one"),
        other => panic!("{other:?}"),
    }
    // Update at a known mod revision; a stale one gets the current value back.
    let update = |at: i64| {
        Txn::new()
            .when([Compare::mod_revision("/k", CompareOp::Equal, at)])
            .and_then([TxnOp::put("/k", "upd", None)])
            .or_else([TxnOp::get("/k", None)])
    };
    let r = c.txn(update(rev)).await.unwrap();
    assert!(r.succeeded());
    let rev2 = r.header().unwrap().revision();
    assert!(rev2 > rev);
    let r = c.txn(update(rev)).await.unwrap();
    assert!(!r.succeeded());
    match &r.op_responses()[0] {
        TxnOpResponse::Get(g) => assert_eq!(g.kvs()[0].mod_revision(), rev2),
        other => panic!("{other:?}"),
    }
    // Delete at a known mod revision.
    let del = |at: i64| {
        Txn::new()
            .when([Compare::mod_revision("/k", CompareOp::Equal, at)])
            .and_then([TxnOp::delete("/k", None)])
            .or_else([TxnOp::get("/k", None)])
    };
    assert!(!c.txn(del(rev)).await.unwrap().succeeded());
    assert!(c.txn(del(rev2)).await.unwrap().succeeded());
    assert!(c.get("/k", None).await.unwrap().kvs().is_empty());

    // Value and version compares.
    c.put("/v", "a", None).await.unwrap();
    let r = c
        .txn(
            Txn::new()
                .when([
                    Compare::value("/v", CompareOp::Equal, "a"),
                    Compare::version("/v", CompareOp::Less, 5),
                ])
                .and_then([TxnOp::put("/v", "b", None), TxnOp::get("/v", None)]),
        )
        .await
        .unwrap();
    assert!(r.succeeded());
    match &r.op_responses()[1] {
        TxnOpResponse::Get(g) => assert_eq!(g.kvs()[0].value(), b"b"),
        other => panic!("{other:?}"),
    }

    // Beyond one key: refused by name.
    let (code_, msg) = code(
        c.txn(
            Txn::new()
                .when([Compare::version("/v", CompareOp::Greater, 0)])
                .and_then([TxnOp::put("/other", "x", None)]),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(code_, tonic::Code::Unimplemented);
    assert!(msg.contains("more than one key"), "{msg}");
    let (code_, msg) = code(
        c.txn(Txn::new().and_then([TxnOp::delete("/", Some(DeleteOptions::new().with_prefix()))]))
            .await
            .unwrap_err(),
    );
    assert_eq!(code_, tonic::Code::Unimplemented);
    assert!(msg.contains("DeleteRangeRequest.range_end"), "{msg}");
}

#[tokio::test]
async fn watch_events_progress_and_compaction() {
    let mut s = serve().await;
    let c = &mut s.client;
    let start = c
        .put("/w/0", "zero", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    let mut ws = c
        .watch(
            "/w/",
            Some(WatchOptions::new().with_prefix().with_prev_key()),
        )
        .await
        .unwrap();
    let created = next(&mut ws).await;
    assert!(created.created());
    c.put("/w/1", "a", None).await.unwrap();
    c.put("/other", "x", None).await.unwrap();
    c.put("/w/1", "b", None).await.unwrap();
    c.delete("/w/1", None).await.unwrap();
    let mut events = Vec::new();
    while events.len() < 3 {
        let r = next(&mut ws).await;
        assert_eq!(r.watch_id(), created.watch_id());
        events.extend(r.events().to_vec());
    }
    assert_eq!(events[0].event_type(), EventType::Put);
    assert_eq!(events[1].prev_kv().unwrap().value(), b"a");
    assert_eq!(events[2].event_type(), EventType::Delete);
    assert_eq!(events[2].prev_kv().unwrap().value(), b"b");
    let last = events[2].kv().unwrap().mod_revision();

    // Progress request: a response for all watchers with the current revision.
    ws.request_progress().await.unwrap();
    let p = next(&mut ws).await;
    assert!(p.events().is_empty());
    assert_eq!(p.header().unwrap().revision(), last);

    // A second watcher on the same stream, from the past, single key.
    ws.watch("/w/0", Some(WatchOptions::new().with_start_revision(start)))
        .await
        .unwrap();
    let created2 = next(&mut ws).await;
    assert!(created2.created());
    assert_ne!(created2.watch_id(), created.watch_id());
    let r = next(&mut ws).await;
    assert_eq!(r.watch_id(), created2.watch_id());
    assert_eq!(r.events()[0].kv().unwrap().value(), b"zero");
    ws.cancel(created2.watch_id()).await.unwrap();
    assert!(next(&mut ws).await.canceled());

    // Compacted start: created, then canceled with the compact revision.
    c.compact(last, None).await.unwrap();
    let mut old = c
        .watch(
            "/w/",
            Some(WatchOptions::new().with_prefix().with_start_revision(start)),
        )
        .await
        .unwrap();
    assert!(next(&mut old).await.created());
    let r = next(&mut old).await;
    assert!(r.canceled());
    assert_eq!(r.compact_revision(), last);

    // progress_notify: empty responses while idle (interval shortened for the test).
    let mut pn = c
        .watch("/quiet", Some(WatchOptions::new().with_progress_notify()))
        .await
        .unwrap();
    let created3 = next(&mut pn).await;
    let r = next(&mut pn).await;
    assert_eq!(r.watch_id(), created3.watch_id());
    assert!(r.events().is_empty());
    assert!(r.header().unwrap().revision() >= last);
}

#[tokio::test]
async fn leases_status_members() {
    let mut s = serve().await;
    let c = &mut s.client;
    let lease = c.lease_grant(30, None).await.unwrap();
    assert_eq!(lease.ttl(), 30);
    let id = lease.id();
    c.put("/l", "v", Some(PutOptions::new().with_lease(id)))
        .await
        .unwrap();
    let ttl = c
        .lease_time_to_live(
            id,
            Some(etcd_client::LeaseTimeToLiveOptions::new().with_keys()),
        )
        .await
        .unwrap();
    assert_eq!(ttl.granted_ttl(), 30);
    assert!(ttl.ttl() > 25 && ttl.ttl() <= 30, "{}", ttl.ttl());
    assert_eq!(ttl.keys(), [b"/l".to_vec()]);
    let (mut keeper, mut stream) = c.lease_keep_alive(id).await.unwrap();
    keeper.keep_alive().await.unwrap();
    let ka = tokio::time::timeout(WAIT, stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!((ka.id(), ka.ttl()), (id, 30));
    assert_eq!(c.leases().await.unwrap().leases().len(), 1);
    c.lease_revoke(id).await.unwrap();
    assert!(c.get("/l", None).await.unwrap().kvs().is_empty());
    assert_eq!(c.lease_time_to_live(id, None).await.unwrap().ttl(), -1);
    let (code_, _) = code(c.lease_revoke(id).await.unwrap_err());
    assert_eq!(code_, tonic::Code::NotFound);
    let (code_, _) = code(
        c.put("/l", "v", Some(PutOptions::new().with_lease(id)))
            .await
            .unwrap_err(),
    );
    assert_eq!(code_, tonic::Code::NotFound);

    // A short lease expires on its own.
    let short = c.lease_grant(1, None).await.unwrap().id();
    c.put("/short", "v", Some(PutOptions::new().with_lease(short)))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !c.get("/short", None).await.unwrap().kvs().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "lease did not expire"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let st = c.status().await.unwrap();
    assert!(!st.version().is_empty());
    assert!(st.db_size() > 0);
    assert_eq!(st.leader(), st.header().unwrap().member_id());
    let members = c.member_list().await.unwrap();
    assert_eq!(members.members().len(), 1);
    assert!(members.members()[0].client_urls()[0].starts_with("http://127.0.0.1:"));
}
