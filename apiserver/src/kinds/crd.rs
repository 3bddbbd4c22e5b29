//! CustomResourceDefinitions (`apiextensions.k8s.io/v1`): upstream's defaults, create/update
//! preparation and validation (`pkg/apis/apiextensions/validation`), with each version's
//! schema checked by [`crate::crd::schema::structural_errors`], and the default table
//! (`Name`, `Created At`).
//!
//! Validation runs on the v1 JSON but reports upstream's field paths, which name the
//! internal type: `spec.conversion.webhookClientConfig` for `spec.conversion.webhook.clientConfig`,
//! `additionalPrinterColumns[0].JSONPath` for `jsonPath`.

use serde_json::{json, Value};

use super::common::{self, arr, s, truthy};
use crate::crd::schema;
use crate::registry::table::{self, Column};
use crate::registry::{ReqCtx, Strategy};
use crate::validation::{self, FieldError, FieldErrors};

pub struct CrdStrategy;

const SCOPES: &[&str] = &["Cluster", "Namespaced"];
const CONVERSION_STRATEGIES: &[&str] = &["None", "Webhook"];
const PRINTER_COLUMN_TYPES: &[&str] = &["boolean", "date", "integer", "number", "string"];
const PRINTER_COLUMN_FORMATS: &[&str] = &["byte", "date", "date-time", "double", "float", "int32", "int64", "password"];
/// ConversionReview versions the server understands.
const CONVERSION_REVIEW_VERSIONS: &[&str] = &["v1", "v1beta1"];
/// Root schema fields allowed when the status subresource is enabled (upstream's Go names:
/// the message lists them so).
const ROOT_FIELDS_WITH_STATUS: &[(&str, &str)] = &[
    ("description", "Description"),
    ("type", "Type"),
    ("format", "Format"),
    ("title", "Title"),
    ("maximum", "Maximum"),
    ("exclusiveMaximum", "ExclusiveMaximum"),
    ("minimum", "Minimum"),
    ("exclusiveMinimum", "ExclusiveMinimum"),
    ("maxLength", "MaxLength"),
    ("minLength", "MinLength"),
    ("pattern", "Pattern"),
    ("maxItems", "MaxItems"),
    ("minItems", "MinItems"),
    ("uniqueItems", "UniqueItems"),
    ("multipleOf", "MultipleOf"),
    ("required", "Required"),
    ("items", "Items"),
    ("properties", "Properties"),
    ("externalDocs", "ExternalDocs"),
    ("example", "Example"),
    ("x-kubernetes-preserve-unknown-fields", "XPreserveUnknownFields"),
    ("x-kubernetes-validations", "XValidations"),
];
/// Annotation protected groups (`*.k8s.io`, `*.kubernetes.io`) must carry.
const API_APPROVAL_ANNOTATION: &str = "api-approved.kubernetes.io";

/// The version marked `storage: true`, if any.
fn storage_version(crd: &Value) -> Option<&str> {
    arr(&crd["spec"]["versions"]).iter().find(|v| truthy(&v["storage"])).and_then(|v| v["name"].as_str())
}

/// Adds the storage version to `status.storedVersions` when missing (upstream's
/// PrepareForCreate/PrepareForUpdate): objects may exist in every version ever stored.
fn record_stored_version(crd: &mut Value) {
    let Some(v) = storage_version(crd).map(String::from) else { return };
    let status = common::child(crd, "status");
    let stored = common::entry(status, "storedVersions");
    if !stored.is_array() {
        *stored = json!([]);
    }
    let list = stored.as_array_mut().expect("array");
    if !list.iter().any(|x| x.as_str() == Some(v.as_str())) {
        list.push(json!(v));
    }
}

/// Whether the CRD is `Established` (names then become immutable).
fn established(crd: &Value) -> bool {
    arr(&crd["status"]["conditions"]).iter().any(|c| s(&c["type"]) == "Established" && s(&c["status"]) == "True")
}

/// Upstream's `ValidateCustomResourceDefinitionNames` (spec names and accepted names).
fn validate_names(errs: &mut FieldErrors, names: &Value, field: &str) {
    let dns1035 = |v: &str| validation::dns1035_label(v).join(",");
    for key in ["plural", "singular"] {
        let v = s(&names[key]);
        if !v.is_empty() {
            let msgs = dns1035(v);
            if !msgs.is_empty() {
                errs.push(FieldError::invalid(format!("{field}.{key}"), v, msgs));
            }
        }
    }
    for key in ["kind", "listKind"] {
        let v = s(&names[key]);
        if !v.is_empty() {
            let msgs = dns1035(&v.to_lowercase());
            if !msgs.is_empty() {
                errs.push(FieldError::invalid(format!("{field}.{key}"), v, format!("may have mixed case, but should otherwise match: {msgs}")));
            }
        }
    }
    for (i, short) in arr(&names["shortNames"]).iter().enumerate() {
        let msgs = dns1035(s(short));
        if !msgs.is_empty() {
            errs.push(FieldError::invalid(format!("{field}.shortNames[{i}]"), s(short), msgs));
        }
    }
    let kind = s(&names["kind"]);
    if !kind.is_empty() && kind == s(&names["listKind"]) {
        errs.push(FieldError::invalid(format!("{field}.listKind"), kind, "kind and listKind may not be the same"));
    }
    for (i, cat) in arr(&names["categories"]).iter().enumerate() {
        let msgs = dns1035(s(cat));
        if !msgs.is_empty() {
            errs.push(FieldError::invalid(format!("{field}.categories[{i}]"), s(cat), msgs));
        }
    }
}

