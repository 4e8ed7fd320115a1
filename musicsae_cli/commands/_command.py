"""How every musicsae command is declared: one spelling per idea, old spellings as warned aliases, help that teaches.

`command(...)` registers a function as a Typer command with:
- plain metavars (PATH, INT, FLOAT, TEXT; arguments by their name) taken from the annotations;
- the defaults of config-backed options, resolved from the command's config model when help is shown (so help
  never imports PyTorch, and an option that defaults to "the config's value" still shows that value);
- the command's presets listed in the `-c` help and offered by tab completion;
- examples at the end of the help;
- deprecated spellings (`--layers` for `--hookpoint`, ...) rewritten before parsing, with a one-line warning;
- option groups (`Annotated[T, OptionGroup(...)]` on a parameter): options several commands share, declared once,
  expanded in place into the command's options; the command receives one value built from them (its output
  object `ui` from --json/-q/-v, the steering options as config flags).

How the help reads (metavars, config defaults, presets, the groups' command order) is in _help.py.
"""

from __future__ import annotations

import functools
import inspect
import sys
import typing
from collections.abc import Callable, Sequence
from typing import Any

import typer

from ._errors import cli_command
from ._help import HelpfulCommand, plain_metavars

# The spellings every command uses for an idea, and the old spellings still accepted (hidden, with a warning).
# A test walks every command and fails on a visible option that spells a known idea another way.
IDEAS: dict[str, tuple[str, tuple[str, ...]]] = {
    "output": ("-o/--out", ()),
    "preset": ("-c/--config", ()),
    "hookpoints": ("--hookpoint", ("--hookpoints", "--layers")),
    "label column": ("-l/--label", ("--labels", "--label-name")),
    "per-value breakdown": ("--by", ("--by-label",)),
    "SAE latents": ("--latent", ("--latents",)),
    "probes folder": ("--probe", ("--probes",)),
    "row limit": ("--max-rows", ()),
    "item limit": ("--max-items", ("--max-clips", "--items")),
    "clip length (s)": ("--duration-s", ("--duration", "--clip-s")),
    "window length (s)": ("--window-s", ("--length-s",)),
    "window step (s)": ("--hop-s", ()),
    "how many latents": ("--top", ("--top-density", "--random")),
    "top frames per latent": ("--frames", ("--top-k",)),
    "model": ("-m/--model", ()),
    "device": ("--device", ()),
    "seed": ("--seed", ()),
    "row filter": ("--where", ()),
}


class OptionGroup(typing.NamedTuple):
    """Options several commands share. A parameter annotated `Annotated[T, OptionGroup(build, options)]` stands, in
    the command line and its help, for `options` (name -> (annotation, default), in order); the command receives
    `build(**their values)`."""

    build: Callable[..., Any]
    options: dict[str, tuple[Any, Any]]


def _group_of(hint: Any) -> OptionGroup | None:
    if typing.get_origin(hint) is not typing.Annotated:
        return None
    return next((x for x in typing.get_args(hint)[1:] if isinstance(x, OptionGroup)), None)


def _expand_groups(fn: Callable) -> Callable:
    """`fn` with each option-group parameter replaced, in place, by the group's options (see OptionGroup)."""
    hints = typing.get_type_hints(fn, include_extras=True)
    groups = {name: g for name, hint in hints.items() if (g := _group_of(hint)) is not None}
    if not groups:
        return fn
    params: list[inspect.Parameter] = []
    for p in inspect.signature(fn).parameters.values():  # keyword-only: Typer passes every value by name
        if p.name in groups:
            params += [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=hint)
                       for name, (hint, default) in groups[p.name].options.items()]
        else:
            params.append(p.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=hints.get(p.name, p.annotation)))

    @functools.wraps(fn)
    def expanded(**values: Any) -> Any:
        for name, group in groups.items():
            values[name] = group.build(**{option: values.pop(option) for option in group.options})
        return fn(**values)

    expanded.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    expanded.__annotations__ = {p.name: p.annotation for p in params}
    return expanded


