//! Pod spec defaulting and validation, shared by Pods and every kind embedding a pod
//! template (upstream's `SetDefaults_PodSpec`/`SetDefaults_Container`/volume defaults and
//! `ValidatePodSpec`/`ValidatePodTemplateSpec`), plus QoS classification.

use std::collections::{BTreeMap, HashSet};

use serde_json::{json, Value};

use super::common::{
    self, arr, dns1123_label, dns1123_subdomain, each_mut, entry, int, parse_quantity, s, set_default, validate_enum,
    validate_labels, Quantity,
};
use crate::validation::{FieldError, FieldErrors};

/// Every volume source a `Volume` may name (exactly one must be set).
const VOLUME_SOURCES: &[&str] = &[
    "awsElasticBlockStore", "azureDisk", "azureFile", "cephfs", "cinder", "configMap", "csi", "downwardAPI",
    "emptyDir", "ephemeral", "fc", "flexVolume", "flocker", "gcePersistentDisk", "gitRepo", "glusterfs", "hostPath",
    "image", "iscsi", "nfs", "persistentVolumeClaim", "photonPersistentDisk", "portworxVolume", "projected",
    "quobyte", "rbd", "scaleIO", "secret", "storageos", "vsphereVolume",
];

const CONTAINER_LISTS: &[&str] = &["initContainers", "containers", "ephemeralContainers"];

// ---------------------------------------------------------------------------------------
// Defaulting
// ---------------------------------------------------------------------------------------

/// Upstream's `SetDefaults_PodSpec` and everything nested (containers, volumes, probes).
pub fn default_pod_spec(spec: &mut Value) {
    if !spec.is_object() {
        *spec = json!({});
    }
    set_default(spec, "dnsPolicy", "ClusterFirst");
    set_default(spec, "restartPolicy", "Always");
    set_default(spec, "schedulerName", "default-scheduler");
    set_default(spec, "terminationGracePeriodSeconds", 30);
    set_default(spec, "securityContext", json!({}));
    // The deprecated `serviceAccount` mirrors `serviceAccountName` (v1 conversion).
    let sa = s(&spec["serviceAccountName"]).to_string();
    let legacy = s(&spec["serviceAccount"]).to_string();
    if sa.is_empty() && !legacy.is_empty() {
        spec["serviceAccountName"] = json!(legacy);
    } else if !sa.is_empty() {
        spec["serviceAccount"] = json!(sa);
    }
    let host_network = common::truthy(&spec["hostNetwork"]);
    for list in CONTAINER_LISTS {
        each_mut(spec, list, |c| default_container(c, host_network));
    }
    each_mut(spec, "volumes", default_volume);
}

/// Pod-only defaults (`SetDefaults_Pod` and the ServiceAccount admission's default): not
/// applied to templates.
pub fn default_pod_only(spec: &mut Value) {
    set_default(spec, "enableServiceLinks", true);
    set_default(spec, "serviceAccountName", "default");
    if s(&spec["serviceAccount"]).is_empty() {
        let sa = spec["serviceAccountName"].clone();
        spec["serviceAccount"] = sa;
    }
    // Requests default to limits, per resource, for containers and init containers.
    for list in ["containers", "initContainers"] {
        each_mut(spec, list, |c| {
            let Some(limits) = c["resources"]["limits"].as_object().cloned() else { return };
            let resources = common::child(c, "resources");
            let requests = common::child(resources, "requests");
            for (k, v) in limits {
                requests.as_object_mut().expect("object").entry(k).or_insert(v);
            }
        });
    }
}

/// Defaults of a `PodTemplateSpec` (`template.spec`).
pub fn default_template(template: &mut Value) {
    if template.is_null() {
        return;
    }
    default_pod_spec(common::child(template, "spec"));
}

