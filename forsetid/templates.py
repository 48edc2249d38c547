"""Templates: where a key, a group or a node name is filled into what a group starts.

A key is anyone's to choose (any text without NUL, up to 1024 characters), so a
placeholder is filled in only where its value stays data:

* in a ``command``, each placeholder becomes part of one argument of the program's argv,
  never shell text: a placeholder inside text that a shell or an interpreter runs as
  code (``sh -c "...{key}..."``, ``python3 -c``, ``perl -e``, ``ssh HOST ...``) is
  refused when the group is defined (:func:`code_error`), as is such a command whose
  code would be the caller's start arguments (``["sh", "-c"]``);
* in an ``endpoint`` or a ``log`` template, each value is escaped (:func:`fill` with
  ``escape=True``): only ``A-Z a-z 0-9 _ . -`` stay as they are, everything else
  becomes ``%XX`` (its UTF-8 bytes), and a leading ``.`` becomes ``%2E``, so that a
  value is one path segment that cannot climb out of its folder (``..``) nor add an
  address, a port, a ZeroMQ source address (``;``) or an abstract socket (``@``).

The process finds its key unchanged in ``$FORSETI_KEY`` (and its group and node in
``$FORSETI_GROUP`` and ``$FORSETI_NODE``).
"""

from __future__ import annotations

import os
import re
import shlex

PLACEHOLDERS = ("key", "group", "node")
PLACEHOLDER = re.compile(r"(?<!\$)\{([A-Za-z_][A-Za-z0-9_]*)\}")  # (a shell's ${NAME} is not one)
_SAFE = re.compile(r"[A-Za-z0-9_.-]")


def fill(template: str, group: str, key: str, node: str, escape: bool = False) -> str:
    """Fill ``{key}``, ``{group}`` and ``{node}``; other braces are left as they are.
    ``escape``: the template is an endpoint or a file name (see the module's doc)."""
    if escape:
        group, key, node = (escaped(v) for v in (group, key, node))
    return template.replace("{key}", key).replace("{group}", group).replace("{node}", node)


def escaped(value: str) -> str:
    """``value`` as one safe path segment: ``%XX`` for all but ``A-Z a-z 0-9 _ . -``,
    and for a leading ``.``."""
    out = "".join(c if _SAFE.match(c) else "".join(f"%{b:02X}" for b in c.encode()) for c in value)
    return "%2E" + out[1:] if out.startswith(".") else out


def unknown_placeholder(template: str) -> str | None:
    """The first placeholder in ``template`` that is none of :data:`PLACEHOLDERS`."""
    return next((name for name in PLACEHOLDER.findall(template) if name not in PLACEHOLDERS), None)


# -- what runs its arguments as code --


class Runner:
    """How a program takes code on its command line (``what`` names it in errors).

    ``code``: options whose value is code (``python3 -c CODE``, ``perl -e CODE``);
    ``script``: options after which the first operand is code (``sh -c -e SCRIPT``);
    ``operand``: the first operand is code unless an option gave it (``awk PROGRAM``);
    ``files``: options that give the code in a file (``awk -f FILE``); ``valued``: other
    options that take a value (``bash -o NAME``); ``stop``: options after which the rest
    is the program's own argv (``python3 -m MOD``); ``permute``: options may follow
    operands (``flock FILE -c CMD``, ``su USER -c CMD``); ``rest``: the operands are
    joined into shell text (``ssh HOST CMD...``; ``host``: after the first).
    Option names are letters (``-c``) or long names (``--command``)."""

    def __init__(self, what: str, code="", script="", operand=False, files="", valued="", stop="", permute=False,
                 rest=False, host=False) -> None:  # fmt: skip
        self.what, self.operand, self.permute, self.rest, self.host = what, operand, permute, rest, host
        self.code, self.script, self.files = set(code.split()), set(script.split()), set(files.split())
        self.stop = set(stop.split())
        self.valued = self.code | self.files | set(valued.split())  # options that take a value


