"""The dashboard (forsetictl/dashboard/): its pure model (what the page shows, a page of
processes, the rates of the chart), protected mode, and, with a real cluster and a real
headless browser (Debian's chromium driven by Playwright), the page as an operator uses
it: nodes and keys appear, a new get appears live, a SIGKILLed worker shows down, a drain
from the page takes effect, a failover shows as it happens (and the events go on from
the new leader), and a reader's page has no buttons and its POSTs are refused."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from cluster import ROOT, line_within, wait_for
from test_security import security

from forsetictl.client import Event
from forsetictl.dashboard.server import ListenError, listen_address
from forsetictl.dashboard.state import Board, failed
from forsetictl.localetcd import LocalEtcd
from forsetid.protocol import Location, NodeInfo

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
FAST = {"heartbeat": 0.2, "liveness": 3}
WAIT = 10_000  # ms: the longest a page may take to show a change


def event(kind: str, key: str, pid: int = 10, at: float = 1000.0, **more) -> Event:
    return Event(1, kind, "g", key, "node1", pid, more.pop("exit_code", None), more.pop("signal", None),
                 more.pop("reason", None), at, **more)  # fmt: skip


# -- the model ------------------------------------------------------------------------


def test_the_board_follows_starts_and_exits_and_pages_its_processes():
    board = Board()
    board.set_processes([Location(group="g", key=f"k{i:03}", node="node1", pid=i) for i in range(120)])
    assert not board.stale and board.page()["total"] == 120
    first = board.page(offset=0, limit=50)
    assert [p["key"] for p in first["items"]][:2] == ["k000", "k001"] and len(first["items"]) == 50
    assert [p["key"] for p in board.page(offset=100, limit=50)["items"]] == [f"k{i}" for i in range(100, 120)]
    assert board.page(key="11")["total"] == 11  # k011, k110..k119
    assert board.page(group="other")["total"] == 0
    board.set_processes([Location(group=g, key=k, node="n", pid=1) for g in ("f", "g", "g1", "h") for k in "ab"])
    assert [(p["group"], p["key"]) for p in board.page(group="g")["items"]] == [("g", "a"), ("g", "b")]
    assert [p["group"] for p in board.page(group="g1", key="b")["items"]] == ["g1"]
    assert board.page(group="h", offset=1)["items"] == [{**board.processes[("h", "b")]}]
    assert board.page(offset=7, limit=5)["items"] == [board.processes[("h", "b")]]
    board.set_processes([Location(group="g", key=f"k{i:03}", node="node1", pid=i) for i in range(120)])
    board.apply(event("started", "new", pid=500))
    board.apply(event("exited", "k000", pid=0, reason="stopped"))
    board.apply(event("exited", "k001", pid=999, reason="exit", exit_code=1))  # another pid's: not this one's
    assert board.page(key="new")["items"][0]["pid"] == 500
    assert board.page(key="k000")["total"] == 0 and board.page(key="k001")["total"] == 1
    assert board.summary()["processes"] == 120
    board.apply(Event(7, "missed", "", "", "", 0, None, None, None, 1000.0, missed=3))
    assert board.stale  # the server asks for processes() again
    assert [e["kind"] for e in board.overview(1000.5)["events"]] == ["started", "exited", "exited", "missed"]


def test_the_charts_count_per_second_and_sample_each_node_over_the_window():
    board = Board()
    board.apply(event("started", "a", at=1000.2))
    board.apply(event("started", "b", at=1000.7, adopted=True))  # ran already: not a start
    board.apply(event("exited", "a", at=1000.9, reason="exit", exit_code=0))
    board.apply(event("exited", "b", at=1001.1, reason="node-down"))
    assert board.rates.series(1001.5) == [[1000, 1, 1, 0], [1001, 0, 1, 1]]
    assert board.rates.series(1300.5) == [[1001, 0, 1, 1]]  # the oldest second is out of the window
    board.set_nodes([NodeInfo(name="node1", state="up", processes=2, capacity=0)], None, 1000.2)
    board.set_nodes([NodeInfo(name="node1", state="up", processes=3, capacity=0)], None, 1000.7)
    board.set_nodes([NodeInfo(name="node1", state="up", processes=3, capacity=0)], None, 1001.5)  # no change
    board.set_nodes([NodeInfo(name="node1", state="up", processes=1, capacity=0)], None, 1400.0)
    assert board.loads.series() == [[1000, {"node1": 3}], [1400, {"node1": 1}]]  # (the older one: where lines start)
    board.set_nodes([NodeInfo(name="node1", state="up", processes=0, capacity=0)], None, 1401.0)
    board.set_nodes([NodeInfo(name="node1", state="up", processes=5, capacity=0)], None, 1800.0)
    assert board.loads.series() == [[1401, {"node1": 0}], [1800, {"node1": 5}]]
    assert failed(event("exited", "a", reason="exit", signal=9))
    assert not failed(event("exited", "a", reason="stopped", signal=15))
    assert not failed(event("started", "a"))


def test_the_page_shows_only_what_the_role_may_do():
    board = Board()
    assert board.may == {"stop": False, "drain": False}  # until the role is known: no buttons
    board.set_role("reader")
    assert board.may == {"stop": False, "drain": False}
    board.set_role("client")
    assert board.may == {"stop": True, "drain": False}
    board.set_role("admin")
    assert board.may == {"stop": True, "drain": True}


def test_a_listen_address_that_is_not_loopback_needs_insecure():
    assert listen_address("127.0.0.1:8470", False) == ("127.0.0.1", 8470)
    assert listen_address("[::1]:0", False) == ("::1", 0)
    assert listen_address("localhost:1", False) == ("localhost", 1)
    with pytest.raises(ListenError, match="not loopback.*--insecure"):
        listen_address("0.0.0.0:8470", False)
    assert listen_address("0.0.0.0:8470", True) == ("0.0.0.0", 8470)
    with pytest.raises(ListenError, match="expected HOST:PORT"):
        listen_address("8470", False)


def test_the_command_refuses_a_public_address_in_one_line():
    cmd = [sys.executable, "-m", "forsetictl", "--endpoint", "ipc:///nowhere", "dashboard", "--listen", "0.0.0.0:0"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "not loopback" in done.stderr and "--insecure" in done.stderr


# -- with a real cluster and a real browser ------------------------------------------


class Dashboard:
    """``forsetictl dashboard`` on a free loopback port, for one endpoint and key."""

    def __init__(self, endpoint: str, *options: str) -> None:
        cmd = [sys.executable, "-m", "forsetictl", "--endpoint", endpoint, *options, "dashboard", "--listen",
               "127.0.0.1:0", "--json"]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        try:
            self.url = json.loads(line_within(self.proc.stdout))["dashboard"]
        except BaseException:
            self.close()
            raise

    def post(self, action: str, fields: dict, **headers: str) -> tuple[int, dict]:
        headers = {"Content-Type": "application/json", **headers}
        request = urllib.request.Request(self.url + f"api/{action}", json.dumps(fields).encode(), headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return answer.status, json.load(answer)
        except urllib.error.HTTPError as refused:
            return refused.code, json.load(refused)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        self.proc.stderr.close()


@pytest.fixture
def dashboards():
    """Start dashboards with ``dashboards(endpoint, *options)``; each stopped after the test."""
    started: list[Dashboard] = []

    def start(endpoint: str, *options: str) -> Dashboard:
        started.append(Dashboard(endpoint, *options))
        return started[-1]

    yield start
    for d in started:
        d.close()
        assert d.proc.returncode == 0, d.proc.returncode


def test_the_actions_take_json_from_the_page_itself_on_a_loopback_name_only(dashboards):
    """Whatever the key may do, another site's page cannot make the dashboard do it: not
    by a form (JSON only), not from its own origin, not by a name that resolves here."""
    d = dashboards("ipc:///nowhere", "--timeout", "0.5")  # (refused before the cluster is asked)
    assert d.post("drain", {"node": "node1"}, Origin="http://evil.example")[0] == 403
    assert d.post("drain", {"node": "node1"}, **{"Content-Type": "application/x-www-form-urlencoded"})[0] == 415
    status, answer = d.post("drain", {"node": "node1"}, Host="evil.example:80")
    assert (status, answer["error"]) == (403, "forbidden") and "loopback" in answer["message"]
    assert d.post("drain", {"node": ""})[0] == 400  # (and a bad field is named)
    assert d.post("remove-call", {"group": "g"})[0] == 404  # only drain, undrain and stop


@pytest.fixture(scope="module")
def browser():
    """One headless chromium for the module (a fresh profile, removed after)."""
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no {CHROMIUM} here (apt-get install chromium; .ci/run does)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the test extra)")
    profile = tempfile.mkdtemp(prefix="forseti-chromium-")
    try:
        with sync_api.sync_playwright() as pw:
            context = pw.chromium.launch_persistent_context(
                profile, executable_path=CHROMIUM, headless=True, args=ARGS, viewport={"width": 1280, "height": 800}
            )
            try:
                yield context
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def etcd():
    with LocalEtcd() as server:
        yield server


@pytest.fixture
def page(browser):
    """A new tab; the test fails if the page's JavaScript threw."""
    tab = browser.new_page()
    tab.set_default_timeout(WAIT)
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    yield tab
    tab.close()
    assert not errors, errors


