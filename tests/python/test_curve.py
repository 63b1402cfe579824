"""CURVE towards the broker (README "Security"): keys from a config, from keyword arguments, from
$PATRO_BROKER_KEY / $PATRO_CURVE_KEY, as the C++ client takes them; a refused client gets
not_authorized at once."""
import os
import subprocess
import time

import pytest

import patro
from patro import curve
from conftest import program, remove_segments, start_broker, wait_for_file

pytestmark = pytest.mark.skipif(not curve.available(), reason="libzmq without CURVE")


def keygen(tmp, name):
    """A pair written by `patro keygen` (the C++ side's format); (path, KeyPair)."""
    path = os.path.join(tmp, name + ".key")
    subprocess.run([program("cli"), "keygen", path], check=True, stdout=subprocess.DEVNULL,
                   timeout=20)
    return path, curve.read_key_file(path)


@pytest.fixture(scope="module")
def secure(procs, tmpdir_session):
    """A patro-broker with CURVE and allow lists, and the py server registered through it."""
    tmp = os.path.join(tmpdir_session, "curve")
    os.mkdir(tmp)
    keys = {n: keygen(tmp, n) for n in ("broker", "alice", "server", "mallory", "reader", "honly")}
    with open(os.path.join(tmp, "clients"), "w") as f:
        f.write("# clients\n%s  # alice\n" % keys["alice"][1].public_key)
        # Rights per key: a read-only key, and a key limited to the name h.
        f.write("%s read-only\n%s names=h\n" % (keys["reader"][1].public_key,
                                                keys["honly"][1].public_key))
    with open(os.path.join(tmp, "servers"), "w") as f:
        f.write(keys["server"][1].public_key + "\n")
    broker, front, back = start_broker(procs, tmp,
                                       extra=["--curve-key", keys["broker"][0],
                                              "--allow-clients", os.path.join(tmp, "clients"),
                                              "--allow-servers", os.path.join(tmp, "servers")])
    config = os.path.join(tmp, "secure.conf")
    name = "pytest-%d-curve" % os.getpid()
    server = procs.start([program("py_server"), config, "--broker", back, "--heartbeat-ms", "100",
                          "--threads", "2", "--name", name,
                          "--broker-key", keys["broker"][0] + ".pub",
                          "--curve-key", keys["server"][0]])
    assert wait_for_file(config)
    yield {"front": front, "config": config, "keys": keys, "tmp": tmp}
    procs.stop(server)
    procs.stop(broker)
    remove_segments([name])


def test_key_files_and_checks(tmp):
    path, pair = keygen(tmp, "k")
    assert curve.is_curve_key(pair.public_key) and curve.is_curve_key(pair.secret_key)
    assert curve.read_public_key(path + ".pub") == pair.public_key
    assert curve.read_public_key(pair.public_key) == pair.public_key
    assert curve.read_public_key(path) == pair.public_key
    assert not curve.is_curve_key("x" * 39) and not curve.is_curve_key("~" * 40)
    with pytest.raises(patro.InvalidArgument):
        curve.read_key_file(path + ".pub")  # no secret key in it
    with pytest.raises(patro.InvalidArgument):
        patro.connect("tcp://127.0.0.1:9", broker_key="not-a-key")
    with pytest.raises(patro.BadConfig):
        patro.Config.parse('{"brokers": ["tcp://127.0.0.1:9"], "broker_key": "short"}')
    c = patro.Config.parse('{"brokers": ["tcp://127.0.0.1:9"], "broker_key": "%s"}'
                           % pair.public_key)
    assert c.broker_key == pair.public_key
    assert patro.Config.parse(c.to_string()).broker_key == pair.public_key
    # A config may carry a client pair (patro-worker --config-client-key): used unless the
    # options name one.
    c.client_key = pair
    c2 = patro.Config.parse(c.to_string())
    assert (c2.client_key.public_key, c2.client_key.secret_key) == (pair.public_key,
                                                                   pair.secret_key)
    o = c2.options(patro.ClientOptions())
    assert (o.broker_key, o.client_secret_key) == (pair.public_key, pair.secret_key)
    assert c2.options(patro.ClientOptions(curve_key=path)).client_secret_key == ""
    with pytest.raises(patro.BadConfig):
        patro.Config.parse('{"brokers": ["tcp://127.0.0.1:9"], "client_secret_key": "x"}')


def test_the_servers_config_carries_the_broker_key(secure):
    keys = secure["keys"]
    assert patro.Config.from_file(secure["config"]).broker_key == keys["broker"][1].public_key
    alice = keys["alice"][1]
    ps = patro.get_proxies(secure["config"], client_public_key=alice.public_key,
                           client_secret_key=alice.secret_key, connect_timeout=10)
    h = ps[0]
    assert h["abc"] == 123
    h["colour"] = "green"
    assert h["colour"] == "green"
    assert ps[4].at("n").add(2) >= 2
    assert patro.lock(ps[4], timeout=5)
    assert patro.unlock(ps[4])
    h.connection.close()


