import shutil
import signal

import pytest
import zmq.auth
from cluster import Cluster


def _interrupt(signum, frame):
    raise KeyboardInterrupt  # so that pytest still runs every teardown (no orphans)


signal.signal(signal.SIGTERM, _interrupt)


@pytest.fixture
def make_cluster():
    """Start clusters with ``make_cluster(workers=3, calls=..., both=False)``; every
    daemon and process they started is gone after the test, or the test fails."""
    clusters = []

    def make(*args, wait=True, **kwargs):
        c = Cluster(*args, **kwargs)
        clusters.append(c)
        if wait:
            c.wait_up()
        return c

    yield make
    orphans = []
    for c in clusters:
        orphans += c.close()
    assert not orphans, f"processes outlived their cluster: {orphans}"


@pytest.fixture
def cluster(make_cluster):
    """A leader and three workers."""
    return make_cluster(workers=3)


# CURVE key pairs for the security tests (tests/test_security.py, tests/test_ha.py).
ROLES = {"node1": "workers", "node2": "workers", "admin": "admins", "alice": "clients", "reader": "readers"}


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """Key pairs for the server, two workers and a client of each role (and "eve", whose
    key is in no folder); the public halves filed under authorized/ROLE/."""
    root = tmp_path_factory.mktemp("keys")
    for name in ["server", "eve", *ROLES]:
        zmq.auth.create_certificates(root, name)
    for name, role in ROLES.items():
        (root / "authorized" / role).mkdir(parents=True, exist_ok=True)
        shutil.copy(root / f"{name}.key", root / "authorized" / role / f"{name}.key")
    return root
