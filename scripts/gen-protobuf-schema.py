#!/usr/bin/env python3
"""Generates apiserver/src/protobuf/schema.txt: the field table krust uses to decode
Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`) into JSON.

Sources (read from the local cargo registry, nothing is copied):
  * k8s-pb 0.9.x      prost-generated types: message names, field numbers, wire types,
                      repeated/map shape and the message type of each message field.
  * k8s-openapi 0.29  serde impls: the exact JSON name of each field (`"podIP" =>
                      Field::Key_pod_ip`), matched per struct by the snake_case name both
                      crates derive from the same upstream field name.
  * optionally, Go sources of k8s.io/api, k8s.io/apimachinery and
    k8s.io/apiextensions-apiserver (`--go-src DIR`, repeatable): whether a scalar field is
    a Go pointer and whether its JSON tag has omitempty. Upstream's marshalers write every
    non-pointer scalar, zero or not, so only this tells "replicas: 0 was set" (pointer)
    from "minReadySeconds: 0 is the default" (non-pointer, omitempty). Without Go sources a
    heuristic is used (see `omit_zero_fallback`).

Output format (one message per `M` line, then its fields):
    M <message>
    <field number> <json name> <type> [flags]
  type:  string bytes bool int32 int64 uint32 uint64 double float, or a message name
  flags: r = repeated, m = map (string keys; type is the value type),
         z = omit the field when it holds its zero value ("" / 0 / false / empty bytes),
         i = inline: an embedded Go struct whose fields are merged into the parent object
Message names are `<group>.<version>.<Kind>` for versioned packages (`apps.v1.Deployment`,
`meta.v1.ObjectMeta`) and `<package>.<Type>` otherwise (`intstr.IntOrString`,
`resource.Quantity`, `runtime.RawExtension`).

Regenerate (from the workspace root):
    python3 scripts/gen-protobuf-schema.py --go-src ../api --go-src ../apimachinery \
        --go-src ../apiextensions-apiserver > apiserver/src/protobuf/schema.txt
where ../api etc. are checkouts of github.com/kubernetes/{api,apimachinery,
apiextensions-apiserver} (any recent release; only `*.go` struct tags are read). The
committed table was made that way; leaving out --go-src gives the heuristic `z` flags.
The cargo registry must hold k8s-pb 0.9 and k8s-openapi 0.29 (`cargo fetch` in a crate
that depends on them).
"""

import argparse
import glob
import os
import re
import sys

# Packages whose every message is a root; anything they reference is pulled in too.
ROOT_PACKAGES = [
    "core.v1", "apps.v1", "batch.v1", "autoscaling.v1", "autoscaling.v2", "coordination.v1",
    "discovery.v1", "events.v1", "rbac.v1", "networking.v1", "policy.v1", "storage.v1",
    "apiextensions.v1", "scheduling.v1", "node.v1", "certificates.v1",
    "admissionregistration.v1", "authentication.v1", "authorization.v1", "meta.v1",
]

SCALARS = {"string", "bytes", "bool", "int32", "int64", "uint32", "uint64", "double", "float",
           "sint32", "sint64", "fixed32", "fixed64", "sfixed32", "sfixed64"}


def registry_dir(name):
    hits = sorted(glob.glob(os.path.expanduser(f"~/.cargo/registry/src/*/{name}")))
    if not hits:
        sys.exit(f"{name} not found in ~/.cargo/registry/src; run `cargo fetch` in a crate depending on it")
    return hits[-1]


def short_package(parts):
    """Module path components -> short package name (`apps.v1`, `intstr`)."""
    if len(parts) >= 2 and re.fullmatch(r"v\d+((alpha|beta)\d+)?", parts[-1]):
        return f"{parts[-2]}.{parts[-1]}"
    return parts[-1]


# ---------------------------------------------------------------------------------------
# k8s-pb


FIELD_ATTR = re.compile(r'#\[prost\((.*)\)\]')