/// Whether an image reference resolves to the `latest` tag (upstream's `ParseImageName`).
fn image_is_latest(image: &str) -> bool {
    if image.is_empty() || image.contains('@') {
        return false;
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.rsplit_once(':') {
        Some((_, tag)) => tag == "latest",
        None => true,
    }
}

fn default_container(c: &mut Value, host_network: bool) {
    let image = s(&c["image"]).to_string();
    set_default(c, "imagePullPolicy", if image_is_latest(&image) { "Always" } else { "IfNotPresent" });
    set_default(c, "terminationMessagePath", "/dev/termination-log");
    set_default(c, "terminationMessagePolicy", "File");
    set_default(c, "resources", json!({}));
    each_mut(c, "ports", |p| {
        set_default(p, "protocol", "TCP");
        if host_network && int(&p["hostPort"]).unwrap_or(0) == 0 {
            let cp = p["containerPort"].clone();
            p["hostPort"] = cp;
        }
    });
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if c[probe].is_object() {
            let p = entry(c, probe);
            set_default(p, "timeoutSeconds", 1);
            set_default(p, "periodSeconds", 10);
            set_default(p, "successThreshold", 1);
            set_default(p, "failureThreshold", 3);
            default_http_get(p);
        }
    }
    for hook in ["postStart", "preStop"] {
        if c["lifecycle"][hook].is_object() {
            default_http_get(entry(entry(c, "lifecycle"), hook));
        }
    }
    each_mut(c, "env", |e| {
        if e["valueFrom"]["fieldRef"].is_object() {
            set_default(entry(entry(e, "valueFrom"), "fieldRef"), "apiVersion", "v1");
        }
    });
}

fn default_http_get(handler: &mut Value) {
    if handler["httpGet"].is_object() {
        let h = entry(handler, "httpGet");
        set_default(h, "path", "/");
        set_default(h, "scheme", "HTTP");
    }
}

fn default_volume(v: &mut Value) {
    if !VOLUME_SOURCES.iter().any(|k| v[*k].is_object()) {
        v["emptyDir"] = json!({});
    }
    for src in ["configMap", "secret", "downwardAPI", "projected"] {
        if v[src].is_object() {
            set_default(entry(v, src), "defaultMode", 420);
        }
    }
    if v["downwardAPI"].is_object() {
        each_mut(entry(v, "downwardAPI"), "items", |i| {
            if i["fieldRef"].is_object() {
                set_default(entry(i, "fieldRef"), "apiVersion", "v1");
            }
        });
    }
    if v["projected"].is_object() {
        each_mut(entry(v, "projected"), "sources", |src| {
            if src["serviceAccountToken"].is_object() {
                set_default(entry(src, "serviceAccountToken"), "expirationSeconds", 3600);
            }
            if src["downwardAPI"].is_object() {
                each_mut(entry(src, "downwardAPI"), "items", |i| {
                    if i["fieldRef"].is_object() {
                        set_default(entry(i, "fieldRef"), "apiVersion", "v1");
                    }
                });
            }
        });
    }
    if v["hostPath"].is_object() {
        set_default(entry(v, "hostPath"), "type", "");
    }
    if v["ephemeral"]["volumeClaimTemplate"]["spec"].is_object() {
        let spec = entry(entry(entry(v, "ephemeral"), "volumeClaimTemplate"), "spec");
        set_default(spec, "volumeMode", "Filesystem");
    }
}

// ---------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------

/// Upstream's `ValidatePodTemplateSpec` at `path` (e.g. `spec.template`).
pub fn validate_template(errs: &mut FieldErrors, template: &Value, path: &str) {
    validate_labels(errs, &template["metadata"]["labels"], &format!("{path}.labels"));
    validate_pod_spec(errs, &template["spec"], &format!("{path}.spec"));
    if !arr(&template["spec"]["ephemeralContainers"]).is_empty() {
        errs.push(FieldError::forbidden(
            format!("{path}.spec.ephemeralContainers"),
            "ephemeral containers not allowed in pod template",
        ));
    }
}

