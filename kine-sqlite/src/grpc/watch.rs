//! The `Watch` service: one bidirectional stream carrying any number of watchers.
//!
//! Each watcher is a backend watch of the prefix covering its range (filtered down to the
//! range) forwarded by its own task into the stream's single response queue, so responses
//! of one watcher stay in revision order. A start revision below the compacted one gets the
//! `created` response and then one with `compact_revision` set and `canceled`.
//!
//! Progress (a `WatchProgressRequest`, or the periodic notification of a watcher created with
//! `progress_notify`) reports the store's current revision once each watcher has forwarded
//! everything its backend watch has delivered up to that revision, or has been quiet for a
//! short settle time: the backend interface does not say how far a quiet watch has read, so
//! this is best effort (the embedded SQLite backend wakes its watchers right at commit).

use std::collections::HashMap;
use std::pin::Pin;
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::debug;

use super::pb::etcdserverpb::{
    watch_create_request::FilterType, watch_request::RequestUnion, watch_server::Watch,
    WatchCreateRequest, WatchRequest, WatchResponse,
};
use super::pb::mvccpb;
use super::{errs, to_pb_kv, EtcdGrpc, Span};
use crate::backend::{Event, EventKind, Revision, StoreError, WatchStream};

type Tx = mpsc::Sender<Result<WatchResponse, Status>>;

/// How long a progress check waits for a quiet watcher's backend stream.
const SETTLE: Duration = Duration::from_millis(50);
/// The id etcd gives progress responses that concern every watcher of the stream.
const ALL_WATCHERS: i64 = -1;

struct Watcher {
    task: JoinHandle<()>,
    /// Progress checks: "forward everything up to this revision, then answer".
    probe: mpsc::Sender<(Revision, oneshot::Sender<()>)>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tonic::async_trait]
impl Watch for EtcdGrpc {
    type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchResponse, Status>> + Send + 'static>>;

    async fn watch(
        &self,
        req: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(64);
        let this = self.clone();
        tokio::spawn(async move { this.watch_session(inbound, tx).await });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

impl EtcdGrpc {
    async fn watch_session(self, mut inbound: Streaming<WatchRequest>, tx: Tx) {
        let mut watchers: HashMap<i64, Watcher> = HashMap::new();
        let mut next_id: i64 = 0;
        loop {
            let msg = tokio::select! {
                m = inbound.message() => m,
                _ = tx.closed() => break,
            };
            let req = match msg {
                Ok(Some(req)) => req,
                Ok(None) => {
                    // The client closed its side; its watchers run until it goes away.
                    tx.closed().await;
                    break;
                }
                Err(e) => {
                    debug!(error = %e, "watch stream ended");
                    break;
                }
            };
            watchers.retain(|_, w| !w.task.is_finished());
            let sent = match req.request_union {
                Some(RequestUnion::CreateRequest(c)) => {
                    self.create_watch(c, &mut watchers, &mut next_id, &tx).await
                }
                Some(RequestUnion::CancelRequest(c)) => {
                    let known = watchers.remove(&c.watch_id).is_some();
                    let rev = self.backend.current_revision().await.unwrap_or(0);
                    let mut resp = self.watch_response(rev, c.watch_id);
                    resp.canceled = true;
                    if !known {
                        resp.cancel_reason = "kine-sqlite: no such watcher".to_owned();
                    }
                    tx.send(Ok(resp)).await.is_ok()
                }
                Some(RequestUnion::ProgressRequest(_)) => {
                    match self.backend.current_revision().await {
                        Ok(rev) => {
                            let acks: Vec<_> = watchers
                                .values()
                                .filter_map(|w| {
                                    let (ack, done) = oneshot::channel();
                                    w.probe.try_send((rev, ack)).ok().map(|_| done)
                                })
                                .collect();
                            for done in acks {
                                let _ = done.await;
                            }
                            tx.send(Ok(self.watch_response(rev, ALL_WATCHERS)))
                                .await
                                .is_ok()
                        }
                        Err(e) => tx.send(Err(super::status(e))).await.is_ok(),
                    }
                }
                None => true,
            };
            if !sent {
                break;
            }
        }
        // Dropping the watchers aborts their tasks.
    }

    fn watch_response(&self, rev: Revision, watch_id: i64) -> WatchResponse {
        WatchResponse {
            header: self.header(rev),
            watch_id,
            ..Default::default()
        }
    }

    /// Creates one watcher; false when the client has gone away.
    async fn create_watch(
        &self,
        c: WatchCreateRequest,
        watchers: &mut HashMap<i64, Watcher>,
        next_id: &mut i64,
        tx: &Tx,
    ) -> bool {
        let refuse = |id: i64, reason: String| WatchResponse {
            watch_id: id,
            created: true,
            canceled: true,
            cancel_reason: reason,
            ..Default::default()
        };
        let id = if c.watch_id != 0 {
            if watchers.contains_key(&c.watch_id) {
                let r = refuse(
                    c.watch_id,
                    "etcdserver: mvcc: duplicate watch ID provided on the WatchStream".into(),
                );
                return tx.send(Ok(r)).await.is_ok();
            }
            c.watch_id
        } else {
            while watchers.contains_key(next_id) {
                *next_id += 1;
            }
            *next_id
        };
        if c.watch_id == 0 {
            *next_id += 1;
        }
        let span = match Span::parse(&c.key, &c.range_end) {
            Ok(s) => s,
            Err(e) => {
                return tx
                    .send(Ok(refuse(ALL_WATCHERS, e.message().to_owned())))
                    .await
                    .is_ok()
            }
        };
        let start = c.start_revision.max(0);
        let stream = self.backend.watch(span.watch_prefix(), start).await;
        let rev = self.backend.current_revision().await.unwrap_or(0);
        let mut created = self.watch_response(rev, id);
        created.created = true;
        if tx.send(Ok(created)).await.is_err() {
            return false;
        }
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                let mut r = self.watch_response(rev, id);
                r.canceled = true;
                match e {
                    StoreError::Compacted { compacted, .. } => {
                        r.compact_revision = compacted;
                        r.cancel_reason = errs::COMPACTED.to_owned();
                    }
                    other => r.cancel_reason = super::status(other).message().to_owned(),
                }
                return tx.send(Ok(r)).await.is_ok();
            }
        };
        let (probe, probe_rx) = mpsc::channel(4);
        let fwd = Forwarder {
            grpc: self.clone(),
            id,
            span,
            no_put: c.filters.contains(&(FilterType::Noput as i32)),
            no_delete: c.filters.contains(&(FilterType::Nodelete as i32)),
            prev_kv: c.prev_kv,
            progress_notify: c.progress_notify,
            tx: tx.clone(),
            seen: (start - 1).max(0),
        };
        let task = tokio::spawn(fwd.run(stream, probe_rx));
        watchers.insert(id, Watcher { task, probe });
        true
    }
}

