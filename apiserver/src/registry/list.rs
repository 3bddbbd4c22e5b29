//! List and watch for every resource: selectors, pagination with continue tokens,
//! resourceVersion semantics, and watch streams with bookmarks.

use std::time::Duration;

use base64::Engine;
use futures::stream::{BoxStream, StreamExt};
use kine_sqlite::{Event, EventKind, StoreError};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::error::{ApiError, ApiResult};
use crate::meta;
use crate::registry::cache::TooOld;
use crate::registry::store::GenericStore;
use crate::selectors::{fields::FieldSelector, labels::LabelSelector};

/// Which objects a list or watch selects.
#[derive(Clone, Debug)]
pub struct Selection {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

/// Options of a list request.
#[derive(Clone, Debug)]
pub struct ListOptions {
    pub selection: Selection,
    /// Page size; 0 = everything.
    pub limit: i64,
    pub continue_token: Option<String>,
    pub resource_version: Option<String>,
    pub resource_version_match: Option<String>,
}

/// One page of a list.
#[derive(Debug)]
pub struct ListPage {
    pub items: Vec<Value>,
    /// The revision the list was read at (the list's resourceVersion).
    pub revision: i64,
    pub continue_token: Option<String>,
    /// Objects after this page, when known (lists without selectors).
    pub remaining: Option<i64>,
}

/// Options of a watch request.
#[derive(Clone, Debug)]
pub struct WatchOptions {
    pub selection: Selection,
    pub resource_version: Option<String>,
    pub allow_bookmarks: bool,
    pub send_initial_events: bool,
    pub timeout: Duration,
    /// How often to send bookmarks (when allowed).
    pub bookmark_interval: Duration,
}

/// One event of a watch stream.
#[derive(Clone, Debug, PartialEq)]
pub struct WatchEvent {
    /// `ADDED`, `MODIFIED`, `DELETED`, `BOOKMARK` or `ERROR`.
    pub kind: &'static str,
    pub object: Value,
}

/// Continue tokens carry the list's revision and where to resume, as upstream's.
#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    v: String,
    rv: i64,
    start: String,
}

const TOKEN_VERSION: &str = "meta.k8s.io/v1";

/// How long a consistent list waits for the watch cache to catch up before asking the store.
const CACHE_CATCH_UP: Duration = Duration::from_secs(3);

fn encode_token(rv: i64, start: &str) -> String {
    let t = ContinueToken { v: TOKEN_VERSION.into(), rv, start: start.into() };
    base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(&t).unwrap_or_default())
}

fn decode_token(token: &str) -> ApiResult<ContinueToken> {
    let bad = || ApiError::bad_request("continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)");
    let bytes = base64::engine::general_purpose::STANDARD.decode(token).map_err(|_| bad())?;
    let t: ContinueToken = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    // -1: continue from the same key at the latest revision (see `expired_continue`).
    if t.v != TOKEN_VERSION || (t.rv <= 0 && t.rv != LATEST) {
        return Err(bad());
    }
    Ok(t)
}

/// The revision of a continue token meaning "the latest one" (upstream's -1).
const LATEST: i64 = -1;

/// Upstream's `inconsistentContinue`: a continue token whose revision was compacted away
/// is 410 Expired, carrying a token that continues from the same key at the latest
/// revision (the rest of the list then reflects changes made since the first page).
fn expired_continue(start: &str) -> ApiError {
    ApiError::ExpiredContinue {
        message: "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.".into(),
        token: encode_token(LATEST, start),
    }
}

/// Parses a resourceVersion parameter: `None` for unset, `Some(0)` for "0".
pub fn parse_rv(rv: Option<&str>) -> ApiResult<Option<i64>> {
    match rv.filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => s
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .map(Some)
            .ok_or_else(|| ApiError::bad_request(format!("invalid resource version: {s}"))),
    }
}