def parse_prost(root):
    """Returns {message: (module parts, [(tag, snake, kind, type, repeated, is_map)])}."""
    messages = {}
    for path in glob.glob(os.path.join(root, "src", "**", "mod.rs"), recursive=True):
        rel = os.path.relpath(os.path.dirname(path), os.path.join(root, "src"))
        if rel == ".":
            continue
        parts = rel.split(os.sep)
        text = open(path).read()
        if "::prost::Message" not in text:
            continue
        pkg = short_package(parts)
        for m in re.finditer(r"pub struct (\w+) \{(\}|.*?\n\})", text, re.S):
            name, body = m.group(1), m.group(2)[:-1]
            # Drop doc comments, then split into attribute + declaration pairs.
            body = "\n".join(l for l in body.split("\n") if not l.strip().startswith("//"))
            fields = []
            for fm in re.finditer(r"#\[prost\(([^\]]*)\)\]\s*pub (r#)?(\w+):\s*([^;]*?),\s*(?=#\[prost|$)", body, re.S):
                attr, snake, rtype = fm.group(1), fm.group(3), re.sub(r"\s+", "", fm.group(4))
                tag = int(re.search(r'tag = "(\d+)"', attr).group(1))
                kind = attr.split(",")[0].strip()
                repeated = "repeated" in attr
                is_map = kind.startswith("btree_map") or kind.startswith("map")
                if is_map:
                    val = re.search(r'map = "string, (\w+)"', attr).group(1)
                    if val == "message":
                        # BTreeMap<String, path::Type>
                        inner = rtype[rtype.index("<") + 1: rtype.rindex(">")]
                        vpath = inner.split(",", 1)[1].rstrip(",")
                        ftype = resolve(parts, vpath)
                    else:
                        ftype = val
                elif kind == "message":
                    inner = rtype
                    for wrap in ("::core::option::Option<", "::prost::alloc::vec::Vec<", "::prost::alloc::boxed::Box<"):
                        if inner.startswith(wrap):
                            inner = inner[len(wrap):-1].rstrip(",")
                    for wrap in ("::prost::alloc::boxed::Box<",):
                        if inner.startswith(wrap):
                            inner = inner[len(wrap):-1].rstrip(",")
                    ftype = resolve(parts, inner)
                elif kind.startswith("bytes"):
                    ftype = "bytes"
                else:
                    ftype = kind
                    assert ftype in SCALARS, (name, snake, attr)
                fields.append((tag, snake, ftype, repeated, is_map))
            key = f"{pkg}.{name}"
            assert key not in messages, key
            messages[key] = (parts, fields)
    return messages


def resolve(parts, rust_path):
    """A prost type path relative to module `parts` -> short message name."""
    segs = rust_path.strip(",").split("::")
    cur = list(parts)
    while segs and segs[0] == "super":
        cur.pop()
        segs.pop(0)
    full = cur + segs[:-1]
    return f"{short_package(full)}.{segs[-1]}"


# ---------------------------------------------------------------------------------------
# k8s-openapi


def parse_openapi(root):
    """Returns ({(package, lowercased struct): {norm(json): json}}, {norm(json): json} global)."""
    per_struct, global_names = {}, {}
    versions = sorted((d for d in os.listdir(os.path.join(root, "src")) if re.fullmatch(r"v1_\d+", d)),
                      key=lambda d: int(d.split("_")[1]))
    for ver in versions:  # newest last, so it wins
        base = os.path.join(root, "src", ver)
        for path in glob.glob(os.path.join(base, "**", "*.rs"), recursive=True):
            text = open(path).read()
            sm = re.search(r"pub struct (\w+) \{", text)
            if not sm:
                continue
            parts = os.path.relpath(os.path.dirname(path), base).split(os.sep)
            names = dict((norm(json), json) for json, _ in re.findall(r'"([^"]+)" => Field::Key_(\w+),', text))
            if not names:
                continue
            per_struct[(short_package(parts), sm.group(1).lower())] = names
            global_names.update(names)
    return per_struct, global_names


