"""The options commands share, as Annotated aliases (`set_: opt.Set = None`), one spelling and help each.

Commands import this module as `opt`; `ui: opt.UI` (after `*`, last) gives a command its output object, made from
--json, -q and -v (an option group: see _command.OptionGroup)."""

from __future__ import annotations

from typing import Annotated

import typer

from ..models import MODEL_HELP
from ._command import OptionGroup, config_option
from ._common import Output, model_flags

Set = Annotated[list[str] | None, typer.Option(
    "--set", metavar="KEY=VALUE", help="Override a config key (repeatable; values parsed as YAML, dotted keys nest).")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Print the resolved config and exit.")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.")]
Where = Annotated[list[str] | None, typer.Option("--where", help="Row filter, e.g. stream=cond (repeatable).")]
Device = Annotated[str | None, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")]
Nproc = Annotated[int, typer.Option("--nproc", min=1, help="Processes on this machine: relaunches the command "
                                      "under torchrun (gloo on CPU, nccl on GPUs, one GPU per process).")]
Member = Annotated[str | None, typer.Option(help="Which SAE of a sweep run.")]
Model = Annotated[str | None, typer.Option("--model", "-m", help=MODEL_HELP)]
Concepts = Annotated[str | None, typer.Option("--concepts", help="Learned prompt concepts (a `concept learn` "
                                                                    "folder): prompts may name them as <name>.")]
Family = Annotated[str | None, typer.Option(
    "--family", help="Model family; auto from the model name (`musicsae model families`).")]
TrustCode = Annotated[bool, typer.Option(
    "--trust-code", help="Allow --model py:package.module:factory to import and run that Python code (only from the "
                         "command line: a config or preset cannot allow it).")]
Gen = Annotated[list[str] | None, typer.Option(
    "--gen", metavar="KEY=VALUE", help="A generation setting of the model's family (repeatable; YAML values), e.g. "
                                       "--gen top_k=50; `musicsae model families` lists them.")]
Hookpoints = Annotated[list[str] | None, typer.Option(
    "--hookpoint", help="Hookpoints: layers.N, ranges layers.A-B, layers.-1, globs, all (repeatable or comma "
                        "list).")]
StoreHookpoint = Annotated[str | None, typer.Option(
    "--hookpoint", help="Store hookpoint (default: the SAE's or the only one).")]
AllowOtherModel = Annotated[bool, typer.Option(
    "--allow-other-model", help="Accept inputs made with another model (models are compared by a fingerprint of "
                                "their weights; widths must still match).")]


def _model_selection(model: str | None, family: str | None, trust: bool, hookpoint: list[str] | None) -> dict:
    flags = model_flags(model, family, trust, hookpoint, None)  # --trust-code checked here
    del flags["device"]  # --device stands apart (after the command's own options)
    return flags


# -m, --family, --trust-code and --hookpoint of a command that runs a model: the command receives their config flags
# (model, family, hookpoints).
ModelSelection = Annotated[dict, OptionGroup(_model_selection, {
    "model": (Model, None), "family": (Family, None), "trust": (TrustCode, False), "hookpoint": (Hookpoints, None)})]


def _feature_source(sae: str | None, member: str | None, allow_other_model: bool, hookpoint: str | None,
                    where: list[str] | None) -> dict:
    return {"sae": sae, "member": member, "allow_other_model": allow_other_model or None, "hookpoint": hookpoint,
            "where": where}


def feature_source(sae_help: str):
    """--sae (helped by `sae_help`), --member, --allow-other-model, --hookpoint and --where of a command that reads
    a store's activations or SAE latents: the command receives their config flags."""
    sae = Annotated[str | None, typer.Option(help=sae_help)]
    return Annotated[dict, OptionGroup(_feature_source, {
        "sae": (sae, None), "member": (Member, None), "allow_other_model": (AllowOtherModel, False),
        "hookpoint": (StoreHookpoint, None), "where": (Where, None)})]


def preset(group: str):
    """The -c/--config option of a command whose presets live in configs/<group>/: `Config = opt.preset("sae")`."""
    return Annotated[str | None, config_option(group)]


# --json, -q and -v: the command receives them as its output object.
UI = Annotated[Output, OptionGroup(lambda json_out, quiet, verbose: Output(json_out, quiet, verbose), {
    "json_out": (Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")], False),
    "quiet": (Annotated[bool, typer.Option("-q", "--quiet", help="Only errors on stderr; no progress.")], False),
    "verbose": (Annotated[bool, typer.Option("-v", "--verbose", help="Debug messages on stderr.")], False)})]