/// Upstream's `ValidatePodSpec` at `path` (e.g. `spec`).
pub fn validate_pod_spec(errs: &mut FieldErrors, spec: &Value, path: &str) {
    let volumes = validate_volumes(errs, &spec["volumes"], &format!("{path}.volumes"));
    let mut names = HashSet::new();
    let containers = arr(&spec["containers"]);
    if containers.is_empty() {
        errs.push(FieldError::required(format!("{path}.containers"), ""));
    }
    for (i, c) in containers.iter().enumerate() {
        validate_container(errs, c, &format!("{path}.containers[{i}]"), &volumes, &mut names, true);
    }
    for (i, c) in arr(&spec["initContainers"]).iter().enumerate() {
        validate_container(errs, c, &format!("{path}.initContainers[{i}]"), &volumes, &mut names, false);
    }
    validate_enum(errs, &spec["restartPolicy"], &format!("{path}.restartPolicy"), &["Always", "OnFailure", "Never"]);
    let dns = &spec["dnsPolicy"];
    validate_enum(errs, dns, &format!("{path}.dnsPolicy"), &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"]);
    if s(dns) == "None" && spec["dnsConfig"].is_null() {
        errs.push(FieldError::required(
            format!("{path}.dnsConfig"),
            "must provide `dnsConfig` when `dnsPolicy` is None",
        ));
    }
    validate_labels(errs, &spec["nodeSelector"], &format!("{path}.nodeSelector"));
    let sa = s(&spec["serviceAccountName"]);
    if !sa.is_empty() {
        dns1123_subdomain(errs, sa, &format!("{path}.serviceAccountName"));
    }
    if let Some(n) = int(&spec["activeDeadlineSeconds"]) {
        if !(1..=i64::from(u32::MAX)).contains(&n) {
            errs.push(FieldError::invalid(
                format!("{path}.activeDeadlineSeconds"),
                n,
                "must be between 1 and 4294967295, inclusive",
            ));
        }
    }
    for f in ["hostname", "subdomain"] {
        let v = s(&spec[f]);
        if !v.is_empty() {
            dns1123_label(errs, v, &format!("{path}.{f}"));
        }
    }
    validate_tolerations(errs, &spec["tolerations"], &format!("{path}.tolerations"));
    validate_sysctls(errs, spec, &format!("{path}.securityContext.sysctls"));
    for (i, g) in arr(&spec["readinessGates"]).iter().enumerate() {
        let t = s(&g["conditionType"]);
        crate::validation::push_invalid(
            errs,
            &format!("{path}.readinessGates[{i}].conditionType"),
            t,
            crate::validation::qualified_name(t),
        );
    }
}

/// Upstream's `SysctlContainSlashFmt`: dot- or slash-separated segments.
const SYSCTL_PATTERN: &str = r"^([a-z0-9]([-_a-z0-9]*[a-z0-9])?[\./])*[a-z0-9]([-_a-z0-9]*[a-z0-9])?$";
const SYSCTL_MAX_LENGTH: usize = 253;

/// The namespace a sysctl belongs to, as upstream's `sysctl.GetNamespace` (for the host
/// network / IPC rules): `net.*` is the network namespace; `kernel.shm*`, `kernel.msg*`,
/// `kernel.sem` and `fs.mqueue.*` the IPC namespace.
fn sysctl_namespace(name: &str) -> Option<&'static str> {
    let n = name.replace('/', ".");
    if n.starts_with("net.") {
        Some("net")
    } else if n.starts_with("kernel.shm") || n.starts_with("kernel.msg") || n == "kernel.sem" || n.starts_with("fs.mqueue.") {
        Some("ipc")
    } else {
        None
    }
}

/// Upstream's `validateSysctls`: names valid, not repeated, and not in a namespace the pod
/// shares with the host.
fn validate_sysctls(errs: &mut FieldErrors, spec: &Value, path: &str) {
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let re = RE.get_or_init(|| regex::Regex::new(SYSCTL_PATTERN).expect("sysctl pattern"));
    let mut names = HashSet::new();
    for (i, sc) in arr(&spec["securityContext"]["sysctls"]).iter().enumerate() {
        let name = s(&sc["name"]);
        let field = format!("{path}[{i}].name");
        if name.is_empty() {
            errs.push(FieldError::required(&field, ""));
        } else if name.len() > SYSCTL_MAX_LENGTH || !re.is_match(name) {
            errs.push(FieldError::invalid(
                &field,
                name,
                format!("must have at most {SYSCTL_MAX_LENGTH} characters and match regex {SYSCTL_PATTERN}"),
            ));
        } else if names.contains(name) {
            errs.push(FieldError::duplicate(&field, name));
        }
        match sysctl_namespace(name) {
            Some("net") if spec["hostNetwork"] == true => {
                errs.push(FieldError::invalid(&field, name, "may not be specified when 'hostNetwork' is true"))
            }
            Some("ipc") if spec["hostIPC"] == true => {
                errs.push(FieldError::invalid(&field, name, "may not be specified when 'hostIPC' is true"))
            }
            _ => {}
        }
        names.insert(name);
    }
}

