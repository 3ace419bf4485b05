#!/usr/bin/env bash
# Build a real Kubernetes control plane (kube-apiserver, kube-controller-manager, kube-scheduler,
# kubectl), etcd and kwok from the Go module proxy into a cache folder keyed by version.
#
# Why a wrapper module: k8s.io/kubernetes replaces its staging modules with ./staging/... paths, so
# `go install k8s.io/kubernetes/cmd/...@vX` is refused. A throw-away module that requires
# k8s.io/kubernetes and replaces every staging module with its published version builds the same
# code. Binaries already in the cache are kept; a finished build is reused by every later run.
#
# Usage: hack/build-control-plane.sh            (prints the bin directory on its last line)
# Env:   MODELDEPLOY_CACHE (default ~/.cache/modeldeploy), K8S_VERSION, ETCD_VERSION, KWOK_VERSION,
#        GATEWAY_API_VERSION, PROMETHEUS_OPERATOR_VERSION, HELM_VERSION (a v3 release)
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.36.3}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
KWOK_VERSION="${KWOK_VERSION:-v0.8.0}"
GATEWAY_API_VERSION="${GATEWAY_API_VERSION:-v1.6.3}"
PROMETHEUS_OPERATOR_VERSION="${PROMETHEUS_OPERATOR_VERSION:-v0.85.0}"
HELM_VERSION="${HELM_VERSION:-v3.22.0}"
CACHE="${MODELDEPLOY_CACHE:-$HOME/.cache/modeldeploy}"
KEY="k8s-${K8S_VERSION}-etcd-${ETCD_VERSION}-kwok-${KWOK_VERSION}"
BIN="$CACHE/$KEY/bin"
WORK="$CACHE/$KEY/src"
STAGING_VERSION="v0.${K8S_VERSION#v1.}"
export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:--buildvcs=false}" GOTOOLCHAIN="${GOTOOLCHAIN:-local}"

mkdir -p "$BIN" "$WORK"
start_all=$SECONDS
log() { printf '[control-plane build] %s\n' "$*" >&2; }

need() {  # need NAME -> true when the binary is missing from the cache
  [ ! -x "$BIN/$1" ]
}

timed_build() {  # timed_build NAME DIR PKG LDFLAGS
  local name=$1 dir=$2 pkg=$3 ldflags=$4 t0=$SECONDS
  if ! need "$name"; then return; fi
  log "$name: building $pkg ..."
  (cd "$dir" && go build -trimpath -ldflags "$ldflags" -o "$BIN/$name.tmp" "$pkg")
  mv "$BIN/$name.tmp" "$BIN/$name"
  log "$name: built in $((SECONDS - t0)) s"
}

