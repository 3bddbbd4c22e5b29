//! Limits on the API server's connections, so that idle or slow clients cannot hold file
//! descriptors forever: kube-apiserver's timeouts (k8s.io/apiserver `secure_serving.go`
//! over Go's net/http) and a cap on connections that have not authenticated.
//!
//! - **Header timeout** (`ReadHeaderTimeout`, 32 s): a connection's first request head must
//!   arrive within it; on HTTP/1.1 also every later head, counted from its first byte.
//! - **Idle timeout** (`IdleTimeout`, 90 s, for HTTP/1.1 and HTTP/2 alike): a connection
//!   with no request in flight for that long is closed (HTTP/2: GOAWAY first). A watch or
//!   a streaming upgrade is a request in flight until its response ends, so it is never
//!   idle.
//! - **Unauthenticated cap** (ours; upstream has none and relies on the process's file
//!   limit): at most `max_unauthenticated` connections that have neither presented a verified
//!   client certificate nor carried a valid credential in a request. When a new one would
//!   pass the cap, the *oldest* unauthenticated one is closed. Refusing the new one instead
//!   would let whoever holds the cap lock every new client out (each connection starts
//!   unauthenticated, during its TLS handshake); shedding the oldest means a real client,
//!   which authenticates within a round trip or two of connecting, is only pushed out by a
//!   flood of more than the cap within that time. Authenticated connections are never shed.

use std::collections::BTreeMap;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use apiserver::conn::ConnectionAuth;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// kube-apiserver's `ReadHeaderTimeout`: "just shy of requestTimeoutUpperBound".
pub const DEFAULT_READ_HEADER_TIMEOUT: Duration = Duration::from_secs(32);
/// kube-apiserver's `IdleTimeout` (HTTP/1.1 and HTTP/2): Go's client transport keep-alive.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// kube-apiserver's HTTP/2 `MaxConcurrentStreams` when `--http2-max-streams-per-connection`
/// is 0: the initial limit Go's HTTP/2 client assumes.
pub const DEFAULT_HTTP2_MAX_STREAMS: u32 = 100;
/// Connections that have not authenticated, at most. Each costs a descriptor, a task and
/// TLS buffers; real clients authenticate within milliseconds of connecting, so only a
/// flood comes near this.
pub const DEFAULT_MAX_UNAUTHENTICATED: usize = 2048;

/// How long a connection may take to wait for the next request.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub read_header: Duration,
    pub idle: Duration,
}

// ---------------------------------------------------------------------------------------
// The unauthenticated cap.

/// The connections that have not authenticated yet, oldest first.
pub struct Unauthenticated {
    cap: usize,
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    next_id: u64,
    /// Connection id (increasing with age) → how to close it.
    by_age: BTreeMap<u64, CancellationToken>,
}

/// A connection's place among the unauthenticated: `shed` fires when it is pushed out,
/// `auth` (a request extension) takes it off the list when it authenticates. Dropped when
/// the connection ends.
pub struct Admission {
    pub shed: CancellationToken,
    pub auth: ConnectionAuth,
    _slot: Slot,
}

struct Slot {
    id: u64,
    registry: Arc<Unauthenticated>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.registry.remove(self.id);
    }
}

impl Unauthenticated {
    pub fn new(cap: usize) -> Arc<Self> {
        Arc::new(Unauthenticated { cap: cap.max(1), open: Mutex::default() })
    }

    /// Lists a new connection as unauthenticated, shedding the oldest if that passes the cap.
    pub fn admit(self: &Arc<Self>) -> Admission {
        let shed = CancellationToken::new();
        let (id, oldest) = {
            let mut open = self.lock();
            let id = open.next_id;
            open.next_id += 1;
            open.by_age.insert(id, shed.clone());
            let oldest = if open.by_age.len() > self.cap { open.by_age.pop_first() } else { None };
            (id, oldest)
        };
        if let Some((_, close)) = oldest {
            close.cancel();
        }
        let registry = Arc::downgrade(self);
        let auth = ConnectionAuth::new(move || {
            if let Some(registry) = registry.upgrade() {
                registry.remove(id);
            }
        });
        Admission { shed, auth, _slot: Slot { id, registry: self.clone() } }
    }

