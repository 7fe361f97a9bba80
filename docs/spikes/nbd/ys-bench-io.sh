#!/bin/bash
# usage: ys-bench-io.sh LABEL qemu-io-target-args...
# Sequential 1 MiB I/O through qemu-io (which, unlike qemu-img bench in 7.2, accepts --object).
# N MiB starting at offset OFF MiB (defaults 384 @ 600M). Commands are fed on stdin.
# "sync" = one 1 MiB request at a time; "aio" = all N requests in flight, then aio_flush.
# Time = wall clock of the qemu-io process minus a baseline run that only opens the
# image and reads 4 KiB (open/connect/TLS handshake cost), median of those two runs.
L=$1; shift; N=${N:-384}; OFF=${OFF:-600}
gen() { for ((i=0;i<N;i++)); do echo "$1 -q $2 $(( (OFF+i) * 1048576 )) 1M"; done; [ "$1" = aio_write ] || [ "$1" = aio_read ] && echo aio_flush; }
wall() { local t0=$(date +%s.%N); "$@" >/dev/null 2>ys-bench.err; local rc=$?; local t1=$(date +%s.%N); [ $rc = 0 ] || { cat ys-bench.err >&2; }; echo "$t1 - $t0" | bc -l; }
base=$(echo "read -q 0 4k" | wall qemu-io "$@")
run() { local what=$1 cmd=$2 pat=$3; shift 3
  local t; t=$(gen $cmd "$pat" | wall qemu-io "$@")
  printf '%-22s %-10s %8.1f MiB/s  (%.3fs - %.3fs open)\n' "$L" "$what" $(echo "$N / ($t - $base)" | bc -l) $t $base
}
shift 0
run "write"       write     "-P 0xc3" "$@"
run "read"        read      "-P 0xc3" "$@"
run "aio_write"   aio_write "-P 0x3c" "$@"
run "aio_read"    aio_read  "-P 0x3c" "$@"
