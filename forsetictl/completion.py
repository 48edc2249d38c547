"""Shell completion for ``forsetictl``, written from its argparse parser by
``forsetictl completion bash|zsh`` (no dependency; the script follows the parser, so a
new command or option completes without anyone editing it).

It completes the commands, each command's options (those that may also come before
it included), the choices of an option or argument, file and folder names where a
FILE or DIR is asked, and GROUP and NODE from the cluster the line talks to (its
--config, --endpoint, --key, --server-key), asked with a half-second timeout. zsh runs
the same function through its bash compatibility (bashcompinit)."""

from __future__ import annotations

import argparse

SHELLS = ("bash", "zsh")
LIVE_TIMEOUT = 0.5  # seconds a completion may wait for the cluster's groups or nodes
CONNECTION = ("--config", "--endpoint", "--key", "--server-key")  # passed on to the live lookup
LIVE = {"GROUP": "calls", "NODE": "nodes"}  # a positional's metavar -> the command that lists them

BASH = """\
# forsetictl completion (bash; zsh through bashcompinit), written by `forsetictl completion {shell}`.
# Load it with:  source <(forsetictl completion {shell})
{prologue}
_forsetictl_names() {{  # $1: calls or nodes; the first column, from the cluster the line names
    "${{COMP_WORDS[0]}}" "${{conn[@]}}" --timeout {timeout} --wide "$1" 2>/dev/null | awk 'NR > 1 {{ print $1 }}'
}}

_forsetictl() {{
    local cur=${{COMP_WORDS[COMP_CWORD]}} prev=${{COMP_WORDS[COMP_CWORD-1]}}
    local cmd="" pos=0 dashes="" i w
    local -a conn=()
    for ((i = 1; i < COMP_CWORD; i++)); do
        w=${{COMP_WORDS[i]}}
        if [[ -n $dashes ]]; then
            pos=$((pos + 1))
        elif [[ $w == "--" ]]; then
            dashes=1
        elif [[ $w == "=" ]]; then  # bash splits --option=value in three words
            i=$((i + 1))
        elif [[ $w == -* ]]; then
            case "$w" in
                {connection}) conn+=("$w" "${{COMP_WORDS[i+1]}}") ;;
            esac
            case "$cmd $w" in
                {takes_value}) i=$((i + 1)) ;;
            esac
        elif [[ -z $cmd ]]; then
            cmd=$w
        else
            pos=$((pos + 1))
        fi
    done
    if [[ -z $dashes ]]; then  # the value of an option
        case "$cmd $prev" in
{values}
        esac
    fi
    if [[ -z $cmd ]]; then
        if [[ $cur == -* ]]; then
            {main_options}
        else
            {commands}
        fi
        return 0
    fi
    if [[ -z $dashes && $cur == -* ]]; then
        case "$cmd" in
{options}
        esac
        return 0
    fi
    case "$cmd $pos" in
{positionals}
    esac
    return 0
}}

complete -F _forsetictl forsetictl
"""

ZSH_PROLOGUE = """\
(( $+functions[compdef] )) || { autoload -U +X compinit && compinit -i; }
autoload -U +X bashcompinit && bashcompinit
"""


def script(ap: argparse.ArgumentParser, shell: str) -> str:
    """The completion script for ``shell`` (one of SHELLS)."""
    parsers = commands(ap)
    main = _takes_value(ap)  # (every command takes them too)
    own = {name: [o for o in _takes_value(p) if o not in main] for name, p in parsers.items()}
    patterns = {f'*" {o}"': _value(ap, o) for o in main}
    patterns.update({f'"{n} {o}"': _value(parsers[n], o) for n, opts in own.items() for o in opts})
    by_reply: dict[str, list[str]] = {'COMPREPLY=($(compgen -c -- "$cur"))': ['"add-call --command"']}
    for pattern, reply in patterns.items():
        by_reply.setdefault(reply, []).append(pattern)
    values = [f"            {'|'.join(p)}) {reply}; return 0 ;;" for reply, p in by_reply.items()]
    takes_value = list(patterns)
    return BASH.format(
        shell=shell,
        prologue=ZSH_PROLOGUE if shell == "zsh" else "",
        timeout=LIVE_TIMEOUT,
        connection="|".join(CONNECTION),
        takes_value="|".join(takes_value),
        values="\n".join(values),
        main_options=_words(_options(ap)),
        commands=_words(list(parsers)),
        options="\n".join(f'            "{n}") {_words(_options(p))} ;;' for n, p in parsers.items()),
        positionals="\n".join(line for n, p in parsers.items() for line in _positionals(n, p)),
    )


def commands(ap: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """forsetictl's commands by name, each with its own parser."""
    sub = next(a for a in ap._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _options(p: argparse.ArgumentParser) -> list[str]:
    return sorted(o for a in p._actions for o in a.option_strings if o.startswith("--"))


def _takes_value(p: argparse.ArgumentParser) -> list[str]:
    """The options that take a value (not add-call's --command: the words after it are the command)."""
    return sorted(o for a in p._actions if a.nargs != 0 and a.dest != "command" for o in a.option_strings)


def _value(p: argparse.ArgumentParser, option: str) -> str:
    """What completes the value of ``option``: its choices, a file or folder name, or nothing."""
    action = p._option_string_actions[option]
    if action.choices:
        return _words(list(action.choices))
    kind = action.metavar or action.dest.upper()
    if kind in ("FILE", "DIR"):
        return f'COMPREPLY=($(compgen -{kind[0].lower()} -- "$cur"))'
    return "COMPREPLY=()"


def _positionals(name: str, p: argparse.ArgumentParser) -> list[str]:
    out = []
    for i, a in enumerate(a for a in p._actions if not a.option_strings):
        if a.choices:
            out.append(f'        "{name} {i}") {_words(list(a.choices))} ;;')
        elif a.metavar in LIVE and name != "add-call":  # (add-call's GROUP is a new one)
            out.append(f'        "{name} {i}") {_words([f"$(_forsetictl_names {LIVE[a.metavar]})"])} ;;')
    if name == "add-call":  # after GROUP: the command's words
        out.append('        "add-call "[1-9]*) COMPREPLY=($(compgen -f -- "$cur")) ;;')
    return out


def _words(words: list[str]) -> str:
    return f'COMPREPLY=($(compgen -W "{" ".join(words)}" -- "$cur"))'