/// Upstream's 410 for a revision older than the oldest kept one (the watch cache's wording:
/// the requested revision, then the newest one no longer readable).
fn too_old(requested: i64, compacted: i64) -> ApiError {
    ApiError::Expired(format!("too old resource version: {requested} ({})", compacted - 1))
}

/// `continuing`: the start key of the continue token the list was asked with, if any.
fn compacted_list_error(e: StoreError, continuing: Option<&str>) -> ApiError {
    match e {
        StoreError::Compacted { .. } if continuing.is_some() => expired_continue(continuing.unwrap_or_default()),
        StoreError::Compacted { requested, compacted } => too_old(requested, compacted),
        StoreError::FutureRevision { requested, current } => {
            ApiError::Timeout(format!("Too large resource version: {requested}, current: {current}"))
        }
        other => other.into(),
    }
}

impl GenericStore {
    /// Whether the selection selects every object (no label or field requirements).
    fn selects_everything(&self, sel: &Selection) -> bool {
        sel.labels == LabelSelector::everything() && sel.fields == FieldSelector::everything()
    }

    /// Whether an object passes the selection.
    pub fn selects(&self, sel: &Selection, obj: &Value) -> bool {
        sel.labels.matches(&meta::labels(obj)) && sel.fields.matches(&self.kind.strategy.selectable_fields(obj))
    }

    /// Lists one page. Reads at one revision for every page of a paginated list, so pages
    /// are consistent; selectors filter server side, reading on until the page is full.
    pub async fn list(&self, namespace: Option<&str>, opts: &ListOptions) -> ApiResult<ListPage> {
        let prefix = self.prefix(namespace);
        let rv = parse_rv(opts.resource_version.as_deref())?;
        if let Some(page) = self.list_from_cache(&prefix, rv, opts).await? {
            return Ok(page);
        }
        let (mut revision, mut start) = match &opts.continue_token {
            Some(token) => {
                if rv.is_some_and(|r| r > 0) {
                    return Err(ApiError::bad_request("specifying resource version is not allowed when using continue"));
                }
                let t = decode_token(token)?;
                // A revision of 0 reads the latest one.
                (t.rv.max(0), format!("{prefix}{}", t.start))
            }
            None => (self.read_revision(rv, opts).await?, prefix.clone()),
        };
        let token_start = start.clone();
        let continuing = opts.continue_token.is_some().then(|| &token_start[prefix.len()..]);
        let limit = opts.limit.max(0);
        let mut items = Vec::new();
        loop {
            let batch_limit = if limit > 0 { (limit - items.len() as i64).max(1) + 1 } else { 0 };
            let page = self
                .backend
                .list(&prefix, &start, batch_limit, revision)
                .await
                .map_err(|e| compacted_list_error(e, continuing))?;
            revision = page.revision;
            let fetched = page.kvs.len();
            for (i, kv) in page.kvs.iter().enumerate() {
                let obj = self.decode(kv)?;
                if self.selects(&opts.selection, &obj) {
                    items.push(obj);
                }
                if limit > 0 && items.len() as i64 == limit {
                    let more = i + 1 < fetched || page.more;
                    let next = format!("{}\0", &kv.key[prefix.len()..]);
                    let token = more.then(|| encode_token(revision, &next));
                    // As upstream: without selectors a page with a continue token tells how
                    // many objects follow it (at the list's revision).
                    let remaining = if more && self.selects_everything(&opts.selection) {
                        let rest = self
                            .backend
                            .list(&prefix, &format!("{prefix}{next}"), 0, revision)
                            .await
                            .map_err(|e| compacted_list_error(e, continuing))?;
                        Some(rest.kvs.len() as i64)
                    } else {
                        None
                    };
                    return Ok(ListPage { items, revision, continue_token: token, remaining });
                }
            }
            match page.kvs.last() {
                Some(last) if page.more => start = format!("{}\0", last.key),
                _ => return Ok(ListPage { items, revision, continue_token: None, remaining: None }),
            }
        }
    }

