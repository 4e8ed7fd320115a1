"""The folder of an `sae train` run: new, resumed, or replaced only once its replacement is complete.

- A new run is written in place (status "training"); the same command after a kill resumes it from its last
  checkpoint (with or without --resume), as long as the settings that change what it learns are the same.
- --overwrite of a finished run trains in the hidden sibling `.<name>.overwrite` and swaps it in at the end,
  so the old SAEs stay usable until then; an interrupted overwrite is resumed by the same command.
- While a process trains, it holds the run's lock: a second `sae train` on the same folder is refused.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from ..artifacts import (
    atomic_write_text,
    check_replaceable,
    hold_lock,
    make_parents,
    new_manifest,
    read_manifest,
    swap_into_place,
    write_config,
    write_json,
)
from ..errors import ConfigError, InputError, OutputExistsError
from ..kinds import is_kind

RUN_KIND = "sae_run"
RUN_LOCK = ".train.lock"
# Settings that only change how a run is watched or where it runs, not what it learns.
RUNTIME_ONLY = ("device", "log_every", "eval_every", "checkpoint_every", "tensorboard")
log = logging.getLogger("musicsae")


@dataclass
class RunDir:
    """Where a run is written (`path`), the folder it becomes (`target`), and whether it resumes one."""

    path: Path
    target: Path
    resumed: bool
    lock: int | None = None

    def finish(self) -> None:
        """Release the lock; an overwrite stage replaces the old run only now."""
        self.release()
        if self.path != self.target:
            swap_into_place(self.path, self.target, RUN_LOCK, "training run")

    def release(self) -> None:
        if self.lock is not None:
            os.close(self.lock)
            self.lock = None


def run_status(out: Path) -> str | None:
    """The status of the training run in `out` ("complete", "training"), or None where there is none."""
    manifest = _run_manifest(out)
    return None if manifest is None else manifest.get("status")


def overwrite_stage(out: Path) -> Path:
    """The hidden sibling a replacement run is trained in (fixed, so an interrupted one is found again)."""
    return out.parent / f".{out.name}.overwrite"


def open_run(out: Path, record: dict, overwrite: bool, resume: bool) -> RunDir:
    """Decide new / resumed / overwrite for `out`, lock the folder and (new) write its manifest."""
    make_parents(out)
    manifest = _run_manifest(out)
    if manifest is not None and manifest.get("status") != "complete" and not overwrite:
        changed = _changed(manifest, record)
        if changed:
            raise ConfigError(f"{out} is an interrupted run with other settings (" + "; ".join(changed) + ")",
                              "rerun with its original settings to resume it, or pass --overwrite to start over")
        return _locked(RunDir(out, out, True), manifest)
    if resume:
        stage = overwrite_stage(out)
        staged = _run_manifest(stage)
        if overwrite and staged is not None and not _changed(staged, record):
            return _locked(RunDir(stage, out, True), staged)
        what = "finished" if manifest is not None else "not an unfinished training run"
        raise InputError(f"nothing to resume in {out}: it is {what}" if out.exists() else
                         f"nothing to resume: {out} does not exist", "start the run without --resume")
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        if not overwrite:
            raise OutputExistsError(out, "training run")
        check_replaceable(out)
        stage = overwrite_stage(out)
        staged = _run_manifest(stage)
        if staged is not None and staged.get("status") != "complete" and not _changed(staged, record):
            return _locked(RunDir(stage, out, True), staged)
        if stage.exists():
            check_replaceable(stage)
            _fresh_folder(stage)
        else:
            stage.mkdir()
        return _new(RunDir(stage, out, False), record)
    out.mkdir(exist_ok=True)
    return _new(RunDir(out, out, False), record)


def trim_logs(path: Path, step: int) -> None:
    """Drop log rows a resumed run will write again: training rows from `step` on, evaluations after it."""
    for name, keep in (("train_log.jsonl", lambda s: s < step), ("eval_log.jsonl", lambda s: s <= step)):
        log_file = path / name
        if not log_file.is_file():
            continue
        rows = [line for line in log_file.read_text("utf-8").splitlines() if line.strip()]
        kept = [line for line in rows if _step(line) is not None and keep(_step(line))]
        if len(kept) != len(rows):
            atomic_write_text(log_file, "".join(line + "\n" for line in kept))


def _step(line: str) -> int | None:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None  # a line cut short by a kill


def _run_manifest(path: Path) -> dict | None:
    """The manifest of an SAE training run at `path`, else None."""
    if not (path / "manifest.json").is_file():
        return None
    manifest = read_manifest(path)
    return manifest if is_kind(manifest, RUN_KIND) else None


def _changed(manifest: dict, record: dict) -> list[str]:
    before = manifest.get("config", {})
    return [f"{k}: {before.get(k)!r} -> {record[k]!r}" for k in record
            if k not in RUNTIME_ONLY and before.get(k) != record[k]]


def _locked(run: RunDir, manifest: dict) -> RunDir:
    run.lock = hold_lock(run.path / RUN_LOCK, f"another `sae train` is using {run.target}",
                         "wait for it to finish, or stop it first")
    where = "" if run.path == run.target else f" (the interrupted --overwrite in {run.path.name})"
    log.info("resuming the interrupted training run %s%s", run.target, where)
    return run


def _new(run: RunDir, record: dict) -> RunDir:
    run.lock = hold_lock(run.path / RUN_LOCK, f"another `sae train` is using {run.target}",
                         "wait for it to finish, or stop it first")
    write_json(run.path / "manifest.json", new_manifest(RUN_KIND, 1, record, status="training", members=[]))
    write_config(run.path, record)
    return run


def _fresh_folder(path: Path) -> None:
    """Empty an abandoned overwrite stage (a musicsae run folder) before training in it again."""
    import shutil

    lock = hold_lock(path / RUN_LOCK, f"another `sae train` is using {path}", "wait for it to finish")
    try:
        for child in path.iterdir():
            if child.name != RUN_LOCK:
                shutil.rmtree(child) if child.is_dir() else child.unlink()
    finally:
        if lock is not None:
            os.close(lock)


def resume_settings(out: str | Path) -> tuple[str, dict] | None:
    """(store, config) saved by the unfinished run in `out` (or by its interrupted --overwrite), else None.

    `sae train RUN --resume` continues with these, so no flag has to be typed again.
    """
    out = Path(out)
    for path in (out, overwrite_stage(out)):
        manifest = _run_manifest(path)
        if manifest is not None and manifest.get("status") != "complete":
            config = dict(manifest.get("config", {}))
            store = config.pop("store", None)
            if store is not None:
                return str(store), config
    return None
