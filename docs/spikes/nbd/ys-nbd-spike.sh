#!/bin/bash
# End-to-end re-runnable spike: qemu-storage-daemon NBD export with TLS-PSK, clients, guest attach, teardown.
# Needs: qemu-utils, qemu-system-x86, qemu-block-extra not required; /work/main/.venv (qemu.qmp) for the python helpers.
# usage: ys-nbd-spike.sh [WORKDIR]   (default /tmp/ys-nbd-spike-e2e; removed at the end)
set -u
HERE=$(cd "$(dirname "$0")" && pwd); W=${1:-/tmp/ys-nbd-spike-e2e}; PY=/work/main/.venv/bin/python
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for i in $(seq 50); do alive=0; for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break; sleep 0.1; done; rm -rf "$W"; }
trap cleanup EXIT
mkdir -p "$W"/{server-psk,client-a,client-b,client-bad} && cd "$W" || exit 1
freeport() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
P=$(freeport); V=$(python3 -c 'import uuid;print(uuid.uuid4())')
KA=$(openssl rand -hex 32); KB=$(openssl rand -hex 32)
printf 'ys-host-a:%s\n' "$KA" > server-psk/keys.psk                 # the server file IS the ACL
printf 'ys-host-a:%s\n' "$KA" > client-a/keys.psk
printf 'ys-host-b:%s\n' "$KB" > client-b/keys.psk                   # valid-looking, not in server file
printf 'ys-host-a:%s\n' "$(openssl rand -hex 32)" > client-bad/keys.psk   # right identity, wrong key
openssl dhparam -out server-psk/dh-params.pem 2048 2>/dev/null     # else QEMU generates DH params at start (0.5-3 s)
chmod 600 */keys.psk
echo "== 1. volume"; qemu-img create -q -f qcow2 vol.qcow2 1G; qemu-io -f qcow2 -c 'write -q -P 0xa5 0 4M' vol.qcow2
echo "== 2. daemon on 127.0.0.1:$P export $V"
qemu-storage-daemon --daemonize \
  --chardev socket,id=ys-qmp0,path=$W/qsd-qmp.sock,server=on,wait=off --monitor chardev=ys-qmp0 \
  --object tls-creds-psk,id=tls0,endpoint=server,dir=$W/server-psk \
  --blockdev driver=file,node-name=file0,filename=$W/vol.qcow2 \
  --blockdev driver=qcow2,node-name=vol0,file=file0 \
  --nbd-server addr.type=inet,addr.host=127.0.0.1,addr.port=$P,tls-creds=tls0 \
  --export type=nbd,id=exp0,node-name=vol0,name=$V,writable=on \
  --pidfile $W/qsd.pid || exit 1
PIDS+=($(cat qsd.pid))
cli() { local d=$1 u=$2; shift 2; "$@" --object tls-creds-psk,id=tls0,endpoint=client,dir=$W/$d,username=$u \
  --image-opts driver=nbd,server.type=inet,server.host=127.0.0.1,server.port=$P,export=$V,tls-creds=tls0; }
echo "== 3a. authorised client"; cli client-a ys-host-a qemu-io -c 'read -q -P 0xa5 0 4M' -c 'write -q -P 0x3c 8M 1M' -c 'read -q -P 0x3c 8M 1M' && echo OK
echo "== 3b. wrong key";          cli client-bad ys-host-a qemu-img info 2>&1 | tail -1
echo "== 3b. unknown identity";   cli client-b ys-host-b qemu-img info 2>&1 | tail -1
echo "== runtime: append ys-host-b to server keys.psk (no QMP)"; printf 'ys-host-b:%s\n' "$KB" >> server-psk/keys.psk
cli client-b ys-host-b qemu-img info 2>&1 | head -1
echo "== 3c. guest attach/detach (q35, native PCIe hotplug so device_del completes without a guest OS)"
qemu-system-x86_64 -machine q35 -accel tcg -nodefaults -display none -S -m 128 -daemonize -pidfile $W/guest.pid \
  -global ICH9-LPC.acpi-pci-hotplug-with-bridge-support=off \
  -device pcie-root-port,id=ys-rp1,chassis=1,bus=pcie.0,addr=0x3 -qmp unix:$W/guest.sock,server=on,wait=off || exit 1
PIDS+=($(cat guest.pid))
$PY "$HERE/ys-guest-attach.py" $W/guest.sock $P $V $W/client-a ys-host-a --bus ys-rp1 --reconnect-delay 15 \
  | grep -E '"execute": "(object-add|blockdev-add|device_add|device_del|blockdev-del|object-del)"|"error"|DEVICE_DELETED|"result"'
echo "== runtime export add/del over QMP"
$PY "$HERE/ys-qmp.py" $W/qsd-qmp.sock block-export-del '{"id":"exp0"}' query-block-exports \
  block-export-add "{\"type\":\"nbd\",\"id\":\"exp0\",\"node-name\":\"vol0\",\"name\":\"$V\",\"writable\":true}" query-block-exports
echo "== 6. teardown"; cleanup; trap - EXIT
sleep 0.5; ss -ltn | grep -c ":$P " | sed 's/^/listeners on port: /'; ls -d "$W" 2>/dev/null || echo "workdir removed"
for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && echo "STILL RUNNING: $p"; done; echo done
