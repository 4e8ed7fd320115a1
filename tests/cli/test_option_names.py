"""One voice across the CLI: one spelling per idea, old spellings as warned aliases, help that teaches, one --json
envelope, presets per command."""

from __future__ import annotations

import json
import shlex

import pytest
import typer

from musicsae_cli.commands._command import IDEAS, Alias, MusicsaeCommand, rewrite_aliases
from musicsae_cli.commands._help import _NONE, PIPELINE, config_default
from musicsae_cli.config import list_presets

pytestmark = pytest.mark.smoke


def _commands(app):
    """(path, click command) of every leaf command, e.g. (['sae', 'train'], cmd)."""
    out = []

    def walk(cmd, prefix):
        subs = getattr(cmd, "commands", None)
        if subs is None:
            out.append((prefix, cmd))
            return
        for name, sub in subs.items():
            walk(sub, [*prefix, name])

    walk(typer.main.get_command(app), [])
    return out


def _visible_options(cmd) -> list:
    return [p for p in cmd.params if getattr(p, "param_type_name", "") == "option" and not p.hidden]


def test_every_command_is_a_musicsae_command(app):
    commands = _commands(app)
    assert len(commands) >= 20
    for path, cmd in commands:
        assert isinstance(cmd, MusicsaeCommand), path


def test_one_spelling_per_idea(app):
    """A visible option that spells a known idea another way fails, naming the command and the spelling."""
    wrong = {alt: (idea, canonical) for idea, (canonical, alts) in IDEAS.items() for alt in alts}
    canonical_long = {canonical.split("/")[-1]: canonical for canonical, _ in IDEAS.values()}
    problems = []
    for path, cmd in _commands(app):
        for param in _visible_options(cmd):
            for opt in param.opts:
                if opt in wrong:
                    idea, right = wrong[opt]
                    problems.append(f"{' '.join(path)}: {opt} spells '{idea}'; use {right}")
                if opt in canonical_long and "/" in canonical_long[opt]:
                    short, long_ = canonical_long[opt].split("/")
                    if opt == long_ and short not in param.opts:
                        problems.append(f"{' '.join(path)}: {opt} without its short form {short}")
        for arg in (p for p in cmd.params if getattr(p, "param_type_name", "") == "argument" and not p.hidden):
            if arg.name in ("out", "output", "repo"):
                problems.append(f"{' '.join(path)}: the output is an argument; use -o/--out")
    assert not problems, "\n".join(problems)


def test_the_idea_table_catches_a_second_spelling():
    """The checker itself can fail: a command with --layers is flagged."""
    demo = typer.Typer()

    @demo.command()
    def show(layers: str = typer.Option(None, "--layers"), other: int = 0) -> None:
        """x"""

    cmd = typer.main.get_command(demo)
    wrong = {alt for _, alts in IDEAS.values() for alt in alts}
    assert any(opt in wrong for p in cmd.params for opt in getattr(p, "opts", []))


def test_old_spellings_are_rewritten_with_one_warning(capsys):
    aliases = {"--layers": Alias(("--hookpoint",)), "--top-density": Alias(("--select", "density", "--top"))}
    args = rewrite_aliases(["x", "--layers", "layers.2", "--layers=layers.3", "--top-density", "4", "--",
                            "--layers"], aliases)
    assert args == ["x", "--hookpoint", "layers.2", "--hookpoint=layers.3", "--select", "density", "--top", "4",
                    "--", "--layers"]
    err = capsys.readouterr().err.splitlines()
    assert err == ["warning: --layers is deprecated; use --hookpoint",
                   "warning: --top-density is deprecated; use --select density --top"]


@pytest.mark.parametrize("argv,old,new", [
    (["data", "synth", "-o", "x", "--dry-run", "--json"], ["--duration", "2"], ["--duration-s", "2"]),
    (["extract", "src", "-o", "x", "--dry-run", "--json"], ["--layers", "layers.1"], ["--hookpoint", "layers.1"]),
    (["probe", "train", "s", "-o", "x", "--dry-run", "--json"], ["--hookpoints", "layers.*"],
     ["--hookpoint", "layers.*"]),
    (["analyze", "sensitivity", "s", "-o", "x", "--dry-run", "--json"], ["--max-clips", "3"], ["--max-items", "3"]),
    (["analyze", "features", "s", "-o", "x", "--dry-run", "--json"], ["--top-density", "5", "--top-k", "3"],
     ["--select", "density", "--top", "5", "--frames", "3"]),
    (["analyze", "features", "s", "-o", "x", "--dry-run", "--json"], ["--by-label", "genre", "--labels", "a,b"],
     ["--by", "genre", "-l", "a", "-l", "b"]),
    (["data", "chunk", "s", "-o", "x", "--dry-run", "--json"], ["--length-s", "2"], ["--window-s", "2"]),
    (["steer", "generate", "-o", "x", "--dry-run", "--json"], ["--layers", "layers.1", "--duration", "3"],
     ["--hookpoint", "layers.1", "--duration-s", "3"]),
])
def test_old_spelling_resolves_like_the_new_one(runner, app, argv, old, new):
    before = runner.invoke(app, [*argv, *old])
    after = runner.invoke(app, [*argv, *new])
    assert before.exit_code == 0 and after.exit_code == 0, (before.output, after.output)
    assert json.loads(before.stdout) == json.loads(after.stdout)
    assert before.stderr.startswith("warning: ") and "is deprecated; use" in before.stderr
    assert after.stderr == ""


