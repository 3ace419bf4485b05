#!/usr/bin/env bash
# Build tests/argocd/runner — a tiny program that runs Lua health checks and resource actions
# with the Lua VM Argo CD embeds (github.com/yuin/gopher-lua, set up as Argo CD sets it up) —
# from the Go module proxy into the cache, keyed by a digest of its sources and the Go version,
# so an unchanged runner is built once and reused by every later run.
#
# Usage: hack/build-argocd-lua.sh          (prints the binary's path on its last line)
# Env:   MODELDEPLOY_CACHE (default ~/.cache/modeldeploy)
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=tests/argocd/runner
CACHE="${MODELDEPLOY_CACHE:-$HOME/.cache/modeldeploy}"
export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:--buildvcs=false}" GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
digest=$( { go version; cat "$SRC"/go.mod "$SRC"/go.sum "$SRC"/*.go; } | sha256sum | cut -c1-12)
DIR="$CACHE/argocd-lua-$digest"
if [ ! -x "$DIR/argocd-lua" ]; then
  t0=$SECONDS
  printf '[argocd-lua] building %s ...\n' "$SRC" >&2
  mkdir -p "$DIR"
  tmp=$(mktemp "$DIR/argocd-lua.tmp.XXXXXX")  # concurrent builds do not collide
  (cd "$SRC" && go build -mod=readonly -trimpath -ldflags "-s -w" -o "$tmp" .)
  mv "$tmp" "$DIR/argocd-lua"
  printf '[argocd-lua] built in %d s\n' "$((SECONDS - t0))" >&2
fi
echo "$DIR/argocd-lua"