# --- Kubernetes ---------------------------------------------------------------------------
if need kube-apiserver || need kube-controller-manager || need kube-scheduler || need kubectl; then
  K8S_DIR="$WORK/kubernetes"
  mkdir -p "$K8S_DIR"
  if [ ! -f "$K8S_DIR/go.sum" ]; then
    t0=$SECONDS
    log "kubernetes $K8S_VERSION: downloading the module and resolving dependencies ..."
    mod_dir=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"Dir": "\(.*\)",/\1/p')
    go_line=$(grep -m1 '^go ' "$mod_dir/go.mod")
    {
      echo "module modeldeploy.local/k8sbuild"
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
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
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
  for name in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
    timed_build "$name" "$K8S_DIR" "k8s.io/kubernetes/cmd/$name" "$ld"
  done
fi

# --- etcd ---------------------------------------------------------------------------------
if need etcd; then
  ETCD_DIR="$WORK/etcd"
  mkdir -p "$ETCD_DIR"
  if [ ! -f "$ETCD_DIR/go.sum" ]; then
    t0=$SECONDS
    log "etcd $ETCD_VERSION: resolving dependencies ..."
    mod_dir=$(go mod download -json "go.etcd.io/etcd/server/v3@$ETCD_VERSION" | sed -n 's/.*"Dir": "\(.*\)",/\1/p')
    go_line=$(grep -m1 '^go ' "$mod_dir/go.mod")
    printf 'module modeldeploy.local/etcdbuild\n\n%s\n\nrequire go.etcd.io/etcd/server/v3 %s\n' \
      "$go_line" "$ETCD_VERSION" > "$ETCD_DIR/go.mod"
    printf '//go:build tools\n\npackage tools\n\nimport _ "go.etcd.io/etcd/server/v3"\n' > "$ETCD_DIR/tools.go"
    (cd "$ETCD_DIR" && go mod tidy -e >/dev/null 2>"$ETCD_DIR/tidy.log" || { cat "$ETCD_DIR/tidy.log" >&2; exit 1; })
    log "etcd $ETCD_VERSION: modules ready in $((SECONDS - t0)) s"
  fi
  timed_build etcd "$ETCD_DIR" go.etcd.io/etcd/server/v3 \
    "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=$ETCD_VERSION"
fi

# --- kwok (fake nodes and pods) -----------------------------------------------------------
if need kwok; then
  t0=$SECONDS
  log "kwok: building sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION ..."
  GOBIN="$BIN" go install -trimpath -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION" \
    "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  log "kwok: built in $((SECONDS - t0)) s"
fi
# kwok's default stages (node heartbeat, pod ready, pod delete) ship in its module.
if [ ! -d "$CACHE/$KEY/kwok-stages" ]; then
  kwok_dir=$(go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | sed -n 's/.*"Dir": "\(.*\)",/\1/p')
  mkdir -p "$CACHE/$KEY/kwok-stages.tmp"
  cp -r "$kwok_dir/kustomize/stage/." "$CACHE/$KEY/kwok-stages.tmp/"
  chmod -R u+w "$CACHE/$KEY/kwok-stages.tmp"
  mv "$CACHE/$KEY/kwok-stages.tmp" "$CACHE/$KEY/kwok-stages"
fi

# Gateway API CRDs (HTTPRoute and GRPCRoute for the canary router's tests), from the module that
# ships them. The directory is named after the set, so adding a kind refreshes a warm cache.
GATEWAY_KINDS="gatewayclasses gateways httproutes grpcroutes referencegrants"
GATEWAY_DIR="$CACHE/gateway-api-$GATEWAY_API_VERSION-$(echo "$GATEWAY_KINDS" | sha256sum | cut -c1-8)"
if [ ! -d "$GATEWAY_DIR" ]; then
  gw_dir=$(go mod download -json "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION" | sed -n 's/.*"Dir": "\(.*\)",/\1/p')
  mkdir -p "$GATEWAY_DIR.tmp"
  for kind in $GATEWAY_KINDS; do
    cp "$gw_dir/config/crd/standard/gateway.networking.k8s.io_$kind.yaml" "$GATEWAY_DIR.tmp/"
  done
  chmod -R u+w "$GATEWAY_DIR.tmp"
  mv "$GATEWAY_DIR.tmp" "$GATEWAY_DIR"
fi
ln -sfn "$GATEWAY_DIR" "$CACHE/$KEY/gateway-api-crds"

# prometheus-operator's CRDs (ServiceMonitor, PodMonitor, PrometheusRule) for the dry runs of
# manifests/monitoring, from the module that ships them.
PROMOP_DIR="$CACHE/prometheus-operator-$PROMETHEUS_OPERATOR_VERSION"
if [ ! -d "$PROMOP_DIR" ]; then
  po_dir=$(go mod download -json "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION" | sed -n 's/.*"Dir": "\(.*\)",/\1/p')
  mkdir -p "$PROMOP_DIR.tmp"
  cp "$po_dir"/example/prometheus-operator-crd/monitoring.coreos.com_{servicemonitors,podmonitors,prometheusrules}.yaml "$PROMOP_DIR.tmp/"
  chmod -R u+w "$PROMOP_DIR.tmp"
  mv "$PROMOP_DIR.tmp" "$PROMOP_DIR"
fi
ln -sfn "$PROMOP_DIR" "$CACHE/$KEY/prometheus-operator-crds"

# helm (lint, template and the chart's tests), built like kwok: `go install` from the module proxy.
HELM_DIR="$CACHE/helm-$HELM_VERSION"
if [ ! -x "$HELM_DIR/helm" ]; then
  t0=$SECONDS
  log "helm: building helm.sh/helm/v3/cmd/helm@$HELM_VERSION ..."
  helm_tmp=$(mktemp -d "$CACHE/helm-$HELM_VERSION.tmp.XXXXXX")  # concurrent builds do not collide
  GOBIN="$helm_tmp" go install -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  mkdir -p "$HELM_DIR" && mv "$helm_tmp/helm" "$HELM_DIR/helm" && rm -rf "$helm_tmp"
  log "helm: built in $((SECONDS - t0)) s"
fi
ln -sfn "$HELM_DIR" "$CACHE/$KEY/helm"

# Prometheus (the canary analysis' PromQL source) and promtool (checks and unit tests of the alert
# rules), from Debian's package: unpacked, not installed, so nothing is started or configured
# system-wide.
if { [ ! -x "$CACHE/$KEY/prometheus/prometheus" ] || [ ! -x "$CACHE/$KEY/prometheus/promtool" ]; } && command -v apt-get >/dev/null; then
  tmp=$(mktemp -d)
  if (cd "$tmp" && { apt-get download prometheus >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && apt-get download prometheus >/dev/null 2>&1; }; }); then
    dpkg -x "$tmp"/prometheus_*.deb "$tmp/x"
    mkdir -p "$CACHE/$KEY/prometheus"
    cp "$tmp/x/usr/bin/prometheus" "$tmp/x/usr/bin/promtool" "$CACHE/$KEY/prometheus/"
    log "prometheus: $("$CACHE/$KEY/prometheus/prometheus" --version 2>&1 | head -n 1)"
  else
    log "prometheus: the Debian package could not be downloaded; its tests will be skipped"
  fi
  rm -rf "$tmp"
fi

log "all binaries ready in $BIN ($((SECONDS - start_all)) s)"
echo "$BIN"
