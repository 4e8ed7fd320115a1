"""The small helpers that keep commands thin: option groups, typed results, and the flag rules of analyze and
extract (which flags go together), tested without running a model."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Annotated

import pytest
import typer

from musicsae_cli.commands._command import OptionGroup, _expand_groups
from musicsae_cli.errors import UsageError
from musicsae_cli.results import ABSENT, Result, internal, skipped_lines

pytestmark = pytest.mark.smoke


PAIR = Annotated[str, OptionGroup(lambda a, b: f"{a}-{b}", {"a": (Annotated[str, typer.Option("--a")], "x"),
                                                            "b": (Annotated[int, typer.Option("--b")], 1)})]


def test_an_option_group_expands_in_place_and_builds_one_value():
    def cmd(first: int, both: PAIR, *, last: bool = False) -> tuple:
        return first, both, last

    expanded = _expand_groups(cmd)
    assert list(inspect.signature(expanded).parameters) == ["first", "a", "b", "last"]
    assert expanded(first=3, a="y", b=2, last=True) == (3, "y-2", True)


def test_the_output_group_gives_every_command_json_quiet_verbose_last(app):
    command = typer.main.get_command(app).commands["probe"].commands["evaluate"]
    assert [p.name for p in command.params][-4:] == ["overwrite", "json_out", "quiet", "verbose"]


@dataclasses.dataclass(kw_only=True)
class _Demo(Result):
    out: str
    sometimes: int = ABSENT
    hidden: str = internal()
    rows: list

    def lines(self) -> list[str]:
        return [self.out, f"{len(self.rows)} rows"]


def test_a_result_prints_its_fields_in_order_without_absent_or_internal_ones():
    res = _Demo(out="o/", hidden="h", rows=[1, 2])
    assert list(res.to_json().items()) == [("out", "o/"), ("rows", [1, 2])]
    assert res.lines() == ["o/", "2 rows"]
    assert res["hidden"] == "h" and res.get("sometimes", 0) == 0 and "sometimes" not in res
    with pytest.raises(KeyError):
        res["sometimes"]
    assert _Demo(out="o/", sometimes=3, hidden="h", rows=[]).to_json() == {"out": "o/", "sometimes": 3, "rows": []}


def test_skipped_lines_take_dicts_or_pairs():
    assert skipped_lines([]) == []
    assert skipped_lines([{"path": "a.wav", "reason": "silent"}, ("b.wav", "short")]) == [
        "2 skipped:", "  a.wav: silent", "  b.wav: short"]


def test_contrast_is_shorthand_for_label_a_b_never_both():
    from musicsae_cli.commands.analyze import contrast_sets

    assert contrast_sets(None, "genre", "rock", "jazz") == ("genre", "rock", "jazz")
    assert contrast_sets("concept=notes:tempos", None, None, None) == ("concept", "notes", "tempos")
    with pytest.raises(UsageError, match="--contrast is shorthand"):
        contrast_sets("concept=notes:tempos", "genre", None, None)


@pytest.mark.parametrize(("select", "latent", "by", "expected"), [
    (None, None, None, None), ("random", None, None, "random"), (None, ["3,17"], None, "latents"),
    (None, None, "genre", "label"), ("label", None, "genre", "label")])
def test_latent_selection_is_implied_by_latent_or_by(select, latent, by, expected):
    from musicsae_cli.commands.analyze import latent_selection

    assert latent_selection(select, latent, by) == expected


@pytest.mark.parametrize(("select", "latent", "by"), [(None, ["3"], "genre"), ("random", ["3"], None),
                                                      ("density", None, "genre")])
def test_latent_selection_refuses_two(select, latent, by):
    from musicsae_cli.commands.analyze import latent_selection

    with pytest.raises(UsageError, match="choose one latent selection"):
        latent_selection(select, latent, by)


def test_extract_generates_from_prompts_or_teacher_forces_a_source(tmp_path):
    from musicsae_cli.commands.extract import generation_mode
    from musicsae_cli.errors import MusicSAEError

    assert generation_mode(tmp_path, None, None, 1) is False
    assert generation_mode(None, None, ["a song"], 1) is True
    assert generation_mode(None, tmp_path / "prompts.txt", None, 1) is True
    for source, prompts, prompt in ((None, None, None), (tmp_path, None, ["a song"])):
        with pytest.raises(UsageError, match="pass either SOURCE"):
            generation_mode(source, prompts, prompt, 1)
    with pytest.raises(MusicSAEError):
        generation_mode(None, None, ["a song"], 2)


def test_extract_prompts_come_from_the_file_then_the_flags(tmp_path):
    from musicsae_cli.commands.extract import prompt_items

    (tmp_path / "p.txt").write_text("calm piano\n")
    items = prompt_items(tmp_path / "p.txt", ["fast drums"], "prompt")
    assert [p.text for p in items] == ["calm piano", "fast drums"] and items[-1].prompt_id == "prompt000"


def test_probe_train_takes_one_label():
    from musicsae_cli.commands.probe import one_label

    assert one_label(None) is None and one_label(["genre"]) == "genre"
    with pytest.raises(UsageError, match="takes one label"):
        one_label(["genre", "bpm"])


def test_data_index_folder_gives_one_named_label(tmp_path):
    from musicsae_cli.commands.data import folder_label

    assert folder_label(["genre"], tmp_path, True) == ("genre", None)
    assert folder_label(["genre", "bpm"], tmp_path / "songs.csv", True) == (None, ["genre", "bpm"])
    assert folder_label(["genre", "bpm"], tmp_path, False) == (None, ["genre", "bpm"])  # a dataset folder
    with pytest.raises(UsageError, match="a folder gives one label"):
        folder_label(["genre", "bpm"], tmp_path, True)


def test_data_index_refuses_dataset_options_for_a_folder(tmp_path):
    from musicsae_cli.commands.data import refuse_dataset_flags

    flags = dict.fromkeys(("split", "subset", "audio_column", "sample_rate", "limit", "audio_format"))
    refuse_dataset_flags(flags, tmp_path)
    with pytest.raises(UsageError, match="--split, --format applies to datasets"):
        refuse_dataset_flags({**flags, "split": "train", "audio_format": "wav"}, tmp_path)