    /// How many connections are unauthenticated now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().by_age.len()
    }

    fn remove(&self, id: u64) {
        self.lock().by_age.remove(&id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

// ---------------------------------------------------------------------------------------
// Request activity and the timeouts it drives.

/// What a connection is doing, as far as its timeouts care.
#[derive(Debug, Clone, Copy)]
struct State {
    /// Requests whose response has not been sent completely.
    in_flight: usize,
    /// Requests started so far.
    requests: u64,
    /// When `in_flight` last dropped to 0 (the connection's start before any request).
    idle_since: Instant,
    /// HTTP/1.1: when the first byte of the next request head arrived.
    head_started: Option<Instant>,
}

/// When an idle connection must be closed; `None` while a request is in flight.
fn deadline(state: &State, timeouts: &Timeouts) -> Option<Instant> {
    if state.in_flight > 0 {
        None
    } else if state.requests == 0 {
        Some(state.idle_since + timeouts.read_header)
    } else if let Some(started) = state.head_started {
        Some(started + timeouts.read_header)
    } else {
        Some(state.idle_since + timeouts.idle)
    }
}

/// One connection's request activity: requests begin and end, bytes arrive; `expired`
/// resolves when the connection has been idle (or slow to send a head) too long.
pub struct Activity {
    state: watch::Sender<State>,
    /// HTTP/1.1: a head's first byte starts the header timeout. Not for HTTP/2, whose
    /// control frames (pings, window updates) arrive on idle connections too.
    track_heads: bool,
}

/// Held from a request's start until its response has been sent (or abandoned).
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.state.send_modify(|s| {
            s.in_flight -= 1;
            if s.in_flight == 0 {
                s.idle_since = Instant::now();
            }
        });
    }
}

impl Activity {
    pub fn new(track_heads: bool) -> Arc<Self> {
        let state = State { in_flight: 0, requests: 0, idle_since: Instant::now(), head_started: None };
        Arc::new(Activity { state: watch::Sender::new(state), track_heads })
    }

    /// A request (its head complete) starts.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.state.send_modify(|s| {
            s.in_flight += 1;
            s.requests += 1;
            s.head_started = None;
        });
        InFlight(self.clone())
    }

    /// Bytes arrived from the client.
    fn received(&self) {
        if !self.track_heads {
            return;
        }
        self.state.send_if_modified(|s| {
            let starts_head = s.in_flight == 0 && s.requests > 0 && s.head_started.is_none();
            if starts_head {
                s.head_started = Some(Instant::now());
            }
            starts_head
        });
    }

    /// Resolves when the connection has waited for a request longer than `timeouts` allow.
    pub async fn expired(&self, timeouts: Timeouts) {
        let mut changes = self.state.subscribe();
        loop {
            let deadline = deadline(&changes.borrow_and_update(), &timeouts);
            let changed = async {
                if changes.changed().await.is_err() {
                    // Unreachable while `self` holds the sender; never expire because of it.
                    std::future::pending::<()>().await;
                }
            };
            match deadline {
                None => changed.await,
                Some(at) => tokio::select! {
                    _ = tokio::time::sleep_until(at) => return,
                    _ = changed => {}
                },
            }
        }
    }
}

