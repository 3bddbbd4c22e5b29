//! What the API server's request handling tells the connection a request came on.
//!
//! The serving layer (krust's `serve.rs`) limits how many connections may stay open without
//! having authenticated, so that a flood of idle connections cannot crowd out real clients.
//! A connection authenticates either in its TLS handshake (a verified client certificate)
//! or later, when a request on it carries a valid credential (a bearer token). The second
//! is known only to the authentication step, which reports it through the
//! [`ConnectionAuth`] the serving layer puts into every request's extensions.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Called once, when the connection first authenticates.
type OnAuthenticated = Box<dyn FnOnce() + Send>;

/// The "has this connection authenticated" marker of one connection, shared by all its
/// requests (a request extension; cloning shares it).
#[derive(Clone)]
pub struct ConnectionAuth(Arc<Inner>);

struct Inner {
    authenticated: AtomicBool,
    on_authenticated: Mutex<Option<OnAuthenticated>>,
}

impl ConnectionAuth {
    /// A marker for a connection that has not authenticated yet; `on_authenticated` runs
    /// when it first does (on the thread that marks it: keep it short).
    pub fn new(on_authenticated: impl FnOnce() + Send + 'static) -> Self {
        ConnectionAuth(Arc::new(Inner {
            authenticated: AtomicBool::new(false),
            on_authenticated: Mutex::new(Some(Box::new(on_authenticated))),
        }))
    }

    /// Records that a credential presented on this connection was valid. Cheap after the
    /// first call (one atomic read), so it may be called on every authenticated request.
    pub fn mark(&self) {
        if self.0.authenticated.swap(true, Ordering::AcqRel) {
            return;
        }
        let callback = self
            .0
            .on_authenticated
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(callback) = callback {
            callback();
        }
    }

    pub fn is_authenticated(&self) -> bool {
        self.0.authenticated.load(Ordering::Acquire)
    }
}

impl std::fmt::Debug for ConnectionAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionAuth")
            .field("authenticated", &self.is_authenticated())
            .finish()
    }
}

/// Marks the connection of a request whose credential was valid (an identity other than
/// anonymous). Requests that did not come through the serving layer (tests calling the
/// router directly) carry no marker: nothing to do.
pub fn mark_authenticated(extensions: &http::Extensions) {
    if let Some(conn) = extensions.get::<ConnectionAuth>() {
        conn.mark();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn callback_runs_once_on_first_mark() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let conn = ConnectionAuth::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        assert!(!conn.is_authenticated());
        let shared = conn.clone();
        shared.mark();
        conn.mark();
        assert!(conn.is_authenticated());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn marks_through_request_extensions() {
        let conn = ConnectionAuth::new(|| {});
        let mut extensions = http::Extensions::new();
        mark_authenticated(&extensions); // no marker: no effect, no panic
        extensions.insert(conn.clone());
        mark_authenticated(&extensions);
        assert!(conn.is_authenticated());
    }
}