def states(c) -> dict[str, str]:
    return {n.name: n.state for n in c.leader().nodes()}


@pytest.mark.slow
def test_the_nodes_and_a_started_key_appear_and_a_new_get_appears_live(make_cluster, dashboards, page):
    c = make_cluster(workers=3)
    c.leader().get("sleeper", "first")
    d = dashboards(c.endpoint("node1"))
    page.goto(d.url)
    for name in ("node1", "node2", "node3"):
        page.wait_for_selector(f'#nodes tr[data-node="{name}"][data-state="up"]')
    page.wait_for_selector('#procs tr[data-key="first"]')
    assert page.inner_text("#leader-name") == "leader: leader"
    loc = c.leader().get("sleeper", "second")  # no reload: the event stream brings it
    row = page.wait_for_selector('#procs tr[data-key="second"]')
    assert str(loc.pid) in row.inner_text() and loc.node in row.inner_text()
    page.wait_for_selector('#events li[data-kind="started"][data-key="second"]')
    page.wait_for_function("document.querySelector('#proc-count').textContent === '(2)'")
    assert [e.inner_text() for e in page.query_selector_all("#loads-legend span")] == ["node1", "node2", "node3"]


@pytest.mark.slow
def test_a_sigkilled_worker_shows_down(make_cluster, dashboards, page):
    c = make_cluster(workers=3, cluster=FAST)
    d = dashboards(c.endpoint("node1"))
    page.goto(d.url)
    page.wait_for_selector('#nodes tr[data-node="node3"][data-state="up"]')
    c.kill("node3", signal.SIGKILL)
    page.wait_for_selector('#nodes tr[data-node="node3"][data-state="down"]')
    assert states(c)["node3"] == "down"


