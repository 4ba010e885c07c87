"""The docker driver's host configuration (pure: no engine needed)."""

import pytest

from supervisor.drivers import docker_hosts

_UNIX = {"name": "d1", "url": "unix:///var/run/docker.sock", "cores": 4}
_TCP = {"name": "d2", "url": "tcp://127.0.0.1:2376", "cores": 2, "tls_dir": "/x"}


def test_parse():
    a, b = docker_hosts.parse([_UNIX, dict(_TCP, network="host")])
    assert (a.name, a.url, a.network, a.tls_dir) == ("d1", _UNIX["url"], "none", None)
    assert a.target.name == "d1" and a.target.cores == 4 and a.target.free() == 4
    assert (b.name, b.network, b.tls_dir) == ("d2", "host", "/x")
    assert docker_hosts.parse([]) == []


def test_storage():
    # an engine on a unix socket is on this machine; one over TCP is not
    a, b = docker_hosts.parse([_UNIX, _TCP])
    assert (a.storage, b.storage) == ("shared", "volume")
    a, b = docker_hosts.parse(
        [dict(_UNIX, storage="volume"), dict(_TCP, storage="shared")]
    )
    assert (a.storage, b.storage) == ("volume", "shared")


@pytest.mark.parametrize(
    "doc, error",
    [
        ("d1", "must be an object"),
        (dict(_UNIX, extra=1), "unknown keys"),
        (dict(_UNIX, name="a b"), "name="),
        (dict(_UNIX, name=""), "name="),
        (dict(_UNIX, url="http://x"), "url="),
        (dict(_UNIX, cores=0), "cores="),
        (dict(_UNIX, cores=True), "cores="),
        (dict(_UNIX, cores="2"), "cores="),
        (dict(_UNIX, network="bridge"), "network="),
        (dict(_UNIX, storage="nfs"), "storage="),
        ({k: v for k, v in _TCP.items() if k != "tls_dir"}, "needs tls_dir"),
    ],
)
def test_parse_refuses(doc, error):
    with pytest.raises(ValueError, match=error):
        docker_hosts.parse([doc])


def test_names_unique():
    with pytest.raises(ValueError, match="unique"):
        docker_hosts.parse([_UNIX, dict(_TCP, name="d1")])


def test_config_json():
    from supervisor import config

    assert config._json_list('[{"a": 1}]') == [{"a": 1}]
    assert config._json_list([]) == []
    with pytest.raises(ValueError):
        config._json_list('{"a": 1}')