/// Validates the volumes; returns the set of valid volume names.
fn validate_volumes(errs: &mut FieldErrors, volumes: &Value, path: &str) -> HashSet<String> {
    let mut names = HashSet::new();
    for (i, v) in arr(volumes).iter().enumerate() {
        let vp = format!("{path}[{i}]");
        let name = s(&v["name"]);
        if name.is_empty() {
            errs.push(FieldError::required(format!("{vp}.name"), ""));
        } else {
            let before = errs.len();
            dns1123_label(errs, name, &format!("{vp}.name"));
            if names.contains(name) {
                errs.push(FieldError::duplicate(format!("{vp}.name"), name));
            } else if errs.len() == before {
                names.insert(name.to_string());
            }
        }
        let set: Vec<&str> = VOLUME_SOURCES.iter().copied().filter(|k| v[*k].is_object()).collect();
        match set.as_slice() {
            [] => errs.push(FieldError::required(vp.clone(), "must specify a volume type")),
            [_] => {}
            [_, second, ..] => errs.push(FieldError::forbidden(format!("{vp}.{second}"), "may not specify more than 1 volume type")),
        }
        let required = [
            ("configMap", "name"),
            ("secret", "secretName"),
            ("hostPath", "path"),
            ("persistentVolumeClaim", "claimName"),
            ("nfs", "server"),
            ("nfs", "path"),
            ("csi", "driver"),
        ];
        for (src, field) in required {
            if v[src].is_object() && s(&v[src][field]).is_empty() {
                errs.push(FieldError::required(format!("{vp}.{src}.{field}"), ""));
            }
        }
        for src in ["configMap", "secret", "downwardAPI", "projected"] {
            if let Some(mode) = int(&v[src]["defaultMode"]) {
                if !(0..=0o777).contains(&mode) {
                    errs.push(FieldError::invalid(
                        format!("{vp}.{src}.defaultMode"),
                        mode,
                        "must be a number between 0 and 0777 (octal), both inclusive",
                    ));
                }
            }
        }
        if let Some(t) = v["hostPath"]["type"].as_str() {
            let supported = ["", "DirectoryOrCreate", "Directory", "FileOrCreate", "File", "Socket", "CharDevice", "BlockDevice"];
            if !supported.contains(&t) {
                errs.push(FieldError::not_supported(format!("{vp}.hostPath.type"), t, &supported));
            }
        }
    }
    names
}

