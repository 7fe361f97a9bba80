#!/bin/bash
# measure.sh DIR : RSS + CPU time of each daemon of a ys-ceph cluster, disk used
D=$1; tck=$(getconf CLK_TCK)
printf '%-8s %7s %9s %9s\n' daemon pid rss_MiB cpu_s
for f in "$D"/run/*.pid; do
  p=$(cat "$f"); n=$(basename "$f" .pid)
  rss=$(awk '/VmRSS/{print $2}' /proc/$p/status)
  cpu=$(awk -v t=$tck '{print ($14+$15)/t}' /proc/$p/stat)
  printf '%-8s %7s %9.1f %9.2f\n' "$n" "$p" "$(echo "$rss/1024" | bc -l)" "$cpu"
done
echo "disk (allocated): $(du -sh "$D" | cut -f1)   apparent: $(du -sh --apparent-size "$D" | cut -f1)"
du -sh "$D"/* 2>/dev/null | sort -h | tail -4