@pytest.mark.slow
def test_a_drain_from_the_page_takes_effect_and_an_undrain_too(make_cluster, dashboards, page):
    c = make_cluster(workers=2)
    d = dashboards(c.endpoint("node1"))
    page.goto(d.url)
    page.click('#nodes tr[data-node="node1"] button.drain')
    page.wait_for_selector('#nodes tr[data-node="node1"][data-state="draining"]')
    assert states(c) == {"node1": "draining", "node2": "up"}
    page.click('#nodes tr[data-node="node1"] button.undrain')
    page.wait_for_selector('#nodes tr[data-node="node1"][data-state="up"]')
    assert states(c) == {"node1": "up", "node2": "up"}
    c.leader().get("sleeper", "k")
    page.click('#procs tr[data-key="k"] button.stop')
    page.wait_for_selector('#events li[data-kind="exited"][data-key="k"]')
    assert c.leader().find("sleeper", "k") is None


@pytest.mark.slow
def test_a_failover_shows_as_it_happens_and_the_events_follow_the_new_leader(make_cluster, etcd, dashboards, page):
    c = make_cluster(workers=2, candidates=2, etcd=etcd.url, cluster={"heartbeat": 0.3, "liveness": 4})
    first = c.wait_leader()
    d = dashboards(c.endpoint("node1"))
    page.goto(d.url)
    page.wait_for_selector(f'#leader .seat.leader[data-seat="{first}"]')
    c.kill(first, signal.SIGKILL)
    page.wait_for_selector(f'#leader .seat.unreachable[data-seat="{first}"]')
    second = c.wait_leader(other_than=first)
    page.wait_for_selector(f'#leader .seat.leader[data-seat="{second}"]')
    wait_for(lambda: _get(c, "after"), 10, 0.1, "a get through the new leader")
    page.wait_for_selector('#events li[data-kind="started"][data-key="after"]')  # the stream went on
    page.wait_for_selector('#procs tr[data-key="after"]')


