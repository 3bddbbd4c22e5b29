//! The one set of resource handlers: `/api/v1/...` and `/apis/{group}/{version}/...`,
//! looked up in the registry. Never a route per kind.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use futures::StreamExt;
use serde_json::{json, Value};

use crate::auth::UserInfo;
use crate::error::{ApiError, ApiResult};
use crate::fieldvalidation;
use crate::registry::apply as registry_apply;
use crate::handlers::{discovery, eviction, metrics, proxy, tokenrequest};
use crate::handlers::negotiate::{self, Output};
use crate::meta;
use crate::patch;
use crate::registry::list::{ListOptions, Selection, WatchOptions};
use crate::registry::store::{DeleteOptions, GenericStore, Propagation, Target, WriteOptions, Written};
use crate::registry::{table, ReqCtx};
use crate::selectors::{fields, labels};
use crate::AppState;

/// Largest request body accepted, as upstream's 3 MiB limit.
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/{*rest}", any(core_resource))
        .route("/apis/{group}/{version}/{*rest}", any(group_resource))
}

async fn core_resource(State(st): State<AppState>, Path(rest): Path<String>, req: Request) -> Response {
    serve(st, String::new(), "v1".into(), rest, req).await.unwrap_or_else(IntoResponse::into_response)
}

async fn group_resource(
    State(st): State<AppState>,
    Path((group, version, rest)): Path<(String, String, String)>,
    req: Request,
) -> Response {
    serve(st, group, version, rest, req).await.unwrap_or_else(IntoResponse::into_response)
}

/// What a resource path names.
struct Resolved {
    store: Arc<GenericStore>,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

/// Splits `[namespaces/NS/]PLURAL[/NAME[/SUB]]` and finds the store.
fn resolve(st: &AppState, group: &str, version: &str, rest: &str) -> ApiResult<Resolved> {
    let segs: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    let find = |plural: &str| st.registry.find(group, version, plural);
    let namespaced = segs.len() >= 3 && segs[0] == "namespaces" && find(segs[2]).is_some_and(|s| s.info().namespaced);
    let (namespace, rest) = if namespaced { (Some(segs[1].to_string()), &segs[2..]) } else { (None, &segs[..]) };
    let store = find(rest[0]).ok_or(ApiError::NoRoute)?;
    if rest.len() > 3 || (store.info().namespaced && namespace.is_none() && rest.len() > 1) {
        return Err(ApiError::NoRoute);
    }
    let subresource = rest.get(2).map(|s| s.to_string());
    if let Some(sub) = &subresource {
        if !store.info().subresources.contains(sub) && !(store.info().plural == "namespaces" && sub == "finalize") {
            return Err(ApiError::NoRoute);
        }
    }
    Ok(Resolved { store, namespace, name: rest.get(1).map(|s| s.to_string()), subresource })
}

async fn serve(st: AppState, group: String, version: String, rest: String, req: Request) -> ApiResult<Response> {
    if rest.is_empty() {
        return discovery::resource_list(&st, &group, &version, req.headers());
    }
    let t = resolve(&st, &group, &version, &rest)?;
    if let (Some(ns), Some(name), Some(sub)) = (&t.namespace, &t.name, &t.subresource) {
        if group.is_empty() && t.store.info().plural == "pods" && proxy::POD_SUBRESOURCES.contains(&sub.as_str()) {
            return proxy::pod_subresource(&st, ns, name, sub, req).await;
        }
        if group.is_empty() && t.store.info().plural == "serviceaccounts" && sub == "token" {
            return tokenrequest::serve(&st, ns, name, req).await;
        }
    }
    if group == metrics::GROUP {
        if req.method() != Method::GET {
            return Err(ApiError::MethodNotAllowed(format!("the server does not allow this method on the requested resource ({})", req.method())));
        }
        let query: HashMap<String, String> = req.uri().query().map(serde_urlencoded_pairs).unwrap_or_default();
        return metrics::serve(&st, &t.store.info().plural, t.namespace.as_deref(), t.name.as_deref(), &query).await;
    }
    let (parts, body) = req.into_parts();
    let query: HashMap<String, String> = parts
        .uri
        .query()
        .map(|q| serde_urlencoded_pairs(q))
        .unwrap_or_default();
    let user = parts.extensions.get::<UserInfo>().cloned().unwrap_or_default();
    let ctx = ReqCtx {
        namespace: t.namespace.clone(),
        user: user.name,
        groups: user.groups,
        uid: user.uid,
        extra: user.extra,
        dry_run: is_dry_run(&query)?,
        tokens: st.tokens.clone(),
        auth: Some(st.auth_context()),
    };
    let req = Req { st, t, query, headers: parts.headers, ctx };
    req.check_verb(&parts.method)?;
    match (&parts.method, &req.t.name) {
        (&Method::GET, None) if flag(&req.query, "watch") => req.watch().await,
        (&Method::GET, None) => req.list().await,
        (&Method::GET, Some(_)) if req.is_scale() => req.get_scale().await,
        (&Method::PUT, Some(_)) if req.is_scale() => req.put_scale(read_body(body).await?).await,
        (&Method::PATCH, Some(_)) if req.is_scale() => req.patch_scale(read_body(body).await?).await,
        (&Method::POST, Some(_)) if req.t.subresource.as_deref() == Some("binding") => req.bind(read_body(body).await?).await,
        (&Method::POST, Some(_)) if req.t.subresource.as_deref() == Some("eviction") => req.evict(read_body(body).await?).await,
        (m, Some(_)) if matches!(req.t.subresource.as_deref(), Some("binding" | "eviction")) => {
            Err(ApiError::MethodNotAllowed(format!("the server does not allow this method on the requested resource ({m})")))
        }
        (&Method::GET, Some(_)) => req.get().await,
        (&Method::POST, None) => req.create(read_body(body).await?).await,
        (&Method::PUT, Some(_)) => req.update(read_body(body).await?).await,
        (&Method::PATCH, Some(_)) => req.patch(read_body(body).await?).await,
        (&Method::DELETE, Some(_)) => req.delete(read_body(body).await?).await,
        (&Method::DELETE, None) => req.delete_collection(read_body(body).await?).await,
        (m, _) => Err(ApiError::MethodNotAllowed(format!("the server does not allow this method on the requested resource ({m})"))),
    }
}

/// Decodes a query string (`a=b&c=d`, percent-encoded) into a map; the last value wins.
fn serde_urlencoded_pairs(q: &str) -> HashMap<String, String> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match escaped {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn flag(q: &HashMap<String, String>, name: &str) -> bool {
    q.get(name).is_some_and(|v| v == "1" || v == "true" || v.is_empty())
}

fn is_dry_run(q: &HashMap<String, String>) -> ApiResult<bool> {
    match q.get("dryRun").map(String::as_str) {
        None | Some("") => Ok(false),
        Some("All") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!("Invalid dry run value: {other}; supported values: All"))),
    }
}

