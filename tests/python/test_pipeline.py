"""Calls on a Future's result before it arrives (promise pipelining, docs/WIRE.md "Pipelined
calls"), and Future.cancel: a chain of three sent at once gives what three synchronous calls give,
an error in the first reaches the third, a result that is not a reference fails the calls made on
it, and a cancelled call is answered Cancelled at once while the connection goes on."""
import asyncio

import pytest

import patro


def test_a_chain_of_three_gives_what_three_calls_give(objs):
    m = objs["money"]
    expected = m.call("self").call("self").call("cents")
    f = m.call_async("self")
    g = f.call("self")
    h = g.call("cents")
    # Each was sent on the one before it (by request id), without waiting for its answer.
    assert f._slot.request_id < g._slot.request_id < h._slot.request_id
    assert h.result() == expected
    assert isinstance(g.result(), patro.Proxy)
    # Once the answer is here, a call on it is a plain call on the result.
    assert f.call("cents").result() == expected
    assert f.call_list("sum", 1, 2).result() == [expected + 3]

    async def main():
        return await m.call_async("self").call("self").call("cents")

    assert asyncio.run(main()) == expected


def test_an_error_in_the_first_reaches_the_third(objs):
    m = objs["money"]
    f = m.call_async("withdraw", 10 ** 12)  # overdrawn: served code throws
    h = f.call("self").call("cents")
    with pytest.raises(patro.Error) as first:
        f.result()
    with pytest.raises(patro.Error) as third:
        h.result()
    assert third.value.code == first.value.code
    assert third.value.remote_type == first.value.remote_type
    assert "overdrawn" in str(third.value)
    assert "which this call was made on the result of" in str(third.value)
    # And on a failure already here, at once.
    with pytest.raises(patro.Error) as late:
        f.call("cents").result()
    assert late.value.code == first.value.code


def test_a_result_that_is_not_a_reference_fails_the_calls_on_it(objs):
    m = objs["money"]
    f = m.call_async("cents")
    g = f.call("self")
    h = g.call("cents")
    assert isinstance(f.result(), int)
    for dependent in (g, h):
        with pytest.raises(patro.errors.TypeMismatch) as e:
            dependent.result()
        assert "not a reference" in str(e.value)
    with pytest.raises(patro.errors.TypeMismatch):
        f.call("self").result()


def test_cancel(objs):
    m = objs["money"]
    f = m.call_async("cents")
    assert f.cancel()
    assert f.done()
    with pytest.raises(patro.errors.Cancelled):
        f.result()
    assert not f.cancel()  # once
    # An answered call is left alone.
    g = m.call_async("cents")
    expected = g.result()
    assert not g.cancel()
    assert g.result() == expected
    # The connection goes on; an awaited call that is cancelled wakes with Cancelled.
    assert m.call("cents") == expected

    async def main():
        h = m.call_async("cents")
        h.cancel()
        with pytest.raises(patro.errors.Cancelled):
            await h

    asyncio.run(main())
    assert m.call("cents") == expected
