#!/work/main/.venv/bin/python
"""Attach/detach an NBD+TLS-PSK volume to a running QEMU guest over QMP (qemu.qmp).
usage: ys-guest-attach.py QMP_SOCK NBD_PORT EXPORT PSK_DIR PSK_USER [--bus BUS] [--cont] [--keep]
Prints every QMP command/reply/event as JSON lines."""
import argparse, asyncio, json, uuid
from qemu.qmp import QMPClient, ExecuteError

def log(kind, obj):
    print(json.dumps({kind: obj}), flush=True)

async def run(a):
    c = QMPClient('ys-guest')
    await c.connect(a.qmp)
    async def x(cmd, args=None, ok_fail=False):
        log('->', {'execute': cmd, 'arguments': args})
        try:
            r = await c.execute(cmd, args)
            log('<-', {'return': r}); return r
        except ExecuteError as e:
            log('<-', {'error': str(e)})
            if not ok_fail: raise
            return None

    vid = a.export
    node, dev, tls = f'ys-nbd-{vid[:8]}', f'ys-vd-{vid[:8]}', f'ys-tls-{vid[:8]}'
    serial = str(uuid.UUID(vid))[:20]
    if a.cont:
        await x('cont')
    await x('object-add', {'qom-type': 'tls-creds-psk', 'id': tls, 'endpoint': 'client',
                           'dir': a.psk_dir, 'username': a.psk_user})
    nbd = {'driver': 'nbd', 'node-name': node,
           'server': {'type': 'inet', 'host': '127.0.0.1', 'port': str(a.port)},
           'export': vid, 'tls-creds': tls}
    if a.reconnect_delay is not None:
        nbd['reconnect-delay'] = a.reconnect_delay
    await x('blockdev-add', nbd)
    dev_args = {'driver': 'virtio-blk-pci', 'drive': node, 'id': dev, 'serial': serial}
    if a.bus:
        dev_args['bus'] = a.bus
    if await x('device_add', dev_args, ok_fail=True) is None:
        # roll back so a failed attach leaves nothing behind
        await x('blockdev-del', {'node-name': node}, ok_fail=True)
        await x('object-del', {'id': tls}, ok_fail=True)
        log('result', {'attached': False}); await c.disconnect(); return
    blk = await x('query-block')
    log('summary', [{'qdev': b.get('qdev'), 'node': b.get('inserted', {}).get('node-name'),
                     'file': b.get('inserted', {}).get('file')} for b in blk])
    nodes = await x('query-named-block-nodes', {'flat': True})
    log('summary', [(n['node-name'], n['drv'], n['file']) for n in nodes])
    pci = await x('query-pci')
    def walk(devs):
        for d in devs:
            yield (d['bus'], d['slot'], d.get('qdev_id'), d['class_info'].get('desc'))
            yield from walk(d.get('pci_bridge', {}).get('devices', []))
    log('summary', [t for bus in pci for t in walk(bus['devices'])])
    if a.keep:
        return
    await x('device_del', {'id': dev})
    # wait for DEVICE_DELETED
    got = False
    try:
        async with asyncio.timeout(a.unplug_timeout) :
            async for ev in c.events:
                log('event', {'event': ev['event'], 'data': dict(ev.get('data', {}))})
                if ev['event'] == 'DEVICE_DELETED' and ev['data'].get('device') == dev:
                    got = True; break
    except TimeoutError:
        log('note', f'no DEVICE_DELETED for {dev} within {a.unplug_timeout}s')
    await x('qom-list', {'path': '/machine/peripheral'}, ok_fail=True)
    await x('blockdev-del', {'node-name': node}, ok_fail=True)
    await x('object-del', {'id': tls}, ok_fail=True)
    log('result', {'device_deleted_event': got})
    await c.disconnect()

p = argparse.ArgumentParser()
p.add_argument('qmp'); p.add_argument('port'); p.add_argument('export')
p.add_argument('psk_dir'); p.add_argument('psk_user')
p.add_argument('--bus'); p.add_argument('--cont', action='store_true')
p.add_argument('--keep', action='store_true')
p.add_argument('--reconnect-delay', type=int)
p.add_argument('--unplug-timeout', type=float, default=5)
asyncio.run(run(p.parse_args()))
