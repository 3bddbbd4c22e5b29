//! The `KV` service: Range, Put, DeleteRange, Txn, Compact.
//!
//! Writes are built from the backend's single-key compare-and-swaps, retried when another
//! writer got in between. A `Txn` must be about one key: every compare on that key (no
//! `range_end`), at most one put or delete of it per branch; reads (`RequestOp.request_range`)
//! may be of any range. Reads of that key inside the txn see its state before/after the
//! write; reads of other keys are plain reads at the current revision (not isolated from
//! concurrent writes). Everything else answers `Unimplemented` naming the field.

use tonic::{Request, Response, Status};

use super::pb::etcdserverpb::{
    compare::{CompareResult, CompareTarget, TargetUnion},
    kv_server::Kv,
    range_request::{SortOrder, SortTarget},
    request_op::Request as Op,
    response_op::Response as OpResponse,
    CompactionRequest, CompactionResponse, Compare, DeleteRangeRequest, DeleteRangeResponse,
    PutRequest, PutResponse, RangeRequest, RangeResponse, ResponseOp, TxnRequest, TxnResponse,
};
use super::{
    count_span, errs, key_string, read_span, status, to_pb_kv, unimplemented, EtcdGrpc, Span,
};
use crate::backend::{KeyValue, Revision, StoreError};

/// Compare-and-swap attempts before giving up on a hot key.
const MAX_CAS_RETRIES: usize = 1000;

fn too_contended() -> Status {
    Status::aborted("kine-sqlite: too many concurrent writes to the key; retry")
}

#[tonic::async_trait]
impl Kv for EtcdGrpc {
    async fn range(&self, req: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        Ok(Response::new(self.do_range(&req.into_inner()).await?))
    }

    async fn put(&self, req: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        Ok(Response::new(self.do_put(&req.into_inner()).await?))
    }

    async fn delete_range(
        &self,
        req: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        Ok(Response::new(self.do_delete(&req.into_inner()).await?))
    }

    async fn txn(&self, req: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        Ok(Response::new(self.do_txn(req.into_inner()).await?))
    }

    async fn compact(
        &self,
        req: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        let rev = req.into_inner().revision;
        let b = &*self.backend;
        let current = b.current_revision().await.map_err(status)?;
        if rev > current {
            return Err(Status::out_of_range(errs::FUTURE_REV));
        }
        // As etcd: compacting at or below the compacted revision is an error.
        let compacted = b.compact_revision().await.map_err(status)?;
        if rev <= compacted {
            return Err(Status::out_of_range(errs::COMPACTED));
        }
        b.compact(rev).await.map_err(status)?;
        let current = b.current_revision().await.map_err(status)?;
        Ok(Response::new(CompactionResponse {
            header: self.header(current),
        }))
    }
}

impl EtcdGrpc {
    pub(crate) async fn do_range(&self, r: &RangeRequest) -> Result<RangeResponse, Status> {
        let span = Span::parse(&r.key, &r.range_end)?;
        let b = &*self.backend;
        let rev = r.revision.max(0);
        if r.count_only {
            let count = count_span(b, &span, rev).await?;
            let current = b.current_revision().await.map_err(status)?;
            return Ok(RangeResponse {
                header: self.header(current),
                kvs: Vec::new(),
                more: false,
                count,
            });
        }
        let mut order = r.sort_order();
        let target = r.sort_target();
        if order == SortOrder::None && target != SortTarget::Key {
            order = SortOrder::Ascend; // etcd's default once a target is named
        }
        let filtered = r.min_mod_revision != 0
            || r.max_mod_revision != 0
            || r.min_create_revision != 0
            || r.max_create_revision != 0;
        // Keys come back in ascending key order; anything else needs the whole range first.
        let whole = filtered
            || !(order == SortOrder::None
                || (order == SortOrder::Ascend && target == SortTarget::Key));
        let limit = r.limit.max(0);
        let res = read_span(b, &span, if whole { 0 } else { limit }, rev).await?;
        let count = if res.more {
            count_span(b, &span, rev).await?
        } else {
            res.kvs.len() as i64
        };
        let mut kvs = res.kvs;
        if filtered {
            kvs.retain(|kv| {
                (r.min_mod_revision == 0 || kv.mod_revision >= r.min_mod_revision)
                    && (r.max_mod_revision == 0 || kv.mod_revision <= r.max_mod_revision)
                    && (r.min_create_revision == 0 || kv.create_revision >= r.min_create_revision)
                    && (r.max_create_revision == 0 || kv.create_revision <= r.max_create_revision)
            });
        }
        if whole && order != SortOrder::None {
            match target {
                SortTarget::Key => {}
                SortTarget::Version => kvs.sort_by_key(|kv| kv.version),
                SortTarget::Create => kvs.sort_by_key(|kv| kv.create_revision),
                SortTarget::Mod => kvs.sort_by_key(|kv| kv.mod_revision),
                SortTarget::Value => kvs.sort_by(|a, b| a.value.cmp(&b.value)),
            }
            if order == SortOrder::Descend {
                kvs.reverse();
            }
        }
        let mut more = res.more;
        if limit > 0 && kvs.len() as i64 > limit {
            kvs.truncate(limit as usize);
            more = true;
        }
        Ok(RangeResponse {
            header: self.header(res.revision),
            kvs: kvs
                .iter()
                .map(|kv| {
                    let mut p = to_pb_kv(kv);
                    if r.keys_only {
                        p.value.clear();
                    }
                    p
                })
                .collect(),
            more,
            count,
        })
    }

