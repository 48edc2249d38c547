"""Shell completion, exercised for real: bash sources `forsetictl completion bash` and
runs its function with COMP_WORDS set, as bash does on TAB; zsh (when installed) is
driven through a pseudo-terminal and TAB pressed."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
from cluster import ROOT
from test_cli_manners import bare


@pytest.fixture(scope="module")
def scripts(tmp_path_factory):
    """The scripts, and a `forsetictl` to call for groups and nodes (this checkout's)."""
    root = tmp_path_factory.mktemp("completion")
    for shell in ("bash", "zsh"):
        r = bare("completion", shell)
        assert r.returncode == 0 and "_forsetictl" in r.stdout, r
        (root / shell).write_text(r.stdout)
    ctl = root / "forsetictl"
    ctl.write_text(f'#!/bin/sh\nPYTHONPATH={ROOT} exec {sys.executable} -m forsetictl "$@"\n')
    ctl.chmod(0o755)
    return root


def complete(scripts, *words: str) -> list[str]:
    """What bash offers for the last of ``words`` (the word being typed)."""
    program = (
        f"source {scripts / 'bash'}\n"
        f'COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMP_WORDS[0]={scripts / "forsetictl"}\n'
        '_forsetictl; printf "%s\\n" "${COMPREPLY[@]}"'
    )
    argv = ["bash", "-c", program, "bash", "forsetictl", *words]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    assert r.returncode == 0 and r.stderr == "", r
    return r.stdout.split()


def test_bash_completes_commands_options_and_choices(scripts):
    assert complete(scripts, "") == complete(scripts, "--json", "") and "add-call" in complete(scripts, "")
    assert complete(scripts, "ad") == ["add-call"]
    assert complete(scripts, "--timeout", "2", "dr") == ["drain"]  # an option's value is no command
    assert complete(scripts, "--w") == ["--wide"]
    assert complete(scripts, "ls", "--w") == ["--wide"]  # the global options after the command too
    assert complete(scripts, "add-call", "g", "--restart", "") == ["never", "on-failure", "always"]
    assert complete(scripts, "add-call", "g", "--command", "sleep", "30", "--rep") == ["--replace"]
    assert complete(scripts, "add-call", "g", "--", "--rep") == []  # after --: the command's words
    assert complete(scripts, "bench", "--transport", "t") == ["tcp"]
    assert complete(scripts, "completion", "") == ["bash", "zsh"]
    assert complete(scripts, "events", "--c") == ["--config", "--count"]
    assert complete(scripts, "--timeout", "") == []  # a number: nothing to offer


def test_bash_completes_file_and_folder_names(scripts, tmp_path):
    (tmp_path / "forseti.toml").write_text("")
    (tmp_path / "keys").mkdir()
    assert complete(scripts, "--config", f"{tmp_path}/f") == [f"{tmp_path}/forseti.toml"]
    assert complete(scripts, "keygen", "n", "--dir", f"{tmp_path}/") == [f"{tmp_path}/keys"]


def test_bash_completes_groups_and_nodes_from_the_cluster_named(scripts, make_cluster, tmp_path):
    c = make_cluster(both=True, calls={"late_cmd": {"command": ["true"]}})
    ep = c.endpoint("node1")
    assert complete(scripts, "--endpoint", ep, "get", "") == ["default", "late_cmd", "sleeper", "slow"]
    assert complete(scripts, "--endpoint", ep, "events", "sl") == ["sleeper", "slow"]
    assert complete(scripts, "drain", "--endpoint", ep, "") == ["node1"]
    assert complete(scripts, "--endpoint", ep, "get", "sleeper", "") == []  # a key: not listed
    # Nobody there: nothing, within the completion's own short timeout.
    assert complete(scripts, "--endpoint", f"ipc://{tmp_path}/nobody", "get", "") == []


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed (apt-get install zsh)")
def test_zsh_completes_on_tab(scripts):
    """An interactive zsh in a pseudo-terminal (zsh's own zpty) sources the script; TAB
    completes a command and an option's choice."""
    driver = f"""
zmodload zsh/zpty
zpty -b z 'zsh -f -i'
zpty -w z 'PS1="> "; source {scripts / "zsh"}; echo RE""ADY'
zpty -r z line '*READY*'
zpty -w -n z $'forsetictl remo\\t'
zpty -r z out '*remove-call*'
zpty -w -n z $'\\C-u'
zpty -w -n z $'forsetictl add-call g --restart on\\t'
zpty -r z out '*on-failure*'
print COMPLETED
zpty -d z
"""
    r = subprocess.run(["zsh", "-f", "-c", driver], capture_output=True, text=True, timeout=30)
    assert r.stdout.endswith("COMPLETED\n"), r
