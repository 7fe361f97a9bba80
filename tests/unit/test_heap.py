from __future__ import annotations

import asyncio

from yunstack import heap


def test_trimming_the_heap_leaves_every_object_intact() -> None:
    kept = [bytes(1000) for _ in range(1000)]
    del kept[::2]
    heap.trim()
    assert len(kept) == 500 and all(b == bytes(1000) for b in kept)


def test_periodic_trimming_stops_when_cancelled() -> None:
    async def run() -> bool:
        task = asyncio.create_task(heap.trim_every(0.0))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            return True
        return False

    assert asyncio.run(run())
