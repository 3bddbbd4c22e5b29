//! Bodies built by hand the way upstream's generated marshalers write them: every
//! non-pointer scalar present even when zero, pointer fields only when set.

use serde_json::json;

use super::*;

/// A minimal protobuf writer.
#[derive(Default, Clone)]
struct Msg(Vec<u8>);

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

impl Msg {
    fn new() -> Self {
        Msg::default()
    }
    fn int(mut self, no: u32, v: i64) -> Self {
        varint(&mut self.0, u64::from(no) << 3);
        varint(&mut self.0, v as u64);
        self
    }
    fn bytes(mut self, no: u32, b: &[u8]) -> Self {
        varint(&mut self.0, (u64::from(no) << 3) | 2);
        varint(&mut self.0, b.len() as u64);
        self.0.extend_from_slice(b);
        self
    }
    fn str(self, no: u32, s: &str) -> Self {
        self.bytes(no, s.as_bytes())
    }
    fn msg(self, no: u32, m: Msg) -> Self {
        self.bytes(no, &m.0)
    }
    fn entry(self, no: u32, k: &str, v: &str) -> Self {
        self.msg(no, Msg::new().str(1, k).str(2, v))
    }
    fn double(mut self, no: u32, f: f64) -> Self {
        varint(&mut self.0, (u64::from(no) << 3) | 1);
        self.0.extend_from_slice(&f.to_bits().to_le_bytes());
        self
    }
}

/// The `k8s\0` + runtime.Unknown envelope.
fn envelope(api_version: &str, kind: &str, raw: Msg) -> Vec<u8> {
    let unknown = Msg::new().msg(1, Msg::new().str(1, api_version).str(2, kind)).msg(2, raw).str(3, "").str(4, "");
    let mut out = b"k8s\0".to_vec();
    out.extend(unknown.0);
    out
}

/// ObjectMeta as Go writes it for a new object: all non-pointer fields, zero Time.
fn meta(name: &str) -> Msg {
    Msg::new()
        .str(1, name)
        .str(2, "")
        .str(3, "")
        .str(4, "")
        .str(5, "")
        .str(6, "")
        .int(7, 0)
        .msg(8, Msg::new())
}

#[test]
fn configmap() {
    let cm = Msg::new()
        .msg(1, meta("a").entry(11, "app", "web"))
        .entry(2, "x", "1")
        .entry(2, "y", "")
        .msg(3, Msg::new().str(1, "bin").bytes(2, b"\x00\x01"));
    let v = decode(&envelope("v1", "ConfigMap", cm)).unwrap();
    assert_eq!(
        v,
        json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "a", "labels": {"app": "web"}},
            "data": {"x": "1", "y": ""},
            "binaryData": {"bin": "AAE="},
        })
    );
}

#[test]
fn secret_bytes_and_pointer_bool() {
    let s = Msg::new()
        .msg(1, meta("s"))
        .msg(2, Msg::new().str(1, "a").bytes(2, b"b"))
        .str(3, "Opaque")
        .entry(4, "plain", "text")
        .int(5, 0); // immutable: *bool set to false
    let v = decode(&envelope("v1", "Secret", s)).unwrap();
    assert_eq!(
        v,
        json!({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
            "data": {"a": "Yg=="}, "type": "Opaque", "stringData": {"plain": "text"}, "immutable": false,
        })
    );
}

fn container() -> Msg {
    let quantity = |s: &str| Msg::new().str(1, s);
    let resources = Msg::new()
        .msg(1, Msg::new().str(1, "cpu").msg(2, quantity("500m")))
        .msg(1, Msg::new().str(1, "memory").msg(2, quantity("128Mi")))
        .msg(2, Msg::new().str(1, "cpu").msg(2, quantity("100m")));
    Msg::new()
        .str(1, "busybox")
        .str(2, "busybox")
        .str(3, "sleep")
        .str(5, "")
        // ports: name "", hostPort 0, containerPort 80, protocol TCP, hostIP ""
        .msg(6, Msg::new().str(1, "").int(2, 0).int(3, 80).str(4, "TCP").str(5, ""))
        .msg(8, resources)
        .str(13, "")
        .str(14, "")
        .int(16, 0)
        .int(17, 0)
        .int(18, 0)
        .str(20, "")
}

