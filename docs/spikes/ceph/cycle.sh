#!/bin/bash
# cycle.sh BACKEND N : N x (ceph-up, qemu-test, measure, ceph-down, verify-clean), timed
set -euo pipefail
cd "$(dirname "$0")"; B=${1:-file}; N=${2:-2}
now() { date +%s.%N; }
for i in $(seq "$N"); do
  echo "##### run $i backend=$B"
  t0=$(now)
  out=$(YS_CEPH_OSD_BACKEND=$B ./ceph-up.sh)
  t1=$(now); D=$(echo "$out" | sed -n 's/^CEPH_DIR=//p')
  ./qemu-test.sh "$D" > "qemu-test-$B-run$i.out" 2>&1 && echo "qemu-test: OK" || { echo "qemu-test FAILED"; tail "qemu-test-$B-run$i.out"; }
  t2=$(now)
  ./measure.sh "$D"
  t3=$(now)
  ./ceph-down.sh "$D"
  t4=$(now)
  ./verify-clean.sh
  printf 'TIMES run %d (%s): up %.1fs, qemu-test %.1fs, down %.1fs, total up+test+down %.1fs\n' \
    "$i" "$B" "$(echo "$t1-$t0"|bc)" "$(echo "$t2-$t1"|bc)" "$(echo "$t4-$t3"|bc)" "$(echo "$t4-$t0-($t3-$t2)"|bc)"
done
