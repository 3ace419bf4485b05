#!/usr/bin/env bash
# Install the Debian packages that images and the real node need, when any is missing:
#   runc                         the OCI runtime containerd's shim runs (and image tests run)
#   containernetworking-plugins  bridge, host-local, loopback, portmap in /usr/lib/cni
#   mmdebstrap                   the base root filesystem of the images, from Debian's archive
#   buildah                      builds the images from their Dockerfiles without a daemon
#   umoci                        unpacks an OCI image into a runc bundle (image tests)
#   iptables, conntrack          kube-proxy, kubelet and the node's traffic guards
# Needs root and apt-get; elsewhere it says what is missing and exits 0 (the tests then skip
# with the reason).
set -euo pipefail
PACKAGES=(runc containernetworking-plugins mmdebstrap buildah umoci iptables conntrack)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "[node-packages] missing: ${missing[*]} (install them as root with apt-get); skipping" >&2
  exit 0
fi
echo "[node-packages] installing ${missing[*]} ..." >&2
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 || {
  apt-get update -qq >/dev/null
  apt-get install -y -qq "${missing[@]}" >/dev/null
}