def test_output_as_an_argument_still_works_with_a_warning(runner, app, tmp_path):
    result = runner.invoke(app, ["model", "save-tiny", str(tmp_path / "tiny"), "--json"])
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith("warning: OUT as an argument is deprecated; use -o")
    assert json.loads(result.stdout)["out"] == str(tmp_path / "tiny")
    missing = runner.invoke(app, ["model", "save-tiny"])
    assert missing.exit_code == 2 and "missing option '-o' / '--out'" in missing.stderr


@pytest.mark.slow
def test_help_is_plain_shows_defaults_and_examples(runner, app):
    for path, cmd in _commands(app):
        result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
        text = result.output
        assert result.exit_code == 0, (path, text)
        for bad in ("<str>", "<int>", "<float>", "<path>", "<bool>", "list[", "{"):
            assert bad not in text, (path, bad, text)
        assert "Examples:" in text and f"musicsae {' '.join(path)}" in text.split("Examples:")[1], path
        if cmd.config_model:  # every option whose config has a default shows it
            cmd._fill_help()
            model = cmd.model()
            for param in _visible_options(cmd):
                key = cmd.config_keys.get(param.name, param.name)
                value = config_default(model, key)
                if param.default is None and value is not _NONE and value not in (None, [], (), {}):
                    assert "[default: " in (param.help or ""), (path, param.name)


def test_specific_defaults_come_from_the_config(runner, app):
    text = runner.invoke(app, ["sae", "train", "--help"], env={"COLUMNS": "200"}).output
    from musicsae_cli.sae.config import SAETrainConfig

    k = SAETrainConfig.model_fields["k"].default
    line = next(x for x in text.splitlines() if "--k " in x)
    assert f"[default: {k}]" in line
    root = runner.invoke(app, ["--help"], env={"COLUMNS": "200"}).output
    panel = root.split("Commands")[1]
    listed = [line.strip("│ ").split()[0] for line in panel.splitlines() if line.startswith("│ ")
              and not line.startswith("│  ")]
    assert listed == list(PIPELINE)


def test_help_examples_parse(app):
    """Every example in every help names options the command has."""
    root = typer.main.get_command(app)
    for _path, cmd in _commands(app):
        for example in (cmd.epilog or "").split("\n\n")[1:]:
            for part in example.split("&&"):
                words = shlex.split(part, comments=True)
                assert words[0] == "musicsae", example
                target, rest = root, words[1:]
                while getattr(target, "commands", None) and rest and rest[0] in target.commands:
                    target, rest = target.commands[rest[0]], rest[1:]
                ctx = target.make_context("musicsae", list(rest), resilient_parsing=False)
                assert ctx is not None, example


@pytest.mark.parametrize("path", [["extract"], ["sae", "train"], ["steer", "generate"], ["steer", "sweep"],
                                  ["analyze", "sensitivity"], ["analyze", "separation"], ["analyze", "features"],
                                  ["analyze", "compare"], ["data", "split"], ["data", "synth"]])
def test_groups_that_load_models_or_do_much_have_a_tiny_preset(runner, app, path):
    args = {"extract": ["src"], "sae": ["store"], "analyze": ["store"], "data": ["src"], "steer": []}[path[0]]
    if path in (["analyze", "compare"], ["data", "synth"]):
        args = []
    result = runner.invoke(app, [*path, *args, "-o", "x", "-c", "tiny", "--dry-run"])
    assert result.exit_code == 0, result.output


def test_preset_completion_offers_only_the_command_s_presets(app):
    cmd = dict((" ".join(p), c) for p, c in _commands(app))
    features = list_presets("analyze", "features", cmd["analyze features"].model())
    assert "tiny" in features and "default" in features
    assert not any(n.startswith(("separation", "sensitivity", "compare")) for n in features)
    sweep = list_presets("steer", "sweep", cmd["steer sweep"].model())
    assert "tiny" in sweep and "sweep" in sweep


@pytest.mark.slow
def test_every_offered_preset_resolves(runner, app):
    dummies = {"extract": ["src"], "probe": ["store"], "sae": ["store"], "analyze": ["store"], "data": ["src"],
               "steer": [], "model": [], "concept": ["audio"]}
    for path, cmd in _commands(app):
        if not cmd.config_group:
            continue
        args = [] if path in (["analyze", "compare"], ["data", "synth"]) else dummies[path[0]]
        for name in list_presets(cmd.config_group, cmd.preset_command, cmd.model()):
            result = runner.invoke(app, [*path, *args, "-o", "x", "-c", name, "--dry-run"])
            assert result.exit_code == 0, (path, name, result.output)


def test_json_envelope(runner, app, tmp_path):
    out = tmp_path / "ds"
    res = runner.invoke(app, ["data", "synth", "-o", str(out), "-c", "tiny", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert list(data)[:3] == ["command", "out", "elapsed_s"]
    assert data["command"] == "data synth" and data["out"] == str(out) and data["elapsed_s"] > 0
    index = runner.invoke(app, ["data", "index", str(out / "manifest.csv"), "-o", str(tmp_path / "i.csv"),
                                "--json"])
    data = json.loads(index.stdout)
    assert list(data)[:3] == ["command", "out", "elapsed_s"] and data["out"] == str(tmp_path / "i.csv")
    assert "manifest" not in data and data["items"] > 0
    info = json.loads(runner.invoke(app, ["info", str(out), "--json"]).stdout)
    assert info["command"] == "info" and info["out"] is None