/// A connection's byte stream, reporting arriving bytes to its [`Activity`].
pub struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Watched<S> {
    pub fn new(inner: S, activity: Arc<Activity>) -> Self {
        Watched { inner, activity }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.received();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

// ---------------------------------------------------------------------------------------
// The process's descriptor limit.

/// Raises the soft limit on open files to the hard limit, as Go does at start since 1.19
/// (so kube-apiserver and k3s run with it): the default soft limit (often 1024) is far
/// below what a server holding thousands of connections needs. Returns the new limit.
pub fn raise_nofile_limit() -> nix::Result<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok(hard)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timeouts = Timeouts { read_header: Duration::from_secs(32), idle: Duration::from_secs(90) };

    fn state(in_flight: usize, requests: u64, head_started: Option<Instant>) -> (State, Instant) {
        let t0 = Instant::now();
        (State { in_flight, requests, idle_since: t0, head_started }, t0)
    }

    #[test]
    fn first_request_gets_the_header_timeout() {
        let (s, t0) = state(0, 0, None);
        assert_eq!(deadline(&s, &T), Some(t0 + T.read_header));
    }

    #[test]
    fn idle_after_a_request_gets_the_idle_timeout() {
        let (s, t0) = state(0, 3, None);
        assert_eq!(deadline(&s, &T), Some(t0 + T.idle));
    }

    #[test]
    fn a_started_head_gets_the_header_timeout_from_its_first_byte() {
        let later = Instant::now() + Duration::from_secs(50);
        let (s, _) = state(0, 3, Some(later));
        assert_eq!(deadline(&s, &T), Some(later + T.read_header));
    }

    #[test]
    fn no_deadline_while_a_request_is_in_flight() {
        let (s, _) = state(1, 1, None);
        assert_eq!(deadline(&s, &T), None);
    }

    /// Real (short) timeouts; the upper bounds only guard against never expiring.
    const SHORT: Timeouts = Timeouts { read_header: Duration::from_millis(100), idle: Duration::from_millis(300) };
    const NEVER: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn expires_only_when_idle() {
        let activity = Activity::new(true);
        // A request in flight (a watch) for longer than either timeout.
        let watch = activity.begin();
        let held = tokio::time::timeout(SHORT.idle * 2, activity.expired(SHORT)).await;
        assert!(held.is_err(), "expired with a request in flight");
        drop(watch);
        let idle_from = Instant::now();
        tokio::time::timeout(NEVER, activity.expired(SHORT)).await.unwrap();
        assert!(idle_from.elapsed() >= SHORT.idle);
    }

    #[tokio::test]
    async fn first_byte_of_a_head_switches_to_the_header_timeout() {
        let t = Timeouts { idle: Duration::from_secs(60), ..SHORT };
        let activity = Activity::new(true);
        drop(activity.begin());
        let head_from = Instant::now();
        activity.received();
        tokio::time::timeout(NEVER, activity.expired(t)).await.expect("the header timeout applies");
        assert!(head_from.elapsed() >= t.read_header);
    }

    #[tokio::test]
    async fn http2_frames_do_not_start_a_head() {
        let activity = Activity::new(false);
        drop(activity.begin());
        let idle_from = Instant::now();
        activity.received();
        tokio::time::timeout(NEVER, activity.expired(SHORT)).await.unwrap();
        assert!(idle_from.elapsed() >= SHORT.idle, "closed after {:?}", idle_from.elapsed());
    }

    #[test]
    fn the_oldest_unauthenticated_connection_is_shed() {
        let registry = Unauthenticated::new(2);
        let first = registry.admit();
        let second = registry.admit();
        assert!(!first.shed.is_cancelled());
        let third = registry.admit();
        assert!(first.shed.is_cancelled(), "the oldest goes");
        assert!(!second.shed.is_cancelled() && !third.shed.is_cancelled());
        assert_eq!(registry.len(), 2);
    }

    #[test]
    fn authenticated_and_closed_connections_leave_the_list() {
        let registry = Unauthenticated::new(2);
        let authenticated = registry.admit();
        let closed = registry.admit();
        authenticated.auth.mark();
        drop(closed);
        assert_eq!(registry.len(), 0);
        // Two newcomers fit: nobody is shed, least of all the authenticated one.
        let a = registry.admit();
        let b = registry.admit();
        assert!(!authenticated.shed.is_cancelled() && !a.shed.is_cancelled() && !b.shed.is_cancelled());
        drop(authenticated); // its slot was already gone; dropping must not disturb others
        assert_eq!(registry.len(), 2);
    }

    #[test]
    fn the_descriptor_limit_is_raised_to_the_hard_limit() {
        let hard = raise_nofile_limit().unwrap();
        let (soft, _) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
        assert_eq!(soft, hard);
    }
}
