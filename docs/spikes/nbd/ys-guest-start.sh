#!/bin/sh
# usage: ys-guest-start.sh QMP_SOCK MACHINE [extra qemu args...]
S=$1; M=$2; shift 2
exec qemu-system-x86_64 -machine $M -accel tcg -nodefaults -display none -S -m 256 \
  -qmp unix:$S,server=on,wait=off "$@"