    /// Serves a list from the watch cache when its semantics allow: `resourceVersion=0`
    /// (any state, as upstream ignoring `limit`), or an unpaginated consistent list once the
    /// cache has caught up with the store's current revision. `None`: ask the store.
    async fn list_from_cache(&self, prefix: &str, rv: Option<i64>, opts: &ListOptions) -> ApiResult<Option<ListPage>> {
        let plain_match = opts.resource_version_match.as_deref().is_none_or(str::is_empty);
        let any = rv == Some(0) && plain_match;
        let consistent = rv.is_none() && opts.limit <= 0 && plain_match;
        if opts.continue_token.is_some() || !(any || consistent) {
            return Ok(None);
        }
        self.cache.ensure_started().await?;
        if consistent {
            let current = self.backend.current_revision().await?;
            if !self.cache.wait_for(current, CACHE_CATCH_UP).await {
                return Ok(None);
            }
        }
        let (revision, kvs) = self.cache.list(prefix);
        let mut items = Vec::new();
        for kv in &kvs {
            let obj = self.decode(kv)?;
            if self.selects(&opts.selection, &obj) {
                items.push(obj);
            }
        }
        Ok(Some(ListPage { items, revision, continue_token: None, remaining: None }))
    }

    /// The revision a list is served at: exact when asked (or, as upstream, when a
    /// resourceVersion comes with a limit), else the newest.
    async fn read_revision(&self, rv: Option<i64>, opts: &ListOptions) -> ApiResult<i64> {
        let exact = match opts.resource_version_match.as_deref() {
            None | Some("") => opts.limit > 0 && rv.is_some_and(|r| r > 0),
            Some("Exact") => true,
            Some("NotOlderThan") => false,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "resourceVersionMatch: Unsupported value: \"{other}\": supported values: \"Exact\", \"NotOlderThan\""
                )))
            }
        };
        let current = self.backend.current_revision().await?;
        match rv {
            Some(r) if exact && r == 0 => Err(ApiError::bad_request(
                "resourceVersionMatch \"Exact\" is forbidden for resourceVersion \"0\"",
            )),
            Some(r) if exact => Ok(r),
            Some(r) if r > current => Err(ApiError::Timeout(format!("Too large resource version: {r}, current: {current}"))),
            _ => Ok(current),
        }
    }

    /// Starts a watch. Without a resourceVersion (or with "0", or `sendInitialEvents`), the
    /// current objects come first as ADDED events; then every change after, in order.
    pub async fn watch(&self, namespace: Option<&str>, opts: WatchOptions) -> ApiResult<BoxStream<'static, WatchEvent>> {
        let rv = parse_rv(opts.resource_version.as_deref())?;
        let (initial, start_rev) = match rv {
            Some(r) if r > 0 && !opts.send_initial_events => (Vec::new(), r + 1),
            _ => {
                let page = self
                    .list(
                        namespace,
                        &ListOptions {
                            selection: opts.selection.clone(),
                            limit: 0,
                            continue_token: None,
                            resource_version: None,
                            resource_version_match: None,
                        },
                    )
                    .await?;
                let mut events: Vec<WatchEvent> =
                    page.items.into_iter().map(|o| WatchEvent { kind: "ADDED", object: o }).collect();
                if opts.send_initial_events && opts.allow_bookmarks {
                    let mut b = self.bookmark(page.revision);
                    b["metadata"]["annotations"] = json!({"k8s.io/initial-events-end": "true"});
                    events.push(WatchEvent { kind: "BOOKMARK", object: b });
                }
                (events, page.revision + 1)
            }
        };
        self.cache.ensure_started().await?;
        let (tx, rx) = mpsc::channel::<WatchEvent>(256);
        let task = WatchTask { store: self.clone_for_watch(), prefix: self.prefix(namespace), opts, last_rev: start_rev - 1 };
        tokio::spawn(task.run(initial, tx));
        Ok(tokio_stream::wrappers::ReceiverStream::new(rx).boxed())
    }

    /// A BOOKMARK object: only kind, apiVersion and resourceVersion.
    fn bookmark(&self, revision: i64) -> Value {
        json!({
            "kind": self.info().kind,
            "apiVersion": self.info().api_version(),
            "metadata": {"resourceVersion": revision.to_string()},
        })
    }

    fn clone_for_watch(&self) -> GenericStore {
        GenericStore::with_cache(self.kind.clone(), self.backend.clone(), self.cache.clone())
    }

    /// Turns one store event into the watch event this selection sees, if any: an object
    /// entering the selection is ADDED, one leaving it DELETED, as upstream's watch filter.
    fn translate(&self, sel: &Selection, ev: &Event) -> ApiResult<Option<WatchEvent>> {
        let obj = self.decode(&ev.kv)?;
        let was = match &ev.prev_kv {
            Some(p) => self.selects(sel, &self.decode(p)?),
            None => false,
        };
        let kind = match ev.kind {
            EventKind::Delete => was.then_some("DELETED"),
            EventKind::Create => self.selects(sel, &obj).then_some("ADDED"),
            EventKind::Update => match (was, self.selects(sel, &obj)) {
                (true, true) => Some("MODIFIED"),
                (false, true) => Some("ADDED"),
                (true, false) => Some("DELETED"),
                (false, false) => None,
            },
        };
        Ok(kind.map(|kind| WatchEvent { kind, object: obj }))
    }
}