def _get(c, key: str) -> bool:
    try:
        return c.client("node1", timeout=1).get("sleeper", key) is not None
    except Exception:
        return False


@pytest.mark.slow
def test_a_reader_sees_no_buttons_and_a_forged_post_is_refused(make_cluster, keys, dashboards, page):
    c = make_cluster(workers=2, tcp=True, wait=False, security=lambda name: security(keys, name),
                     client_keys={"key": keys / "admin.key_secret", "server_key": keys / "server.key"})  # fmt: skip
    wait_for(lambda: _up(c, 2), 15, 0.1, "the secure cluster up")
    c.leader().get("sleeper", "k")
    as_ = lambda who: ("--key", str(keys / f"{who}.key_secret"), "--server-key", str(keys / "server.key"))  # noqa: E731
    reader = dashboards(c.endpoint("node1"), *as_("reader"))
    page.goto(reader.url)
    page.wait_for_selector('body[data-role="reader"]')
    page.wait_for_selector('#nodes tr[data-node="node1"][data-state="up"]')
    page.wait_for_selector('#procs tr[data-key="k"]')
    assert page.query_selector_all("#nodes button, #procs tbody button") == []
    status, answer = reader.post("drain", {"node": "node1"})
    assert (status, answer["error"]) == (403, "forbidden")
    status, answer = reader.post("stop", {"group": "sleeper", "key": "k"})
    assert (status, answer["error"]) == (403, "forbidden")
    assert states(c) == {"node1": "up", "node2": "up"} and c.leader().find("sleeper", "k") is not None
    page.wait_for_selector('body[data-role="reader"]')  # (asked again after a refusal: a reader still)
    assert page.query_selector_all("#nodes button, #procs tbody button") == []
    admin = dashboards(c.endpoint("node1"), *as_("admin"))  # the key decides: an admin's has them
    page.goto(admin.url)
    page.wait_for_selector('body[data-role="admin"]')
    page.wait_for_selector('#nodes tr[data-node="node1"] button.drain')
    page.wait_for_selector('#procs tr[data-key="k"] button.stop')


def _up(c, count: int) -> bool:
    try:
        return sum(n.state == "up" for n in c.leader(timeout=1).nodes()) == count
    except Exception:
        return False


@pytest.mark.slow
def test_a_screenshot_of_a_three_node_cluster(make_cluster, dashboards, page, tmp_path):
    """The picture in docs/guides/dashboard.md: FORSETI_SCREENSHOT=docs/dashboard.png writes it there."""
    c = make_cluster(workers=3, cluster=FAST, calls={"flaky": {"entry": "forsetid.examples:exit_with", "args": [3]}})
    d = dashboards(c.endpoint("node1"))
    page.goto(d.url)
    page.wait_for_selector('#nodes tr[data-node="node3"][data-state="up"]')
    client = c.leader()
    for i in range(12):
        client.get("sleeper", f"user-{i:02}")
        if i % 4 == 3:  # in batches the page shows (a chart with more than one second in it)
            page.wait_for_selector(f'#events li[data-key="user-{i:02}"]')
    for i in range(3):
        client.stop("sleeper", f"user-{i:02}")
    for i in range(2):
        client.get("flaky", f"job-{i}")  # (it exits at once, with status 3: a failure)
    client.get("default", "session-42")
    client.drain("node3")
    page.wait_for_selector('#nodes tr[data-node="node3"][data-state="draining"]')
    page.wait_for_selector('#events li.failed[data-key="job-1"]')
    page.wait_for_selector('#procs tr[data-key="session-42"]')
    page.wait_for_timeout(1100)  # (the chart is drawn each second)
    target = Path(os.environ.get("FORSETI_SCREENSHOT") or tmp_path / "dashboard.png")
    page.screenshot(path=str(target), full_page=True)
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
