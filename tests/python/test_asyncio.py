"""patro.Future in asyncio: ``await fut`` gives the call's result without blocking the event loop
(other tasks run while the answer is on its way), many awaited at once, errors raised at the
await, and synchronous calls on the same connection going on meanwhile."""
import asyncio

import pytest

import patro


def test_await_results_and_errors(objs):
    p = objs["h"]

    async def main():
        assert await p.at("abc").get_async() == 123
        # Sequential awaits, then many at once (gather wraps each awaitable in a task).
        for _ in range(200):
            assert await p.at("def", 0).get_async() == 456
        values = await asyncio.gather(*[p.at("abc").get_async() for _ in range(64)])
        assert values == [123] * 64
        # A synchronous call on the same connection between awaits.
        assert p["abc"] == 123
        with pytest.raises(patro.Error):
            await objs["foofie"].call_async("no_such_method")
        # An answer that came before the await is given at once.
        f = p.at("abc").get_async()
        assert f.wait(5)
        assert await f == 123

    asyncio.run(main())


def test_await_does_not_block_the_loop(cluster):
    # A queue's take waits on the server until a job comes: only another task of the same loop
    # pushes one, so a blocking await would wait until take's own timeout and get None.
    taker = patro.get_proxy(cluster.front, "jobs", call_timeout=20)
    pusher = patro.Queue(patro.get_proxy(cluster.front, "jobs", call_timeout=20))
    try:
        async def main():
            ticks = 0

            async def push_later():
                nonlocal ticks
                for _ in range(20):
                    await asyncio.sleep(0.01)
                    ticks += 1
                pusher.push("from-asyncio")

            pushing = asyncio.create_task(push_later())
            r = await taker.call_async("take", 10000)
            await pushing
            return ticks, r

        ticks, r = asyncio.run(main())
        assert ticks == 20
        assert r is not None
        job = patro.Job(*r)
        assert job.job == "from-asyncio"
        assert pusher.ack(job)
    finally:
        taker.connection.close()
        pusher.proxy.connection.close()