/// The task behind one watch: follows the watch cache's event window from its own
/// position, forwarding events, bookmarks and the timeout into a bounded channel. It ends
/// when the client goes away or falls out of the window (410).
struct WatchTask {
    store: GenericStore,
    prefix: String,
    opts: WatchOptions,
    /// Every event up to this revision has been considered.
    last_rev: i64,
}

/// Events read from the cache at a time.
const WATCH_BATCH: usize = 500;

impl WatchTask {
    async fn run(mut self, initial: Vec<WatchEvent>, tx: mpsc::Sender<WatchEvent>) {
        for e in initial {
            if tx.send(e).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::sleep(self.opts.timeout);
        tokio::pin!(deadline);
        let mut bookmarks = tokio::time::interval(self.opts.bookmark_interval);
        bookmarks.tick().await;
        let mut progress = self.store.cache.subscribe();
        loop {
            progress.borrow_and_update();
            if !self.catch_up(&tx).await {
                return;
            }
            tokio::select! {
                _ = &mut deadline => return,
                _ = tx.closed() => return,
                _ = bookmarks.tick(), if self.opts.allow_bookmarks => {
                    if tx.send(WatchEvent { kind: "BOOKMARK", object: self.store.bookmark(self.last_rev) }).await.is_err() {
                        return;
                    }
                }
                changed = progress.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
            }
        }
    }

    /// Sends every cached event after `last_rev`; false when the watch must end.
    async fn catch_up(&mut self, tx: &mpsc::Sender<WatchEvent>) -> bool {
        loop {
            let (events, seen) = match self.store.cache.events_after(&self.prefix, self.last_rev, WATCH_BATCH) {
                Ok(found) => found,
                Err(TooOld { oldest }) => {
                    let err = too_old(self.last_rev, oldest);
                    let _ = tx.send(WatchEvent { kind: "ERROR", object: err.to_status() }).await;
                    return false;
                }
            };
            for ev in &events {
                match self.store.translate(&self.opts.selection, ev) {
                    Ok(Some(we)) => {
                        if tx.send(we).await.is_err() {
                            return false;
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        let _ = tx.send(WatchEvent { kind: "ERROR", object: e.to_status() }).await;
                        return false;
                    }
                }
            }
            self.last_rev = seen;
            if events.len() < WATCH_BATCH {
                return true;
            }
        }
    }
}
