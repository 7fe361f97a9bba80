#!/bin/bash
# verify-clean.sh : exit 0 if no ys-ceph leftovers (ceph daemons, qemu using a
# ys-ceph dir, loop devices backed by ys-* files in a ys-ceph dir, dirs, ports)
bad=0
# zombies (stat Z) are exited processes that PID 1 has not reaped yet: not counted
ps -eo pid,stat,comm,args | awk '$3 ~ /^ceph-(mon|mgr|osd)$/ && $2 !~ /^Z/' | grep . && { echo "LEFT: ceph daemons"; bad=1; }
ps -eo pid,args | grep -v grep | grep -E 'qemu-system.*ys-ceph' && { echo "LEFT: qemu"; bad=1; }
losetup -a | grep -E '/ys-ceph-.*/ys-' && { echo "LEFT: loop devices"; bad=1; }
ls -d /tmp/ys-ceph-* 2>/dev/null && { echo "LEFT: cluster dirs"; bad=1; }
ss -Htlnp | grep -E '"ceph-(mon|mgr|osd)"' && { echo "LEFT: listening sockets"; bad=1; }
[ $bad = 0 ] && echo "clean: no ceph daemons, ys-ceph qemu, loop devices, dirs or ceph listening ports left"
exit $bad
