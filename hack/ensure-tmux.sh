#!/usr/bin/env bash
# Install tmux (Debian's package) when it is missing: the kubectl plugin's --watch is tested in a
# real terminal, tmux's, read with capture-pane. Needs root and apt-get; elsewhere it says so and
# exits 0 (that test then skips with the reason).
set -euo pipefail
command -v tmux >/dev/null && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "[ensure-tmux] tmux is missing (install it as root: apt-get install tmux); skipping" >&2
  exit 0
fi
echo "[ensure-tmux] installing tmux ..." >&2
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq tmux >/dev/null 2>&1 || {
  apt-get update -qq >/dev/null
  apt-get install -y -qq tmux >/dev/null
}
