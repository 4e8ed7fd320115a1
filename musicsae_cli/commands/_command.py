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
"""

from __future__ import annotations

import functools
import importlib
import inspect
import sys
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup

from ._errors import cli_command

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


def _metavar(annotation: Any) -> str | None:
    origin = typing.get_origin(annotation)
    if origin is typing.Union or type(annotation).__name__ == "UnionType":
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _metavar(args[0]) if len(args) == 1 else "TEXT"
    if origin in (list, tuple, Sequence):
        return _metavar(typing.get_args(annotation)[0])
    if annotation is bool:
        return None
    if isinstance(annotation, type) and issubclass(annotation, Path):
        return "PATH"
    return {int: "INT", float: "FLOAT", str: "TEXT"}.get(annotation, "TEXT")


def _plain_metavars(fn: Callable) -> dict[str, str]:
    """Give every option and argument of `fn` a plain metavar (PATH, INT, FLOAT, TEXT; arguments by name);
    returns each argument's value kind (PATH, TEXT, ...) for the help's type column."""
    kinds: dict[str, str] = {}
    hints = typing.get_type_hints(fn, include_extras=True)
    for name, hint in hints.items():
        if typing.get_origin(hint) is not typing.Annotated:
            continue
        base, *extras = typing.get_args(hint)
        for info in extras:
            if isinstance(info, typer.models.ArgumentInfo):
                kinds[name] = _metavar(base) or ""
            if not isinstance(info, typer.models.ParameterInfo) or info.metavar is not None:
                continue
            if isinstance(info, typer.models.ArgumentInfo):
                many = any(typing.get_origin(t) is list for t in (base, *typing.get_args(base)))
                info.metavar = name.upper().rstrip("S") + "..." if many else name.upper()
            else:
                kind = _metavar(base)
                info.metavar = kind if kind is not None else ""
        # Typer re-evaluates string annotations (which would build fresh, metavar-less infos): hand it these.
        fn.__annotations__[name] = hint
    return kinds


def config_default(model: type, key: str) -> Any:
    """The default of a (dotted) config key of a pydantic model; `_NONE` when it has none to show."""
    from pydantic_core import PydanticUndefined

    from ..config import walk_fields

    parts = key.split(".")
    fields = walk_fields(model, parts)
    if len(fields) < len(parts):
        return _NONE
    field = fields[-1]
    if field.default_factory is not None:
        return field.default_factory()
    return _NONE if field.default is PydanticUndefined else field.default


_NONE = object()


def _show(value: Any, param: Any) -> str | None:
    if value is _NONE or value is None:
        return None
    if isinstance(value, bool):
        if getattr(param, "secondary_opts", None):
            return param.opts[0].lstrip("-") if value else param.secondary_opts[0].lstrip("-")
        return "on" if value else "off"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value) if value else None
    if isinstance(value, dict):  # DIM=VALUE pairs, as the option takes them
        return ",".join(f"{k}={_show(v, param)}" for k, v in value.items()) if value else None
    if isinstance(value, float):
        return f"{value:g}"
    return str(getattr(value, "value", value))


class MusicsaeCommand(TyperCommand):
    """A Typer command with musicsae's aliases, help defaults and presets (set per command by `command()`)."""

    aliases: dict[str, Alias] = {}
    config_model: str | None = None  # "package.module:Class"
    config_group: str | None = None
    config_keys: dict[str, str] = {}  # option name -> config key, where they differ
    preset_command: str | None = None
    kinds: dict[str, str] = {}  # argument name -> PATH, TEXT, ...

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, rewrite_aliases(list(args), self.aliases))

    def get_help_option(self, ctx: Any) -> Any:
        return _flag(super().get_help_option(ctx))

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        """`[OPTIONS] STORE [SOURCE]`: arguments by name, optional ones in brackets, hidden ones left out."""
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if getattr(param, "param_type_name", "") == "argument" and not param.hidden:
                name = param.metavar or param.name.upper()
                pieces.append(name if param.required else f"[{name}]")
        return pieces

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self._fill_help()
        super().format_help(ctx, formatter)

    def model(self) -> type | None:
        if not self.config_model:
            return None
        module, _, name = self.config_model.partition(":")
        return getattr(importlib.import_module(module), name)

    def _fill_help(self) -> None:
        for param in self.params:
            kind = self.kinds.get(param.name)
            if kind is not None and getattr(param, "param_type_name", "") == "argument":
                param.display_type_rich = lambda ctx, kind=kind: kind  # the type column: PATH, not <path>
        model = self.model()
        if model is None:
            return
        from ..config import list_presets

        for param in self.params:
            if getattr(param, "param_type_name", "") != "option" or param.hidden:
                continue
            if param.name == "config" and self.config_group:
                names = list_presets(self.config_group, self.preset_command, model)
                param.help = (f"A preset ({', '.join(names)}) or a YAML file." if names
                              else "A YAML file of settings.")
                continue
            if param.default not in (None, False) or getattr(param, "_musicsae_help", None) is not None:
                continue
            if param.default is False and not getattr(param, "secondary_opts", None):
                continue  # a plain on/off flag: off unless given
            shown = _show(config_default(model, self.config_keys.get(param.name, param.name)), param)
            if shown is not None:  # in the help text: the option's own default is None ("the config's")
                param._musicsae_help = param.help or ""
                param.help = f"{param.help or ''}  \\[default: {shown}]".strip()


PIPELINE = ("data", "extract", "sae", "probe", "steer", "concept", "analyze", "info", "model")


class MusicsaeGroup(TyperGroup):
    """A command group whose help lists its commands in pipeline order and shows no metavar for flags."""

    def list_commands(self, ctx: Any) -> list[str]:
        names = list(super().list_commands(ctx))
        return sorted(names, key=lambda n: (PIPELINE.index(n) if n in PIPELINE else len(PIPELINE), names.index(n)))

    def get_help_option(self, ctx: Any) -> Any:
        return _flag(super().get_help_option(ctx))

    def format_help(self, ctx: Any, formatter: Any) -> None:
        for param in self.params:
            if getattr(param, "is_flag", False):
                param.metavar = ""
        super().format_help(ctx, formatter)


def _flag(option: Any) -> Any:
    if option is not None:
        option.metavar = ""
    return option


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
        cls.kinds = _plain_metavars(fn)
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