/// Moves one watcher's events from its backend watch into the response stream.
struct Forwarder {
    grpc: EtcdGrpc,
    id: i64,
    span: Span,
    no_put: bool,
    no_delete: bool,
    prev_kv: bool,
    progress_notify: bool,
    tx: Tx,
    /// The newest revision the backend watch has delivered (or that is known to precede it).
    seen: Revision,
}

impl Forwarder {
    async fn run(
        mut self,
        mut stream: WatchStream,
        mut probe_rx: mpsc::Receiver<(Revision, oneshot::Sender<()>)>,
    ) {
        let interval = self.grpc.opts.progress_notify_interval;
        let mut last_sent = tokio::time::Instant::now();
        loop {
            let notify_at = last_sent + interval;
            tokio::select! {
                biased;
                item = stream.next() => {
                    match self.forward(item).await {
                        Some(true) => last_sent = tokio::time::Instant::now(),
                        Some(false) => {}
                        None => return,
                    }
                }
                p = probe_rx.recv() => {
                    let Some((rev, ack)) = p else { return };
                    if !self.settle(&mut stream, rev).await {
                        return;
                    }
                    let _ = ack.send(());
                }
                _ = tokio::time::sleep_until(notify_at), if self.progress_notify => {
                    let Ok(rev) = self.grpc.backend.current_revision().await else { continue };
                    if !self.settle(&mut stream, rev).await {
                        return;
                    }
                    let resp = self.grpc.watch_response(rev, self.id);
                    if self.tx.send(Ok(resp)).await.is_err() {
                        return;
                    }
                    last_sent = tokio::time::Instant::now();
                }
            }
        }
    }

    /// Forwards what the backend delivered up to `rev`, waiting at most [`SETTLE`] for more.
    /// False when the watcher has ended.
    async fn settle(&mut self, stream: &mut WatchStream, rev: Revision) -> bool {
        while self.seen < rev {
            match tokio::time::timeout(SETTLE, stream.next()).await {
                Ok(item) => {
                    if self.forward(item).await.is_none() {
                        return false;
                    }
                }
                Err(_) => break, // quiet: nothing pending for this watcher
            }
        }
        true
    }

    /// Sends one backend batch. `None` when the watcher has ended; `Some(sent anything)`.
    async fn forward(&mut self, item: Option<crate::Result<Vec<Event>>>) -> Option<bool> {
        let batch = match item {
            None => return None,
            Some(Ok(b)) => b,
            Some(Err(e)) => {
                let rev = self.grpc.backend.current_revision().await.unwrap_or(0);
                let mut r = self.grpc.watch_response(rev, self.id);
                r.canceled = true;
                match e {
                    StoreError::Compacted { compacted, .. } => {
                        r.compact_revision = compacted;
                        r.cancel_reason = errs::COMPACTED.to_owned();
                    }
                    other => r.cancel_reason = super::status(other).message().to_owned(),
                }
                let _ = self.tx.send(Ok(r)).await;
                return None;
            }
        };
        if let Some(last) = batch.last() {
            self.seen = self.seen.max(last.kv.mod_revision);
        }
        let events: Vec<mvccpb::Event> = batch
            .iter()
            .filter(|ev| self.span.contains(&ev.kv.key))
            .filter(|ev| match ev.kind {
                EventKind::Delete => !self.no_delete,
                _ => !self.no_put,
            })
            .map(|ev| to_pb_event(ev, self.prev_kv))
            .collect();
        if events.is_empty() {
            return Some(false);
        }
        let rev = events
            .last()
            .and_then(|e| e.kv.as_ref())
            .map_or(self.seen, |kv| kv.mod_revision);
        let mut resp = self.grpc.watch_response(rev, self.id);
        resp.events = events;
        if self.tx.send(Ok(resp)).await.is_err() {
            return None;
        }
        Some(true)
    }
}

fn to_pb_event(ev: &Event, with_prev: bool) -> mvccpb::Event {
    let (kind, kv) = match ev.kind {
        EventKind::Delete => (
            mvccpb::event::EventType::Delete,
            // etcd's delete event carries only the key and the delete's revision.
            mvccpb::KeyValue {
                key: ev.kv.key.as_bytes().to_vec(),
                mod_revision: ev.kv.mod_revision,
                ..Default::default()
            },
        ),
        EventKind::Create | EventKind::Update => (mvccpb::event::EventType::Put, to_pb_kv(&ev.kv)),
    };
    mvccpb::Event {
        r#type: kind as i32,
        kv: Some(kv),
        prev_kv: if with_prev {
            ev.prev_kv.as_ref().map(to_pb_kv)
        } else {
            None
        },
    }
}
