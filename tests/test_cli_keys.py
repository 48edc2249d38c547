"""Any key reaches the terminal safely: control characters, bidi overrides and line
separators escaped visibly, long keys cut with a mark so that tables stay aligned;
--wide prints them whole (escaped), --json whole and as they are."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

from cluster import ROOT, line_within
from hypothesis import given
from hypothesis import strategies as st
from test_cli import ctl

from forsetictl import cli
from forsetictl.client import Event
from forsetictl.terminal import KEY_WIDTH, display_width, shown

DATE = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"

# key -> how plain output shows it
ODD = {
    "a\nb": r"a\nb",  # a newline would forge a line
    "\x1b[2J\x1b[31mred": r"\x1b[2J\x1b[31mred",  # clear the screen, colour the rest
    "abc\u202edcba": r"abc\u202edcba",  # right-to-left override: reorders what follows
    "tab\there": r"tab\there",
    "cr\rover": r"cr\rover",
    "del\x7f c1\x85 ls\u2028 zw\u200b": r"del\x7f c1\x85 ls\u2028 zw\u200b",
    "back\\nslash": r"back\\nslash",  # not to be mistaken for an escaped newline
    "日本語": "日本語",  # printable: as it is (two columns each)
    "x" * 1024: "x" * (KEY_WIDTH - 1) + "…",
}


def unescaped(text: str) -> str:
    """What ``shown`` escaped, back (for the round trip: no two keys look alike)."""
    return text.encode("latin-1", "backslashreplace").decode("unicode_escape")


@given(st.text(st.characters(exclude_characters="\0"), max_size=60))
def test_shown_is_printable_reversible_and_cut_to_the_width(text):
    whole = shown(text)
    assert whole.isprintable() and unescaped(whole) == text
    cut = shown(text, KEY_WIDTH)
    assert cut.isprintable() and display_width(cut) <= KEY_WIDTH
    assert cut == whole or (cut.endswith("…") and whole.startswith(cut[:-1]))


def test_shown_examples():
    for key, plain in ODD.items():
        assert shown(key, KEY_WIDTH) == plain
        assert shown(key) == (key if plain.endswith("…") else plain)
    assert shown("\x1b" * 20, 10) == r"\x1b\x1b…"  # an escape is never cut in two
    assert shown("日" * 30, 10) == "日日日日…"  # 9 columns: the next one is two wide
    assert display_width(shown("e\u0301" * 50, 10)) == 10  # a combining accent takes no column


def test_event_lines_and_tables_of_odd_names(capsys):
    key = "k\u2028" + "y" * 60
    for wide, shows in ((False, r"k\u2028" + "y" * (KEY_WIDTH - 8) + "…"), (True, r"k\u2028" + "y" * 60)):
        cli.Output(False, wide).event(Event(7, "exited", "g", key, "n\x1b]0;owned\x07", 42, None, 9, "exit", 0.0))
        line = capsys.readouterr().out
        assert line.endswith(f" 7 exited g/{shows} node=n\\x1b]0;owned\\x07 pid=42 reason=exit signal=9\n"), line
    nodes = [{"name": "node\x1b[8m1", "state": "up"}, {"name": "n\u202e2", "state": "down"}]
    cli.Output(False).table(nodes, ["name", "state"])
    assert capsys.readouterr().out.splitlines() == [
        "NAME          STATE",
        r"node\x1b[8m1  up",
        r"n\u202e2      down",
    ]


def test_every_command_prints_odd_keys_safely(make_cluster):
    c = make_cluster(
        both=True,
        calls={"sock": {"entry": "forsetid.examples:sleeper", "endpoint": "ipc:///tmp/forseti-keys/{key}.sock"}},
    )
    ep = c.endpoint("node1")

    def each(key: str, plain: str) -> None:
        r = ctl("get", "sock", key, endpoint=ep)
        assert r.returncode == 0, r
        assert re.fullmatch(rf"sock/{re.escape(plain)} node=node1 pid=\d+ endpoint=.+ started={DATE}\n", r.stdout), r
        r = ctl("find", "sock", key, endpoint=ep)
        assert r.stdout.startswith(f"sock/{plain} node=node1 "), r
        assert ctl("--wide", "find", "sock", key, endpoint=ep).stdout.startswith(f"sock/{shown(key)} node=node1 ")
        assert json.loads(ctl("find", "sock", key, "--json", endpoint=ep).stdout)["key"] == key

    with ThreadPoolExecutor(4) as pool:  # (each key's commands in turn; the keys side by side)
        list(pool.map(each, ODD, ODD.values()))
    header, *rows = ctl("ls", endpoint=ep).stdout.splitlines()
    assert len(rows) == len(ODD)  # no key made a line of its own
    node = display_width(header[: header.index("NODE")])
    for row in rows:  # aligned: every NODE cell starts in the header's column, every row as wide
        assert row.isprintable() and display_width(row[: row.index(" node1 ")]) + 1 == node, (header, row)
        cells = row.split("  ")
        assert display_width(cells[1].strip()) <= KEY_WIDTH and display_width(row) < 3 * KEY_WIDTH + 40, row
    assert {row.split()[1] for row in rows} == {plain.split()[0] for plain in ODD.values()}
    wide = ctl("ls", "--wide", endpoint=ep).stdout
    assert len(wide.splitlines()) == len(ODD) + 1 and "x" * 1024 in wide and "…" not in wide
    keys = [json.loads(line)["key"] for line in ctl("--json", "ls", endpoint=ep).stdout.splitlines()]
    assert sorted(keys) == sorted(ODD)


def test_an_error_that_names_a_key_prints_it_escaped(make_cluster):
    ep = make_cluster(both=True).endpoint("node1")
    for command in ("find", "stop"):
        r = ctl(command, "sleeper", "gone\x1b[2J\nforsetictl: all is well", endpoint=ep)
        assert r.returncode == 1
        assert r.stderr == "forsetictl: no process for sleeper/gone\\x1b[2J\\nforsetictl: all is well\n"
        r = ctl("--json", command, "sleeper", "gone\x1b", endpoint=ep)
        assert json.loads(r.stdout)["message"] == "no process for sleeper/gone\x1b"
    r = ctl("ls", "x\u202e\n", endpoint=ep)  # a usage error quoting what was typed
    assert r.returncode == 2 and "\u202e" not in r.stderr and r"'x\u202e\n'" in r.stderr, r


def test_events_print_odd_keys_on_one_line_each(make_cluster):
    c = make_cluster(both=True)
    cmd = [sys.executable, "-m", "forsetictl", "--endpoint", c.endpoint("node1"), "events", "sleeper"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    followers = [
        subprocess.Popen([*cmd, *extra, "--count", str(len(ODD))], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=env)
        for extra in ([], ["--json"])
    ]  # fmt: skip
    try:
        for follower in followers:
            assert "following events" in line_within(follower.stderr)  # it is live now
        client = c.client()
        for key in ODD:
            client.get("sleeper", key)
        plain, as_json = (follower.communicate(timeout=20)[0] for follower in followers)
    finally:
        for follower in followers:
            follower.kill()
            follower.communicate()
    lines = plain.splitlines()
    assert len(lines) == len(ODD), plain
    for line, shows in zip(lines, ODD.values(), strict=True):
        assert re.fullmatch(rf"{DATE} \d+ started sleeper/{re.escape(shows)} node=node1 pid=\d+", line), line
    assert [json.loads(line)["key"] for line in as_json.splitlines()] == list(ODD)