    async fn do_put(&self, r: &PutRequest) -> Result<PutResponse, Status> {
        if r.key.is_empty() {
            return Err(Status::invalid_argument(errs::EMPTY_KEY));
        }
        let key = key_string(&r.key)?;
        check_put(r)?;
        let b = &*self.backend;
        for _ in 0..MAX_CAS_RETRIES {
            let (_, cur) = b.get(&key, 0).await.map_err(status)?;
            let (value, lease) = put_payload(r, cur.as_ref())?;
            match write(b, &key, cur.as_ref(), value, lease).await? {
                Some(rev) => {
                    return Ok(PutResponse {
                        header: self.header(rev),
                        prev_kv: if r.prev_kv {
                            cur.as_ref().map(to_pb_kv)
                        } else {
                            None
                        },
                    })
                }
                None => continue,
            }
        }
        Err(too_contended())
    }

    async fn do_delete(&self, r: &DeleteRangeRequest) -> Result<DeleteRangeResponse, Status> {
        let span = Span::parse(&r.key, &r.range_end)?;
        let b = &*self.backend;
        let listed = read_span(b, &span, 0, 0).await?;
        let mut rev = listed.revision;
        let mut prev_kvs = Vec::new();
        for kv in listed.kvs {
            // Deletes the key as listed; if it changed meanwhile, deletes what is there now.
            let mut expected = kv;
            let mut done = false;
            for _ in 0..MAX_CAS_RETRIES {
                let out = b
                    .delete(&expected.key, expected.mod_revision)
                    .await
                    .map_err(status)?;
                if out.succeeded {
                    rev = out.revision;
                    prev_kvs.push(expected.clone());
                    done = true;
                    break;
                }
                match out.current {
                    Some(now) => expected = now,
                    None => {
                        done = true; // deleted by someone else
                        break;
                    }
                }
            }
            if !done {
                return Err(too_contended());
            }
        }
        if prev_kvs.is_empty() {
            rev = b.current_revision().await.map_err(status)?;
        }
        Ok(DeleteRangeResponse {
            header: self.header(rev),
            deleted: prev_kvs.len() as i64,
            prev_kvs: if r.prev_kv {
                prev_kvs.iter().map(to_pb_kv).collect()
            } else {
                Vec::new()
            },
        })
    }

