"""An endpoint that cannot be a broker's is a usage error (InvalidArgument) at once, not
BrokerUnreachable after the connect timeout; one that may answer later still waits for it."""
import time

import pytest

import patro

BAD = ["nonsense", "tcp://nonsense", "tcp://127.0.0.1", "tcp://127.0.0.1:0",
       "tcp://127.0.0.1:99999", "tcp://*:7170", "inproc://broker", "bogus://host:1",
       "ipc:///tmp/" + "x" * 200]


@pytest.mark.parametrize("endpoint", BAD)
def test_malformed_endpoint_is_a_usage_error_at_once(endpoint):
    t0 = time.monotonic()
    for attempt in (lambda: patro.get_proxy(endpoint, "x", connect_timeout=5),
                    lambda: patro.connect(endpoint, connect_timeout=5),
                    lambda: patro.get_proxies('{"brokers":["%s"],"objects":[]}' % endpoint,
                                              connect_timeout=5)):
        with pytest.raises(patro.InvalidArgument) as e:
            attempt()
        assert e.value.code == patro.Errc.invalid_argument
        assert endpoint[:40] in str(e.value) and "not a broker endpoint" in str(e.value)
    assert time.monotonic() - t0 < 2.0  # three attempts, none waited for its 5 s


def test_one_bad_endpoint_among_several_is_refused():
    with pytest.raises(patro.InvalidArgument):
        patro.get_proxies('{"brokers":["tcp://127.0.0.1:9","nonsense"],"objects":[]}',
                          connect_timeout=5)


def test_a_well_formed_endpoint_nobody_answers_is_still_unreachable():
    with pytest.raises(patro.BrokerUnreachable):
        patro.connect("tcp://127.0.0.1:9", connect_timeout=0.3)
