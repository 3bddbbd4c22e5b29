//! Each controller under its own identity, as upstream's kube-controller-manager with
//! `--use-service-account-credentials` (k3s turns it on): the controller-manager's root
//! client (`system:kube-controller-manager`) makes sure the ServiceAccount
//! `kube-system/<controller's account>` exists and requests tokens for it (TokenRequest,
//! upstream's `SAControllerClientBuilder` / `DynamicControllerClientBuilder`), refreshing
//! them before they expire; the controller's writes and reads of single objects then carry
//! that token, so RBAC holds it to `system:controller:<account>`.
//!
//! Upstream's controllers read through shared informers, which the root client feeds (its
//! role lists and watches everything), and the controller roles are written for that: they
//! omit list/watch of what the informers supply. krust's controllers build their own
//! watchers, so a controller's client sends list and watch requests with the root client, as
//! the shared informers would, and every other request with the controller's token.

use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use http::header::{HeaderValue, AUTHORIZATION};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, ObjectMeta, PostParams};

use crate::Error;

/// Where the controllers' service accounts live.
pub const NAMESPACE: &str = "kube-system";
/// Lifetime asked for a controller's token (upstream's builder asks one hour).
const TOKEN_SECONDS: i64 = 3600;
/// How soon a failed token request is tried again.
const RETRY: Duration = Duration::from_secs(10);

/// Makes clients that act as a controller's service account (see the module comment).
#[derive(Clone)]
pub struct ClientBuilder {
    root: kube::Client,
    /// The server and its CA, without any user credential: the token is the credential.
    anonymous: kube::Client,
}

impl ClientBuilder {
    /// `root_config` is the controller-manager's own configuration; its user credentials are
    /// dropped for the controllers' connections.
    pub fn new(root: kube::Client, root_config: &kube::Config) -> Result<Self, Error> {
        let mut base = root_config.clone();
        base.auth_info = Default::default();
        let anonymous = kube::Client::try_from(base)?;
        Ok(ClientBuilder { root, anonymous })
    }

    /// A client acting as `kube-system/<service_account>`: the account is created when
    /// missing and its first token requested before this returns; later tokens are requested
    /// in the background at 80% of each one's life, for as long as the client lives.
    pub async fn client_for(&self, service_account: &str) -> Result<kube::Client, Error> {
        self.ensure_account(service_account).await?;
        let (token, lifetime) = self.request_token(service_account).await?;
        let current = Arc::new(RwLock::new(token));
        tokio::spawn(refresh(self.clone(), service_account.to_string(), Arc::downgrade(&current), lifetime));
        let (root, anonymous) = (self.root.clone(), self.anonymous.clone());
        let service = tower::service_fn(move |mut req: http::Request<kube::client::Body>| {
            let (root, anonymous, current) = (root.clone(), anonymous.clone(), current.clone());
            async move {
                if is_list_or_watch(req.method(), req.uri()) {
                    return root.send(req).await;
                }
                let token = current.read().expect("token lock poisoned").clone();
                req.headers_mut().insert(AUTHORIZATION, token);
                anonymous.send(req).await
            }
        });
        Ok(kube::Client::new(service, "default"))
    }

    async fn ensure_account(&self, name: &str) -> Result<(), Error> {
        let api: Api<ServiceAccount> = Api::namespaced(self.root.clone(), NAMESPACE);
        if api.get_opt(name).await?.is_some() {
            return Ok(());
        }
        let sa = ServiceAccount { metadata: ObjectMeta { name: Some(name.into()), ..Default::default() }, ..Default::default() };
        match api.create(&PostParams::default(), &sa).await {
            Ok(_) => {
                tracing::info!(service_account = %format!("{NAMESPACE}/{name}"), "created a controller's service account");
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// A fresh token (as an `Authorization` header value) and how long it lives.
    async fn request_token(&self, name: &str) -> Result<(HeaderValue, Duration), Error> {
        let api: Api<ServiceAccount> = Api::namespaced(self.root.clone(), NAMESPACE);
        let req = TokenRequest {
            spec: TokenRequestSpec { expiration_seconds: Some(TOKEN_SECONDS), ..Default::default() },
            ..Default::default()
        };
        let issued: TokenRequest = api.create_subresource("token", name, &PostParams::default(), &req).await?;
        let status = issued.status.ok_or_else(|| Error::Other(format!("the TokenRequest for {name} has no status")))?;
        let mut value = HeaderValue::from_str(&format!("Bearer {}", status.token)).map_err(|e| Error::Other(format!("the token of {name}: {e}")))?;
        value.set_sensitive(true);
        Ok((value, Duration::from_secs(TOKEN_SECONDS as u64)))
    }
}

/// Replaces the token at 80% of its life (retrying every 10 s on failure) until the client
/// holding it is dropped.
async fn refresh(builder: ClientBuilder, name: String, current: Weak<RwLock<HeaderValue>>, lifetime: Duration) {
    let mut wait = lifetime.mul_f64(0.8);
    loop {
        tokio::time::sleep(wait).await;
        let Some(slot) = current.upgrade() else { return };
        match builder.request_token(&name).await {
            Ok((token, lifetime)) => {
                *slot.write().expect("token lock poisoned") = token;
                tracing::debug!(service_account = %name, "refreshed a controller's token");
                wait = lifetime.mul_f64(0.8);
            }
            Err(e) => {
                tracing::warn!(service_account = %name, error = %e, "refreshing a controller's token failed");
                wait = RETRY;
            }
        }
    }
}

/// Whether a request lists or watches a collection: what upstream's shared informers do
/// with the root client.
pub fn is_list_or_watch(method: &http::Method, uri: &http::Uri) -> bool {
    let attrs = apiserver::auth::attributes::Attributes::from_request(Default::default(), method.as_str(), uri.path(), uri.query(), false);
    attrs.resource_request && matches!(attrs.verb.as_str(), "list" | "watch")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_watches_go_with_the_informers() {
        let get = http::Method::GET;
        let yes = |m: &http::Method, u: &str| is_list_or_watch(m, &u.parse().unwrap());
        assert!(yes(&get, "/api/v1/pods"));
        assert!(yes(&get, "/api/v1/namespaces/ns1/pods?labelSelector=a%3Db"));
        assert!(yes(&get, "/api/v1/pods?watch=true&resourceVersion=5"));
        assert!(yes(&get, "/apis/apps/v1/namespaces/ns1/replicasets?watch=1"));
        assert!(yes(&get, "/api/v1/namespaces"));
        assert!(yes(&get, "/api/v1/namespaces/kube-system/configmaps?fieldSelector=metadata.name%3Dx"));
        assert!(!yes(&get, "/api/v1/namespaces/ns1"));
        assert!(!yes(&get, "/api/v1/namespaces/ns1/status"));
        assert!(!yes(&get, "/api/v1/namespaces/ns1/pods/p"));
        assert!(!yes(&get, "/apis/apps/v1/namespaces/ns1/deployments/d/scale"));
        assert!(!yes(&http::Method::POST, "/api/v1/namespaces/ns1/pods"));
        assert!(!yes(&http::Method::DELETE, "/api/v1/namespaces/ns1/pods"));
        assert!(!yes(&get, "/apis"));
        assert!(!yes(&get, "/apis/apps/v1"));
    }
}
