#!/usr/bin/env python3
"""Generates apiserver/src/openapi/definitions.json.zz: the OpenAPI schemas of the built-in
kinds krust serves, under upstream's definition names, for `/openapi/v2` and `/openapi/v3`.

Source (read from the local cargo registry, nothing is copied verbatim into the repo):
  * k8s-openapi 0.29, the API version module krust builds with (`v1_33`), whose
    `schemars::JsonSchema` impls (behind the crate's `schemars` feature, which krust does
    not enable) hold every definition's name (`io.k8s.api.apps.v1.Deployment`),
    description, property types, formats, `required` and references, written as a
    `json_schema!({...})` literal. This script parses those literals as data; the Rust
    expressions inside them (`__gen.subschema_for::<T>()`) become references.
  * the same crate's `Resource` impls: `x-kubernetes-group-version-kind` of each kind,
    and `ListableResource` impls: the `<Kind>List` definitions upstream also publishes.
  * the same crate's `DeepMerge` impls, which k8s-openapi generates from upstream's
    list/map markers and merge keys: `merge_strategies::list::map(.., &[|l, r| l.name ==
    r.name])` becomes `x-kubernetes-list-type: map` with `x-kubernetes-list-map-keys:
    [name]`, `list::set` `x-kubernetes-list-type: set`, `map::atomic`
    `x-kubernetes-map-type: atomic`. `list::atomic` is left unmarked (atomic is what an
    unmarked list means). `LIST_TYPES` below corrects the lists whose upstream keys differ
    (k8s-openapi keeps only the patch merge key).
  * `PATCH_STRATEGIES` below: upstream's `patchStrategy`/`patchMergeKey` struct tags
    (`x-kubernetes-patch-strategy` / `x-kubernetes-patch-merge-key`), which k8s-openapi
    does not carry. It covers every list of `BuiltinMergeKeys` in
    apiserver/src/patch/strategic.rs plus `DeploymentSpec.strategy` (retainKeys).

Which definitions: every `Resource` type of each API package krust serves (read from the
`typed::<...>` and `virtual_kind::<...>` lines of apiserver/src/kinds/mod.rs), their `List` types, meta/v1 `Status`
and `DeleteOptions`, and everything those reference.

Upstream adjustments (so documents match what kube-apiserver publishes in Swagger 2.0):
`IntOrString` is `type: string, format: int-or-string`, `Quantity` is `type: string`,
and apiextensions' `JSON` / `JSONSchemaPropsOr*` carry only a description.

Output: one minified JSON object `{definition name: schema}` (sorted keys), compressed
with zlib (level 9, ~130 KiB instead of ~700 KiB; `--json` writes it uncompressed to
stdout for reading). References are written as `{"$ref": "<definition name>"}`; the
server prefixes `#/definitions/` or `#/components/schemas/` for the document it builds.

Regenerate (from the workspace root; the cargo registry must hold k8s-openapi 0.29,
e.g. after `cargo fetch`):
    python3 scripts/gen-openapi-schemas.py apiserver/src/openapi/definitions.json.zz
"""

import glob
import json
import os
import re
import sys
import zlib

API_MODULE = "v1_33"

