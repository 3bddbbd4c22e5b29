//! The `Lease` service. Lease ids are chosen by the backend (a requested `ID` is
//! `Unimplemented`). Keep-alive, time-to-live and listing use the backend's optional lease
//! methods; a backend without them answers `Unimplemented`.

use std::pin::Pin;

use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::pb::etcdserverpb::{
    lease_server::Lease, LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest,
    LeaseKeepAliveResponse, LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest,
    LeaseRevokeResponse, LeaseStatus, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use super::{status, unimplemented, EtcdGrpc};
use crate::backend::StoreError;

#[tonic::async_trait]
impl Lease for EtcdGrpc {
    async fn lease_grant(
        &self,
        req: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        let r = req.into_inner();
        if r.id != 0 {
            return Err(unimplemented(
                "LeaseGrantRequest.ID (choosing the lease id)",
            ));
        }
        let b = &*self.backend;
        let id = b.grant_lease(r.ttl).await.map_err(status)?;
        let rev = b.current_revision().await.map_err(status)?;
        Ok(Response::new(LeaseGrantResponse {
            header: self.header(rev),
            id,
            ttl: r.ttl.max(1),
            error: String::new(),
        }))
    }

    async fn lease_revoke(
        &self,
        req: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        let b = &*self.backend;
        b.revoke_lease(req.into_inner().id).await.map_err(status)?;
        let rev = b.current_revision().await.map_err(status)?;
        Ok(Response::new(LeaseRevokeResponse {
            header: self.header(rev),
        }))
    }

    type LeaseKeepAliveStream =
        Pin<Box<dyn Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send + 'static>>;

    async fn lease_keep_alive(
        &self,
        req: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let this = self.clone();
        tokio::spawn(async move {
            while let Ok(Some(r)) = inbound.message().await {
                let b = &*this.backend;
                // As etcd: an unknown (or expired) lease is answered with TTL 0, not an error.
                let ttl = match b.keep_alive_lease(r.id).await {
                    Ok(ttl) => ttl,
                    Err(StoreError::LeaseNotFound(_)) => 0,
                    Err(e) => {
                        let _ = tx.send(Err(status(e))).await;
                        return;
                    }
                };
                let rev = b.current_revision().await.unwrap_or(0);
                let resp = LeaseKeepAliveResponse {
                    header: this.header(rev),
                    id: r.id,
                    ttl,
                };
                if tx.send(Ok(resp)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn lease_time_to_live(
        &self,
        req: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        let r = req.into_inner();
        let b = &*self.backend;
        let info = b.lease_info(r.id, r.keys).await;
        let rev = b.current_revision().await.map_err(status)?;
        let resp = match info {
            Ok(i) => LeaseTimeToLiveResponse {
                header: self.header(rev),
                id: r.id,
                ttl: i.remaining_ttl,
                granted_ttl: i.granted_ttl,
                keys: i.keys.into_iter().map(String::into_bytes).collect(),
            },
            // As etcd: a lease that does not exist has TTL -1.
            Err(StoreError::LeaseNotFound(_)) => LeaseTimeToLiveResponse {
                header: self.header(rev),
                id: r.id,
                ttl: -1,
                granted_ttl: 0,
                keys: Vec::new(),
            },
            Err(e) => return Err(status(e)),
        };
        Ok(Response::new(resp))
    }

    async fn lease_leases(
        &self,
        _req: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        let b = &*self.backend;
        let ids = b.leases().await.map_err(status)?;
        let rev = b.current_revision().await.map_err(status)?;
        Ok(Response::new(LeaseLeasesResponse {
            header: self.header(rev),
            leases: ids.into_iter().map(|id| LeaseStatus { id }).collect(),
        }))
    }
}