fn validate_container(
    errs: &mut FieldErrors,
    c: &Value,
    path: &str,
    volumes: &HashSet<String>,
    names: &mut HashSet<String>,
    regular: bool,
) {
    let name = s(&c["name"]);
    if name.is_empty() {
        errs.push(FieldError::required(format!("{path}.name"), ""));
    } else {
        dns1123_label(errs, name, &format!("{path}.name"));
        if !names.insert(name.to_string()) {
            errs.push(FieldError::duplicate(format!("{path}.name"), name));
        }
    }
    let image = s(&c["image"]);
    if image.is_empty() {
        errs.push(FieldError::required(format!("{path}.image"), ""));
    } else if image.trim() != image {
        errs.push(FieldError::invalid(format!("{path}.image"), image, "must not have leading or trailing whitespace"));
    }
    if c["imagePullPolicy"].is_string() {
        validate_enum(errs, &c["imagePullPolicy"], &format!("{path}.imagePullPolicy"), &["Always", "IfNotPresent", "Never"]);
    }
    if c["terminationMessagePolicy"].is_string() {
        validate_enum(
            errs,
            &c["terminationMessagePolicy"],
            &format!("{path}.terminationMessagePolicy"),
            &["File", "FallbackToLogsOnError"],
        );
    }
    validate_ports(errs, &c["ports"], &format!("{path}.ports"));
    for (i, e) in arr(&c["env"]).iter().enumerate() {
        let ep = format!("{path}.env[{i}].name");
        let n = s(&e["name"]);
        if n.is_empty() {
            errs.push(FieldError::required(ep, ""));
        } else if n.contains('=') || !n.bytes().all(|b| (32..127).contains(&b)) {
            errs.push(FieldError::invalid(
                ep,
                n,
                "a valid environment variable name must consist only of printable ASCII characters other than '='",
            ));
        }
    }
    let mut mount_paths = HashSet::new();
    for (i, m) in arr(&c["volumeMounts"]).iter().enumerate() {
        let mp = format!("{path}.volumeMounts[{i}]");
        let n = s(&m["name"]);
        if n.is_empty() {
            errs.push(FieldError::required(format!("{mp}.name"), ""));
        } else if !volumes.contains(n) {
            errs.push(FieldError::not_found(format!("{mp}.name"), n));
        }
        let p = s(&m["mountPath"]);
        if p.is_empty() {
            errs.push(FieldError::required(format!("{mp}.mountPath"), ""));
        } else if !mount_paths.insert(p.to_string()) {
            errs.push(FieldError::invalid(format!("{mp}.mountPath"), p, "must be unique"));
        }
        let sub = s(&m["subPath"]);
        if sub.starts_with('/') {
            errs.push(FieldError::invalid(format!("{mp}.subPath"), sub, "must be a relative path"));
        } else if sub.split('/').any(|seg| seg == "..") {
            errs.push(FieldError::invalid(format!("{mp}.subPath"), sub, "must not contain '..'"));
        }
    }
    validate_resources(errs, &c["resources"], &format!("{path}.resources"));
    if regular {
        for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
            if c[probe].is_object() {
                validate_probe(errs, &c[probe], &format!("{path}.{probe}"));
            }
        }
    }
}

fn validate_ports(errs: &mut FieldErrors, ports: &Value, path: &str) {
    let mut names = HashSet::new();
    for (i, p) in arr(ports).iter().enumerate() {
        let pp = format!("{path}[{i}]");
        let name = s(&p["name"]);
        if !name.is_empty() {
            for m in common::port_name_errors(name) {
                errs.push(FieldError::invalid(format!("{pp}.name"), name, m));
            }
            if !names.insert(name.to_string()) {
                errs.push(FieldError::duplicate(format!("{pp}.name"), name));
            }
        }
        match int(&p["containerPort"]).unwrap_or(0) {
            0 => errs.push(FieldError::required(format!("{pp}.containerPort"), "")),
            n => {
                for m in common::port_num_errors(n) {
                    errs.push(FieldError::invalid(format!("{pp}.containerPort"), n, m));
                }
            }
        }
        if let Some(n) = int(&p["hostPort"]).filter(|n| *n != 0) {
            for m in common::port_num_errors(n) {
                errs.push(FieldError::invalid(format!("{pp}.hostPort"), n, m));
            }
        }
        validate_enum(errs, &p["protocol"], &format!("{pp}.protocol"), common::PROTOCOLS);
    }
}

/// Whether a resource name is one a container may request.
fn is_container_resource(name: &str) -> bool {
    matches!(name, "cpu" | "memory" | "ephemeral-storage") || name.starts_with("hugepages-")
}