def norm(name):
    """The comparable form of a field name: prost's `pod_ip`/`non_resource_ur_ls`/`r#type`
    and JSON's `podIP`/`nonResourceURLs`/`$ref` differ in case and separators only."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def camel(snake):
    head, *rest = snake.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


# ---------------------------------------------------------------------------------------
# Go sources (optional)

GO_FIELD = re.compile(r'^\s*(\w+)\s+(\S+)\s+`([^`]*)`')
GO_EMBEDDED = re.compile(r'^\s*()(\*?[\w.]+)\s+`([^`]*)`')


def parse_go(dirs):
    """Returns {(package, lowercased struct): {tag: (pointer, omitempty, inline)}}."""
    out = {}
    for d in dirs:
        for path in glob.glob(os.path.join(d, "**", "*.go"), recursive=True):
            if path.endswith("_test.go") or "generated" in os.path.basename(path) or "zz_" in os.path.basename(path):
                continue
            parts = os.path.relpath(os.path.dirname(path), d).split(os.sep)
            pkg = short_package(parts)
            struct = None
            for line in open(path, errors="replace"):
                sm = re.match(r"^type (\w+) struct \{", line)
                if sm:
                    struct = sm.group(1).lower()
                    continue
                if line.startswith("}"):
                    struct = None
                    continue
                if not struct:
                    continue
                fm = GO_FIELD.match(line) or GO_EMBEDDED.match(line)
                if not fm:
                    continue
                gotype, tags = fm.group(2), fm.group(3)
                pm = re.search(r'protobuf:"[^,]*,(\d+),', tags)
                if not pm:
                    continue
                jm = re.search(r'json:"([^"]*)"', tags)
                opts = jm.group(1).split(",")[1:] if jm else []
                omit = "omitempty" in opts or "omitzero" in opts
                # An anonymous field without a JSON name is promoted into its parent.
                inline = fm.group(1) == "" and (not jm or jm.group(1).split(",")[0] == "")
                out.setdefault((pkg, struct), {})[int(pm.group(1))] = (gotype.startswith("*"), omit, inline)
    return out


def omit_zero_fallback(ftype, required):
    """Without Go sources: a field k8s-openapi marks required is always emitted; otherwise
    an empty string is dropped (upstream's non-pointer strings are omitempty and pointer
    strings where "" means something are rare), while 0 and false are kept (many are
    pointers where zero is meaningful: replicas, automountServiceAccountToken...)."""
    return ftype == "string" and not required


# ---------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--go-src", action="append", default=[],
                    help="root of a k8s.io/api, apimachinery or apiextensions-apiserver source tree")
    args = ap.parse_args()

    pb_root, oa_root = registry_dir("k8s-pb-0.9.*"), registry_dir("k8s-openapi-0.29.*")
    messages = parse_prost(pb_root)
    per_struct, global_names = parse_openapi(oa_root)
    go = parse_go(args.go_src)

    # Required fields per k8s-openapi struct: non-Option members.
    required = {}
    for ver in sorted(glob.glob(os.path.join(oa_root, "src", "v1_*"))):
        for path in glob.glob(os.path.join(ver, "**", "*.rs"), recursive=True):
            text = open(path).read()
            sm = re.search(r"pub struct (\w+) \{(.*?)\n\}", text, re.S)
            if not sm:
                continue
            parts = os.path.relpath(os.path.dirname(path), ver).split(os.sep)
            req = {f for f, t in re.findall(r"pub (?:r#)?(\w+): (\S+)", sm.group(2)) if not t.startswith("Option<")}
            required[(short_package(parts), sm.group(1).lower())] = req

    # Reachable set.
    todo = [m for m in messages if m.rsplit(".", 1)[0] in ROOT_PACKAGES]
    seen = set()
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        for (_, _, ftype, _, _) in messages[m][1]:
            if ftype not in SCALARS:
                if ftype not in messages:
                    sys.exit(f"{m}: unknown message type {ftype}")
                todo.append(ftype)

    out = [
        "# GENERATED by scripts/gen-protobuf-schema.py from the k8s-pb 0.9 and k8s-openapi 0.29",
        "# crates" + (" and upstream Go sources" if go else "") + "; do not edit. Regenerate with:",
        "#   python3 scripts/gen-protobuf-schema.py --go-src ../api --go-src ../apimachinery \\",
        "#       --go-src ../apiextensions-apiserver > apiserver/src/protobuf/schema.txt",
        "# (checkouts of the kubernetes/{api,apimachinery,apiextensions-apiserver} repositories;",
        "# see the script's docstring)." + ("" if go else " THIS COPY WAS MADE WITHOUT --go-src: `z` flags are heuristic."),
        "# Format: `M <message>` then `<field no> <json name> <type> [flags]`;",
        "# flags: r repeated, m map (type = value type), z omit when zero, i inline (fields merged",
        "# into the parent's JSON object; json name `-`).",
    ]
    unmatched = []
    for m in sorted(seen):
        pkg, name = m.rsplit(".", 1)
        key = (pkg, name.lower())
        names = per_struct.get(key, {})
        gofields = go.get(key)
        req = required.get(key, set())
        out.append(f"M {m}")
        for (tag, snake, ftype, repeated, is_map) in sorted(messages[m][1]):
            flags = ""
            inline = False
            if gofields is not None and tag in gofields:
                inline = gofields[tag][2] and ftype in messages
            elif gofields is None and names and norm(snake) not in names and ftype in messages:
                # An embedded Go struct (`json:",inline"`): its fields show up in the parent.
                inline = all(norm(f[1]) in names for f in messages[ftype][1])
            json = names.get(norm(snake)) or global_names.get(norm(snake))
            if inline:
                flags += "i"
            elif json is None:
                json = camel(snake)
                if names:
                    unmatched.append(f"{m}.{snake}")
            if inline:
                json = "-"
            if is_map:
                flags += "m"
            elif repeated:
                flags += "r"
            elif ftype in SCALARS:
                if gofields is not None and tag in gofields:
                    pointer, omit, _ = gofields[tag]
                    if omit and not pointer:
                        flags += "z"
                elif omit_zero_fallback(ftype, snake in req):
                    flags += "z"
            out.append(f"{tag} {json} {ftype}{' ' + flags if flags else ''}")
    if unmatched:
        print(f"warning: JSON name guessed for {len(unmatched)} fields: {', '.join(unmatched[:20])}", file=sys.stderr)
    print("\n".join(out))
    print(f"{len(seen)} messages", file=sys.stderr)


if __name__ == "__main__":
    main()
