"""Templates: a key is data. Placeholders never reach a shell's or an interpreter's code,
and an endpoint or a log file's name keeps every key inside its one path segment."""

import re
import urllib.parse

import pytest
from hypothesis import given
from hypothesis import strategies as st

from forsetid import protocol as p
from forsetid.templates import code_error, escaped, fill

REFUSED = [
    ["sh", "-c", "echo job {key} running; exec sleep 600"],  # what conf/forseti.toml used to ship
    ["/bin/sh", "-c", "x {key}"],
    ["bash", "-c", "x {key}"],
    ["zsh", "-c", "x {key}"],
    ["dash", "-c", "x {key}"],
    ["/usr/bin/env", "bash", "-c", "x {key}"],
    ["env", "A=1", "-u", "B", "sh", "-c", "x {key}"],
    ["env", "-S", "sh -c 'echo {key}'"],
    ["bash", "-lc", "x {key}"],
    ["bash", "-e", "-o", "pipefail", "-c", "x {key}"],
    ["bash", "-c", "--", "x {key}"],
    ["nice", "-n", "5", "timeout", "60", "sh", "-c", "x {key}"],
    ["busybox", "sh", "-c", "x {key}"],
    ["sudo", "-u", "app", "sh", "-c", "x {key}"],
    ["fish", "--command=echo {key}"],
    ["sh", "-c", "x {group}"],  # any placeholder, not only the key
    ["sh", "-c", "x {node}"],
    ["python3", "-c", "print('{key}')"],
    ["python3.11", "-Ic", "print('{key}')"],
    ["python", "-cprint('{key}')"],
    ["perl", "-ne", "print '{key}'"],
    ["ruby", "-e", "puts '{key}'"],
    ["node", "--eval=run('{key}')"],
    ["node", "-p", "'{key}'"],
    ["php", "-r", "echo '{key}';"],
    ["awk", 'BEGIN { print "{key}" }'],
    ["sed", "-e", "s/a/{key}/", "file"],
    ["sed", "s/a/{key}/e"],
    ["flock", "/tmp/lock", "-c", "run {key}"],
    ["su", "app", "-c", "run {key}"],
    ["ssh", "host", "run", "{key}"],
    ["ssh", "-p", "2222", "host", "run --key={key}"],
    ["watch", "run {key}"],
    # Code that the caller's start arguments would supply (forsetictl get GROUP KEY ARG...).
    ["sh", "-c"],
    ["python3", "-c"],
    ["ssh", "host"],
]

ALLOWED = [
    ["sh", "-c", 'echo job "$FORSETI_KEY"; exec sleep 600'],
    ["sh", "-c", 'echo job "$1"', "sh", "{key}"],  # the key as an argument of its own
    ["bash", "run.sh", "{key}"],
    ["python3", "-m", "myapp.user", "{key}"],
    ["python3", "-m", "myapp", "-c", "{key}"],  # -c is the module's own option
    ["python3", "app.py", "-c", "{key}"],
    ["python3", "-c", "import sys; print(sys.argv[1])", "{key}"],
    ["awk", "-f", "prog.awk", "{key}"],
    ["watch", "-x", "run", "{key}"],
    ["myapp", "--key", "{key}", "--shell", "{group}"],
    ["sleep", "600"],
    ["sh", "-c", "echo ${HOME} {} {1,2}"],  # ${NAME} and braces that name nothing are the shell's
]


@pytest.mark.parametrize("command", REFUSED, ids=" ".join)
def test_a_placeholder_in_code_is_refused(command):
    why = code_error(command)
    assert why is not None and "`command`" in why
    with pytest.raises(ValueError, match="command"):
        p.Call(command=command)


@pytest.mark.parametrize("command", ALLOWED, ids=" ".join)
def test_a_placeholder_as_data_is_allowed(command):
    assert code_error(command) is None
    assert p.Call(command=command).command == command


def test_the_refusal_points_to_the_environment_and_to_a_separate_argument():
    why = code_error(["sh", "-c", "echo {key}"])
    assert "{key}" in why and "a shell's -c script" in why and '"$FORSETI_KEY"' in why and "sh {key}" in why
    assert '"$FORSETI_GROUP"' in code_error(["bash", "-c", "echo {group}"])
    assert "start arguments" in code_error(["sh", "-c"])


@given(st.text(min_size=1, max_size=200).filter(lambda k: "\0" not in k))
def test_an_escaped_value_is_one_safe_segment_that_decodes_back(key):
    out = escaped(key)
    assert re.fullmatch(r"[A-Za-z0-9_.%-]+", out)  # no /, no ;, no @, no space, no control character
    assert not out.startswith(".")  # neither . nor .. as a path segment
    assert urllib.parse.unquote(out) == key


def test_endpoint_and_log_templates_keep_a_key_in_its_folder():
    template = "ipc:///run/forseti/{group}/{key}.sock"
    assert fill(template, "users", "../../../etc/x y", "n1", escape=True) == (
        "ipc:///run/forseti/users/%2E.%2F..%2F..%2Fetc%2Fx%20y.sock"
    )
    # Neither another address nor a ZeroMQ source address (tcp://SRC;DST) can be formed.
    assert fill("tcp://127.0.0.1:{key}", "g", "1;10.0.0.1:80", "n", escape=True) == "tcp://127.0.0.1:1%3B10.0.0.1%3A80"
    assert fill("ipc://{key}", "g", "@abstract", "n", escape=True) == "ipc://%40abstract"
    assert fill("{key}", "g", "../x", "n") == "../x"  # a command's argument is data, left whole
