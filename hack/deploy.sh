#!/usr/bin/env bash
# kubebuilder's `make deploy` / `make undeploy`: the install manifests with your images, applied
# to the cluster $KUBECONFIG (or kubectl's default) names.
#
#   hack/deploy.sh apply|delete IMG SERVING_IMG [OVERLAY]
#
# IMG is the operator image, SERVING_IMG the default serving image (MODELDEPLOY_SERVING_IMAGE);
# both are set through kustomize's `images:` field in a throw-away overlay over
# manifests/OVERLAY (cluster-wide by default, or namespaced).
set -euo pipefail
action=$1 img=$2 serving_img=$3 overlay=${4:-cluster-wide}
repo="$(cd "$(dirname "$0")/.." && pwd)"
KUBECTL="${KUBECTL:-$(command -v kubectl || true)}"
if [ -z "$KUBECTL" ]; then
  KUBECTL="$(ls "${MODELDEPLOY_CACHE:-$HOME/.cache/modeldeploy}"/k8s-*/bin/kubectl 2>/dev/null | head -n 1)"
fi
[ -n "$KUBECTL" ] || { echo "deploy: no kubectl on PATH (make control-plane builds one)" >&2; exit 1; }

image_entry() {  # image_entry NAME REF -> one kustomize images: entry
  local name=$1 ref=$2
  if [[ "$ref" == *@* ]]; then
    printf '  - {name: %s, newName: "%s", digest: "%s"}\n' "$name" "${ref%@*}" "${ref#*@}"
  elif [[ "${ref##*/}" == *:* ]]; then
    printf '  - {name: %s, newName: "%s", newTag: "%s"}\n' "$name" "${ref%:*}" "${ref##*:}"
  else
    printf '  - {name: %s, newName: "%s"}\n' "$name" "$ref"
  fi
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
{
  echo "apiVersion: kustomize.config.k8s.io/v1beta1"
  echo "kind: Kustomization"
  echo "resources:"
  echo "  - $(realpath --relative-to="$tmp" "$repo/manifests/$overlay")"
  echo "images:"
  image_entry ghcr.io/modeldeploy/operator "$img"
  image_entry ghcr.io/modeldeploy/modelserver "$serving_img"
} > "$tmp/kustomization.yaml"
case "$action" in
  apply) "$KUBECTL" apply --server-side --force-conflicts -k "$tmp" ;;
  delete) "$KUBECTL" delete --ignore-not-found -k "$tmp" ;;
  render) "$KUBECTL" kustomize "$tmp" ;;
  *) echo "deploy: unknown action $action" >&2; exit 2 ;;
esac