    async fn do_txn(&self, t: TxnRequest) -> Result<TxnResponse, Status> {
        let plan = TxnPlan::check(&t)?;
        let b = &*self.backend;
        for _ in 0..MAX_CAS_RETRIES {
            // The key's state the compares are judged on; the write (if any) is a CAS against
            // exactly this state, so compare + write are atomic (retried on conflict).
            let (mut rev, cur) = match &plan.key {
                Some(k) => b.get(k, 0).await.map_err(status)?,
                None => (b.current_revision().await.map_err(status)?, None),
            };
            let succeeded = t.compare.iter().all(|c| compare(c, cur.as_ref()));
            let ops = if succeeded { &t.success } else { &t.failure };
            let mut state = cur.clone();
            let mut responses = Vec::with_capacity(ops.len());
            let mut conflict = false;
            for op in ops {
                let resp = match op.request.as_ref() {
                    Some(Op::RequestPut(p)) => {
                        let (value, lease) = put_payload(p, state.as_ref())?;
                        let key = key_string(&p.key)?;
                        let Some(new_rev) =
                            write(b, &key, state.as_ref(), value.clone(), lease).await?
                        else {
                            conflict = true;
                            break;
                        };
                        rev = new_rev;
                        let prev = state.take();
                        state = Some(KeyValue {
                            key,
                            create_revision: prev.as_ref().map_or(new_rev, |p| p.create_revision),
                            mod_revision: new_rev,
                            version: prev.as_ref().map_or(1, |p| p.version + 1),
                            value,
                            lease,
                        });
                        OpResponse::ResponsePut(PutResponse {
                            header: self.header(new_rev),
                            prev_kv: if p.prev_kv {
                                prev.as_ref().map(to_pb_kv)
                            } else {
                                None
                            },
                        })
                    }
                    Some(Op::RequestDeleteRange(d)) => {
                        let mut deleted = 0;
                        let mut prev_kvs = Vec::new();
                        if let Some(s) = state.take() {
                            let out = b.delete(&s.key, s.mod_revision).await.map_err(status)?;
                            if !out.succeeded {
                                conflict = true;
                                break;
                            }
                            rev = out.revision;
                            deleted = 1;
                            if d.prev_kv {
                                prev_kvs.push(to_pb_kv(&s));
                            }
                        }
                        OpResponse::ResponseDeleteRange(DeleteRangeResponse {
                            header: self.header(rev),
                            deleted,
                            prev_kvs,
                        })
                    }
                    Some(Op::RequestRange(r)) => {
                        let local = plan.key.as_deref().is_some_and(|k| {
                            r.range_end.is_empty() && r.revision <= 0 && r.key == k.as_bytes()
                        });
                        if local {
                            let kvs: Vec<_> = state
                                .iter()
                                .map(|kv| {
                                    let mut p = to_pb_kv(kv);
                                    if r.keys_only {
                                        p.value.clear();
                                    }
                                    p
                                })
                                .collect();
                            let count = kvs.len() as i64;
                            OpResponse::ResponseRange(RangeResponse {
                                header: self.header(rev),
                                kvs: if r.count_only { Vec::new() } else { kvs },
                                more: false,
                                count,
                            })
                        } else {
                            OpResponse::ResponseRange(self.do_range(r).await?)
                        }
                    }
                    Some(Op::RequestTxn(_)) => {
                        return Err(unimplemented("RequestOp.request_txn (nested txn)"))
                    }
                    None => return Err(Status::invalid_argument("kine-sqlite: empty RequestOp")),
                };
                responses.push(ResponseOp {
                    response: Some(resp),
                });
            }
            if conflict {
                // Nothing was written (the only write is the one that failed): start over.
                continue;
            }
            return Ok(TxnResponse {
                header: self.header(rev),
                succeeded,
                responses,
            });
        }
        Err(too_contended())
    }
}

/// What a txn is about, once checked to be within what the backend can do atomically.
struct TxnPlan {
    /// The one key compared and/or written; `None` for a read-only txn without compares.
    key: Option<String>,
}

impl TxnPlan {
    fn check(t: &TxnRequest) -> Result<TxnPlan, Status> {
        let mut key: Option<Vec<u8>> = None;
        let mut same_key = |k: &[u8], what: &str| -> Result<(), Status> {
            if k.is_empty() {
                return Err(Status::invalid_argument(errs::EMPTY_KEY));
            }
            match &key {
                None => {
                    key = Some(k.to_vec());
                    Ok(())
                }
                Some(prev) if prev.as_slice() == k => Ok(()),
                Some(_) => Err(unimplemented(&format!(
                    "TxnRequest with {what} on more than one key (only single-key transactions are supported)"
                ))),
            }
        };
        for c in &t.compare {
            if !c.range_end.is_empty() {
                return Err(unimplemented(
                    "Compare.range_end (compares over a key range)",
                ));
            }
            same_key(&c.key, "compares/writes")?;
        }
        for ops in [&t.success, &t.failure] {
            let mut writes = 0;
            for op in ops {
                match op.request.as_ref() {
                    Some(Op::RequestPut(p)) => {
                        same_key(&p.key, "compares/writes")?;
                        check_put(p)?;
                        writes += 1;
                    }
                    Some(Op::RequestDeleteRange(d)) => {
                        if !d.range_end.is_empty() {
                            return Err(unimplemented(
                                "DeleteRangeRequest.range_end inside a txn (deleting a key range)",
                            ));
                        }
                        same_key(&d.key, "compares/writes")?;
                        writes += 1;
                    }
                    Some(Op::RequestRange(r)) => {
                        Span::parse(&r.key, &r.range_end)?;
                    }
                    Some(Op::RequestTxn(_)) => {
                        return Err(unimplemented("RequestOp.request_txn (nested txn)"))
                    }
                    None => return Err(Status::invalid_argument("kine-sqlite: empty RequestOp")),
                }
            }
            if writes > 1 {
                // etcd refuses two writes of one key in one branch, too.
                return Err(Status::invalid_argument(errs::DUPLICATE_KEY));
            }
        }
        let key = key.map(|k| key_string(&k)).transpose()?;
        Ok(TxnPlan { key })
    }
}

