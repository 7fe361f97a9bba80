#!/work/main/.venv/bin/python
"""Tiny QMP CLI: ys-qmp.py SOCKET CMD [JSON-ARGS] [CMD [JSON-ARGS]]...
Uses qemu.qmp (async QMPClient). Prints each command + reply as JSON; errors printed, not raised."""
import asyncio, json, sys
from qemu.qmp import QMPClient, ExecuteError

async def main(sock, items):
    c = QMPClient('ys')
    await c.connect(sock)
    i = 0
    while i < len(items):
        cmd = items[i]; args = None
        if i + 1 < len(items) and items[i + 1].lstrip().startswith('{'):
            args = json.loads(items[i + 1]); i += 1
        i += 1
        try:
            r = await c.execute(cmd, args)
            print(json.dumps({'cmd': cmd, 'args': args, 'return': r}))
        except ExecuteError as e:
            print(json.dumps({'cmd': cmd, 'args': args, 'error': {'class': e.error_class, 'desc': str(e)}}))
    await c.disconnect()

asyncio.run(main(sys.argv[1], sys.argv[2:]))