/// Upstream's `validateSimpleJSONPath`: a dotted path starting with `.`.
fn simple_json_path(errs: &mut FieldErrors, path: &str, field: &str) -> bool {
    let before = errs.len();
    if path.is_empty() {
        errs.push(FieldError::invalid(field, path, "must not be empty"));
    } else if !path.starts_with('.') {
        errs.push(FieldError::invalid(field, path, "must be a simple json path starting with ."));
    }
    errs.len() == before
}

/// `subresources.scale`: replicas paths under `.spec` / `.status`, selector under either.
fn validate_subresources(errs: &mut FieldErrors, sub: &Value, field: &str) {
    let scale = &sub["scale"];
    if !scale.is_object() {
        return;
    }
    let spec_path = s(&scale["specReplicasPath"]);
    let f = format!("{field}.scale.specReplicasPath");
    if spec_path.is_empty() {
        errs.push(FieldError::required(&f, ""));
    } else if simple_json_path(errs, spec_path, &f) && !spec_path.starts_with(".spec.") {
        errs.push(FieldError::invalid(&f, spec_path, "should be a json path under .spec"));
    }
    let status_path = s(&scale["statusReplicasPath"]);
    let f = format!("{field}.scale.statusReplicasPath");
    if status_path.is_empty() {
        errs.push(FieldError::required(&f, ""));
    } else if simple_json_path(errs, status_path, &f) && !status_path.starts_with(".status.") {
        errs.push(FieldError::invalid(&f, status_path, "should be a json path under .status"));
    }
    let selector = s(&scale["labelSelectorPath"]);
    let f = format!("{field}.scale.labelSelectorPath");
    if !selector.is_empty() && simple_json_path(errs, selector, &f) && !selector.starts_with(".spec.") && !selector.starts_with(".status.") {
        errs.push(FieldError::invalid(&f, selector, "should be a json path under either .spec or .status"));
    }
}

/// `additionalPrinterColumns[i]`.
fn validate_column(errs: &mut FieldErrors, col: &Value, field: &str) {
    if s(&col["name"]).is_empty() {
        errs.push(FieldError::required(format!("{field}.name"), ""));
    }
    let types = PRINTER_COLUMN_TYPES.join(",");
    let ty = s(&col["type"]);
    if ty.is_empty() {
        errs.push(FieldError::required(format!("{field}.type"), format!("must be one of {types}")));
    } else if !PRINTER_COLUMN_TYPES.contains(&ty) {
        errs.push(FieldError::invalid(format!("{field}.type"), ty, format!("must be one of {types}")));
    }
    let format = s(&col["format"]);
    if !format.is_empty() && !PRINTER_COLUMN_FORMATS.contains(&format) {
        errs.push(FieldError::invalid(format!("{field}.format"), format, format!("must be one of {}", PRINTER_COLUMN_FORMATS.join(","))));
    }
    let path = s(&col["jsonPath"]);
    if path.is_empty() {
        errs.push(FieldError::required(format!("{field}.JSONPath"), ""));
    } else {
        simple_json_path(errs, path, &format!("{field}.JSONPath"));
    }
}

/// `deprecationWarning`: only on deprecated versions, 1-256 printable characters.
fn validate_deprecation_warning(errs: &mut FieldErrors, version: &Value, field: &str) {
    let Some(w) = version["deprecationWarning"].as_str() else { return };
    let f = format!("{field}.deprecationWarning");
    if !truthy(&version["deprecated"]) {
        errs.push(FieldError::invalid(&f, w, "can only be set for deprecated versions"));
        return;
    }
    if w.len() > 256 {
        errs.push(FieldError::invalid(&f, w, "must be <= 256 characters long"));
    }
    if w.is_empty() {
        errs.push(FieldError::invalid(&f, w, "must not be an empty string"));
    }
    if let Some((i, _)) = w.char_indices().find(|(_, c)| c.is_control()) {
        errs.push(FieldError::invalid(&f, w, format!("must only contain printable UTF-8 characters; control character found at index {i}")));
    }
}

/// A version's schema: required, restricted at the root when the status subresource is on,
/// and structural (see `schema::structural_errors`).
fn validate_version_schema(errs: &mut FieldErrors, version: &Value, field: &str) {
    let root = &version["schema"]["openAPIV3Schema"];
    let f = format!("{field}.schema.openAPIV3Schema");
    if !root.is_object() {
        errs.push(FieldError::required(&f, "schemas are required"));
        return;
    }
    if version["subresources"]["status"].is_object() {
        // status validation is extracted as properties[status]; anything else at the root
        // would be lost for it.
        for (key, value) in root.as_object().into_iter().flatten() {
            if value.is_null() || *value == json!(false) || *value == json!("") {
                continue;
            }
            if key == "type" {
                if value != "object" {
                    errs.push(FieldError::invalid(
                        format!("{field}.schema.openAPIV3Schema.type"),
                        value.clone(),
                        r#"only "object" is allowed as the type at the root of the schema if the status subresource is enabled"#,
                    ));
                    break;
                }
                continue;
            }
            if !ROOT_FIELDS_WITH_STATUS.iter().any(|(k, _)| k == key) {
                let names: Vec<&str> = ROOT_FIELDS_WITH_STATUS.iter().map(|(_, n)| *n).collect();
                errs.push(FieldError::invalid(
                    &f,
                    root.clone(),
                    format!("only [{}] fields are allowed at the root of the schema if the status subresource is enabled", names.join(" ")),
                ));
                break;
            }
        }
    }
    errs.extend(schema::structural_errors(root, &f));
}