fn check_put(r: &PutRequest) -> Result<(), Status> {
    if r.ignore_value && !r.value.is_empty() {
        return Err(Status::invalid_argument(errs::VALUE_PROVIDED));
    }
    if r.ignore_lease && r.lease != 0 {
        return Err(Status::invalid_argument(errs::LEASE_PROVIDED));
    }
    Ok(())
}

/// The value and lease a put writes, given the key's current state.
fn put_payload(r: &PutRequest, cur: Option<&KeyValue>) -> Result<(Vec<u8>, i64), Status> {
    if (r.ignore_value || r.ignore_lease) && cur.is_none() {
        return Err(Status::invalid_argument(errs::KEY_NOT_FOUND));
    }
    let value = match (r.ignore_value, cur) {
        (true, Some(c)) => c.value.clone(),
        _ => r.value.clone(),
    };
    let lease = match (r.ignore_lease, cur) {
        (true, Some(c)) => c.lease,
        _ => r.lease,
    };
    Ok((value, lease))
}

/// Writes `key` if its current state is still `cur`; `None` when it changed (retry).
async fn write(
    b: &dyn crate::Backend,
    key: &str,
    cur: Option<&KeyValue>,
    value: Vec<u8>,
    lease: i64,
) -> Result<Option<Revision>, Status> {
    match cur {
        None => match b.create(key, value, lease).await {
            Ok(rev) => Ok(Some(rev)),
            Err(StoreError::KeyExists) => Ok(None),
            Err(e) => Err(status(e)),
        },
        Some(c) => {
            let out = b
                .update(key, value, c.mod_revision, lease)
                .await
                .map_err(status)?;
            Ok(out.succeeded.then_some(out.revision))
        }
    }
}

/// etcd's compare semantics for one key: an absent key compares as all zeros, except that
/// any value compare on it fails.
fn compare(c: &Compare, kv: Option<&KeyValue>) -> bool {
    use std::cmp::Ordering;
    let target = c.target();
    let zero = KeyValue {
        key: String::new(),
        create_revision: 0,
        mod_revision: 0,
        version: 0,
        value: Vec::new(),
        lease: 0,
    };
    let kv = match kv {
        Some(kv) => kv,
        None if target == CompareTarget::Value => return false,
        None => &zero,
    };
    let int = |f: fn(&TargetUnion) -> Option<i64>| c.target_union.as_ref().and_then(f).unwrap_or(0);
    let ord: Ordering = match target {
        CompareTarget::Version => kv.version.cmp(&int(|u| match u {
            TargetUnion::Version(v) => Some(*v),
            _ => None,
        })),
        CompareTarget::Create => kv.create_revision.cmp(&int(|u| match u {
            TargetUnion::CreateRevision(v) => Some(*v),
            _ => None,
        })),
        CompareTarget::Mod => kv.mod_revision.cmp(&int(|u| match u {
            TargetUnion::ModRevision(v) => Some(*v),
            _ => None,
        })),
        CompareTarget::Lease => kv.lease.cmp(&int(|u| match u {
            TargetUnion::Lease(v) => Some(*v),
            _ => None,
        })),
        CompareTarget::Value => {
            let want: &[u8] = match &c.target_union {
                Some(TargetUnion::Value(v)) => v,
                _ => &[],
            };
            kv.value.as_slice().cmp(want)
        }
    };
    match c.result() {
        CompareResult::Equal => ord == Ordering::Equal,
        CompareResult::NotEqual => ord != Ordering::Equal,
        CompareResult::Greater => ord == Ordering::Greater,
        CompareResult::Less => ord == Ordering::Less,
    }
}
