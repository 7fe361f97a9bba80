#!/bin/bash
# ceph-down.sh [--keep] DIR...   stop a cluster made by ceph-up.sh and remove it.
#   Stops the daemons by their pid files (TERM, osd first, KILL after 15 s;
#   YS_CEPH_DOWN_KILL=1: SIGKILL at once, fine for throw-away data), detaches
#   the loop devices it recorded (and any loop device backed by DIR/ys-*),
#   then removes DIR (unless --keep).
set -uo pipefail
KEEP=0
[ "${1:-}" = --keep ] && { KEEP=1; shift; }
[ $# -ge 1 ] || { echo "usage: $0 [--keep] DIR..." >&2; exit 2; }
# running = exists and is not a zombie (on this VM, PID 1 reaps orphans only every ~2 s)
running() { local st; st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null); [ -n "$st" ] && [ "$st" != Z ]; }
rc=0
for D in "$@"; do
  case $D in */ys-ceph-*) ;; *) echo "refusing: $D is not a ys-ceph dir" >&2; rc=1; continue ;; esac
  [ -d "$D" ] || continue
  sig=TERM; [ "${YS_CEPH_DOWN_KILL:-0}" = 1 ] && sig=KILL
  # OSD first (while the mon is still there to take its "going down"), then mgr + mon
  for group in "osd.*" "mgr.* mon.*"; do
    pids=()
    for pat in $group; do
      for f in "$D"/run/$pat.pid; do
        [ -f "$f" ] || continue
        p=$(cat "$f")
        # only signal it if it really is a daemon using this dir's config
        if [ -n "$p" ] && grep -qF -- "$D/ceph.conf" "/proc/$p/cmdline" 2>/dev/null; then
          kill -$sig "$p" 2>/dev/null && pids+=("$p")
        fi
      done
    done
    for _ in $(seq 150); do   # up to 15 s, then SIGKILL
      alive=0; for p in "${pids[@]}"; do running "$p" && alive=1; done
      [ $alive = 0 ] && break; sleep 0.1
    done
    for p in "${pids[@]}"; do running "$p" && { echo "SIGKILL $p" >&2; kill -KILL "$p"; }; done
  done
  # wait for SIGKILLed processes to be gone before touching their files
  for f in "$D"/run/*.pid; do
    p=$(cat "$f" 2>/dev/null) || continue
    for _ in $(seq 50); do running "$p" || break; sleep 0.1; done
  done
  # loop devices
  { cat "$D/loopdevs" 2>/dev/null
    for img in "$D"/ys-*.img; do [ -f "$img" ] && losetup -j "$img" -O NAME -n; done; } | sort -u |
  while read -r dev; do [ -n "$dev" ] && losetup -d "$dev" || true; done
  [ $KEEP = 1 ] || rm -rf "$D"
done
exit $rc
