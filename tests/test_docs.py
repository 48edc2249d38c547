"""The documentation cannot drift from the code: the README's and the docs' command and
Python blocks marked ``<!-- run -->`` run against one real cluster (every other such block
says why it is not run); the generated reference pages (protocol, configuration, commands)
are what scripts/gen_docs.py makes of the code now; the metrics page names every metric;
and nothing in the repository points to a file outside it."""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cluster import ROOT, Cluster

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

sys.path.insert(0, str(ROOT / "scripts"))
import gen_docs  # noqa: E402

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
RUNNABLE = {"sh", "bash", "python"}  # the languages of blocks that must say whether they run
MARK = re.compile(r"<!-- (run|not run: (?P<why>[^>]+)) -->")
BLOCK = re.compile(r"^(?P<mark><!--[^\n]*-->\n)?```(?P<lang>\w*)\n(?P<body>.*?)^```$", re.M | re.S)
# The tour's endpoints, and which node of the test cluster stands in for each.
ENDPOINTS = {"tcp://127.0.0.1:7072": "node1", "tcp://127.0.0.1:7172": "node2"}


def blocks():
    """(page, line, language, mark or None, body) of every fenced block of every page."""
    for page in PAGES:
        text = page.read_text()
        for m in BLOCK.finditer(text):
            line = text.count("\n", 0, m.start("lang"))
            mark = MARK.fullmatch(m.group("mark").strip()) if m.group("mark") else None
            yield page.relative_to(ROOT), line, m.group("lang"), mark, m.group("body")


def test_every_command_or_python_block_says_whether_it_runs():
    unmarked = [f"{page}:{line}" for page, line, lang, mark, _ in blocks() if lang in RUNNABLE and mark is None]
    assert not unmarked, f"mark these with <!-- run --> or <!-- not run: why -->: {unmarked}"
    assert sum(1 for *_, mark, _ in blocks() if mark and mark.group(1) == "run") >= 8


@pytest.fixture(scope="module")
def docs_cluster():
    """A leader and two workers with conf/forseti.toml's groups: the README's cluster, on ipc://."""
    with open(ROOT / "conf" / "forseti.toml", "rb") as f:
        calls = tomllib.load(f)["calls"]
    c = Cluster(workers=2, calls=calls)
    try:
        c.wait_up()
        yield c
    finally:
        orphans = c.close()
        assert not orphans, f"processes outlived the docs' cluster: {orphans}"


def _expected_status(line: str) -> int:
    """A line whose comment says "exit status N" must exit with N; every other with 0."""
    found = re.search(r"#.*exit status (\d)", line)
    return int(found.group(1)) if found else 0


# A command line that is forsetictl and its words, nothing for a shell to do: run in this
# process (cli.main, what the forsetictl script calls), which saves an interpreter's start
# per line; any other line goes to bash.
PLAIN = re.compile(r"forsetictl( [^|&;<>$`(){}*?]*)?")


def _forsetictl(command: str, env: dict) -> tuple[int, str]:
    from forsetictl import cli

    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    saved = dict(os.environ)
    os.environ.update({k: v for k, v in env.items() if k.startswith("FORSETI_")})
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            try:
                status = cli.main(shlex.split(command)[1:])
            except SystemExit as exc:  # (argparse's usage errors)
                status = exc.code if isinstance(exc.code, int) else 2
        out.flush()
        return status, out.buffer.getvalue().decode(errors="replace")
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _bash(command: str, env: dict) -> tuple[int, str]:
    done = subprocess.run(["bash", "-c", command], env=env, cwd=ROOT, capture_output=True, text=True, timeout=30)
    return done.returncode, done.stdout + done.stderr


def _run_shell(body: str, env: dict, where: str) -> None:
    background = []
    try:
        for line in body.splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            command = line.split("  #", 1)[0].strip()
            if command.endswith("&"):  # followed while the block runs, then stopped
                background.append(
                    subprocess.Popen(
                        ["bash", "-c", command[:-1]],
                        env=env,
                        cwd=ROOT,
                        stdout=subprocess.DEVNULL,
                        start_new_session=True,
                    )
                )
                continue
            status, output = _forsetictl(command, env) if PLAIN.fullmatch(command) else _bash(command, env)
            assert status == _expected_status(line), f"{where}: `{command}` exited {status}: {output}"
    finally:
        for proc in background:
            assert proc.poll() is None, f"{where}: a background command ended early (status {proc.returncode})"
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(10)


def test_the_marked_blocks_run_against_a_real_cluster(docs_cluster, tmp_path):
    """In page order, on one cluster: the command lines as a shell runs them (with
    $FORSETI_ENDPOINT naming the cluster's first worker), the Python with the tour's
    endpoints replaced by the cluster's. A block that defines a managed process's function
    is run too: it must at least define it."""
    endpoints = {tour: docs_cluster.endpoint(name) for tour, name in ENDPOINTS.items()}
    endpoints["tcp://127.0.0.1:7071"] = docs_cluster.cluster["events"]  # the tour's cluster.events
    env = {**os.environ, "FORSETI_ENDPOINT": endpoints["tcp://127.0.0.1:7072"], "PATH": _path()}
    env.pop("FORSETI_KEY", None)
    ran = 0
    for page, line, lang, mark, body in blocks():
        if not mark or mark.group(1) != "run":
            continue
        where = f"{page}:{line}"
        started = time.monotonic()
        if lang == "python":
            for tour, real in endpoints.items():
                body = body.replace(tour, real)
            exec(compile(body, where, "exec"), {"__name__": "docs_block"})
        else:
            _run_shell(body, {**env, "HOME": str(tmp_path)}, where)
        assert time.monotonic() - started < 20, f"{where}: too slow for the docs' test"
        ran += 1
    assert ran >= 8


