"""`data index --group-regex`: a regex that matches nothing is an error, one that matches only some files warns
(an error with --strict), and it never applies silently to a manifest."""

from __future__ import annotations

import csv

from tests.conftest import write_audio


def _groups(path) -> dict[str, str]:
    with open(path, newline="") as fh:
        return {r["item_id"]: r["group"] for r in csv.DictReader(fh)}


def test_a_regex_matching_no_file_is_one_line_error_naming_an_example(runner, app, class_folder, tmp_path):
    out = tmp_path / "m.csv"
    result = runner.invoke(app, ["data", "index", str(class_folder), "-o", str(out), "--group-regex",
                                 r"^(.+)_chunk\d+$"])
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    assert r"--group-regex '^(.+)_chunk\d+$' matches none of the 6 files" in line
    assert "'jazz/track0_part0'" in line and "hint:" in line
    assert not out.exists()


def test_a_regex_matching_some_files_warns_with_counts(runner, app, class_folder, tmp_path):
    write_audio(class_folder / "jazz" / "solo.wav")
    out = tmp_path / "m.csv"
    args = ["data", "index", str(class_folder), "-o", str(out), "--group-regex", r"^(.+)_part\d+$"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1
    assert r"matches 6 of 7 files; the other 1 (e.g. 'jazz/solo') are each their own group" in warnings[0]
    groups = _groups(out)
    assert groups["jazz/solo"] == "jazz/solo" and groups["jazz/track0_part1"] == "jazz/track0"
    strict = runner.invoke(app, [*args[:4], str(tmp_path / "strict.csv"), *args[5:], "--strict"])
    assert strict.exit_code == 2 and "matches 6 of 7 files" in strict.stderr
    assert len(strict.stderr.strip().splitlines()) == 1 and not (tmp_path / "strict.csv").exists()


def test_an_empty_capture_counts_as_no_match(runner, app, class_folder, tmp_path):
    out = tmp_path / "m.csv"
    result = runner.invoke(app, ["data", "index", str(class_folder), "-o", str(out), "--group-regex",
                                 r"^rock/(x)?track"])  # rock files match but capture nothing; jazz files do not match
    assert result.exit_code == 2 and "matches none of the 6 files" in result.stderr


def test_group_regex_on_a_manifest_is_refused(runner, app, tmp_path):
    write_audio(tmp_path / "a.wav")
    (tmp_path / "m.csv").write_text("path\na.wav\n")
    result = runner.invoke(app, ["data", "index", str(tmp_path / "m.csv"), "-o", str(tmp_path / "o.csv"),
                                 "--group-regex", "^(.+)$"])
    assert result.exit_code == 2 and "applies to folders" in result.stderr and "--group-column" in result.stderr
