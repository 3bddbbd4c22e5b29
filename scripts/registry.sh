#!/usr/bin/env bash
# A local OCI registry for tests and users: Debian's docker-registry on 127.0.0.1:PORT, plus a
# busybox image built from Debian's busybox-static with umoci and pushed with skopeo.
#
#   scripts/registry.sh start [--port 5000] [--dir DIR] [--htpasswd FILE]
#   scripts/registry.sh stop [--port 5000] [--dir DIR]
#   scripts/registry.sh push-busybox [--port 5000] [--creds USER:PASS]
#   scripts/registry.sh archive OUT.tar      # busybox as an OCI archive (air-gap import)
#
# DIR defaults to /tmp/krust-registry-PORT; it holds config.yml, the storage (data/), the pid
# file (registry.pid) and the log (registry.log). The image is
# 127.0.0.1:PORT/library/busybox:1.35 (also tagged latest); the archive names it
# docker.io/library/busybox:1.35.
set -euo pipefail

PORT=5000
DIR=""
HTPASSWD=""
CREDS=""
BUSYBOX_TAG=1.35

die() { echo "registry.sh: $*" >&2; exit 1; }

need() { # need COMMAND DEBIAN-PACKAGE
    command -v "$1" >/dev/null 2>&1 ||
        die "'$1' not found: install the Debian package '$2' (apt-get install -y $2)"
}

usage() {
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

parse_opts() {
    while [ $# -gt 0 ]; do
        case "$1" in
            --port) PORT="$2"; shift 2 ;;
            --dir) DIR="$2"; shift 2 ;;
            --htpasswd) HTPASSWD="$2"; shift 2 ;;
            --creds) CREDS="$2"; shift 2 ;;
            *) die "unknown option '$1'" ;;
        esac
    done
    [[ "$PORT" =~ ^[0-9]+$ ]] || die "--port needs a number, got '$PORT'"
    [ -n "$DIR" ] || DIR="/tmp/krust-registry-$PORT"
}

# HTTP status of GET /v2/ (000 if nothing answers).
v2_status() {
    curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$PORT/v2/" 2>/dev/null || true
}

answering() {
    local s
    s="$(v2_status)"
    [ "$s" = 200 ] || [ "$s" = 401 ]
}

cmd_start() {
    need curl curl
    need docker-registry docker-registry
    if answering; then
        echo "registry already answering on 127.0.0.1:$PORT"
        return 0
    fi
    mkdir -p "$DIR/data"
    DIR="$(cd "$DIR" && pwd)"
    {
        echo "version: 0.1"
        echo "log:"
        echo "  level: warn"
        echo "  accesslog:"
        echo "    disabled: true"
        echo "storage:"
        echo "  filesystem:"
        echo "    rootdirectory: $DIR/data"
        echo "  delete:"
        echo "    enabled: true"
        echo "http:"
        echo "  addr: 127.0.0.1:$PORT"
        if [ -n "$HTPASSWD" ]; then
            [ -f "$HTPASSWD" ] || die "htpasswd file '$HTPASSWD' not found"
            echo "auth:"
            echo "  htpasswd:"
            echo "    realm: krust-registry"
            echo "    path: $(cd "$(dirname "$HTPASSWD")" && pwd)/$(basename "$HTPASSWD")"
        fi
    } >"$DIR/config.yml"
    # setsid: the registry outlives this script and ignores the caller's terminal signals.
    setsid docker-registry serve "$DIR/config.yml" >"$DIR/registry.log" 2>&1 </dev/null &
    echo $! >"$DIR/registry.pid"
    local i
    for i in $(seq 1 100); do
        if answering; then
            echo "registry listening on 127.0.0.1:$PORT (dir $DIR, pid $(cat "$DIR/registry.pid"))"
            return 0
        fi
        if ! kill -0 "$(cat "$DIR/registry.pid")" 2>/dev/null; then
            cat "$DIR/registry.log" >&2 || true
            die "docker-registry exited during start-up (log above)"
        fi
        sleep 0.1
    done
    die "docker-registry did not answer on 127.0.0.1:$PORT/v2/ within 10 s (see $DIR/registry.log)"
}

cmd_stop() {
    local pidfile="$DIR/registry.pid"
    if [ ! -f "$pidfile" ]; then
        echo "no pid file $pidfile: nothing to stop"
        return 0
    fi
    local pid
    pid="$(cat "$pidfile")"
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        local i
        for i in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
    echo "registry on 127.0.0.1:$PORT stopped"
}

