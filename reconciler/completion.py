"""`reconciler completion bash|zsh`: shell completion generated from the argument parser.

Generated rather than written by hand, so a new command or option completes without touching this.
zsh loads the bash function through bashcompinit, which ships with zsh.
"""

from __future__ import annotations

import argparse
import shlex

SHELLS = ("bash", "zsh")

_FUNCTION = """\
_reconciler() {
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]} cmd="" w i
    for ((i = 1; i < COMP_CWORD; i++)); do
        w=${COMP_WORDS[i]}
        case $w in -*) ;; *) cmd=$w; break ;; esac
    done
    COMPREPLY=()
    case "$cmd:$prev" in
%(values)s
    esac
    local opts files=spec
    case $cmd in
%(commands)s
        *) COMPREPLY=($(compgen -W %(top)s -- "$cur")); return ;;
    esac
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$opts" -- "$cur"))
    elif [[ $files == spec ]]; then
        while IFS= read -r w; do
            [[ -d $w || $w == *.yaml || $w == *.yml ]] && COMPREPLY+=("$w")
        done < <(compgen -f -- "$cur")
    elif [[ $files == words ]]; then
        COMPREPLY=($(compgen -W "$words" -- "$cur"))
    fi
}
complete -o filenames -o bashdefault -F _reconciler reconciler
"""


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse offers no public way to list subparsers
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _value_case(cmd: str, action: argparse.Action) -> str | None:
    """The completion of an option's value: its choices, a directory, or any file."""
    if action.nargs == 0 or not action.option_strings:
        return None
    if action.choices:
        words = shlex.quote(" ".join(str(c) for c in action.choices))
        reply = f'COMPREPLY=($(compgen -W {words} -- "$cur"))'
    elif action.metavar == "DIR":
        reply = 'COMPREPLY=($(compgen -d -- "$cur"))'
    else:
        reply = 'COMPREPLY=($(compgen -f -- "$cur"))'
    pattern = "|".join(f"{cmd}:{opt}" for opt in action.option_strings)
    return f"        {pattern}) {reply}; return ;;"


def _command_case(cmd: str, parser: argparse.ArgumentParser) -> str:
    opts = [opt for a in parser._actions for opt in a.option_strings]
    positional = [a for a in parser._actions if not a.option_strings]
    setting = f"opts={shlex.quote(' '.join(opts))}"
    if not positional:
        setting += "; files=none"
    elif positional[0].choices:
        setting += f"; files=words; local words={shlex.quote(' '.join(map(str, positional[0].choices)))}"
    return f"        {cmd}) {setting} ;;"


def script(parser: argparse.ArgumentParser, shell: str) -> str:
    commands = _subcommands(parser)
    values = [
        case
        for cmd, sub in commands.items()
        for action in sub._actions
        if (case := _value_case(cmd, action)) is not None
    ]
    top = shlex.quote(" ".join([*commands, *(o for a in parser._actions for o in a.option_strings)]))
    body = _FUNCTION % {
        "values": "\n".join(values),
        "commands": "\n".join(_command_case(cmd, sub) for cmd, sub in commands.items()),
        "top": top,
    }
    if shell == "zsh":
        return "#compdef reconciler\nautoload -U +X bashcompinit && bashcompinit\n" + body
    return body
