"""Config resolution: schema defaults < preset (which may `extends:` another) < --set overrides < typed flags.

Every command owns one pydantic model with `extra="forbid"`; a typo in a preset or a --set key is an error
that names the closest valid key. Presets live in `configs/<group>/<name>.yaml`; `-c` also takes a path.
"""

from __future__ import annotations

import difflib
import os
import typing
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from .errors import ConfigError

M = TypeVar("M", bound=BaseModel)
_MAX_EXTENDS = 16


def configs_dir() -> Path:
    """Where presets live: $MUSICSAE_CONFIG_DIR, the copy inside an installed wheel, or the source checkout."""
    env = os.environ.get("MUSICSAE_CONFIG_DIR")
    if env:
        return Path(env)
    packaged = Path(__file__).parent / "_configs"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[1] / "configs"


# The commands of a group that share its preset folder. A preset named `<command>-<name>` belongs to that
# command and is also reachable as `-c <name>` from it; an unprefixed preset belongs to every command of the group
# whose config accepts all of its keys.
GROUP_COMMANDS = {"data": ("synth", "index", "split", "chunk"),
                  "analyze": ("sensitivity", "separation", "features", "compare"),
                  "steer": ("generate", "sweep"),
                  "concept": ("learn", "evaluate")}


def list_presets(group: str, command: str | None = None, model: type[BaseModel] | None = None) -> list[str]:
    """Names of the presets in `configs/<group>/` (without .yaml); with `command`, only that command's presets.

    A command's own presets (`features-tiny` for `analyze features`) are listed by their short name (`tiny`);
    presets of a sibling command are left out, and with `model` so is any preset whose keys it does not accept.
    """
    folder = configs_dir() / group
    names = sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []
    if command is None:
        return names
    siblings = [c for c in GROUP_COMMANDS.get(group, ()) if c != command]
    own = {n[len(command) + 1:] for n in names if n.startswith(command + "-")}
    shown = set(own)
    for name in names:
        if name.startswith(command + "-") or any(name.startswith(c + "-") or name == c for c in siblings):
            continue
        if name in own or (model is not None and not _accepts(model, group, name)):
            continue
        shown.add(name)
    return sorted(shown)


def _accepts(model: type[BaseModel], group: str, name: str) -> bool:
    try:
        keys = load_preset(group, name)
    except ConfigError:
        return False
    return set(keys) <= set(model.model_fields)