/// `spec.conversion` (upstream names: `webhookClientConfig`, `conversionReviewVersions`).
fn validate_conversion(errs: &mut FieldErrors, conversion: &Value, field: &str) {
    if !conversion.is_object() {
        return;
    }
    let strategy = s(&conversion["strategy"]);
    common::validate_enum(errs, &conversion["strategy"], &format!("{field}.strategy"), CONVERSION_STRATEGIES);
    let webhook = &conversion["webhook"];
    let client = &webhook["clientConfig"];
    let review_versions = arr(&webhook["conversionReviewVersions"]);
    let cc_field = format!("{field}.webhookClientConfig");
    if strategy == "Webhook" {
        if !client.is_object() {
            errs.push(FieldError::required(&cc_field, "required when strategy is set to Webhook"));
        } else {
            let url = client["url"].as_str();
            let service = &client["service"];
            match (url, service.is_object()) {
                (Some(_), true) | (None, false) => errs.push(FieldError::required(&cc_field, "exactly one of url or service is required")),
                (Some(u), false) => validate_webhook_url(errs, u, &format!("{cc_field}.url")),
                (None, true) => validate_webhook_service(errs, service, &format!("{cc_field}.service")),
            }
        }
        let f = format!("{field}.conversionReviewVersions");
        if review_versions.is_empty() {
            errs.push(FieldError::required(&f, ""));
        } else {
            let mut seen: Vec<&str> = Vec::new();
            let mut accepted = false;
            for (i, v) in review_versions.iter().enumerate() {
                let v = s(v);
                if seen.contains(&v) {
                    errs.push(FieldError::invalid(format!("{f}[{i}]"), v, "duplicate version"));
                    continue;
                }
                seen.push(v);
                validation::push_invalid(errs, &format!("{f}[{i}]"), v, validation::dns1035_label(v));
                accepted |= CONVERSION_REVIEW_VERSIONS.contains(&v);
            }
            if !accepted {
                errs.push(FieldError::invalid(
                    &f,
                    Value::Array(review_versions.to_vec()),
                    format!("must include at least one of {}", CONVERSION_REVIEW_VERSIONS.join(", ")),
                ));
            }
        }
    } else {
        if client.is_object() {
            errs.push(FieldError::forbidden(&cc_field, "should not be set when strategy is not set to Webhook"));
        }
        if !review_versions.is_empty() {
            errs.push(FieldError::forbidden(format!("{field}.conversionReviewVersions"), "should not be set when strategy is not set to Webhook"));
        }
    }
}

