"""Unit tests of forsetid.config: loading forseti.toml and saying clearly what is wrong."""

import glob
import os
import socket
import textwrap

import pytest

from forsetictl import config as client_config
from forsetid import config
from forsetid.protocol import Call

CONF = os.path.join(os.path.dirname(__file__), "..", "conf")


def write(tmp_path, text: str) -> str:
    path = tmp_path / "forseti.toml"
    path.write_text(textwrap.dedent(text))
    return str(path)


def error(tmp_path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(config.ConfigError) as info:
        config.load(path)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    return message


# -- shipped configs --


def test_single_machine_config_loads():
    path = os.path.join(CONF, "forseti.toml")
    cfg = config.load(path)
    assert cfg.path == path
    assert cfg.node.role == "both" and cfg.node.name == "node1"
    assert cfg.cluster.leader == "tcp://127.0.0.1:7070"
    assert cfg.node.listen == client_config.load(path).endpoint == "tcp://127.0.0.1:7072"  # the same file serves both
    assert cfg.calls["default"] == Call(entry="forsetid.examples:echo")
    assert cfg.calls["sessions"].args == [2]
    assert cfg.calls["jobs"].command[0] == "sh" and cfg.calls["jobs"].stop_timeout == 2.0


@pytest.mark.parametrize("name", ["leader", "node1", "node2", "node3"])
def test_cluster_configs_load(name):
    path = os.path.join(CONF, "cluster", f"{name}.toml")
    cfg = config.load(path)
    assert cfg.cluster.leader == "tcp://127.0.0.1:7170"
    assert cfg.node.name == name
    assert cfg.node.role == ("leader" if name == "leader" else "worker")
    assert set(cfg.calls) == {"default", "sessions"}
    if name == "leader":
        assert cfg.cluster.nodes == ["node1", "node2", "node3"]
        assert client_config.load(path).endpoint == cfg.cluster.leader


def test_every_shipped_cluster_file_is_tested():
    names = {os.path.basename(f) for f in glob.glob(os.path.join(CONF, "cluster", "*.toml"))}
    assert names == {"leader.toml", "node1.toml", "node2.toml", "node3.toml"}


def test_worker_listen_ports_differ():
    listens = {config.load(os.path.join(CONF, "cluster", f"node{i}.toml")).node.listen for i in (1, 2, 3)}
    assert len(listens) == 3


# -- defaults --


def test_empty_file_gives_defaults(tmp_path):
    cfg = config.load(write(tmp_path, ""))
    c, n = cfg.cluster, cfg.node
    assert (c.name, c.leader, c.events, c.nodes) == ("forseti", "tcp://127.0.0.1:7070", "tcp://127.0.0.1:7071", [])
    assert (c.max_retries, c.max_time, c.backend) == (20, 10.0, "memory")
    assert (n.name, n.role, n.listen, n.capacity) == (socket.gethostname(), "both", "tcp://127.0.0.1:7072", 0)
    assert cfg.calls == {}


def test_missing_keys_take_defaults(tmp_path):
    cfg = config.load(
        write(
            tmp_path,
            """
        [node]
        role = "worker"
        [calls.users]
        command = ["python3", "-m", "app", "{key}"]
    """,
        )
    )
    assert cfg.cluster.max_retries == 20 and cfg.node.capacity == 0 and cfg.node.role == "worker"
    users = cfg.calls["users"]
    assert (users.args, users.ready, users.start_timeout, users.stop_timeout, users.endpoint) == (
        [],
        False,
        10.0,
        5.0,
        None,
    )


def test_spec_example_loads(tmp_path):
    cfg = config.load(
        write(
            tmp_path,
            """
        [cluster]
        name = "forseti"
        leader = "tcp://127.0.0.1:7070"
        events = "tcp://127.0.0.1:7071"
        nodes = []
        max_retries = 20
        max_time = 10
        backend = "memory"
        [node]
        name = "node1"
        role = "both"
        listen = "tcp://127.0.0.1:7072"
        capacity = 0
        [calls.default]
        entry = "forsetid.examples:echo"
        args = []
        [calls.users]
        command = ["python3", "-m", "myapp.user", "{key}"]
        ready = false
        start_timeout = 10.0
        stop_timeout = 5.0
        endpoint = "ipc:///run/forseti/{group}/{key}.sock"
    """,
        )
    )
    assert cfg.cluster.max_time == 10.0
    assert cfg.calls["users"].endpoint == "ipc:///run/forseti/{group}/{key}.sock"


# -- errors --


def test_unknown_key(tmp_path):
    message = error(
        tmp_path,
        """
        [cluster]
        max_retriez = 3
    """,
    )
    assert "cluster" in message and "max_retriez" in message and "unknown" in message


def test_unknown_key_says_what_was_expected(tmp_path):
    # Unknown keys are refused "with the file, the key path and what was expected".
    message = error(
        tmp_path,
        """
        [cluster]
        max_retriez = 3
    """,
    )
    assert "cluster.max_retriez" in message and "max_retries" in message, message


def test_unknown_key_in_a_call(tmp_path):
    message = error(
        tmp_path,
        """
        [calls.users]
        entry = "m:f"
        timeout = 3
    """,
    )
    assert "calls.users" in message and "timeout" in message


def test_wrong_type(tmp_path):
    message = error(
        tmp_path,
        """
        [cluster]
        max_retries = "many"
    """,
    )
    assert "cluster.max_retries" in message and "Expected `int`" in message and "str" in message


def test_out_of_range(tmp_path):
    assert "node.capacity" in error(tmp_path, "[node]\ncapacity = -1\n")
    assert "cluster.max_time" in error(tmp_path, "[cluster]\nmax_time = 0\n")


def test_wrong_type_in_a_call(tmp_path):
    message = error(
        tmp_path,
        """
        [calls.users]
        entry = 5
    """,
    )
    assert "calls.users.entry" in message and "Expected `str" in message


def test_bad_role(tmp_path):
    message = error(
        tmp_path,
        """
        [node]
        role = "boss"
    """,
    )
    assert "node.role" in message and "boss" in message
    assert "'leader'" in message and "'worker'" in message and "'both'" in message


def test_a_restart_policy_is_read_and_a_bad_one_names_the_key_and_the_choices(tmp_path):
    loaded = config.load(write(tmp_path, '[calls.users]\nentry = "m:f"\nrestart = "on-failure"\n'))
    assert loaded.calls["users"].restart == "on-failure"
    assert config.load(write(tmp_path, '[calls.users]\nentry = "m:f"\n')).calls["users"].restart == "never"
    message = error(tmp_path, '[calls.users]\nentry = "m:f"\nrestart = "sometimes"\n')
    assert "calls.users.restart" in message and "'sometimes'" in message
    assert "'never'" in message and "'on-failure'" in message and "'always'" in message
    message = error(tmp_path, '[calls.users]\nentry = "m:f"\nrestart = true\n')
    assert "calls.users.restart" in message and "Expected `str`" in message


def test_call_with_entry_and_command(tmp_path):
    message = error(
        tmp_path,
        """
        [calls.users]
        entry = "m:f"
        command = ["true"]
    """,
    )
    assert "calls.users" in message and "exactly one of `entry` or `command`" in message


def test_call_with_bad_entry(tmp_path):
    message = error(tmp_path, '[calls.users]\nentry = "nocolon"\n')
    assert "calls.users" in message and "package.module:function" in message


def test_bad_group_name(tmp_path):
    message = error(tmp_path, '[calls."bad name"]\ncommand = ["true"]\n')
    assert "calls.bad name" in message and "group name" in message


def test_unknown_section(tmp_path):
    message = error(
        tmp_path,
        """
        [nodes]
        name = "x"
    """,
    )
    assert "unknown section [nodes]" in message and "[cluster]" in message and "[calls.NAME]" in message


def test_section_of_wrong_type(tmp_path):
    assert "cluster" in error(tmp_path, "cluster = 5\n")
    assert "calls" in error(tmp_path, "calls = 5\n")


def test_invalid_toml(tmp_path):
    message = error(
        tmp_path,
        """
        [cluster
        name = "x"
    """,
    )
    assert "not valid TOML" in message and "line" in message


def test_missing_file(tmp_path):
    path = str(tmp_path / "absent.toml")
    with pytest.raises(config.ConfigError) as info:
        config.load(path)
    assert str(info.value).startswith(path) and "cannot read" in str(info.value)
    assert "No such file" in str(info.value)


def test_parse_without_file_names_the_source():
    with pytest.raises(config.ConfigError, match=r"^<config>: node.role"):
        config.parse({"node": {"role": 1}})


def test_an_unknown_backend_names_the_key_and_the_known_ones(tmp_path):
    message = error(
        tmp_path,
        """
        [cluster]
        backend = "zookeeper"
    """,
    )
    assert "cluster.backend" in message and "'zookeeper'" in message and "'memory'" in message


def test_the_store_comes_from_the_backend_named():
    from forsetid.store import BACKENDS, MemoryStore, open_store

    assert isinstance(open_store("memory"), MemoryStore) and set(BACKENDS) == {"memory", "etcd"}


def test_the_systemd_units_start_forsetid_with_a_config_and_restart_on_failure():
    import configparser

    units = sorted(glob.glob(os.path.join(CONF, "systemd", "*.service")))
    assert [os.path.basename(u) for u in units] == ["forseti-both.service", "forseti-leader.service",
                                                    "forseti-worker.service"]  # fmt: skip
    for unit in units:
        parsed = configparser.ConfigParser(interpolation=None, strict=False)
        parsed.read(unit)
        service = parsed["Service"]
        command = service["ExecStart"].split()
        assert command[0].endswith("/forsetid") and command[1] == "--config" and command[2].endswith(".toml")
        assert service["Restart"] == "on-failure" and service["User"] == "forseti"
        assert service["RestartPreventExitStatus"] == "2"  # a config or name it cannot use: not again
        assert service["KillMode"] == "mixed"  # SIGTERM to the daemon alone: it stops its processes itself
        assert parsed["Install"]["WantedBy"] == "multi-user.target"


def test_an_open_metrics_address_needs_insecure_even_with_curve():
    cfg = config.parse({"node": {"metrics": "0.0.0.0:9464"}, "security": {"curve": True}}, "/tmp/x.toml")
    with pytest.raises(config.ConfigError, match="node.metrics.*security.insecure"):
        config.protected(cfg)
    config.protected(config.parse({"node": {"metrics": "0.0.0.0:9464"}, "security": {"insecure": True}}))


# -- backend "etcd" (docs/guides/ha.md) --

HA = """
[cluster]
backend = "etcd"
etcd = ["http://127.0.0.1:2379", "http://127.0.0.1:22379"]
lease = 2.0

[[cluster.candidates]]
name = "node1"
leader = "tcp://127.0.0.1:7070"
events = "tcp://127.0.0.1:7071"

[[cluster.candidates]]
name = "node2"
leader = "tcp://127.0.0.1:7170"
events = "tcp://127.0.0.1:7171"

[node]
name = "node1"
"""


def test_an_etcd_cluster_names_its_candidates_and_binds_its_own_seat(tmp_path):
    cfg = config.load(write(tmp_path, HA))
    assert cfg.cluster.backend == "etcd" and cfg.cluster.lease == 2.0 and len(cfg.cluster.etcd) == 2
    assert [c.name for c in cfg.leaders()] == ["node1", "node2"]
    assert cfg.candidate().leader == "tcp://127.0.0.1:7070"
    assert cfg.binds()["cluster.candidates[0].leader"] == "tcp://127.0.0.1:7070"
    config.check_role(cfg)  # a candidate: fine
    cfg.node.name = "node3"
    with pytest.raises(config.ConfigError, match="node.name: 'node3' has role 'both' but is not in cluster.candidates"):
        config.check_role(cfg)
    cfg.node.role = "worker"  # a worker need not be one
    config.check_role(cfg)
    assert config.load(os.path.join(CONF, "forseti.toml")).leaders()[0].leader == "tcp://127.0.0.1:7070"


@pytest.mark.parametrize(
    "change, named",
    [
        (("lease = 2.0", 'lease = 2.0\nleader = "tcp://127.0.0.1:7070"'), "cluster.leader: with cluster.backend"),
        (("lease = 2.0", 'lease = 2.0\nevents = "tcp://127.0.0.1:7071"'), "cluster.events: with cluster.backend"),
        (('etcd = ["http://127.0.0.1:2379", "http://127.0.0.1:22379"]', "etcd = []"), "cluster.etcd: required"),
        (('"http://127.0.0.1:22379"', '"127.0.0.1:22379"'), "cluster.etcd[1]: '127.0.0.1:22379' is not"),
        (("lease = 2.0", "lease = 0.5"), "cluster.lease"),
        (('name = "node2"', 'name = "node1"'), "cluster.candidates[1].name: 'node1' is listed twice"),
        (('events = "tcp://127.0.0.1:7171"\n', ""), "cluster.candidates[1]"),
        (('backend = "etcd"', 'backend = "memory"'), 'cluster.etcd: only with cluster.backend = "etcd"'),
    ],
)
def test_every_inconsistent_etcd_combination_is_refused_naming_the_key(tmp_path, change, named):
    old, new = change
    assert old in HA
    assert named in error(tmp_path, HA.replace(old, new, 1))


def test_candidates_are_required_with_etcd_and_refused_without(tmp_path):
    head = HA.split("[[cluster.candidates]]")[0]
    assert "cluster.candidates: required" in error(tmp_path, head + '[node]\nname = "node1"\n')
    plain = (
        '[cluster]\n[[cluster.candidates]]\nname = "a"\nleader = "tcp://127.0.0.1:1"\nevents = "tcp://127.0.0.1:2"\n'
    )
    assert 'cluster.candidates: only with cluster.backend = "etcd"' in error(tmp_path, plain)


def test_the_ha_example_is_three_candidates_of_role_both_that_agree_on_the_candidates():
    configs = [config.load(os.path.join(CONF, "ha", f"node{i}.toml")) for i in (1, 2, 3)]
    for cfg in configs:
        config.check_role(cfg)
        assert cfg.cluster.backend == "etcd" and cfg.node.role == "both" and cfg.candidate() is not None
        assert cfg.cluster.candidates == configs[0].cluster.candidates and cfg.calls == configs[0].calls
    endpoints = [e for cfg in configs for e in cfg.binds().values()]
    assert len(endpoints) == len(set(endpoints)) == 9  # no two daemons bind the same port
    client = client_config.load(os.path.join(CONF, "ha", "node2.toml"))
    assert client.endpoint == configs[1].node.listen


def test_a_failover_that_would_stop_the_processes_of_partition_stop_is_warned_of(tmp_path):
    from forsetid.daemon import failover_stops

    cfg = config.load(write(tmp_path, HA.replace("lease = 2.0", 'lease = 2.0\npartition = "stop"')))
    why = failover_stops(cfg)  # heartbeat 1, liveness 3: they outlive a lost leader by 1.5 s
    assert "a failover may stop this worker's processes" in why and "outlive a lost leader by 1.5 s" in why
    # etcd's election (2 x 1 s), its lease extension (1 s), the TTL (2 s), etcd's sweep, the workers' move
    assert "up to 6.5 s = 2 s (etcd's election) + 1 s" in why and "raise cluster.liveness to at least 9" in why
    cfg.cluster.liveness = 9  # they outlive a lost leader by 7.5 s
    assert failover_stops(cfg) is None
    cfg.cluster.liveness, cfg.cluster.etcd_election, cfg.cluster.lease = 6, 0.5, 1.0  # a tuned etcd: 4 s
    assert failover_stops(cfg) is None
    cfg.cluster.liveness = 5
    assert "up to 4 s" in failover_stops(cfg)
    assert failover_stops(config.load(write(tmp_path, HA))) is None  # "keep"
