#!/bin/bash
# usage: ys-bench.sh LABEL qemu-img-target-args...
# Sequential 1 MiB I/O with qemu-img bench, 512 MiB per run, region 64M..576M.
# Rate computed from qemu-img's own "Run completed in N seconds" (excludes open/connect).
L=$1; shift
run() { local mode=$1 d=$2; shift 2
  local out; out=$(qemu-img bench -s 1M -c 512 -o 64M -S 1M -d $d $mode "$@" 2>&1)
  local s; s=$(sed -n 's/^Run completed in \([0-9.]*\) seconds\./\1/p' <<<"$out")
  [ -z "$s" ] && { echo "$L FAILED: $out"; return; }
  printf '%-24s %-5s depth=%-2s %8.1f MiB/s  (%ss)\n' "$L" "$([ -n "$mode" ] && echo write || echo read)" $d \
    $(echo "512 / $s" | bc -l) $s
}
run -w 1 "$@"; run "" 1 "$@"; run -w 8 "$@"; run "" 8 "$@"