#[test]
fn deployment_with_pod_template() {
    let pod_spec = Msg::new()
        .msg(2, container())
        .str(3, "")
        .str(6, "")
        .str(8, "")
        .str(9, "")
        .str(10, "")
        .int(11, 0)
        .int(12, 0)
        .int(13, 0)
        .str(16, "")
        .str(17, "")
        .str(19, "")
        .int(21, 0) // automountServiceAccountToken: pointer, false kept
        .str(24, "");
    let template = Msg::new().msg(1, meta("").entry(11, "app", "d")).msg(2, pod_spec);
    let spec = Msg::new()
        .int(1, 2)
        .msg(2, Msg::new().entry(1, "app", "d"))
        .msg(3, template)
        .msg(4, Msg::new().str(1, ""))
        .int(5, 0)
        .int(7, 0);
    let status = Msg::new().int(1, 0).int(2, 0).int(3, 0).int(4, 0).int(5, 0).int(7, 0);
    let d = Msg::new()
        .msg(1, meta("d").msg(8, Msg::new().int(1, 1_700_000_000).int(2, 5)))
        .msg(2, spec)
        .msg(3, status);
    let v = decode(&envelope("apps/v1", "Deployment", d)).unwrap();
    assert_eq!(
        v,
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d", "creationTimestamp": "2023-11-14T22:13:20Z"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "d"}},
                "template": {
                    "metadata": {"labels": {"app": "d"}},
                    "spec": {
                        "containers": [{
                            "name": "busybox", "image": "busybox", "command": ["sleep"],
                            "ports": [{"containerPort": 80, "protocol": "TCP"}],
                            "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}, "requests": {"cpu": "100m"}},
                        }],
                        "automountServiceAccountToken": false,
                    },
                },
                "strategy": {},
            },
            "status": {},
        })
    );
}

#[test]
fn replicas_zero_is_kept() {
    let d = Msg::new().msg(1, meta("d")).msg(2, Msg::new().int(1, 0));
    let v = decode(&envelope("apps/v1", "Deployment", d)).unwrap();
    assert_eq!(v["spec"], json!({"replicas": 0}));
}

#[test]
fn service_int_or_string() {
    let port = |name: &str, target: Msg| {
        Msg::new().str(1, name).str(2, "TCP").int(3, 80).msg(4, target).int(5, 0)
    };
    let spec = Msg::new()
        .msg(1, port("a", Msg::new().int(1, 0).int(2, 8080).str(3, "")))
        .msg(1, port("b", Msg::new().int(1, 1).int(2, 0).str(3, "http")))
        .str(4, "ClusterIP");
    let svc = Msg::new().msg(1, meta("s")).msg(2, spec).msg(3, Msg::new().msg(1, Msg::new()));
    let v = decode(&envelope("v1", "Service", svc)).unwrap();
    assert_eq!(
        v["spec"],
        json!({
            "ports": [
                {"name": "a", "protocol": "TCP", "port": 80, "targetPort": 8080},
                {"name": "b", "protocol": "TCP", "port": 80, "targetPort": "http"},
            ],
            "type": "ClusterIP",
        })
    );
    assert_eq!(v["status"], json!({"loadBalancer": {}}));
}

