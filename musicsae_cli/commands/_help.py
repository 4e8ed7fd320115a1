"""How a musicsae command's help reads: plain metavars (PATH, INT, FLOAT, TEXT; arguments by their name) taken
from the annotations, the defaults of config-backed options resolved from the command's config model when help is
shown (so help never imports PyTorch), the command's presets in the `-c` help, and groups that list their commands
in pipeline order. Commands are declared in _command.py, which re-exports these names.
"""

from __future__ import annotations

import importlib
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup


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


def plain_metavars(fn: Callable) -> dict[str, str]:
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


class HelpfulCommand(TyperCommand):
    """A Typer command whose help shows plain metavars, the config's defaults and the presets (set per command by
    `command()`, on its MusicsaeCommand subclass)."""

    config_model: str | None = None  # "package.module:Class"
    config_group: str | None = None
    config_keys: dict[str, str] = {}  # option name -> config key, where they differ
    preset_command: str | None = None
    kinds: dict[str, str] = {}  # argument name -> PATH, TEXT, ...

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
