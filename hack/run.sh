#!/usr/bin/env bash
# `make run`: the operator with a demo ModelDeployment, on $KUBECONFIG if set, else on the
# embedded control plane (started if it is not running; `make cluster-down` stops it).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
BIN_DIR=$(hack/build-control-plane.sh 2>/dev/null | tail -n 1)

if [ -z "${KUBECONFIG:-}" ]; then
  if ! $PY -m devcluster status --dir .devcluster >/dev/null 2>&1; then
    $PY -m devcluster up --dir .devcluster
  fi
  export KUBECONFIG="$PWD/.devcluster/kubeconfig"
  echo "Using the embedded control plane (KUBECONFIG=$KUBECONFIG)"
else
  echo "Using the cluster in KUBECONFIG=$KUBECONFIG"
fi
kubectl() { "$BIN_DIR/kubectl" "$@"; }

kubectl apply --server-side --force-conflicts -f crds/modeldeploy.io_modeldeployments.yaml
kubectl wait --for=condition=Established crd/modeldeployments.modeldeploy.io --timeout=60s
kubectl apply -f "${DEMO:-manifests/examples/modeldeployment.yaml}"

cat <<MSG

The operator runs in the foreground (Ctrl-C stops it). In another shell:
  export KUBECONFIG=$KUBECONFIG PATH="$BIN_DIR:\$PATH"
  kubectl get md -w                      # phase, ready pods, version, revision, canary weight
  kubectl describe md                    # conditions and Events
  curl -s localhost:9090/metrics | grep modeldeploy_operator

MSG
export MODELDEPLOY_LOG_FORMAT="${MODELDEPLOY_LOG_FORMAT:-text}"
exec $PY -m modeldeploy