#[test]
fn times_durations_and_negative_ints() {
    // events.k8s.io/v1 Event: eventTime is a MicroTime, deprecatedCount an int32.
    let ev = Msg::new()
        .msg(1, meta("e"))
        .msg(2, Msg::new().int(1, 1_700_000_000).int(2, 123_456_789))
        .int(15, -3);
    let v = decode(&envelope("events.k8s.io/v1", "Event", ev)).unwrap();
    assert_eq!(v["eventTime"], "2023-11-14T22:13:20.123456Z");
    assert_eq!(v["deprecatedCount"], -3);
    assert_eq!(go_duration(0), "0s");
    assert_eq!(go_duration(1_500_000_000), "1.5s");
    assert_eq!(go_duration(3_600_000_000_000), "1h0m0s");
    assert_eq!(go_duration(90_000_000_000), "1m30s");
    assert_eq!(go_duration(1_500_000), "1.5ms");
    assert_eq!(go_duration(-2_000), "-2µs");
    assert_eq!(go_duration(7), "7ns");
}

#[test]
fn inline_volume_source_and_raw_extension() {
    let vol = Msg::new().str(1, "v").msg(2, Msg::new().msg(19, Msg::new().msg(1, Msg::new().str(1, "cm")).int(3, 420)));
    let pod = Msg::new().msg(1, meta("p")).msg(2, Msg::new().msg(1, vol));
    let v = decode(&envelope("v1", "Pod", pod)).unwrap();
    assert_eq!(v["spec"]["volumes"], json!([{"name": "v", "configMap": {"name": "cm", "defaultMode": 420}}]));

    let rev = Msg::new().msg(1, meta("r")).msg(2, Msg::new().bytes(1, br#"{"spec":{"x":1}}"#)).int(3, 4);
    let v = decode(&envelope("apps/v1", "ControllerRevision", rev)).unwrap();
    assert_eq!(v["data"], json!({"spec": {"x": 1}}));
    assert_eq!(v["revision"], 4);
}

#[test]
fn rbac_group_and_packed_repeated() {
    let rule = Msg::new().str(1, "get").str(2, "").str(3, "pods");
    let role = Msg::new().msg(1, meta("r")).msg(2, rule);
    let v = decode(&envelope("rbac.authorization.k8s.io/v1", "Role", role)).unwrap();
    assert_eq!(v["rules"], json!([{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}]));

    // A packed repeated int32 (PodSecurityContext.supplementalGroups is int64, field 4).
    let mut packed = Vec::new();
    for g in [1u64, 2, 300] {
        varint(&mut packed, g);
    }
    let pod = Msg::new().msg(1, meta("p")).msg(2, Msg::new().msg(14, Msg::new().bytes(4, &packed).int(4, 7)));
    let v = decode(&envelope("v1", "Pod", pod)).unwrap();
    assert_eq!(v["spec"]["securityContext"]["supplementalGroups"], json!([1, 2, 300, 7]));
}

#[test]
fn doubles_and_crd_unions() {
    let props = Msg::new()
        .str(5, "object")
        .double(9, 1.5)
        .msg(30, Msg::new().int(1, 0))
        .msg(24, Msg::new().msg(1, Msg::new().str(5, "string")));
    let v = decode_message("apiextensions.v1.JsonSchemaProps", &props.0, 0).unwrap();
    assert_eq!(v, json!({"type": "object", "maximum": 1.5, "additionalProperties": false, "items": {"type": "string"}}));
}

#[test]
fn errors() {
    assert!(decode(b"{}").unwrap_err().contains("magic"));
    let e = decode(&envelope("v1", "NoSuchKind", Msg::new())).unwrap_err();
    assert!(e.contains("NoSuchKind"), "{e}");
    let mut truncated = envelope("v1", "ConfigMap", Msg::new().msg(1, meta("a")));
    truncated.truncate(truncated.len() - 3);
    assert!(decode(&truncated).is_err());
    // A string where a varint belongs.
    let bad = Msg::new().msg(1, Msg::new().str(7, "x"));
    let e = decode(&envelope("v1", "ConfigMap", bad)).unwrap_err();
    assert!(e.contains("generation"), "{e}");
}

#[test]
fn delete_options_under_any_version() {
    let opts = Msg::new().int(1, 0).str(4, "Foreground");
    let v = decode(&envelope("v1", "DeleteOptions", opts)).unwrap();
    assert_eq!(v, json!({"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0, "propagationPolicy": "Foreground"}));
}