async fn read_body(body: Body) -> ApiResult<Bytes> {
    axum::body::to_bytes(body, MAX_BODY_BYTES).await.map_err(|e| {
        let too_large = std::error::Error::source(&e)
            .is_some_and(|s| s.to_string().contains("length limit"))
            || e.to_string().contains("length limit");
        if too_large {
            ApiError::RequestEntityTooLarge(format!("the request body is too large: limit is {MAX_BODY_BYTES} bytes"))
        } else {
            ApiError::bad_request(format!("failed to read the request body: {e}"))
        }
    })
}

/// One request, resolved.
struct Req {
    st: AppState,
    t: Resolved,
    query: HashMap<String, String>,
    headers: HeaderMap,
    ctx: ReqCtx,
}

impl Req {
    fn store(&self) -> &GenericStore {
        &self.t.store
    }
    fn name(&self) -> &str {
        self.t.name.as_deref().unwrap_or_default()
    }
    fn ns(&self) -> Option<&str> {
        self.t.namespace.as_deref()
    }

    fn write_target(&self) -> ApiResult<Target> {
        match self.t.subresource.as_deref() {
            None => Ok(Target::Main),
            Some("status") => Ok(Target::Status),
            Some("finalize") => Ok(Target::Finalize),
            Some("approval") => Ok(Target::Approval),
            Some(sub) => Err(ApiError::MethodNotAllowed(format!("the subresource {sub} does not support this method"))),
        }
    }