/// Upstream's `ValidateResourceRequirements` (names, quantities, requests ≤ limits).
pub fn validate_resources(errs: &mut FieldErrors, res: &Value, path: &str) {
    for part in ["limits", "requests"] {
        let Some(m) = res[part].as_object() else { continue };
        for (name, q) in m {
            let fp = format!("{path}.{part}[{name}]");
            if !name.contains('/') && !is_container_resource(name) {
                errs.push(FieldError::invalid(fp.clone(), name.as_str(), "must be a standard resource for containers"));
            } else if name.contains('/') {
                crate::validation::push_invalid(errs, &fp, name, crate::validation::qualified_name(name));
            }
            match parse_quantity(s(q)) {
                Err(e) => errs.push(FieldError::invalid(fp, s(q), e)),
                Ok(v) if v < Quantity(0) => {
                    errs.push(FieldError::invalid(fp, s(q), "must be greater than or equal to 0"));
                }
                Ok(_) => {}
            }
        }
    }
    let (Some(requests), Some(limits)) = (res["requests"].as_object(), res["limits"].as_object()) else { return };
    for (name, req) in requests {
        let Some(lim) = limits.get(name) else { continue };
        let (Ok(r), Ok(l)) = (parse_quantity(s(req)), parse_quantity(s(lim))) else { continue };
        let overcommit = is_container_resource(name) && !name.starts_with("hugepages-");
        if !overcommit && r != l {
            errs.push(FieldError::invalid(
                format!("{path}.requests"),
                s(req),
                format!("must be equal to {name} limit of {}", s(lim)),
            ));
        } else if r > l {
            errs.push(FieldError::invalid(
                format!("{path}.requests"),
                s(req),
                format!("must be less than or equal to {name} limit of {}", s(lim)),
            ));
        }
    }
}

fn validate_probe(errs: &mut FieldErrors, probe: &Value, path: &str) {
    let handlers = ["exec", "httpGet", "tcpSocket", "grpc"];
    let set: Vec<&str> = handlers.iter().copied().filter(|h| probe[*h].is_object()).collect();
    match set.as_slice() {
        [] => errs.push(FieldError::required(path.to_string(), "must specify a handler type")),
        [_] => {}
        [_, second, ..] => errs.push(FieldError::forbidden(format!("{path}.{second}"), "may not specify more than 1 handler type")),
    }
    for f in ["initialDelaySeconds", "timeoutSeconds", "periodSeconds", "successThreshold", "failureThreshold"] {
        common::nonnegative(errs, &probe[f], &format!("{path}.{f}"));
    }
    if probe["httpGet"].is_object() {
        common::validate_port_num_or_name(errs, &probe["httpGet"]["port"], &format!("{path}.httpGet.port"));
    }
    if probe["tcpSocket"].is_object() {
        common::validate_port_num_or_name(errs, &probe["tcpSocket"]["port"], &format!("{path}.tcpSocket.port"));
    }
}