# build_layout LAYOUT: an OCI layout holding busybox:$BUSYBOX_TAG and busybox:latest.
build_layout() {
    local layout="$1" bundle
    need umoci umoci
    [ -x /bin/busybox ] || die "/bin/busybox not found: install the Debian package 'busybox-static'"
    /bin/busybox --list >/dev/null 2>&1 ||
        die "/bin/busybox cannot list its applets: install the Debian package 'busybox-static'"
    bundle="$(mktemp -d)"
    umoci init --layout "$layout"
    umoci new --image "$layout:$BUSYBOX_TAG"
    umoci unpack --image "$layout:$BUSYBOX_TAG" "$bundle/b" >/dev/null
    local rootfs="$bundle/b/rootfs"
    mkdir -p "$rootfs/bin" "$rootfs/etc" "$rootfs/root" "$rootfs/tmp"
    chmod 1777 "$rootfs/tmp"
    chmod 0700 "$rootfs/root"
    cp /bin/busybox "$rootfs/bin/busybox"
    chmod 0755 "$rootfs/bin/busybox"
    local applet
    for applet in $(/bin/busybox --list); do
        [ "$applet" = busybox ] && continue
        ln -sf busybox "$rootfs/bin/$applet"
    done
    printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' 'nobody:x:65534:65534:nobody:/nonexistent:/bin/false' \
        >"$rootfs/etc/passwd"
    printf '%s\n' 'root:x:0:' 'nobody:x:65534:' >"$rootfs/etc/group"
    umoci repack --image "$layout:$BUSYBOX_TAG" "$bundle/b" >/dev/null
    umoci config --image "$layout:$BUSYBOX_TAG" --config.cmd sh \
        --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
    umoci tag --image "$layout:$BUSYBOX_TAG" latest
    umoci gc --layout "$layout"
    rm -rf "$bundle"
}

tag_exists() { # tag_exists TAG
    local s args=()
    [ -n "$CREDS" ] && args=(-u "$CREDS")
    s="$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "${args[@]}" \
        -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
        -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
        -H 'Accept: application/vnd.oci.image.index.v1+json' \
        "http://127.0.0.1:$PORT/v2/library/busybox/manifests/$1" 2>/dev/null || true)"
    [ "$s" = 200 ]
}

cmd_push_busybox() {
    need curl curl
    need skopeo skopeo
    answering || die "no registry answers on 127.0.0.1:$PORT (run: $0 start --port $PORT)"
    if tag_exists "$BUSYBOX_TAG" && tag_exists latest; then
        echo "127.0.0.1:$PORT/library/busybox:$BUSYBOX_TAG already present"
        return 0
    fi
    local work
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' RETURN
    build_layout "$work/layout"
    local creds=()
    [ -n "$CREDS" ] && creds=(--dest-creds "$CREDS")
    local tag
    for tag in "$BUSYBOX_TAG" latest; do
        skopeo copy --quiet --dest-tls-verify=false "${creds[@]}" \
            "oci:$work/layout:$tag" "docker://127.0.0.1:$PORT/library/busybox:$tag"
    done
    echo "pushed 127.0.0.1:$PORT/library/busybox:$BUSYBOX_TAG and :latest"
}

cmd_archive() {
    local out="${1:-}"
    [ -n "$out" ] || die "usage: $0 archive OUT.tar"
    need skopeo skopeo
    local work
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' RETURN
    build_layout "$work/layout"
    rm -f "$out"
    skopeo copy --quiet "oci:$work/layout:$BUSYBOX_TAG" \
        "oci-archive:$out:docker.io/library/busybox:$BUSYBOX_TAG"
    echo "wrote $out (docker.io/library/busybox:$BUSYBOX_TAG)"
}

[ $# -ge 1 ] || usage
cmd="$1"
shift
case "$cmd" in
    start) parse_opts "$@"; cmd_start ;;
    stop) parse_opts "$@"; cmd_stop ;;
    push-busybox) parse_opts "$@"; cmd_push_busybox ;;
    archive) cmd_archive "$@" ;;
    -h|--help|help) usage ;;
    *) die "unknown command '$cmd' (start, stop, push-busybox, archive)" ;;
esac