    fn output(&self) -> ApiResult<Output> {
        if self.store().kind.strategy.table_convertible() {
            return negotiate::output(&self.headers);
        }
        // No Table form (upstream: no TableConvertor): Table is not on offer.
        let Some(accept) = self.headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
            return negotiate::output(&self.headers);
        };
        let rest: Vec<&str> = accept.split(',').filter(|item| !item.contains("as=Table")).collect();
        if rest.is_empty() {
            return Err(ApiError::NotAcceptable(
                "only the following media types are accepted: application/json, application/yaml".into(),
            ));
        }
        let mut headers = self.headers.clone();
        headers.insert(header::ACCEPT, HeaderValue::from_str(&rest.join(",")).map_err(ApiError::internal)?);
        negotiate::output(&headers)
    }

    /// Refuses verbs the kind does not serve (the create-only reviews) with 405.
    fn check_verb(&self, method: &Method) -> ApiResult<()> {
        if self.t.subresource.is_some() {
            return Ok(());
        }
        let verb = match (method, &self.t.name) {
            (&Method::GET, None) if flag(&self.query, "watch") => "watch",
            (&Method::GET, None) => "list",
            (&Method::GET, Some(_)) => "get",
            (&Method::POST, _) => "create",
            (&Method::PUT, _) => "update",
            (&Method::PATCH, _) => "patch",
            (&Method::DELETE, Some(_)) => "delete",
            (&Method::DELETE, None) => "deletecollection",
            _ => return Ok(()),
        };
        if self.store().kind.strategy.verbs().contains(&verb) {
            Ok(())
        } else {
            Err(ApiError::MethodNotAllowed(format!("the server does not allow this method on the requested resource ({method})")))
        }
    }

    fn respond(&self, code: StatusCode, obj: &Value, warnings: &[String]) -> ApiResult<Response> {
        let out = self.output()?;
        let body = match out {
            Output::Table => {
                table::to_table(self.store(), std::slice::from_ref(obj), self.include_object(), None, None)
            }
            // A Status (a delete that removed the object) stays as it is.
            Output::Metadata if obj["kind"] != "Status" => negotiate::partial_metadata(obj),
            _ => obj.clone(),
        };
        let mut resp = negotiate::encode(out, code, &body)?;
        add_warnings(resp.headers_mut(), warnings);
        Ok(resp)
    }

    fn include_object(&self) -> table::IncludeObject {
        table::IncludeObject::parse(self.query.get("includeObject").map(String::as_str))
    }

    fn selection(&self) -> ApiResult<Selection> {
        let labels = labels::parse(self.query.get("labelSelector").map(String::as_str).unwrap_or(""))
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let fields = fields::parse(self.query.get("fieldSelector").map(String::as_str).unwrap_or(""))
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let supported = self.store().kind.strategy.selectable_fields(&json!({}));
        for req in fields.requirements() {
            if !supported.contains_key(&req.0) {
                return Err(ApiError::bad_request(format!("field label not supported: {}", req.0)));
            }
        }
        Ok(Selection { labels, fields })
    }

    fn check_namespace_param(&self) -> ApiResult<()> {
        if self.store().info().namespaced && self.t.name.is_some() && self.ns().is_none() {
            return Err(ApiError::NoRoute);
        }
        Ok(())
    }

    fn is_scale(&self) -> bool {
        self.t.subresource.as_deref() == Some("scale")
    }

    async fn get_scale(&self) -> ApiResult<Response> {
        self.check_namespace_param()?;
        let obj = self.store().get(self.ns(), self.name()).await?;
        self.respond_plain(StatusCode::OK, &self.store().scale_of(&obj))
    }

    async fn put_scale(&self, body: Bytes) -> ApiResult<Response> {
        self.check_namespace_param()?;
        let wanted = self.parse_object(&body)?;
        if wanted["kind"].as_str().is_some_and(|k| k != "Scale") {
            return Err(ApiError::bad_request("the body of a scale update must be a Scale"));
        }
        let opts = self.write_options()?;
        let scale = self.store().update_scale(&self.ctx, self.name(), &opts, |_| Ok(wanted.clone())).await?;
        self.respond_plain(StatusCode::OK, &scale)
    }

    async fn patch_scale(&self, body: Bytes) -> ApiResult<Response> {
        self.check_namespace_param()?;
        let kind = patch::PatchKind::from_headers(&self.headers)?;
        let doc = patch::parse(kind, &body)?;
        let opts = self.write_options()?;
        let scale = self.store().update_scale(&self.ctx, self.name(), &opts, |cur| patch::apply(kind, cur, &doc)).await?;
        self.respond_plain(StatusCode::OK, &scale)
    }

    /// Responds with an object of another kind than the resource's (Scale): no Table form.
    fn respond_plain(&self, code: StatusCode, obj: &Value) -> ApiResult<Response> {
        let out = match self.output()? {
            Output::Table | Output::Metadata => Output::Json,
            other => other,
        };
        negotiate::encode(out, code, obj)
    }

    async fn get(&self) -> ApiResult<Response> {
        self.check_namespace_param()?;
        let obj = self.store().get(self.ns(), self.name()).await?;
        self.respond(StatusCode::OK, &obj, &[])
    }

    async fn list(&self) -> ApiResult<Response> {
        let out = self.output()?;
        let opts = ListOptions {
            selection: self.selection()?,
            limit: self.query.get("limit").and_then(|l| l.parse().ok()).unwrap_or(0),
            continue_token: self.query.get("continue").filter(|c| !c.is_empty()).cloned(),
            resource_version: self.query.get("resourceVersion").cloned(),
            resource_version_match: self.query.get("resourceVersionMatch").cloned(),
        };
        let page = self.store().list(self.ns(), &opts).await?;
        let rv = page.revision.to_string();
        let body = match out {
            Output::Table => table::to_table(self.store(), &page.items, self.include_object(), Some(&rv), page.continue_token.as_deref()),
            _ => {
                let mut metadata = json!({"resourceVersion": rv});
                if let Some(c) = &page.continue_token {
                    metadata["continue"] = json!(c);
                }
                if let Some(n) = page.remaining {
                    metadata["remainingItemCount"] = json!(n);
                }
                if out == Output::Metadata {
                    let items: Vec<Value> = page.items.iter().map(negotiate::partial_metadata).collect();
                    json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": metadata, "items": items})
                } else {
                    json!({
                        "kind": self.store().info().list_kind,
                        "apiVersion": self.store().info().api_version(),
                        "metadata": metadata,
                        "items": page.items,
                    })
                }
            }
        };
        negotiate::encode(out, StatusCode::OK, &body)
    }

    async fn watch(&self) -> ApiResult<Response> {
        let out = self.output()?;
        let timeout = self.query.get("timeoutSeconds").and_then(|t| t.parse::<u64>().ok()).unwrap_or(1800);
        let opts = WatchOptions {
            selection: self.selection()?,
            resource_version: self.query.get("resourceVersion").cloned(),
            allow_bookmarks: flag(&self.query, "allowWatchBookmarks"),
            send_initial_events: flag(&self.query, "sendInitialEvents"),
            timeout: Duration::from_secs(timeout),
            bookmark_interval: self.st.bookmark_interval,
        };
        if opts.send_initial_events && self.query.get("resourceVersionMatch").map(String::as_str) != Some("NotOlderThan") {
            return Err(ApiError::bad_request(
                "sendInitialEvents requires resourceVersionMatch=NotOlderThan (and allowWatchBookmarks=true)",
            ));
        }
        let events = self.store().watch(self.ns(), opts).await?;
        let store = self.t.store.clone();
        let include = self.include_object();
        let first = std::sync::atomic::AtomicBool::new(true);
        let lines = events.map(move |e| {
            let object = match (out, e.kind) {
                (Output::Table, "ADDED" | "MODIFIED" | "DELETED") => {
                    let mut t = table::to_table(&store, std::slice::from_ref(&e.object), include, None, None);
                    // Column definitions once, as upstream: later events carry only rows.
                    if !first.swap(false, std::sync::atomic::Ordering::Relaxed) {
                        t["columnDefinitions"] = json!([]);
                    }
                    t
                }
                (Output::Metadata, "ADDED" | "MODIFIED" | "DELETED" | "BOOKMARK") => negotiate::partial_metadata(&e.object),
                _ => e.object,
            };
            let mut line = serde_json::to_vec(&json!({"type": e.kind, "object": object})).unwrap_or_default();
            line.push(b'\n');
            Ok::<_, std::convert::Infallible>(Bytes::from(line))
        });
        Ok(Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CACHE_CONTROL, "no-cache, private")
            .body(Body::from_stream(lines))
            .map_err(ApiError::internal)?)
    }

    /// Dry run and the field manager: `fieldManager`, else the user agent's name.
    fn write_options(&self) -> ApiResult<WriteOptions> {
        let manager = match self.query.get("fieldManager") {
            Some(m) => m.clone(),
            None => registry_apply::manager_from_user_agent(self.headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok())),
        };
        registry_apply::check_manager(&manager)?;
        Ok(WriteOptions { dry_run: self.ctx.dry_run, field_manager: Some(manager) })
    }

    /// Server-side apply: the body is the applier's whole intent for the fields it manages.
    async fn apply_patch(&self, body: Bytes, target: Target) -> ApiResult<Response> {
        let manager = self
            .query
            .get("fieldManager")
            .filter(|m| !m.is_empty())
            .cloned()
            .ok_or_else(|| ApiError::bad_request("PATCH: fieldManager is required for apply requests"))?;
        let force = flag(&self.query, "force");
        let config = patch::parse_apply(&body)?;
        for field in ["apiVersion", "kind"] {
            if config[field].as_str().unwrap_or_default().is_empty() {
                return Err(ApiError::bad_request(format!("{field} must be set in an apply configuration")));
            }
        }
        let mode = self.field_validation()?;
        let normalized = self.store().decode_body(config.clone())?;
        if let Some(schema) = self.store().kind.strategy.openapi_schema() {
            fieldvalidation::check_typed_apply(&schema, &config, self.store().info())?;
        }
        let mut warnings = mode.enforce_yaml(fieldvalidation::yaml_duplicates(&body))?;
        warnings.extend(mode.enforce(fieldvalidation::unknown_fields(&config, &normalized))?);
        let opts = WriteOptions { dry_run: self.ctx.dry_run, field_manager: None };
        let w = self.store().apply(&self.ctx, self.name(), config, &manager, force, target, &opts).await?;
        let code = if w.created { StatusCode::CREATED } else { StatusCode::OK };
        let mut all = warnings;
        all.extend(w.warnings);
        self.respond(code, &w.object, &all)
    }

    fn field_validation(&self) -> ApiResult<fieldvalidation::Mode> {
        fieldvalidation::Mode::parse(self.query.get("fieldValidation").map(String::as_str))
    }

    /// Decodes a POST or PUT body into an object of the resource's kind, applying
    /// `fieldValidation` to its unknown and duplicate fields. Returns the warnings to send.
    fn decode_write(&self, body: &Bytes) -> ApiResult<(Value, Vec<String>)> {
        let mode = self.field_validation()?;
        let raw = self.parse_object(body)?;
        let duplicates = if negotiate::is_json(&self.headers) {
            fieldvalidation::parse_reporting_duplicates(body).map(|(_, d)| d).unwrap_or_default()
        } else {
            Vec::new()
        };
        let obj = self.store().decode_body(raw.clone())?;
        // upstream's strict decoding error lists unknown fields before duplicate ones
        let mut problems = fieldvalidation::unknown_fields(&raw, &obj);
        problems.extend(duplicates);
        Ok((obj, mode.enforce(problems)?))
    }

    /// Parses a write body (JSON or YAML) into a JSON value.
    fn parse_object(&self, body: &Bytes) -> ApiResult<Value> {
        negotiate::check_write_content_type(&self.headers)?;
        negotiate::parse_body(&self.headers, body)
    }

    async fn create(&self, body: Bytes) -> ApiResult<Response> {
        if self.t.subresource.is_some() {
            return Err(ApiError::MethodNotAllowed("POST is not supported on this subresource".into()));
        }
        if self.store().info().namespaced && self.ns().is_none() {
            return Err(ApiError::NoRoute);
        }
        let (obj, mut warnings) = self.decode_write(&body)?;
        let opts = self.write_options()?;
        let w = self.store().create(&self.ctx, obj, &opts).await?;
        warnings.extend(w.warnings);
        self.respond(StatusCode::CREATED, &w.object, &warnings)
    }

    /// `POST pods/NAME/binding` (upstream's `BindingREST`): assigns an unassigned pod to the
    /// node the Binding's `target` names and sets its PodScheduled condition.
    async fn bind(&self, body: Bytes) -> ApiResult<Response> {
        let binding = self.parse_object(&body)?;
        let node = binding["target"]["name"].as_str().unwrap_or_default().to_string();
        if node.is_empty() {
            return Err(ApiError::bad_request("target.name: Required value"));
        }
        let name = self.name().to_string();
        let opts = self.write_options()?;
        self.store()
            .guaranteed_update(&self.ctx, &name, Target::Binding, &opts, |current| {
                if crate::meta::is_deleting(current) {
                    return Err(ApiError::Conflict {
                        group: String::new(),
                        resource: "pods".into(),
                        name: name.clone(),
                        message: format!("Operation cannot be fulfilled on pods/binding \"{name}\": pod {name} is being deleted, cannot be assigned to a host"),
                    });
                }
                let assigned = current["spec"]["nodeName"].as_str().unwrap_or_default();
                if !assigned.is_empty() {
                    return Err(ApiError::Conflict {
                        group: String::new(),
                        resource: "pods".into(),
                        name: name.clone(),
                        message: format!("Operation cannot be fulfilled on pods/binding \"{name}\": pod {name} is already assigned to node \"{assigned}\""),
                    });
                }
                let mut pod = current.clone();
                pod["spec"]["nodeName"] = json!(node);
                let now = crate::meta::now();
                let cond = json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now});
                let conds = pod["status"]["conditions"].as_array().cloned().unwrap_or_default();
                let mut conds: Vec<Value> = conds.into_iter().filter(|c| c["type"] != "PodScheduled").collect();
                conds.push(cond);
                pod["status"]["conditions"] = json!(conds);
                Ok(pod)
            })
            .await?;
        let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201});
        self.respond_plain(StatusCode::CREATED, &status)
    }

    /// `POST pods/NAME/eviction` (upstream's `EvictionREST`): see [`eviction`].
    async fn evict(&self, body: Bytes) -> ApiResult<Response> {
        self.check_namespace_param()?;
        let body = self.parse_object(&body)?;
        let status = eviction::evict(&self.st, &self.ctx, self.name(), &body).await?;
        self.respond_plain(StatusCode::CREATED, &status)
    }

    async fn update(&self, body: Bytes) -> ApiResult<Response> {
        self.check_namespace_param()?;
        let target = self.write_target()?;
        let (obj, mut warnings) = self.decode_write(&body)?;
        let opts = self.write_options()?;
        let w: Written = self.store().update(&self.ctx, self.name(), obj, target, &opts).await?;
        let code = if w.created { StatusCode::CREATED } else { StatusCode::OK };
        warnings.extend(w.warnings);
        self.respond(code, &w.object, &warnings)
    }

    async fn patch(&self, body: Bytes) -> ApiResult<Response> {
        self.check_namespace_param()?;
        let target = self.write_target()?;
        let kind = patch::PatchKind::from_headers(&self.headers)?;
        if kind == patch::PatchKind::Apply {
            return self.apply_patch(body, target).await;
        }
        if flag(&self.query, "force") {
            return Err(ApiError::bad_request("force: Invalid value: true: may not be specified for non-apply patch"));
        }
        let patch_doc = patch::parse(kind, &body)?;
        let mode = self.field_validation()?;
        let duplicates = fieldvalidation::parse_reporting_duplicates(&body).map(|(_, d)| d).unwrap_or_default();
        let opts = self.write_options()?;
        let store = self.store();
        let mut warnings = Vec::new();
        let w = store
            .guaranteed_update(&self.ctx, self.name(), target, &opts, |current| {
                let patched = patch::apply(kind, current, &patch_doc)?;
                let normalized = store.decode_body(patched.clone())?;
                let mut problems = duplicates.clone();
                problems.extend(fieldvalidation::unknown_fields(&patched, &normalized));
                warnings = mode.enforce(problems)?;
                Ok(normalized)
            })
            .await?;
        warnings.extend(w.warnings);
        self.respond(StatusCode::OK, &w.object, &warnings)
    }

    fn delete_options(&self, body: &Bytes) -> ApiResult<DeleteOptions> {
        let mut opts = DeleteOptions { dry_run: self.ctx.dry_run, ..Default::default() };
        if !body.iter().all(u8::is_ascii_whitespace) {
            let v: Value = negotiate::parse_body(&self.headers, body)?;
            if let Some(kind) = v["kind"].as_str() {
                if kind != "DeleteOptions" {
                    return Err(ApiError::bad_request(format!("expected DeleteOptions, got {kind}")));
                }
            }
            opts.grace_period_seconds = v["gracePeriodSeconds"].as_i64();
            opts.precondition_uid = v["preconditions"]["uid"].as_str().map(String::from);
            opts.precondition_rv = v["preconditions"]["resourceVersion"].as_str().map(String::from);
            if let Some(d) = v["dryRun"].as_array() {
                opts.dry_run |= d.iter().any(|x| x == "All");
            }
            opts.propagation = propagation(v["propagationPolicy"].as_str())?;
            if opts.propagation.is_none() {
                // The legacy field: true orphans, false cascades in the background.
                opts.propagation = v["orphanDependents"].as_bool().map(|o| if o { Propagation::Orphan } else { Propagation::Background });
            }
        }
        if let Some(g) = self.query.get("gracePeriodSeconds") {
            opts.grace_period_seconds =
                Some(g.parse().map_err(|_| ApiError::bad_request(format!("invalid gracePeriodSeconds: {g}")))?);
        }
        if let Some(p) = propagation(self.query.get("propagationPolicy").map(String::as_str))? {
            opts.propagation = Some(p);
        }
        Ok(opts)
    }

    async fn delete(&self, body: Bytes) -> ApiResult<Response> {
        self.check_namespace_param()?;
        if self.t.subresource.is_some() {
            return Err(ApiError::MethodNotAllowed("DELETE is not supported on this subresource".into()));
        }
        let opts = self.delete_options(&body)?;
        let d = self.store().delete(&self.ctx, self.name(), &opts).await?;
        let info = self.store().info();
        let returns_object = RETURN_DELETED_OBJECT.contains(&(info.group.as_str(), info.plural.as_str()));
        if d.gone && !returns_object {
            self.respond(StatusCode::OK, &success_status(self.store(), &d.object), &[])
        } else {
            self.respond(StatusCode::OK, &d.object, &[])
        }
    }

    async fn delete_collection(&self, body: Bytes) -> ApiResult<Response> {
        let opts = self.delete_options(&body)?;
        let list_opts = ListOptions {
            selection: self.selection()?,
            limit: 0,
            continue_token: None,
            resource_version: None,
            resource_version_match: None,
        };
        let page = self.store().list(self.ns(), &list_opts).await?;
        let mut deleted = Vec::new();
        for obj in page.items {
            let ctx = ReqCtx { namespace: meta::namespace(&obj).map(String::from), ..self.ctx.clone() };
            match self.store().delete(&ctx, meta::name(&obj), &opts).await {
                Ok(d) => deleted.push(d.object),
                // Deleted meanwhile by someone else: that is what was asked.
                Err(ApiError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let list = json!({
            "kind": self.store().info().list_kind,
            "apiVersion": self.store().info().api_version(),
            "metadata": {"resourceVersion": page.revision.to_string()},
            "items": deleted,
        });
        negotiate::encode(self.output()?, StatusCode::OK, &list)
    }
}

fn propagation(p: Option<&str>) -> ApiResult<Option<Propagation>> {
    match p {
        None => Ok(None),
        Some(v) if Propagation::parse(v).is_some() => Ok(Propagation::parse(v)),
        Some(other) => Err(ApiError::Invalid {
            group: String::new(),
            kind: "DeleteOptions".into(),
            name: String::new(),
            causes: vec![crate::validation::FieldError::not_supported(
                "propagationPolicy",
                other,
                &["Foreground", "Background", "Orphan"],
            )],
        }),
    }
}

/// Kinds whose immediate deletion answers with the deleted object rather than a Status, as
/// upstream's stores with `ReturnDeletedObject` (clients such as the Python one decode the
/// answer of `delete_namespaced_pod` as a Pod).
const RETURN_DELETED_OBJECT: &[(&str, &str)] = &[("", "pods"), ("", "services")];

/// The `Status` upstream returns for an object deleted at once.
fn success_status(store: &GenericStore, obj: &Value) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": {
            "name": meta::name(obj),
            "group": store.info().group,
            "kind": store.info().plural,
            "uid": meta::uid(obj).unwrap_or_default(),
        }
    })
}

/// `Warning: 299 - "text"` headers, as upstream sends admission and validation warnings.
fn add_warnings(headers: &mut HeaderMap, warnings: &[String]) {
    for w in warnings {
        let text = format!("299 - \"{}\"", w.replace('"', "\\\""));
        if let Ok(v) = HeaderValue::from_str(&text) {
            headers.append(header::WARNING, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        let q = serde_urlencoded_pairs("labelSelector=app%3Dweb%2Ctier+in+%28a%2Cb%29&watch=1&x=%");
        assert_eq!(q["labelSelector"], "app=web,tier in (a,b)");
        assert_eq!(q["watch"], "1");
        assert_eq!(q["x"], "%");
    }
}
