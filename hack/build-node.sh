#!/usr/bin/env bash
# Build what a real Kubernetes node needs beside the embedded control plane: kubelet and
# kube-proxy (the same throw-away wrapper module as hack/build-control-plane.sh), containerd v2
# with its runc shim and ctr (`go install`: containerd has no replace directives) and a static
# "pause" binary for the pod sandbox image. Everything lands in a cache folder keyed by version
# and is built once; runc and the CNI plugins come from Debian (see hack/node-packages.sh).
#
# Usage: hack/build-node.sh            (prints the bin directory on its last line)
# Env:   MODELDEPLOY_CACHE (default ~/.cache/modeldeploy), K8S_VERSION, CONTAINERD_VERSION
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.36.3}"
CONTAINERD_VERSION="${CONTAINERD_VERSION:-v2.2.9}"
CACHE="${MODELDEPLOY_CACHE:-$HOME/.cache/modeldeploy}"
KEY="node-k8s-${K8S_VERSION}-containerd-${CONTAINERD_VERSION}"
BIN="$CACHE/$KEY/bin"
WORK="$CACHE/$KEY/src"
STAGING_VERSION="v0.${K8S_VERSION#v1.}"
HERE="$(cd "$(dirname "$0")" && pwd)"
export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:--buildvcs=false}" GOTOOLCHAIN="${GOTOOLCHAIN:-local}"

mkdir -p "$BIN" "$WORK"
start_all=$SECONDS
log() { printf '[node build] %s\n' "$*" >&2; }
need() { [ ! -x "$BIN/$1" ]; }

# --- kubelet, kube-proxy ------------------------------------------------------------------
if need kubelet || need kube-proxy; then
  K8S_DIR="$WORK/kubernetes"
  mkdir -p "$K8S_DIR"
  if [ ! -f "$K8S_DIR/go.sum" ]; then
    t0=$SECONDS
    log "kubernetes $K8S_VERSION: resolving the node's dependencies ..."
    mod_dir=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"Dir": "\(.*\)",/\1/p')
    go_line=$(grep -m1 '^go ' "$mod_dir/go.mod")
    {
      echo "module modeldeploy.local/k8snodebuild"
      echo
      echo "$go_line"
      echo
      echo "require k8s.io/kubernetes $K8S_VERSION"
      echo
      echo "replace ("
      sed -n 's#^\s*\(k8s\.io/[a-z0-9-]*\) => \./staging/.*#\t\1 => \1 '"$STAGING_VERSION"'#p' "$mod_dir/go.mod"
      echo ")"
    } > "$K8S_DIR/go.mod"
    cat > "$K8S_DIR/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
GO
    (cd "$K8S_DIR" && go mod tidy -e >/dev/null 2>"$K8S_DIR/tidy.log" || { cat "$K8S_DIR/tidy.log" >&2; exit 1; })
    log "kubernetes $K8S_VERSION: modules ready in $((SECONDS - t0)) s"
  fi
  minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
  build_date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  ld="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld="$ld -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ld="$ld -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
  done
  for name in kubelet kube-proxy; do
    if need "$name"; then
      t0=$SECONDS
      log "$name: building ..."
      (cd "$K8S_DIR" && go build -trimpath -ldflags "$ld" -o "$BIN/$name.tmp" "k8s.io/kubernetes/cmd/$name")
      mv "$BIN/$name.tmp" "$BIN/$name"
      log "$name: built in $((SECONDS - t0)) s"
    fi
  done
fi

# --- containerd ---------------------------------------------------------------------------
if need containerd || need containerd-shim-runc-v2 || need ctr; then
  t0=$SECONDS
  log "containerd $CONTAINERD_VERSION: building containerd, containerd-shim-runc-v2, ctr ..."
  tmp_bin="$WORK/containerd-bin"
  mkdir -p "$tmp_bin"
  pkg=github.com/containerd/containerd/v2
  GOBIN="$tmp_bin" go install -trimpath -tags "no_btrfs no_devmapper no_zfs" \
    -ldflags "-s -w -X $pkg/version.Version=$CONTAINERD_VERSION" \
    "$pkg/cmd/containerd@$CONTAINERD_VERSION" \
    "$pkg/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION" \
    "$pkg/cmd/ctr@$CONTAINERD_VERSION"
  for name in containerd containerd-shim-runc-v2 ctr; do mv "$tmp_bin/$name" "$BIN/$name"; done
  log "containerd: built in $((SECONDS - t0)) s"
fi

# --- pause (the pod sandbox's process) ----------------------------------------------------
if need pause; then
  PAUSE_DIR="$WORK/pause"
  mkdir -p "$PAUSE_DIR"
  cp "$HERE/node/pause.go" "$PAUSE_DIR/main.go"
  printf 'module modeldeploy.local/pause\n\ngo 1.22\n' > "$PAUSE_DIR/go.mod"
  (cd "$PAUSE_DIR" && go build -trimpath -ldflags "-s -w" -o "$BIN/pause.tmp" .)
  mv "$BIN/pause.tmp" "$BIN/pause"
  log "pause: built"
fi

log "node binaries ready in $BIN ($((SECONDS - start_all)) s)"
echo "$BIN"