def _path() -> str:
    """forsetictl from the virtualenv that runs the tests."""
    return os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])


def test_the_generated_reference_pages_are_up_to_date():
    assert not gen_docs.stale(), "run python scripts/gen_docs.py and commit the pages it writes"


def test_the_metrics_page_names_every_metric_and_no_other():
    source = (ROOT / "forsetid" / "metrics.py").read_text()
    defined = set(re.findall(r'(?:Counter|Histogram|GaugeMetricFamily|InfoMetricFamily)\(\s*"(forseti_\w+)"', source))
    page = (ROOT / "docs" / "reference" / "metrics.md").read_text()
    listed = {re.sub(r"_(total|info)$", "", name) for name in re.findall(r"^\| `(forseti_\w+)`", page, re.M)}
    assert defined and listed == defined


# Words that would point a reader outside the repository: a contract file that users do not
# have, its numbered sections, the folder beside the repository it lived in.
OUTSIDE = re.compile(r"SPEC|section [0-9]|\.\./shared|/work/")


def test_nothing_points_outside_the_repository():
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    hits = []
    for name in files:
        if Path(name).suffix not in {".py", ".md", ".toml", ".sh", ".service", ".yml", ".html", ".js"}:
            continue
        for n, line in enumerate((ROOT / name).read_text(errors="replace").splitlines(), 1):
            if OUTSIDE.search(line) and name != "tests/test_docs.py":
                hits.append(f"{name}:{n}: {line.strip()}")
    assert not hits, "\n".join(hits)


def test_the_python_api_page_documents_every_public_name():
    import forsetictl

    page = (ROOT / "docs" / "reference" / "python.md").read_text()
    documented = {name.rsplit(".", 1)[1] for name in re.findall(r"^::: ([\w.]+)$", page, re.M)}
    assert set(forsetictl.__all__) <= documented, sorted(set(forsetictl.__all__) - documented)


def test_the_benchmark_figures_are_drawn_from_the_json_kept_beside_them(tmp_path):
    import bench_plots

    bench_plots.draw(tmp_path)
    drawn = sorted(p.name for p in tmp_path.iterdir())
    assert drawn == ["failover.svg", "latency.svg", "starts.svg"]
    for name in drawn:
        assert (tmp_path / name).read_text() == (ROOT / "docs" / "bench" / name).read_text(), (
            f"docs/bench/{name} is not what its JSON draws: run python scripts/bench_plots.py"
        )


def test_ticks_go_to_each_group_topic_with_its_gseq_and_to_the_empty_topic_with_0(docs_cluster):
    """What the protocol page says of ticks, on the wire: a group's subscriber has a tick at
    once and one every heartbeat on its topic, carrying that group's gseq; b"" gets gseq 0."""
    import zmq

    from forsetid import protocol as p

    ctx = zmq.Context.instance()
    group, everything = ctx.socket(zmq.SUB), ctx.socket(zmq.SUB)
    try:
        for sock, topic in ((group, p.topic("users")), (everything, b"")):
            sock.setsockopt(zmq.SUBSCRIBE, topic)
            sock.setsockopt(zmq.RCVTIMEO, 5000)
            sock.connect(docs_cluster.cluster["events"])
        first = p.decode(group.recv_multipart()[1])
        assert isinstance(first, p.Tick)
        with docs_cluster.client() as client:
            client.get("users", "wire-tick")
        event = _next(group, p.Event)  # (a heartbeat's tick may come first)
        assert event.location.group == "users" and event.gseq == first.gseq + 1
        tick = _next(group, p.Tick)  # the next heartbeat's, on this group's topic
        assert (tick.seq, tick.gseq) == (event.seq, event.gseq)
        # b"" matches every topic (ZeroMQ's prefix rule): the groups' ticks come too, each on its topic.
        heard = [(topic, p.decode(frame)) for topic, frame in (everything.recv_multipart() for _ in range(6))]
        ticks = [m for topic, m in heard if topic == b"" and isinstance(m, p.Tick)]
        assert ticks and all(t.gseq == 0 for t in ticks)
    finally:
        group.close(0)
        everything.close(0)


def _next(sock, kind):
    """The next message of that kind on a SUB socket (within its RCVTIMEO each)."""
    from forsetid import protocol as p

    for _ in range(20):
        msg = p.decode(sock.recv_multipart()[1])
        if isinstance(msg, kind):
            return msg
    raise AssertionError(f"no {kind.__name__} in 20 messages")


def test_the_readme_links_to_pages_that_exist():
    """The site's build checks the docs' links; the README is outside it, so here."""
    links = re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", (ROOT / "README.md").read_text())
    assert len(links) >= 20
    assert [link for link in links if not (ROOT / link).exists()] == []