def preset_path(group: str, preset: str, command: str | None = None) -> Path:
    """Resolve a preset name (`<command>-<preset>` first) or a YAML path; ConfigError listing the presets."""
    candidate = Path(preset).expanduser()
    if candidate.suffix in (".yaml", ".yml") or os.sep in preset or "/" in preset:
        if candidate.is_file():
            return candidate
        raise ConfigError(f"config file not found: {preset}", "check the path, or pass a preset name")
    names = [f"{command}-{preset}", preset] if command and not preset.startswith(command + "-") else [preset]
    for name in names:
        path = configs_dir() / group / f"{name}.yaml"
        if path.is_file():
            return path
    names = list_presets(group, command)
    close = difflib.get_close_matches(preset, names, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    what = f"{group} {command}" if command and command != group else group
    raise ConfigError(f"unknown {what} preset '{preset}'",
                      f"{hint}available: {', '.join(names) if names else '(none)'}")


def load_yaml_mapping(path: Path) -> dict:
    """Safe-load a YAML file that must hold a mapping."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text("utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"invalid YAML in {path}:{where}: {problem}", "fix the syntax of the file") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}", "check the path and permissions") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must be a mapping of keys to values, not {type(data).__name__}",
                          "write `key: value` lines")
    return data


def load_preset(group: str, preset: str, _seen: tuple[Path, ...] = (), command: str | None = None) -> dict:
    """Load a preset and, recursively, the presets it `extends:` (the child's keys win)."""
    path = preset_path(group, preset, command).resolve()
    if path in _seen or len(_seen) > _MAX_EXTENDS:
        chain = " -> ".join(p.name for p in (*_seen, path))
        raise ConfigError(f"preset extends itself in a cycle: {chain}", "remove one of the `extends:` lines")
    data = load_yaml_mapping(path)
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise ConfigError(f"`extends` in {path} must be a preset name or path", "e.g. `extends: default`")
    if "/" in parent or parent.endswith((".yaml", ".yml")):
        parent = str((path.parent / parent).resolve()) if not Path(parent).is_absolute() else parent
    return deep_merge(load_preset(group, parent, (*_seen, path), command), data)


def deep_merge(base: dict, over: dict) -> dict:
    """Merge `over` into a copy of `base`; nested mappings merge, everything else is replaced."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_set(items: list[str] | None) -> dict:
    """Turn repeatable `key=value` strings (dotted keys nest, values parsed as YAML) into a mapping."""
    import yaml

    out: dict = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set expects KEY=VALUE, got '{item}'", "e.g. --set seed=3 or --set model.dtype=bf16")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {key}: value is not valid YAML: {raw}",
                              "quote strings, e.g. --set 'name=\"a: b\"'") from exc
        out = deep_merge(out, _nest(key.split("."), value))
    return out


def _nest(parts: list[str], value: Any) -> dict:
    return {parts[0]: value} if len(parts) == 1 else {parts[0]: _nest(parts[1:], value)}


def resolve_config(model: type[M], group: str, preset: str | None = None, sets: list[str] | None = None,
                   flags: dict[str, Any] | None = None, command: str | None = None, base: dict | None = None) -> M:
    """Build a validated config: defaults < base < preset < --set < typed flags (None flags are unset).

    `base` is a config to start from (a resumed run's saved settings); `command` picks its presets.
    """
    data: dict = dict(base or {})
    if preset:
        data = deep_merge(data, load_preset(group, preset, command=command))
    data = deep_merge(data, parse_set(sets))
    for key, value in (flags or {}).items():
        if value is not None:
            data = deep_merge(data, _nest(key.split("."), value))
    return validate(model, data)


def lift_generation_settings(data):
    """Move flat generation settings of any registered model family (e.g. `top_k: 50`) into `generation`; a flat
    key wins over the same key inside `generation` (flat keys come from flags and --set)."""
    if not isinstance(data, dict):
        return data
    from .models import generation_setting_names

    flat = {k: data[k] for k in generation_setting_names() if k in data}
    if not flat:
        return data
    rest = {k: v for k, v in data.items() if k not in flat}
    nested = rest.get("generation") or {}
    if not isinstance(nested, dict):
        return data  # validation reports the wrong type
    return {**rest, "generation": {**nested, **flat}}


def validate(model: type[M], data: dict) -> M:
    """Validate `data` against `model`, turning the first pydantic error into a one-line ConfigError."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(p) for p in err["loc"]]
        key = ".".join(loc)
        if err["type"] == "extra_forbidden":
            valid = _fields_at(model, loc[:-1])
            close = difflib.get_close_matches(loc[-1], valid, n=1, cutoff=0.5)
            hint = f"did you mean '{'.'.join([*loc[:-1], close[0]])}'?" if close else \
                f"valid keys: {', '.join(valid)}"
            raise ConfigError(f"unknown config key '{key}'", hint) from None
        msg = err["msg"]
        got = err.get("input")
        shown = f" (got {got!r})" if got is not None and not isinstance(got, dict) else ""
        raise ConfigError(f"invalid value for '{key}': {msg}{shown}",
                          f"see `--dry-run` for the resolved config; {_describe(model, loc)}") from None


def walk_fields(model: type[BaseModel], loc: list[str]) -> list:
    """The pydantic fields along a dotted config key (`direction.probe` -> [direction, probe]), as far as they
    exist; a nested model may be optional."""
    fields, current = [], model
    for part in loc:
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            break
        fields.append(field)
        current = _model_in(field.annotation)
    return fields


def _model_in(annotation: Any) -> Any:
    """The pydantic model an annotation holds (Optional[Model] included), else the annotation itself."""
    if typing.get_origin(annotation) is not None:
        models = [a for a in typing.get_args(annotation) if hasattr(a, "model_fields")]
        return models[0] if models else annotation
    return annotation


def _fields_at(model: type[BaseModel], loc: list[str]) -> list[str]:
    fields = walk_fields(model, loc)
    if len(fields) < len(loc):
        return []
    current = _model_in(fields[-1].annotation) if fields else model
    return sorted(getattr(current, "model_fields", {}))


def _describe(model: type[BaseModel], loc: list[str]) -> str:
    fields = walk_fields(model, loc)
    field = fields[-1] if fields else None
    desc = field.description if field is not None and field.description else "see the command's --help"
    return desc.rstrip(".")


def dump_yaml(config: BaseModel | dict) -> str:
    """The resolved config as YAML (the text --dry-run prints and config.yaml holds)."""
    import yaml

    data = config.model_dump(mode="json") if isinstance(config, BaseModel) else config
    return yaml.safe_dump(data, sort_keys=False)


def check_max_rows(max_rows: int | None, option: str = "--max-rows") -> int | None:
    """`max_rows` when it is None (every row) or at least 1; a ConfigError naming `option` otherwise.

    For options that no config model carries (`probe evaluate` / `sae evaluate --max-rows`): 0 would evaluate
    nothing and fail later, or write an empty result.
    """
    if max_rows is not None and max_rows < 1:
        raise ConfigError(f"{option} must be at least 1 (got {max_rows})", "leave it out to use every row")
    return max_rows
