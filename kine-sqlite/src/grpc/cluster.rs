//! `Cluster.MemberList` and `Maintenance.Status`: a one-member "cluster" that is its own
//! leader, so that clients and tools probing cluster health get plausible answers.

use tonic::{Request, Response, Status};

use super::pb::etcdserverpb::{
    cluster_server::Cluster, maintenance_server::Maintenance, Member, MemberListRequest,
    MemberListResponse, StatusRequest, StatusResponse,
};
use super::{status, EtcdGrpc, RAFT_TERM};

#[tonic::async_trait]
impl Cluster for EtcdGrpc {
    async fn member_list(
        &self,
        _req: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        let rev = self.backend.current_revision().await.map_err(status)?;
        Ok(Response::new(MemberListResponse {
            header: self.header(rev),
            members: vec![Member {
                id: self.opts.member_id,
                name: self.opts.name.clone(),
                peer_ur_ls: Vec::new(),
                client_ur_ls: self.opts.client_urls.clone(),
                is_learner: false,
            }],
        }))
    }
}

#[tonic::async_trait]
impl Maintenance for EtcdGrpc {
    async fn status(
        &self,
        _req: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let b = &*self.backend;
        let rev = b.current_revision().await.map_err(status)?;
        let size = b.db_size().await.map_err(status)?;
        // No raft: every write is "committed and applied" at once, so the store's revision
        // stands in for the raft index.
        let index = rev.max(0) as u64;
        Ok(Response::new(StatusResponse {
            header: self.header(rev),
            version: self.opts.version.clone(),
            db_size: size,
            leader: self.opts.member_id,
            raft_index: index,
            raft_term: RAFT_TERM,
            raft_applied_index: index,
            errors: Vec::new(),
            db_size_in_use: size,
            is_learner: false,
        }))
    }
}
