import signal

import pytest
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