def test_keyword_arguments_and_key_files(secure):
    keys = secure["keys"]
    h = patro.get_proxy(secure["front"], "h", broker_key=keys["broker"][1].public_key,
                        curve_key=keys["alice"][0], connect_timeout=10)
    assert h.at("def", 1, "ghi").get() == "jkl"
    h.connection.close()
    h = patro.get_proxy(secure["front"], "h", broker_key=keys["broker"][0] + ".pub",
                        client_public_key=keys["alice"][1].public_key,
                        client_secret_key=keys["alice"][1].secret_key, connect_timeout=10)
    assert h["abc"] == 123
    h.connection.close()


def test_environment(secure, monkeypatch):
    keys = secure["keys"]
    monkeypatch.setenv("PATRO_BROKER_KEY", keys["broker"][0] + ".pub")
    monkeypatch.setenv("PATRO_CURVE_KEY", keys["alice"][0])
    h = patro.get_proxy(secure["front"], "h", connect_timeout=10)
    assert h["abc"] == 123
    h.connection.close()
    # The config's broker key, and the pair from the environment.
    monkeypatch.delenv("PATRO_BROKER_KEY")
    h = patro.get_proxies(secure["config"], connect_timeout=10)[0]
    assert h["abc"] == 123
    h.connection.close()


def refusal(front, **options):
    t0 = time.monotonic()
    with pytest.raises(patro.Error) as e:
        patro.get_proxy(front, "h", connect_timeout=10, **options)
    assert time.monotonic() - t0 < 5  # refused at once, not the 10 s connect timeout
    assert type(e.value) is patro.NotAuthorized, repr(e.value)
    assert e.value.code == 21 and e.value.name == "not_authorized"
    return str(e.value)


def test_refused_clients_fail_at_once(secure, monkeypatch):
    monkeypatch.delenv("PATRO_BROKER_KEY", raising=False)
    monkeypatch.delenv("PATRO_CURVE_KEY", raising=False)
    keys = secure["keys"]
    broker_pub = keys["broker"][1].public_key
    assert "requires CURVE" in refusal(secure["front"])
    mallory = keys["mallory"][1]
    assert "allow list" in refusal(secure["front"], broker_key=broker_pub,
                                   client_public_key=mallory.public_key,
                                   client_secret_key=mallory.secret_key)
    # No pair: a fresh one per connection, which a broker with an allow list refuses.
    assert "allow list" in refusal(secure["front"], broker_key=broker_pub)
    assert "broker key" in refusal(secure["front"], broker_key=mallory.public_key,
                                   curve_key=keys["alice"][0])
    server = keys["server"][1]  # a server's key on the client port
    refusal(secure["front"], broker_key=broker_pub, client_public_key=server.public_key,
            client_secret_key=server.secret_key)


def test_rights_per_key(secure):
    """A read-only key reads and calls read-only methods only; a key limited to the name h cannot
    look counter up, nor use it by its object id (the config's): not_authorized naming the
    operation and the name (through the broker: the Python client has no direct path)."""
    keys = secure["keys"]
    broker_pub = keys["broker"][1].public_key
    h = patro.get_proxy(secure["front"], "h", broker_key=broker_pub, curve_key=keys["reader"][0],
                        connect_timeout=10)
    assert h["abc"] == 123
    with pytest.raises(patro.errors.NotAuthorized) as e:
        h["abc"] = 5
    assert "set on 'h'" in str(e.value)
    assert h["abc"] == 123
    with pytest.raises(patro.errors.NotAuthorized) as e:
        h.at("def").push(7)
    assert "push on 'h'" in str(e.value)
    money = patro.get_proxy(secure["front"], "money", broker_key=broker_pub,
                            curve_key=keys["reader"][0], connect_timeout=10)
    cents = money.call("cents")
    with pytest.raises(patro.errors.NotAuthorized) as e:
        money.call("scale", 2)
    assert "scale" in str(e.value) and "'money'" in str(e.value)
    assert money.call("cents") == cents
    h.connection.close()
    money.connection.close()

    with pytest.raises(patro.errors.NotAuthorized) as e:
        patro.get_proxy(secure["front"], "counter", broker_key=broker_pub,
                        curve_key=keys["honly"][0], connect_timeout=10)
    assert "'counter'" in str(e.value)
    ps = patro.get_proxies(secure["config"], curve_key=keys["honly"][0], connect_timeout=10)
    assert ps[0]["abc"] == 123
    with pytest.raises(patro.errors.NotAuthorized) as e:
        ps[4]["n"]
    assert "get on 'counter'" in str(e.value)
    ps[0].connection.close()