/// Upstream's `ValidateTolerations`.
pub fn validate_tolerations(errs: &mut FieldErrors, tolerations: &Value, path: &str) {
    for (i, t) in arr(tolerations).iter().enumerate() {
        let tp = format!("{path}[{i}]");
        let key = s(&t["key"]);
        if !key.is_empty() {
            crate::validation::push_invalid(errs, &format!("{tp}.key"), key, crate::validation::qualified_name(key));
        }
        let op = s(&t["operator"]);
        if key.is_empty() && op != "Exists" {
            errs.push(FieldError::invalid(
                format!("{tp}.operator"),
                op,
                "operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
            ));
        }
        if int(&t["tolerationSeconds"]).is_some() && s(&t["effect"]) != "NoExecute" {
            errs.push(FieldError::invalid(
                format!("{tp}.effect"),
                s(&t["effect"]),
                "effect must be 'NoExecute' when `tolerationSeconds` is set",
            ));
        }
        match op {
            "" | "Equal" => {
                let v = s(&t["value"]);
                crate::validation::push_invalid(errs, &format!("{tp}.value"), v, crate::validation::label_value(v));
            }
            "Exists" => {
                if !s(&t["value"]).is_empty() {
                    errs.push(FieldError::invalid(
                        format!("{tp}.operator"),
                        t.clone(),
                        "value must be empty when `operator` is 'Exists'",
                    ));
                }
            }
            other => errs.push(FieldError::not_supported(format!("{tp}.operator"), other, &["Equal", "Exists"])),
        }
        if let Some(e) = t["effect"].as_str().filter(|e| !e.is_empty()) {
            if !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&e) {
                errs.push(FieldError::not_supported(format!("{tp}.effect"), e, &["NoSchedule", "PreferNoSchedule", "NoExecute"]));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// QoS and helpers
// ---------------------------------------------------------------------------------------

/// Upstream's `GetPodQOS`: `BestEffort`, `Burstable` or `Guaranteed`, from cpu and memory
/// requests and limits of containers and init containers.
pub fn qos_class(spec: &Value) -> &'static str {
    let mut requests: BTreeMap<String, Quantity> = BTreeMap::new();
    let mut limits: BTreeMap<String, Quantity> = BTreeMap::new();
    let mut guaranteed = true;
    let all = arr(&spec["containers"]).iter().chain(arr(&spec["initContainers"]));
    for c in all {
        let add = |part: &str, into: &mut BTreeMap<String, Quantity>| {
            let mut found = HashSet::new();
            if let Some(m) = c["resources"][part].as_object() {
                for name in ["cpu", "memory"] {
                    if let Some(q) = m.get(name).and_then(|q| parse_quantity(s(q)).ok()).filter(|q| *q > Quantity(0)) {
                        found.insert(name);
                        let e = into.entry(name.to_string()).or_insert(Quantity(0));
                        e.0 += q.0;
                    }
                }
            }
            found
        };
        add("requests", &mut requests);
        let lims = add("limits", &mut limits);
        if lims.len() != 2 {
            guaranteed = false;
        }
    }
    if requests.is_empty() && limits.is_empty() {
        return "BestEffort";
    }
    if guaranteed && requests.iter().all(|(k, v)| limits.get(k) == Some(v)) && requests.len() == limits.len() {
        return "Guaranteed";
    }
    "Burstable"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(spec: Value) -> Vec<String> {
        let mut errs = Vec::new();
        let mut spec = spec;
        default_pod_spec(&mut spec);
        validate_pod_spec(&mut errs, &spec, "spec");
        errs.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn defaults_like_upstream() {
        let mut spec = json!({
            "containers": [{"name": "a", "image": "nginx", "ports": [{"containerPort": 80}],
                "livenessProbe": {"httpGet": {"port": 80}}},
                {"name": "b", "image": "nginx:1.25"}, {"name": "c", "image": "x@sha256:abc"}],
            "volumes": [{"name": "v"}, {"name": "cm", "configMap": {"name": "x"}}],
        });
        default_pod_spec(&mut spec);
        assert_eq!(spec["restartPolicy"], "Always");
        assert_eq!(spec["dnsPolicy"], "ClusterFirst");
        assert_eq!(spec["schedulerName"], "default-scheduler");
        assert_eq!(spec["terminationGracePeriodSeconds"], 30);
        assert_eq!(spec["securityContext"], json!({}));
        let c = &spec["containers"][0];
        assert_eq!(c["imagePullPolicy"], "Always");
        assert_eq!(c["terminationMessagePath"], "/dev/termination-log");
        assert_eq!(c["terminationMessagePolicy"], "File");
        assert_eq!(c["resources"], json!({}));
        assert_eq!(c["ports"][0]["protocol"], "TCP");
        assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/");
        assert_eq!(c["livenessProbe"]["httpGet"]["scheme"], "HTTP");
        assert_eq!(c["livenessProbe"]["periodSeconds"], 10);
        assert_eq!(spec["containers"][1]["imagePullPolicy"], "IfNotPresent");
        assert_eq!(spec["containers"][2]["imagePullPolicy"], "IfNotPresent");
        assert_eq!(spec["volumes"][0]["emptyDir"], json!({}));
        assert_eq!(spec["volumes"][1]["configMap"]["defaultMode"], 420);
        assert!(spec.get("enableServiceLinks").is_none());
        default_pod_only(&mut spec);
        assert_eq!(spec["enableServiceLinks"], true);
        assert_eq!(spec["serviceAccountName"], "default");
        assert_eq!(spec["serviceAccount"], "default");
    }

    #[test]
    fn requests_default_to_limits() {
        let mut spec = json!({"containers": [{"name": "a", "image": "x", "resources": {"limits": {"cpu": "1"}}}]});
        default_pod_only(&mut spec);
        assert_eq!(spec["containers"][0]["resources"]["requests"]["cpu"], "1");
    }

    #[test]
    fn validation_messages() {
        assert_eq!(errors(json!({})), vec!["spec.containers: Required value"]);
        let e = errors(json!({"containers": [{"name": "a"}, {"name": "a", "image": "x"}]}));
        assert!(e.contains(&"spec.containers[0].image: Required value".to_string()), "{e:?}");
        assert!(e.contains(&"spec.containers[1].name: Duplicate value: \"a\"".to_string()), "{e:?}");
        let e = errors(json!({"containers": [{"name": "A_b", "image": "x"}]}));
        assert!(e[0].starts_with("spec.containers[0].name: Invalid value: \"A_b\": a lowercase RFC 1123 label"), "{e:?}");
        let e = errors(json!({"restartPolicy": "Sometimes", "containers": [{"name": "a", "image": "x", "ports": [{"containerPort": 70000, "protocol": "HTTP"}]}]}));
        assert!(e.contains(&"spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive".to_string()), "{e:?}");
        assert!(e.contains(&"spec.containers[0].ports[0].protocol: Unsupported value: \"HTTP\": supported values: \"SCTP\", \"TCP\", \"UDP\"".to_string()), "{e:?}");
        assert!(e.contains(&"spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"".to_string()), "{e:?}");
        let e = errors(json!({"containers": [{"name": "a", "image": "x", "volumeMounts": [{"name": "nope", "mountPath": "/x"}]}],
            "volumes": [{"name": "v"}, {"name": "v"}]}));
        assert!(e.contains(&"spec.volumes[1].name: Duplicate value: \"v\"".to_string()), "{e:?}");
        assert!(e.contains(&"spec.containers[0].volumeMounts[0].name: Not found: \"nope\"".to_string()), "{e:?}");
        let e = errors(json!({"containers": [{"name": "a", "image": "x", "resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}}]}));
        assert_eq!(e, vec!["spec.containers[0].resources.requests: Invalid value: \"2\": must be less than or equal to cpu limit of 1"]);
    }

    #[test]
    fn sysctl_names() {
        let spec = |sysctls: Value, host_net: bool| {
            json!({"hostNetwork": host_net, "securityContext": {"sysctls": sysctls},
                   "containers": [{"name": "c", "image": "i"}]})
        };
        let mut errs = Vec::new();
        validate_sysctls(&mut errs, &spec(json!([
            {"name": "foo-", "value": "bar"}, {"name": "kernel.shmmax", "value": "1"},
            {"name": "safe-and-unsafe", "value": "1"}, {"name": "bar..", "value": "42"},
            {"name": "net/ipv4/ip_forward", "value": "1"}, {"name": "kernel.shmmax", "value": "2"},
        ]), false), "spec.securityContext.sysctls");
        let msgs: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert_eq!(msgs.len(), 3, "{msgs:?}");
        assert!(msgs[0].starts_with("spec.securityContext.sysctls[0].name: Invalid value: \"foo-\": must have at most 253 characters and match regex ^([a-z0-9]"));
        assert!(msgs[1].starts_with("spec.securityContext.sysctls[3].name: Invalid value: \"bar..\""));
        assert_eq!(msgs[2], "spec.securityContext.sysctls[5].name: Duplicate value: \"kernel.shmmax\"");
        let mut errs = Vec::new();
        validate_sysctls(&mut errs, &spec(json!([{"name": "net.core.somaxconn", "value": "1"}]), true), "s");
        assert_eq!(errs[0].to_string(), "s[0].name: Invalid value: \"net.core.somaxconn\": may not be specified when 'hostNetwork' is true");
    }

    #[test]
    fn qos() {
        let c = |res: Value| json!({"containers": [{"name": "a", "resources": res}]});
        assert_eq!(qos_class(&c(json!({}))), "BestEffort");
        assert_eq!(qos_class(&c(json!({"requests": {"cpu": "1"}}))), "Burstable");
        let g = json!({"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1000m", "memory": "1Gi"}});
        assert_eq!(qos_class(&c(g)), "Guaranteed");
        assert_eq!(qos_class(&c(json!({"limits": {"cpu": "1"}, "requests": {"cpu": "1"}}))), "Burstable");
    }
}