_SHELL = Runner("a shell's -c script", script="c", code="command", valued="o O rcfile init-file")
_PYTHON = Runner("python's -c code", code="c", valued="W X Q", stop="m")
_NODE = Runner("node's -e code", code="e p eval print", valued="r require")
_AWK = Runner("an awk program", operand=True, files="f file", valued="v F assign field-separator")
_SHELLS = ("sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "yash", "posh", "fish", "csh", "tcsh", "rbash")
_RUNNERS = {
    **dict.fromkeys(_SHELLS, _SHELL),
    **dict.fromkeys(("python", "pypy"), _PYTHON),
    **dict.fromkeys(("node", "nodejs"), _NODE),
    **dict.fromkeys(("awk", "gawk", "mawk", "nawk", "busybox-awk"), _AWK),
    "perl": Runner("perl's -e code", code="e E", valued="I M m x"),
    "ruby": Runner("ruby's -e code", code="e", valued="I r C"),
    "php": Runner("php's -r code", code="r B R F E", valued="c d z"),
    "lua": Runner("lua's -e code", code="e", valued="l"),
    "Rscript": Runner("Rscript's -e code", code="e"),
    "tclsh": Runner("a tclsh script", operand=True),
    "sed": Runner("a sed script (its e command runs a shell)", code="e expression", operand=True, files="f file"),
    "su": Runner("su's -c command", code="c command", valued="s shell g group G", permute=True),
    "runuser": Runner("runuser's -c command", code="c command", valued="s shell g group G u", permute=True),
    "flock": Runner("flock's -c command", code="c command", valued="w E timeout conflict-exit-code", permute=True),
    "script": Runner("script's -c command", code="c command", valued="E I O T echo log-in log-out", permute=True),
    "ssh": Runner(
        "ssh's remote command (a shell runs it there)",
        rest=True,
        host=True,
        valued="b c D E e F I i J L l m O o p Q R S W w",
    ),
    "watch": Runner("watch's command (run by sh -c)", rest=True, valued="n d interval differences", stop="x exec"),
}


def _runner(word: str) -> Runner | None:
    name = os.path.basename(word)
    return _RUNNERS.get(name) or _RUNNERS.get(re.sub(r"[0-9.]+$", "", name))  # python3.11, lua5.4, perl5.36


def code_error(command: list[str]) -> str | None:
    """Why ``command`` would run a placeholder's value, or the caller's start arguments,
    as code; None if it does not. Every element is looked at as a program's name, so
    that a wrapper (``env``, ``nice``, ``sudo``, ``busybox``, ``timeout 5``) hides nothing."""
    for i, word in enumerate(command):
        split = _split_string(command, i)
        if split is not None:  # env -S "sh -c ..." splits its value into words
            return code_error(split)
        runner = _runner(word)
        if runner is None:
            continue
        for j in _code_positions(runner, command, i + 1):
            if j >= len(command):
                return (
                    f"`command` ends where {runner.what} goes, so the caller's start arguments "
                    "(forsetictl get GROUP KEY ARG...) would be that code; put the code in the command"
                )
            found = PLACEHOLDER.search(command[j])
            if found:
                return (
                    f"`command` puts the placeholder {found[0]} into {runner.what} ({command[j]!r}), where a key "
                    f'would run as code; read it from the environment instead ("$FORSETI_{found[1].upper()}", '
                    f"quoted) or pass it as an argument of its own (sh -c 'echo \"$1\"' sh {{key}})"
                )
    return None


def _split_string(command: list[str], i: int) -> list[str] | None:
    """What ``env -S STRING`` (``--split-string``) runs, where ``command[i]`` is that env."""
    if os.path.basename(command[i]) != "env":
        return None
    for j, word in enumerate(command[i + 1 :], start=i + 1):
        for flag in ("-S", "--split-string="):
            if word.startswith(flag) and (word != "-S" or j + 1 < len(command)):
                value = word[len(flag) :] or command[j + 1]
                try:
                    return shlex.split(value) + command[j + 1 + (word == "-S") :]
                except ValueError:
                    return value.split() + command[j + 1 + (word == "-S") :]
    return None


def _code_positions(runner: Runner, argv: list[str], i: int) -> list[int]:
    """Where code is in ``argv[i:]``, the arguments of ``runner``: indexes, one past the
    end where the code would be what is appended to the command."""
    found: list[int] = []
    operands: list[int] = []
    script = given = False
    while i < len(argv):
        word = argv[i]
        if word == "--" or len(word) < 2 or word[0] not in "-+":
            if word == "--" or not runner.permute:
                operands += range(i + (word == "--"), len(argv))
                break
            operands.append(i)
            i += 1
            continue
        step = 1
        for name, inline in _options(word, runner.valued):
            if name in runner.stop:
                return found
            script = script or name in runner.script
            given = given or name in runner.code or name in runner.files
            if name in runner.valued:
                step = 1 if inline else 2
                if name in runner.code:
                    found.append(i if inline else i + 1)
        i += step
    if runner.rest:
        return found + (operands[runner.host :] or [len(argv)])
    if script or (runner.operand and not given):
        found.append(operands[0] if operands else len(argv))
    return found


def _options(word: str, valued: set[str]) -> list[tuple[str, bool]]:
    """The options in one argument, each with whether its value is inline: ``--name``,
    ``--name=value``, ``-abc`` (letters), ``-ovalue`` (a letter that takes a value)."""
    if word.startswith("--"):
        name, eq, _ = word[2:].partition("=")
        return [(name, bool(eq))]
    out: list[tuple[str, bool]] = []
    for k, letter in enumerate(word[1:], start=2):
        if letter in valued:
            return [*out, (letter, k < len(word))]
        out.append((letter, False))
    return out