/// Upstream's `ValidateWebhookURL` (https only, no user info, fragment or query).
fn validate_webhook_url(errs: &mut FieldErrors, url: &str, field: &str) {
    let Some(rest) = url.strip_prefix("https://") else {
        let msg = if url.contains("://") { "'https' is the only allowed URL scheme" } else { "host must be specified" };
        errs.push(FieldError::invalid(field, url, msg));
        return;
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if host.is_empty() {
        errs.push(FieldError::invalid(field, url, "host must be specified"));
    }
    if host.contains('@') {
        errs.push(FieldError::invalid(field, url, "user information is not permitted in the URL"));
    }
    if rest.contains('#') {
        errs.push(FieldError::invalid(field, url, "fragments are not permitted in the URL"));
    }
    if rest.contains('?') {
        errs.push(FieldError::invalid(field, url, "query parameters are not permitted in the URL"));
    }
}

/// Upstream's `ValidateWebhookService`: name and namespace required, a valid port and path.
fn validate_webhook_service(errs: &mut FieldErrors, service: &Value, field: &str) {
    if s(&service["name"]).is_empty() {
        errs.push(FieldError::required(format!("{field}.name"), "service name is required"));
    }
    if s(&service["namespace"]).is_empty() {
        errs.push(FieldError::required(format!("{field}.namespace"), "service namespace is required"));
    }
    if let Some(port) = service["port"].as_i64() {
        if !(1..=65535).contains(&port) {
            errs.push(FieldError::invalid(format!("{field}.port"), port, "port is not valid: must be between 1 and 65535, inclusive"));
        }
    }
    if let Some(path) = service["path"].as_str() {
        if path.is_empty() {
            return;
        }
        if !path.starts_with('/') {
            errs.push(FieldError::invalid(format!("{field}.path"), path, "must start with a '/'"));
        }
    }
}

/// Protected community groups (`k8s.io`, `kubernetes.io` and their subdomains) need the
/// `api-approved.kubernetes.io` annotation: a URL, or a reason starting with `unapproved`.
fn validate_api_approval(errs: &mut FieldErrors, new: &Value, old: Option<&Value>) {
    let group = s(&new["spec"]["group"]);
    let protected = ["k8s.io", "kubernetes.io"].iter().any(|g| group == *g || group.ends_with(&format!(".{g}")));
    if !protected {
        return;
    }
    // Upstream's `GetAPIApprovalState`: approved when the value parses as a request URI
    // (an absolute URI or an absolute path).
    let state = |crd: &Value| {
        let v = s(&crd["metadata"]["annotations"][API_APPROVAL_ANNOTATION]);
        let scheme_len = v.find(':').filter(|&i| {
            i > 0 && v.as_bytes()[0].is_ascii_alphabetic() && v[..i].bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'))
        });
        if v.is_empty() {
            "missing"
        } else if v.starts_with("unapproved") {
            "bypassed"
        } else if (scheme_len.is_some() || v.starts_with('/')) && !v.contains(char::is_whitespace) {
            "approved"
        } else {
            "invalid"
        }
    };
    let new_state = state(new);
    if old.is_some_and(|o| state(o) == new_state) {
        return;
    }
    let field = format!("metadata.annotations[{API_APPROVAL_ANNOTATION}]");
    match new_state {
        "missing" => errs.push(FieldError::required(
            field,
            format!("protected groups must have approval annotation {API_APPROVAL_ANNOTATION:?}, see https://github.com/kubernetes/enhancements/pull/1111"),
        )),
        "invalid" => errs.push(FieldError::invalid(
            field,
            s(&new["metadata"]["annotations"][API_APPROVAL_ANNOTATION]),
            format!(
                "protected groups must have approval annotation {API_APPROVAL_ANNOTATION:?} with either a URL or a reason starting with \"unapproved\", see https://github.com/kubernetes/enhancements/pull/1111"
            ),
        )),
        _ => {}
    }
}

/// `status.storedVersions`: non-empty, holding the storage version, naming only versions
/// of the spec.
fn validate_stored_versions(errs: &mut FieldErrors, crd: &Value) {
    let field = "status.storedVersions";
    let stored = arr(&crd["status"]["storedVersions"]);
    if stored.is_empty() {
        errs.push(FieldError::invalid(field, json!([]), "must have at least one stored version"));
        return;
    }
    let versions = arr(&crd["spec"]["versions"]);
    for v in versions {
        let name = s(&v["name"]);
        if truthy(&v["storage"]) && !stored.iter().any(|x| s(x) == name) {
            errs.push(FieldError::invalid(field, v.clone(), format!("must have the storage version {name}")));
        }
    }
    for (i, x) in stored.iter().enumerate() {
        if !versions.iter().any(|v| s(&v["name"]) == s(x)) {
            errs.push(FieldError::invalid(format!("{field}[{i}]"), s(x), "must appear in spec.versions"));
        }
    }
}

/// Whether a schema has a `default` anywhere (upstream's `SchemaHas`): walks subschemas
/// only, so a property merely named `default` does not count.
fn has_defaults(s: &Value) -> bool {
    if !s.is_object() {
        return false;
    }
    if !s["default"].is_null() {
        return true;
    }
    let in_map = |k: &str| s[k].as_object().is_some_and(|m| m.values().any(has_defaults));
    let in_list = |k: &str| arr(&s[k]).iter().any(has_defaults);
    has_defaults(&s["items"])
        || in_list("items")
        || in_list("allOf")
        || in_list("anyOf")
        || in_list("oneOf")
        || has_defaults(&s["not"])
        || in_map("properties")
        || has_defaults(&s["additionalProperties"])
}

/// Upstream's `ValidateCustomResourceDefinition` (minus common metadata, which the store
/// checks). With `old`, the schemas of versions that did not change are not re-checked, so
/// stored CRDs accepted under laxer rules stay updatable (upstream's "don't tighten
/// validation on existing persisted data").
fn validate_crd(crd: &Value, old: Option<&Value>) -> FieldErrors {
    let mut errs = Vec::new();
    let spec = &crd["spec"];
    let group = s(&spec["group"]);
    let names = &spec["names"];
    let plural = s(&names["plural"]);

    let name = s(&crd["metadata"]["name"]);
    if !name.is_empty() && name != format!("{plural}.{group}") {
        errs.push(FieldError::invalid("metadata.name", name, r#"must be spec.names.plural+"."+spec.group"#));
    }

    if group.is_empty() {
        errs.push(FieldError::required("spec.group", ""));
    } else {
        let msgs = validation::dns1123_subdomain(group);
        if !msgs.is_empty() {
            errs.push(FieldError::invalid("spec.group", group, msgs.join(",")));
        } else if !group.contains('.') {
            errs.push(FieldError::invalid("spec.group", group, "should be a domain with at least one dot"));
        }
    }
    common::validate_enum(&mut errs, &spec["scope"], "spec.scope", SCOPES);

    let preserve_unknown = truthy(&spec["preserveUnknownFields"]);
    let versions = arr(&spec["versions"]);
    if preserve_unknown && versions.iter().any(|v| has_defaults(&v["schema"]["openAPIV3Schema"])) {
        errs.push(FieldError::invalid("spec.preserveUnknownFields", true, "must be false in order to use defaults in the schema"));
    }

    let old_versions = old.map(|o| arr(&o["spec"]["versions"])).unwrap_or_default();
    let mut storage_count = 0;
    let mut seen: Vec<&str> = Vec::new();
    let mut unique = true;
    for (i, v) in versions.iter().enumerate() {
        let field = format!("spec.versions[{i}]");
        let vname = s(&v["name"]);
        if truthy(&v["storage"]) {
            storage_count += 1;
        }
        if seen.contains(&vname) {
            unique = false;
        } else {
            seen.push(vname);
        }
        let msgs = validation::dns1035_label(vname);
        if !msgs.is_empty() {
            errs.push(FieldError::invalid(format!("{field}.name"), vname, msgs.join(",")));
        }
        validate_deprecation_warning(&mut errs, v, &field);
        let unchanged = old_versions.iter().any(|o| s(&o["name"]) == vname && o["schema"] == v["schema"] && o["subresources"] == v["subresources"]);
        if !unchanged {
            validate_version_schema(&mut errs, v, &field);
        }
        if v["subresources"].is_object() {
            validate_subresources(&mut errs, &v["subresources"], &format!("{field}.subresources"));
        }
        for (j, col) in arr(&v["additionalPrinterColumns"]).iter().enumerate() {
            validate_column(&mut errs, col, &format!("{field}.additionalPrinterColumns[{j}]"));
        }
    }
    let versions_value = Value::Array(versions.to_vec());
    if !unique {
        errs.push(FieldError::invalid("spec.versions", versions_value.clone(), "must contain unique version names"));
    }
    if storage_count != 1 {
        errs.push(FieldError::invalid("spec.versions", versions_value, "must have exactly one version marked as storage version"));
    }

    for key in ["plural", "singular", "kind", "listKind"] {
        if s(&names[key]).is_empty() {
            errs.push(FieldError::required(format!("spec.names.{key}"), ""));
        }
    }
    validate_names(&mut errs, names, "spec.names");

    let conversion = &spec["conversion"];
    if conversion.is_object() && s(&conversion["strategy"]) != "None" && preserve_unknown {
        errs.push(FieldError::invalid("spec.conversion.strategy", s(&conversion["strategy"]), "must be None if spec.preserveUnknownFields is true"));
    }
    validate_conversion(&mut errs, conversion, "spec.conversion");

    validate_names(&mut errs, &crd["status"]["acceptedNames"], "status.acceptedNames");
    validate_stored_versions(&mut errs, crd);
    validate_api_approval(&mut errs, crd, old);
    if preserve_unknown && !old.is_some_and(|o| truthy(&o["spec"]["preserveUnknownFields"])) {
        errs.push(FieldError::invalid(
            "spec.preserveUnknownFields",
            true,
            "cannot set to true, set x-preserve-unknown-fields to true in spec.versions[*].schema instead",
        ));
    }
    errs
}

impl Strategy for CrdStrategy {
    /// v1 defaults: `names.singular` (lowercase kind), `names.listKind` (kind + `List`),
    /// `conversion.strategy: None`, webhook service port 443.
    fn apply_defaults(&self, obj: &mut Value) {
        let spec = common::child(obj, "spec");
        let names = common::child(spec, "names");
        let kind = s(&names["kind"]).to_string();
        common::set_default(names, "singular", kind.to_lowercase());
        if !kind.is_empty() {
            common::set_default(names, "listKind", format!("{kind}List"));
        }
        if s(&names["singular"]).is_empty() {
            common::remove(names, "singular");
        }
        if s(&names["listKind"]).is_empty() {
            common::remove(names, "listKind");
        }
        let conversion = common::child(spec, "conversion");
        common::set_default(conversion, "strategy", "None");
        if conversion["webhook"]["clientConfig"]["service"].is_object() && conversion["webhook"]["clientConfig"]["service"]["port"].is_null() {
            conversion["webhook"]["clientConfig"]["service"]["port"] = json!(443);
        }
    }

    /// A new CRD starts with an empty status except its stored version.
    fn prepare_for_create(&self, _ctx: &ReqCtx, obj: &mut Value) {
        common::remove(obj, "status");
        record_stored_version(obj);
    }

    /// The (restored) status keeps every version ever used for storage.
    fn prepare_for_update(&self, _ctx: &ReqCtx, new: &mut Value, _old: &Value) {
        record_stored_version(new);
    }

    fn validate(&self, _ctx: &ReqCtx, obj: &Value) -> FieldErrors {
        validate_crd(obj, None)
    }

    /// Group and plural are immutable (they make the name); scope and kind too once the
    /// CRD is established, since stored objects depend on them.
    fn validate_update(&self, _ctx: &ReqCtx, new: &Value, old: &Value) -> FieldErrors {
        let mut errs = validate_crd(new, Some(old));
        if established(old) {
            common::immutable(&mut errs, &new["spec"]["scope"], &old["spec"]["scope"], "spec.scope");
            common::immutable(&mut errs, &new["spec"]["names"]["kind"], &old["spec"]["names"]["kind"], "spec.names.kind");
        }
        common::immutable(&mut errs, &new["spec"]["group"], &old["spec"]["group"], "spec.group");
        common::immutable(&mut errs, &new["spec"]["names"]["plural"], &old["spec"]["names"]["plural"], "spec.names.plural");
        errs
    }

    /// Status writers (the CRD controller) may only set valid accepted names.
    fn validate_status_update(&self, _ctx: &ReqCtx, new: &Value, _old: &Value) -> FieldErrors {
        let mut errs = Vec::new();
        validate_names(&mut errs, &new["status"]["acceptedNames"], "status.acceptedNames");
        errs
    }

    /// Upstream serves CRDs with the default table: Name and Created At (RFC 3339, UTC).
    fn columns(&self) -> Vec<Column> {
        vec![
            table::name_column(),
            Column {
                description: "CreationTimestamp is a timestamp representing the server time when this object was created.".into(),
                ..Column::new("Created At", "date", |o| created_at(&o["metadata"]["creationTimestamp"]))
            },
        ]
    }
}

/// `creationTimestamp` as upstream's default table prints it: RFC 3339 in UTC, seconds.
fn created_at(ts: &Value) -> Value {
    match ts.as_str().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()) {
        Some(t) => json!(t.with_timezone(&chrono::Utc).format("%Y-%m-%dT%H:%M:%SZ").to_string()),
        None => ts.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crd() -> Value {
        json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com"},
            "spec": {
                "group": "example.com",
                "scope": "Namespaced",
                "names": {"plural": "widgets", "kind": "Widget"},
                "versions": [{
                    "name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                        "spec": {"type": "object", "properties": {"replicas": {"type": "integer", "default": 1}}},
                        "status": {"type": "object", "properties": {"replicas": {"type": "integer"}}},
                    }}},
                    "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas"}},
                }],
            },
        })
    }

    /// Defaults and create preparation, as the store runs them before validation.
    fn created(mut obj: Value) -> Value {
        let ctx = ReqCtx::default();
        CrdStrategy.apply_defaults(&mut obj);
        CrdStrategy.prepare_for_create(&ctx, &mut obj);
        obj
    }

    fn errors(obj: Value) -> Vec<String> {
        let obj = created(obj);
        CrdStrategy.validate(&ReqCtx::default(), &obj).iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn defaults_and_prepare() {
        let mut c = crd();
        c["status"] = json!({"acceptedNames": {"plural": "x", "kind": "X"}, "conditions": [{"type": "Established", "status": "True"}]});
        let c = created(c);
        assert_eq!(c["spec"]["names"], json!({"plural": "widgets", "kind": "Widget", "singular": "widget", "listKind": "WidgetList"}));
        assert_eq!(c["spec"]["conversion"], json!({"strategy": "None"}));
        assert_eq!(c["status"], json!({"storedVersions": ["v1"]}));
        // Explicit names stay.
        let mut c = crd();
        c["spec"]["names"]["singular"] = json!("wdg");
        c["spec"]["names"]["listKind"] = json!("Widgets");
        let c = created(c);
        assert_eq!(c["spec"]["names"]["singular"], "wdg");
        assert_eq!(c["spec"]["names"]["listKind"], "Widgets");
        let mut c = crd();
        c["spec"]["conversion"] = json!({"strategy": "Webhook", "webhook": {"clientConfig": {"service": {"name": "s", "namespace": "n"}}, "conversionReviewVersions": ["v1"]}});
        let c = created(c);
        assert_eq!(c["spec"]["conversion"]["webhook"]["clientConfig"]["service"]["port"], 443);
    }

    #[test]
    fn valid_crd() {
        assert_eq!(errors(crd()), Vec::<String>::new());
        let mut c = crd();
        c["spec"]["conversion"] = json!({"strategy": "Webhook", "webhook": {"clientConfig": {"url": "https://conv.example.com/convert"}, "conversionReviewVersions": ["v1"]}});
        assert_eq!(errors(c), Vec::<String>::new());
    }

    #[test]
    fn name_group_and_scope() {
        let mut c = crd();
        c["metadata"]["name"] = json!("gadgets.example.com");
        c["spec"]["scope"] = json!("Global");
        assert_eq!(errors(c), [
            r#"metadata.name: Invalid value: "gadgets.example.com": must be spec.names.plural+"."+spec.group"#,
            r#"spec.scope: Unsupported value: "Global": supported values: "Cluster", "Namespaced""#,
        ]);
        let mut c = crd();
        c["metadata"]["name"] = json!("widgets.example");
        c["spec"]["group"] = json!("example");
        assert_eq!(errors(c), [r#"spec.group: Invalid value: "example": should be a domain with at least one dot"#]);
        let mut c = crd();
        c["metadata"]["name"] = json!("widgets.Example.com");
        c["spec"]["group"] = json!("Example.com");
        let errs = errors(c);
        assert!(errs[0].starts_with(r#"spec.group: Invalid value: "Example.com": a lowercase RFC 1123 subdomain"#), "{errs:?}");
        let mut c = crd();
        c["spec"].as_object_mut().unwrap().remove("scope");
        c["spec"].as_object_mut().unwrap().remove("group");
        c["metadata"]["name"] = json!("widgets.");
        assert_eq!(errors(c), ["spec.group: Required value", "spec.scope: Required value"]);
    }

    #[test]
    fn names() {
        let mut c = crd();
        c["metadata"]["name"] = json!("Widgets.example.com");
        c["spec"]["names"] = json!({"plural": "Widgets", "singular": "widget", "kind": "my_Widget", "listKind": "my_Widget", "shortNames": ["w-"], "categories": ["all"]});
        let errs = errors(c);
        assert!(errs[0].starts_with(r#"spec.names.plural: Invalid value: "Widgets": a DNS-1035 label must consist of lower case"#), "{errs:#?}");
        assert!(errs[1].starts_with(r#"spec.names.kind: Invalid value: "my_Widget": may have mixed case, but should otherwise match: a DNS-1035 label"#), "{errs:#?}");
        assert!(errs[2].starts_with(r#"spec.names.listKind: Invalid value: "my_Widget": may have mixed case"#));
        assert!(errs[3].starts_with(r#"spec.names.shortNames[0]: Invalid value: "w-""#));
        assert_eq!(errs[4], r#"spec.names.listKind: Invalid value: "my_Widget": kind and listKind may not be the same"#);
        assert_eq!(errs.len(), 5, "{errs:#?}");
        let mut c = crd();
        c["spec"]["names"] = json!({"plural": "widgets"});
        assert_eq!(errors(c), ["spec.names.singular: Required value", "spec.names.kind: Required value", "spec.names.listKind: Required value"]);
    }

    #[test]
    fn versions() {
        let mut c = crd();
        c["spec"]["versions"][0]["storage"] = json!(false);
        let errs = errors(c);
        assert_eq!(errs.len(), 2, "{errs:#?}");
        assert!(errs[0].starts_with(r#"spec.versions: Invalid value: [{"name":"v1""#));
        assert!(errs[0].ends_with(": must have exactly one version marked as storage version"));
        assert_eq!(errs[1], "status.storedVersions: Invalid value: []: must have at least one stored version");

        let mut c = crd();
        let mut v2 = c["spec"]["versions"][0].clone();
        v2["name"] = json!("v1");
        c["spec"]["versions"].as_array_mut().unwrap().push(v2);
        let errs = errors(c);
        assert!(errs.iter().any(|e| e.ends_with("must contain unique version names")), "{errs:#?}");
        assert!(errs.iter().any(|e| e.ends_with("must have exactly one version marked as storage version")), "{errs:#?}");

        let mut c = crd();
        c["spec"]["versions"][0]["name"] = json!("V1");
        c["spec"]["versions"] = json!([c["spec"]["versions"][0].clone()]);
        let errs = errors(c);
        assert!(errs[0].starts_with(r#"spec.versions[0].name: Invalid value: "V1": a DNS-1035 label"#), "{errs:#?}");

        let mut c = crd();
        c["spec"]["versions"] = json!([]);
        let errs = errors(c);
        assert_eq!(errs, [
            "spec.versions: Invalid value: []: must have exactly one version marked as storage version",
            "status.storedVersions: Invalid value: []: must have at least one stored version",
        ]);
    }

    #[test]
    fn schemas() {
        let mut c = crd();
        c["spec"]["versions"][0].as_object_mut().unwrap().remove("schema");
        assert_eq!(errors(c), ["spec.versions[0].schema.openAPIV3Schema: Required value: schemas are required"]);

        let mut c = crd();
        c["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["size"] = json!({"enum": ["s"]});
        assert_eq!(errors(c), [
            "spec.versions[0].schema.openAPIV3Schema.properties[spec].properties[size].type: Required value: must not be empty for specified object fields"
        ]);

        // With the status subresource only certain root fields are allowed.
        let mut c = crd();
        c["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["x-kubernetes-preserve-unknown-fields"] = json!(true);
        assert_eq!(errors(c), Vec::<String>::new());
        let mut c = crd();
        c["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["anyOf"] = json!([{"required": ["spec"]}]);
        let errs = errors(c);
        assert_eq!(errs.len(), 1, "{errs:#?}");
        assert!(errs[0].starts_with("spec.versions[0].schema.openAPIV3Schema: Invalid value: {"));
        assert!(errs[0].ends_with("fields are allowed at the root of the schema if the status subresource is enabled"));

        // Bad defaults are reported against the schema.
        let mut c = crd();
        c["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["replicas"]["default"] = json!("one");
        let errs = errors(c);
        assert_eq!(errs, [
            r#"spec.versions[0].schema.openAPIV3Schema.properties[spec].properties[replicas].default: Invalid value: "string":  in body must be of type integer: "string""#
        ]);

        // A property named `default` is not a default.
        let mut c = crd();
        c["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"] = json!({"default": {"type": "string"}});
        c["spec"]["preserveUnknownFields"] = json!(true);
        assert_eq!(errors(c).len(), 1);

        // preserveUnknownFields: true is not allowed in v1.
        let mut c = crd();
        c["spec"]["preserveUnknownFields"] = json!(true);
        let errs = errors(c);
        assert_eq!(errs, [
            "spec.preserveUnknownFields: Invalid value: true: must be false in order to use defaults in the schema",
            "spec.preserveUnknownFields: Invalid value: true: cannot set to true, set x-preserve-unknown-fields to true in spec.versions[*].schema instead",
        ]);
    }

    #[test]
    fn subresources_and_columns() {
        let mut c = crd();
        c["spec"]["versions"][0]["subresources"]["scale"] = json!({"specReplicasPath": "spec.replicas", "statusReplicasPath": ".spec.replicas", "labelSelectorPath": ".metadata.labels"});
        c["spec"]["versions"][0]["additionalPrinterColumns"] = json!([
            {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
            {"name": "", "type": "float", "format": "weird", "jsonPath": "spec"},
        ]);
        assert_eq!(errors(c), [
            r#"spec.versions[0].subresources.scale.specReplicasPath: Invalid value: "spec.replicas": must be a simple json path starting with ."#,
            r#"spec.versions[0].subresources.scale.statusReplicasPath: Invalid value: ".spec.replicas": should be a json path under .status"#,
            r#"spec.versions[0].subresources.scale.labelSelectorPath: Invalid value: ".metadata.labels": should be a json path under either .spec or .status"#,
            "spec.versions[0].additionalPrinterColumns[1].name: Required value",
            r#"spec.versions[0].additionalPrinterColumns[1].type: Invalid value: "float": must be one of boolean,date,integer,number,string"#,
            r#"spec.versions[0].additionalPrinterColumns[1].format: Invalid value: "weird": must be one of byte,date,date-time,double,float,int32,int64,password"#,
            r#"spec.versions[0].additionalPrinterColumns[1].JSONPath: Invalid value: "spec": must be a simple json path starting with ."#,
        ]);
        let mut c = crd();
        c["spec"]["versions"][0]["subresources"]["scale"] = json!({});
        assert_eq!(errors(c), [
            "spec.versions[0].subresources.scale.specReplicasPath: Required value",
            "spec.versions[0].subresources.scale.statusReplicasPath: Required value",
        ]);
    }

    #[test]
    fn conversion() {
        let mut c = crd();
        c["spec"]["conversion"] = json!({"strategy": "Webhook"});
        assert_eq!(errors(c), [
            "spec.conversion.webhookClientConfig: Required value: required when strategy is set to Webhook",
            "spec.conversion.conversionReviewVersions: Required value",
        ]);
        let mut c = crd();
        c["spec"]["conversion"] = json!({"strategy": "Webhook", "webhook": {"clientConfig": {"url": "http://x"}, "conversionReviewVersions": ["v2", "v2"]}});
        assert_eq!(errors(c), [
            r#"spec.conversion.webhookClientConfig.url: Invalid value: "http://x": 'https' is the only allowed URL scheme"#,
            r#"spec.conversion.conversionReviewVersions[1]: Invalid value: "v2": duplicate version"#,
            r#"spec.conversion.conversionReviewVersions: Invalid value: ["v2","v2"]: must include at least one of v1, v1beta1"#,
        ]);
        let mut c = crd();
        c["spec"]["conversion"] = json!({"strategy": "None", "webhook": {"clientConfig": {"url": "https://x"}, "conversionReviewVersions": ["v1"]}});
        assert_eq!(errors(c), [
            "spec.conversion.webhookClientConfig: Forbidden: should not be set when strategy is not set to Webhook",
            "spec.conversion.conversionReviewVersions: Forbidden: should not be set when strategy is not set to Webhook",
        ]);
        let mut c = crd();
        c["spec"]["conversion"] = json!({"strategy": "Magic"});
        assert_eq!(errors(c), [r#"spec.conversion.strategy: Unsupported value: "Magic": supported values: "None", "Webhook""#]);
    }

    #[test]
    fn protected_groups_need_approval() {
        let mut c = crd();
        c["metadata"]["name"] = json!("widgets.apps.k8s.io");
        c["spec"]["group"] = json!("apps.k8s.io");
        assert_eq!(errors(c.clone()), [
            r#"metadata.annotations[api-approved.kubernetes.io]: Required value: protected groups must have approval annotation "api-approved.kubernetes.io", see https://github.com/kubernetes/enhancements/pull/1111"#
        ]);
        c["metadata"]["annotations"] = json!({"api-approved.kubernetes.io": "unapproved, testing"});
        assert!(errors(c.clone()).is_empty());
        c["metadata"]["annotations"] = json!({"api-approved.kubernetes.io": "https://github.com/kubernetes/kubernetes/pull/1"});
        assert!(errors(c.clone()).is_empty());
        c["metadata"]["annotations"] = json!({"api-approved.kubernetes.io": "yes"});
        assert_eq!(errors(c).len(), 1);
    }

    #[test]
    fn updates() {
        let ctx = ReqCtx::default();
        let old = created(crd());
        let mut new = old.clone();
        new["spec"]["group"] = json!("other.com");
        new["spec"]["names"]["plural"] = json!("gizmos");
        new["spec"]["scope"] = json!("Cluster");
        let errs: Vec<String> = CrdStrategy.validate_update(&ctx, &new, &old).iter().map(|e| e.to_string()).collect();
        assert_eq!(errs, [
            r#"metadata.name: Invalid value: "widgets.example.com": must be spec.names.plural+"."+spec.group"#,
            r#"spec.group: Invalid value: "other.com": field is immutable"#,
            r#"spec.names.plural: Invalid value: "gizmos": field is immutable"#,
        ]);
        // Scope and kind are fixed once established.
        let mut est = old.clone();
        est["status"]["conditions"] = json!([{"type": "Established", "status": "True"}]);
        let mut new = est.clone();
        new["spec"]["scope"] = json!("Cluster");
        new["spec"]["names"]["kind"] = json!("Gadget");
        new["spec"]["names"]["listKind"] = json!("GadgetList");
        let errs: Vec<String> = CrdStrategy.validate_update(&ctx, &new, &est).iter().map(|e| e.to_string()).collect();
        assert_eq!(errs, [r#"spec.scope: Invalid value: "Cluster": field is immutable"#, r#"spec.names.kind: Invalid value: "Gadget": field is immutable"#]);

        // Switching the storage version keeps the old one in storedVersions.
        let mut new = old.clone();
        let mut v2 = new["spec"]["versions"][0].clone();
        v2["name"] = json!("v2");
        new["spec"]["versions"][0]["storage"] = json!(false);
        new["spec"]["versions"].as_array_mut().unwrap().push(v2);
        CrdStrategy.prepare_for_update(&ctx, &mut new, &old);
        assert_eq!(new["status"]["storedVersions"], json!(["v1", "v2"]));
        assert!(CrdStrategy.validate_update(&ctx, &new, &old).is_empty());
        // Dropping a stored version from spec.versions is refused.
        let mut gone = new.clone();
        gone["spec"]["versions"] = json!([new["spec"]["versions"][1].clone()]);
        let errs: Vec<String> = CrdStrategy.validate_update(&ctx, &gone, &new).iter().map(|e| e.to_string()).collect();
        assert_eq!(errs, [r#"status.storedVersions[0]: Invalid value: "v1": must appear in spec.versions"#]);
    }

    #[test]
    fn status_updates_check_accepted_names() {
        let ctx = ReqCtx::default();
        let old = created(crd());
        let mut new = old.clone();
        new["status"]["acceptedNames"] = json!({"plural": "widgets", "kind": "Widget"});
        assert!(CrdStrategy.validate_status_update(&ctx, &new, &old).is_empty());
        new["status"]["acceptedNames"]["plural"] = json!("Widgets");
        assert_eq!(CrdStrategy.validate_status_update(&ctx, &new, &old)[0].field, "status.acceptedNames.plural");
    }

    #[test]
    fn table() {
        let cols = CrdStrategy.columns();
        let names: Vec<&str> = cols.iter().map(|c| c.name.as_ref()).collect();
        assert_eq!(names, ["Name", "Created At"]);
        assert_eq!(cols[1].definition()["type"], "date");
        let obj = json!({"metadata": {"name": "widgets.example.com", "creationTimestamp": "2024-05-06T07:08:09+02:00"}});
        assert_eq!((cols[0].cell)(&obj), "widgets.example.com");
        assert_eq!((cols[1].cell)(&obj), "2024-05-06T05:08:09Z");
    }
}