class Alias(typing.NamedTuple):
    """An old spelling: replaced by `tokens` (the last one takes the old option's value, if it had one).

    With `prefix`, the option always takes a value, given to the last token as prefix + value (a shortcut such
    as `--top-k 50` for `--gen top_k=50`); `warn=False` for shortcuts that are not deprecated."""

    tokens: tuple[str, ...]
    prefix: str = ""
    warn: bool = True


class MusicsaeCommand(HelpfulCommand):
    """A Typer command with musicsae's aliases, help defaults and presets (set per command by `command()`)."""

    aliases: dict[str, Alias] = {}

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, rewrite_aliases(list(args), self.aliases))


def rewrite_aliases(args: list[str], aliases: dict[str, Alias]) -> list[str]:
    """Replace old option spellings by the current ones, warning once per spelling on stderr."""
    if not aliases:
        return args
    out: list[str] = []
    warned: set[str] = set()
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            out += args[i - 1:]
            break
        name, eq, value = arg.partition("=")
        alias = aliases.get(name) if name.startswith("--") else None
        if alias is None:
            out.append(arg)
            continue
        if alias.warn and name not in warned:
            warned.add(name)
            sys.stderr.write(f"warning: {name} is deprecated; use {' '.join(alias.tokens)}\n")
        if alias.prefix:
            if not eq and i < len(args):
                value, eq, i = args[i], "=", i + 1
            out += [*alias.tokens, alias.prefix + value] if eq else [*alias.tokens]
            continue
        out += alias.tokens[:-1] + ((f"{alias.tokens[-1]}={value}",) if eq else (alias.tokens[-1],))
    return out


def command(app: typer.Typer | None, name: str, *, examples: Sequence[str], config: str | None = None,
            group: str | None = None, keys: dict[str, str] | None = None,
            aliases: dict[str, Alias | tuple[str, ...] | str] | None = None) -> Callable:
    """Declare a musicsae command (see the module docstring); with `app=None`, register later via `.register`."""
    table = {old: a if isinstance(a, Alias) else Alias((a,) if isinstance(a, str) else tuple(a))
             for old, a in (aliases or {}).items()}
    preset_command = name if group else None
    cls = type(f"{name.title().replace('-', '')}Command", (MusicsaeCommand,),
               {"aliases": table, "config_model": config, "config_group": group, "config_keys": dict(keys or {}),
                "preset_command": preset_command})
    epilog = "Examples:\n\n" + "\n\n".join(examples)

    def decorate(fn: Callable) -> Callable:
        fn = _expand_groups(fn)
        cls.kinds = plain_metavars(fn)
        # the command group: the module under commands/ (a package of one module per command counts as one)
        path = fn.__module__.partition(".commands.")[2].split(".")[0] or fn.__module__.rsplit(".", 1)[-1]
        label = name if path == name.replace("-", "_") else f"{path} {name}"
        wrapped = cli_command(fn, label)

        def register(target: typer.Typer) -> Callable:
            return target.command(name, cls=cls, epilog=epilog)(wrapped)

        wrapped.register = register  # type: ignore[attr-defined]
        if app is not None:
            register(app)
        return wrapped

    return decorate


def config_option(group: str):
    """The -c/--config option of a command whose presets live in configs/<group>/ (completion: its own only)."""

    def complete(ctx, incomplete: str) -> list[str]:
        from ..config import list_presets

        cmd = getattr(ctx, "command", None)
        if isinstance(cmd, MusicsaeCommand) and cmd.config_group:
            names = list_presets(cmd.config_group, cmd.preset_command, cmd.model())
        else:
            names = list_presets(group)
        return [n for n in names if n.startswith(incomplete)]

    return typer.Option("-c", "--config", metavar="PRESET|PATH", autocompletion=complete,
                        help=f"A preset from configs/{group}/ or a YAML file.")
