#!/bin/bash
# qemu-test.sh DIR : prove QEMU 7.2 uses the ys-ceph cluster in DIR through its
# rbd driver, authenticated as client.yunstack (qemu-img, qemu-io, snapshot,
# COW clone, then QMP hot-add/remove in a paused TCG VM).
set -euo pipefail
. "$1/env"
R=(rbd -c "$CEPH_CONF" --id "$CEPH_USER" --keyring "$CEPH_KEYRING")
url() { echo "rbd:$CEPH_POOL/$1:id=$CEPH_USER:conf=$CEPH_CONF:keyring=$CEPH_KEYRING"; }
t() { local s=$(date +%s.%N); "$@"; printf '   (%.2fs)\n' "$(echo "$(date +%s.%N) - $s" | bc)"; }

echo "== qemu-img create + info"
t qemu-img create -f raw "$(url img1)" 64M
qemu-img info "$(url img1)"
echo "== qemu-io: write patterns, read back and verify"
t qemu-io -f raw -c 'write -P 0xab 0 4M' -c 'write -P 0xcd 8M 1M' \
  -c 'read -P 0xab 0 4M' -c 'read -P 0xcd 8M 1M' -c 'read -P 0 4M 4M' "$(url img1)"
echo "== rbd snap create/protect + clone (client.yunstack)"
"${R[@]}" snap create "$CEPH_POOL/img1@s1"
"${R[@]}" snap protect "$CEPH_POOL/img1@s1"
"${R[@]}" clone "$CEPH_POOL/img1@s1" "$CEPH_POOL/clone1"
"${R[@]}" info "$CEPH_POOL/clone1" | grep -E 'parent|size|features'
echo "== read parent data through the clone, write to clone, check parent unchanged"
qemu-io -f raw -c 'read -P 0xab 0 4M' -c 'read -P 0xcd 8M 1M' -c 'write -P 0x11 0 1M' \
  -c 'read -P 0x11 0 1M' -c 'read -P 0xab 1M 3M' "$(url clone1)"
qemu-io -f raw -r -c 'read -P 0xab 0 4M' "$(url img1)"
"${R[@]}" ls -l "$CEPH_POOL"
"${R[@]}" du "$CEPH_POOL" 2>/dev/null || true

echo "== QMP hot-add / hot-remove in a paused TCG VM"
SOCK=$CEPH_DIR/run/qmp.sock
qemu-system-x86_64 -M q35 -accel tcg -nodefaults -display none -S -m 128 \
  -device pcie-root-port,id=rp1,chassis=1 \
  -qmp "unix:$SOCK,server=on,wait=off" -pidfile "$CEPH_DIR/run/qemu.pid" -daemonize
QPID=$(cat "$CEPH_DIR/run/qemu.pid")
/usr/bin/python3 - "$SOCK" "$CEPH_POOL" "$CEPH_CONF" "$CEPH_USER" "$CEPH_KEY" <<'EOF'
import json, socket, sys, time
sock, pool, conf, user, key = sys.argv[1:]
s = socket.socket(socket.AF_UNIX); s.connect(sock)
events = []; buf = b''
def line(timeout=None):
    global buf
    s.settimeout(timeout)
    while b'\n' not in buf:
        try: d = s.recv(65536)
        except socket.timeout: return None
        if not d: raise EOFError
        buf += d
    l, buf = buf.split(b'\n', 1); return json.loads(l)
def rx():
    while True:
        m = line()
        if 'event' in m: events.append(m); continue
        return m
def cmd(c, **a):
    s.sendall((json.dumps({'execute': c, 'arguments': a}) + '\n').encode())
    r = rx(); print(f'-> {c}: {json.dumps(r)[:300]}'); return r
line(); cmd('qmp_capabilities')
cmd('object-add', **{'qom-type': 'secret', 'id': 'ys-sec0', 'data': key, 'format': 'base64'})
t = time.time()
r = cmd('blockdev-add', driver='rbd', **{'node-name': 'ys-vol1'}, pool=pool, image='clone1',
        conf=conf, user=user, **{'key-secret': 'ys-sec0', 'auth-client-required': ['cephx']})
assert 'return' in r, r
print(f'   blockdev-add took {time.time()-t:.2f}s')
assert 'return' in cmd('device_add', driver='virtio-blk-pci', id='ys-vd1', drive='ys-vol1',
                       bus='rp1', serial='ys-vol-clone1')
blk = cmd('query-block')['return']
d = [b for b in blk if b.get('qdev', '').endswith('ys-vd1') or b.get('device') == 'ys-vd1'
     or b.get('inserted', {}).get('node-name') == 'ys-vol1']
print('   query-block:', json.dumps([{k: (b['inserted']['node-name'], b['inserted']['drv'], b['inserted']['image']['virtual-size'])
        if k == 'inserted' else b[k] for k in ('qdev', 'inserted')} for b in d]))
assert d, 'device not in query-block'
print('   qom serial:', cmd('qom-get', path='ys-vd1', property='serial')['return'])
cmd('device_del', id='ys-vd1')
gone = lambda: any(e['event'] == 'DEVICE_DELETED' and e['data'].get('device') == 'ys-vd1' for e in events)
def wait_gone(sec):
    deadline = time.time() + sec
    while time.time() < deadline and not gone():
        m = line(0.3)
        if m and 'event' in m: events.append(m)
    return gone()
print('   DEVICE_DELETED after device_del alone (2 s):', wait_gone(2))
if not gone():
    # no guest is running to acknowledge the ACPI/PCIe unplug; a reset completes it
    cmd('system_reset')
    print('   DEVICE_DELETED after system_reset:', wait_gone(5))
r = cmd('blockdev-del', **{'node-name': 'ys-vol1'}); assert 'return' in r, r
cmd('object-del', id='ys-sec0')
print('   remaining block nodes:', [n['node-name'] for n in cmd('query-named-block-nodes')['return']])
cmd('quit')
EOF
for _ in $(seq 50); do [ -d /proc/$QPID ] || break; sleep 0.1; done
echo "== cleanup images"
"${R[@]}" rm --no-progress "$CEPH_POOL/clone1"
"${R[@]}" snap unprotect "$CEPH_POOL/img1@s1"
"${R[@]}" snap rm --no-progress "$CEPH_POOL/img1@s1"
"${R[@]}" rm --no-progress "$CEPH_POOL/img1"
"${R[@]}" ls "$CEPH_POOL"; echo "pool empty: OK"