# (definition, property) -> (x-kubernetes-patch-strategy, x-kubernetes-patch-merge-key or None)
# Upstream's `patchStrategy`/`patchMergeKey` struct tags of the served API types.
_CORE = "io.k8s.api.core.v1."
PATCH_STRATEGIES = {
    (_CORE + "PodSpec", "containers"): ("merge", "name"),
    (_CORE + "PodSpec", "initContainers"): ("merge", "name"),
    (_CORE + "PodSpec", "ephemeralContainers"): ("merge", "name"),
    (_CORE + "PodSpec", "volumes"): ("merge,retainKeys", "name"),
    (_CORE + "PodSpec", "imagePullSecrets"): ("merge", "name"),
    (_CORE + "PodSpec", "hostAliases"): ("merge", "ip"),
    (_CORE + "PodSpec", "topologySpreadConstraints"): ("merge", "topologyKey"),
    (_CORE + "PodSpec", "resourceClaims"): ("merge,retainKeys", "name"),
    (_CORE + "PodSpec", "schedulingGates"): ("merge", "name"),
    (_CORE + "Container", "ports"): ("merge", "containerPort"),
    (_CORE + "Container", "env"): ("merge", "name"),
    (_CORE + "Container", "volumeMounts"): ("merge", "mountPath"),
    (_CORE + "Container", "volumeDevices"): ("merge", "devicePath"),
    (_CORE + "EphemeralContainer", "ports"): ("merge", "containerPort"),
    (_CORE + "EphemeralContainer", "env"): ("merge", "name"),
    (_CORE + "EphemeralContainer", "volumeMounts"): ("merge", "mountPath"),
    (_CORE + "EphemeralContainer", "volumeDevices"): ("merge", "devicePath"),
    (_CORE + "PodStatus", "conditions"): ("merge", "type"),
    (_CORE + "PodStatus", "podIPs"): ("merge", "ip"),
    (_CORE + "PodStatus", "hostIPs"): ("merge", "ip"),
    (_CORE + "PodStatus", "resourceClaimStatuses"): ("merge,retainKeys", "name"),
    (_CORE + "ServiceSpec", "ports"): ("merge", "port"),
    (_CORE + "ServiceStatus", "conditions"): ("merge", "type"),
    (_CORE + "ServiceAccount", "secrets"): ("merge", "name"),
    (_CORE + "NodeSpec", "podCIDRs"): ("merge", None),
    (_CORE + "NodeStatus", "conditions"): ("merge", "type"),
    (_CORE + "NodeStatus", "addresses"): ("merge", "type"),
    (_CORE + "NamespaceStatus", "conditions"): ("merge", "type"),
    (_CORE + "PersistentVolumeClaimStatus", "conditions"): ("merge", "type"),
    (_CORE + "ReplicationControllerStatus", "conditions"): ("merge", "type"),
    ("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "finalizers"): ("merge", None),
    ("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "ownerReferences"): ("merge", "uid"),
    ("io.k8s.api.apps.v1.DeploymentSpec", "strategy"): ("retainKeys", None),
    ("io.k8s.api.apps.v1.DeploymentStatus", "conditions"): ("merge", "type"),
    ("io.k8s.api.apps.v1.ReplicaSetStatus", "conditions"): ("merge", "type"),
    ("io.k8s.api.apps.v1.StatefulSetStatus", "conditions"): ("merge", "type"),
    ("io.k8s.api.apps.v1.DaemonSetStatus", "conditions"): ("merge", "type"),
    ("io.k8s.api.batch.v1.JobStatus", "conditions"): ("merge", "type"),
    ("io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerStatus", "conditions"): ("merge", "type"),
    ("io.k8s.api.policy.v1.PodDisruptionBudgetStatus", "conditions"): ("merge", "type"),
}

# (definition, property) -> upstream `x-kubernetes-list-type` ("atomic"/"set") or list-map
# keys, where k8s-openapi's DeepMerge (which follows the patch merge key) says otherwise.
LIST_TYPES = {
    (_CORE + "Container", "ports"): ["containerPort", "protocol"],
    (_CORE + "EphemeralContainer", "ports"): ["containerPort", "protocol"],
    (_CORE + "ServiceSpec", "ports"): ["port", "protocol"],
    (_CORE + "PodSpec", "topologySpreadConstraints"): ["topologyKey", "whenUnsatisfiable"],
    ("io.k8s.api.batch.v1.JobStatus", "conditions"): "atomic",
    ("io.k8s.api.apps.v1.StatefulSetSpec", "volumeClaimTemplates"): "atomic",
}

META = "io.k8s.apimachinery.pkg.apis.meta.v1."
EXTRA_ROOTS = [META + "Status", META + "DeleteOptions"]

# Definitions whose upstream Swagger 2.0 form differs from k8s-openapi's schemars output.
DESCRIPTION_ONLY = {
    "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1." + n
    for n in ["JSON", "JSONSchemaPropsOrBool", "JSONSchemaPropsOrArray", "JSONSchemaPropsOrStringArray"]
}
TYPE_OVERRIDES = {
    "io.k8s.apimachinery.pkg.util.intstr.IntOrString": {"type": "string", "format": "int-or-string"},
    "io.k8s.apimachinery.pkg.api.resource.Quantity": {"type": "string"},
}


def registry_dir(name):
    hits = sorted(glob.glob(os.path.expanduser(f"~/.cargo/registry/src/*/{name}")))
    if not hits:
        sys.exit(f"{name} not found in ~/.cargo/registry/src; run `cargo fetch` first")
    return hits[-1]


# ---------------------------------------------------------------------------------------
# A reader for the `json_schema!({...})` literal: JSON with trailing commas, Rust string
# literals and Rust expressions standing for references.


class Literal:
    def __init__(self, text, paths):
        self.s = text
        self.i = 0
        self.paths = paths  # Rust type path -> definition name

    def ws(self):
        while self.i < len(self.s) and self.s[self.i] in " \t\r\n":
            self.i += 1

    def peek(self):
        self.ws()
        return self.s[self.i]

    def expect(self, c):
        if self.peek() != c:
            raise ValueError(f"expected {c!r} at {self.s[self.i:self.i + 60]!r}")
        self.i += 1

    def string(self):
        self.expect('"')
        out = []
        s = self.s
        while True:
            c = s[self.i]
            if c == '"':
                self.i += 1
                return "".join(out)
            if c == "\\":
                e = s[self.i + 1]
                self.i += 2
                if e == "n":
                    out.append("\n")
                elif e == "t":
                    out.append("\t")
                elif e == "r":
                    out.append("\r")
                elif e == "0":
                    out.append("\0")
                elif e in "\"'\\":
                    out.append(e)
                elif e == "u":
                    end = s.index("}", self.i)
                    out.append(chr(int(s[self.i + 1:end], 16)))
                    self.i = end + 1
                elif e == "\n":
                    while s[self.i] in " \t\n\r":
                        self.i += 1
                else:
                    raise ValueError(f"unknown escape \\{e}")
                continue
            out.append(c)
            self.i += 1

    def skip_balanced(self):
        """Skips a parenthesized Rust expression, returning its text."""
        start = self.i
        depth = 0
        while True:
            c = self.s[self.i]
            if c == '"':
                self.string()
                continue
            self.i += 1
            if c in "({[":
                depth += 1
            elif c in ")}]":
                depth -= 1
                if depth == 0:
                    return self.s[start:self.i]

    def reference(self, expr):
        m = re.search(r"subschema_for::<([\w:]+)>", expr)
        if not m:
            raise ValueError(f"unknown expression {expr[:80]!r}")
        out = {"$ref": self.paths[m.group(1)]}
        d = re.search(r'insert\("description"\.into\(\), ', expr)
        if d:
            sub = Literal(expr[d.end():], self.paths)
            out["description"] = sub.string()
        return out

    def value(self):
        c = self.peek()
        if c == "{":
            self.i += 1
            obj = {}
            while self.peek() != "}":
                k = self.string()
                self.expect(":")
                obj[k] = self.value()
                if self.peek() == ",":
                    self.i += 1
            self.i += 1
            return obj
        if c == "[":
            self.i += 1
            arr = []
            while self.peek() != "]":
                arr.append(self.value())
                if self.peek() == ",":
                    self.i += 1
            self.i += 1
            return arr
        if c == '"':
            return self.string()
        if c == "(":
            return self.reference(self.skip_balanced())
        m = re.compile(r"__gen\.subschema_for::<[\w:]+>\(\)").match(self.s, self.i)
        if m:
            self.i = m.end()
            return self.reference(m.group(0))
        m = re.compile(r"true|false|null|-?\d+(\.\d+)?").match(self.s, self.i)
        if m:
            self.i = m.end()
            return json.loads(m.group(0))
        raise ValueError(f"unexpected {self.s[self.i:self.i + 60]!r}")


def schema_literal(text):
    """The text of the `json_schema!(...)` argument in an impl."""
    start = text.index("json_schema!(") + len("json_schema!")
    lit = Literal(text, {})
    lit.i = start
    body = lit.skip_balanced()
    return body[1:-1]


def block(text, header):
    """The `{...}` body of the impl starting with `header`, or None."""
    at = text.find(header)
    if at < 0:
        return None
    lit = Literal(text, {})
    lit.i = text.index("{", at)
    return lit.skip_balanced()


# ---------------------------------------------------------------------------------------


def main():
    root = os.path.join(registry_dir("k8s-openapi-0.29.0"), "src", API_MODULE)
    files = sorted(glob.glob(os.path.join(root, "**", "*.rs"), recursive=True))

    types = {}  # Rust path -> info
    rust_to_json = {}  # snake_case field -> JSON name (across all types)
    for f in files:
        text = open(f).read()
        m = re.search(r"impl crate::schemars::JsonSchema for (\w+) ", text)
        if not m:
            continue
        ty = m.group(1)
        module = os.path.relpath(os.path.dirname(f), root).split(os.sep)
        path = "crate::" + "::".join(module + [ty])
        name = re.search(r'fn schema_name\(\).*?\{\s*"([^"]+)"', text, re.S).group(1)
        info = {"name": name, "text": text, "module": module}
        res = block(text, f"impl crate::Resource for {ty} ")
        if res:
            consts = dict(re.findall(r'const (\w+): &\'static str = "([^"]*)";', res))
            info["gvk"] = {"group": consts["GROUP"], "version": consts["VERSION"], "kind": consts["KIND"]}
        lst = block(text, f"impl crate::ListableResource for {ty} ")
        if lst:
            info["list_kind"] = re.search(r'LIST_KIND: &\'static str = "([^"]*)"', lst).group(1)
        fields = dict((rs, js) for js, rs in re.findall(r'"([^"]+)" => Field::Key_(\w+),', text))
        info["fields"] = fields
        for rs, js in fields.items():
            rust_to_json.setdefault(rs, js)
        types[path] = info

    paths = {p: i["name"] for p, i in types.items()}
    by_name = {i["name"]: i for i in types.values()}

    # Served API packages, from the kinds table.
    kinds_src = open(os.path.join(os.path.dirname(__file__), "..", "apiserver", "src", "kinds", "mod.rs")).read()
    served = set()
    for t in re.findall(r"(?:typed|virtual_kind)::<([\w:]+)>", kinds_src):
        parts = t.split("::")
        if parts[0] == "core":
            served.add("api/core/v1")
        elif parts[0] == "apiextensions":
            served.add("apiextensions_apiserver/pkg/apis/apiextensions/v1")
        elif parts[0] == "apiregistration":
            served.add("kube_aggregator/pkg/apis/apiregistration/v1")
        elif parts[0] == "api":
            served.add("/".join(parts[:-1]))
    roots = [i["name"] for i in types.values() if "gvk" in i and "/".join(i["module"]) in served]
    roots += EXTRA_ROOTS

    defs = {}

    def convert(name):
        info = by_name[name]
        schema = Literal(schema_literal(info["text"]), paths).value()
        if name in DESCRIPTION_ONLY:
            schema = {"description": schema.get("description", "")}
        if name in TYPE_OVERRIDES:
            schema = {"description": schema.get("description", ""), **TYPE_OVERRIDES[name]}
        if "gvk" in info:
            schema["x-kubernetes-group-version-kind"] = [info["gvk"]]
            # Rust makes `metadata` a required field; upstream's kinds require none of it.
            if "metadata" in schema.get("required", []):
                schema["required"].remove("metadata")
                if not schema["required"]:
                    del schema["required"]
        props = schema.get("properties", {})
        dm = block(info["text"], "impl crate::DeepMerge for ")
        if dm:
            for m in re.finditer(r"merge_strategies::(list|map)::(\w+)\(\s*&mut self\.([\w#]+),", dm):
                kind, strat, field = m.groups()
                js = info["fields"].get(field.replace("r#", ""))
                if js not in props:
                    continue
                prop = props[js]
                if kind == "list" and strat == "set":
                    prop["x-kubernetes-list-type"] = "set"
                elif kind == "list" and strat == "map":
                    keys = re.match(r"\s*other\.[\w#]+,\s*&\[(.*?)\],", dm[m.end():], re.S).group(1)
                    names = re.findall(r"\|lhs, rhs\| lhs\.([\w#]+) ==", keys)
                    if names:
                        prop["x-kubernetes-list-type"] = "map"
                        prop["x-kubernetes-list-map-keys"] = [rust_to_json.get(n.replace("r#", ""), n) for n in names]
                elif strat == "atomic":
                    prop["x-kubernetes-map-type"] = "atomic"
        for (dname, pname), list_type in LIST_TYPES.items():
            if dname == name and pname in props:
                props[pname].pop("x-kubernetes-list-map-keys", None)
                if isinstance(list_type, list):
                    props[pname]["x-kubernetes-list-type"] = "map"
                    props[pname]["x-kubernetes-list-map-keys"] = list_type
                else:
                    props[pname]["x-kubernetes-list-type"] = list_type
        for (dname, pname), (strategy, key) in PATCH_STRATEGIES.items():
            if dname == name and pname in props:
                props[pname]["x-kubernetes-patch-strategy"] = strategy
                if key:
                    props[pname]["x-kubernetes-patch-merge-key"] = key
        return schema

    def refs(v, out):
        if isinstance(v, dict):
            if isinstance(v.get("$ref"), str):
                out.append(v["$ref"])
            for x in v.values():
                refs(x, out)
        elif isinstance(v, list):
            for x in v:
                refs(x, out)

    todo = list(roots)
    while todo:
        n = todo.pop()
        if n in defs:
            continue
        defs[n] = convert(n)
        found = []
        refs(defs[n], found)
        todo.extend(found)

    # The `<Kind>List` definitions.
    for name in roots:
        info = by_name[name]
        if "list_kind" not in info or "gvk" not in info:
            continue
        gvk = info["gvk"]
        list_name = name[: -len(gvk["kind"])] + info["list_kind"]
        kind_doc = defs[name]["properties"]
        defs[list_name] = {
            "description": f"{info['list_kind']} is a list of {gvk['kind']} objects.",
            "type": "object",
            "properties": {
                "apiVersion": kind_doc.get("apiVersion", {"type": "string"}),
                "items": {"description": f"List of {gvk['kind']} objects.", "type": "array", "items": {"$ref": name}},
                "kind": kind_doc.get("kind", {"type": "string"}),
                "metadata": {"description": "Standard list metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds", "$ref": META + "ListMeta"},
            },
            "required": ["items"],
            "x-kubernetes-group-version-kind": [{**gvk, "kind": info["list_kind"]}],
        }
        if META + "ListMeta" not in defs:
            defs[META + "ListMeta"] = convert(META + "ListMeta")

    data = json.dumps(defs, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    if len(sys.argv) > 1 and sys.argv[1] == "--json":
        sys.stdout.buffer.write(data)
    elif len(sys.argv) == 2:
        with open(sys.argv[1], "wb") as out:
            out.write(zlib.compress(data, 9))
    else:
        sys.exit("usage: gen-openapi-schemas.py OUTPUT.zz | --json")


if __name__ == "__main__":
    main()
