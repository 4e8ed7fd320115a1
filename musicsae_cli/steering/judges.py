"""Judges of a steering sweep: scores of the target that do not come from the steered layers.

- probe judge (`judge_probe`): a probe at a hookpoint that is not steered (default: the probed hookpoint farthest
  from the steered layers), scored on the re-extracted clips like the scoring probe.
- data judge (`judge_data`): a logistic regression (standardised, class-balanced) fitted on the mean-pooled audio
  embeddings of labelled concept audio, then asked for each generated clip's target probability: it never sees a
  layer of the generating network, only the model's own audio representation.
- pitch judge (`score_f0` with a pitch-class target): the share of the pitch tracker's confident frames whose
  pitch class is the target's (`f0_target`), NaN for a clip without a confident frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError, UsageError
from ..progress import ProgressFactory, no_progress


@dataclass
class ProbeJudge:
    """A probe scoring the target at a hookpoint that is not steered."""

    probe: Any
    path: str
    hookpoint: str
    target: str
    target_index: int

    def record(self) -> dict:
        return {"probe": self.path, "label": self.probe.label, "target": self.target, "hookpoint": self.hookpoint,
                "pooling": self.probe.pooling}


def load_probe_judge(cfg, adapter, layers: list[str], target: str) -> ProbeJudge | None:
    """The probe judge of `cfg` (None without judge_probe); UsageError when its hookpoint is steered."""
    from ..probes import ProbeSet
    from .directions import check_same_model
    from .sweep import depth

    if not cfg.judge_probe:
        return None
    probe = ProbeSet.load(cfg.judge_probe)
    check_same_model(f"the judge probe {cfg.judge_probe}", probe.model, adapter, cfg.allow_other_model)
    if probe.task != "classification":
        raise InputError(f"the judge probe {cfg.judge_probe} is a regression probe", "judge with a classification "
                         "probe")
    target = cfg.judge_target or target
    index = probe.class_index(target)  # InputError naming the classes
    free = [h for h in probe.hookpoints if h not in layers]
    if cfg.judge_hookpoint:
        if cfg.judge_hookpoint in layers:
            raise UsageError(f"the judge hookpoint {cfg.judge_hookpoint} is a steered layer, so it is no independent "
                             "judge", "pick a probed hookpoint that is not steered: " + (", ".join(free) or "none"))
        probe.index(cfg.judge_hookpoint)  # InputError listing the probed hookpoints
        hp = cfg.judge_hookpoint
    else:
        if not free:
            raise UsageError(f"every hookpoint of the judge probe {cfg.judge_probe} is steered "
                             f"({', '.join(probe.hookpoints)}), so it is no independent judge",
                             "train the judge probe at a layer that is not steered")
        steered = [depth(h)[0] for h in layers]
        hp = max(free, key=lambda h: (min(abs(depth(h)[0] - s) for s in steered), depth(h)))
    return ProbeJudge(probe, str(cfg.judge_probe), hp, target, index)


class DataJudge:
    """A logistic regression on mean-pooled audio embeddings of labelled concept audio."""

    def __init__(self, source: str, label: str, target: str, x: np.ndarray, y: np.ndarray, groups: np.ndarray,
                 folds: int = 5, seed: int = 0):
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import StratifiedGroupKFold, cross_val_score
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        self.source, self.label, self.target = source, label, target
        self.classes = sorted(set(y.tolist()))
        if len(self.classes) < 2:
            raise InputError(f"the judge data {source} has one {label} value ({self.classes[0]})",
                             "give labelled audio of at least two classes")
        if target not in self.classes:
            raise InputError(f"'{target}' is not a {label} value of the judge data {source}",
                             "its values: " + ", ".join(self.classes))

        def model():
            return make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=2000))

        smallest = min(int((y == c).sum()) for c in self.classes)
        n_folds = min(folds, smallest, len(set(groups.tolist())))
        self.cv_accuracy = None
        if n_folds >= 2:  # folds never split a group (a track), and keep the class balance where they can
            split = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
            self.cv_accuracy = float(cross_val_score(model(), x, y, groups=groups, cv=split).mean())
        self.folds, self.n_items = n_folds, int(len(y))
        self.counts = {c: int((y == c).sum()) for c in self.classes}
        self.model = model().fit(x, y)
        self.target_index = list(self.model.classes_).index(target)

    def score(self, embeddings: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(target probability (B,), its log-odds (B,)) of clips given as (frames, d) embeddings."""
        x = np.stack([e.mean(0) for e in embeddings]).astype(np.float64)  # (B, d), mean-pooled like the fit
        log_p = self.model.predict_log_proba(x)  # (B, C)
        others = np.delete(log_p, self.target_index, axis=1)  # (B, C-1)
        return np.exp(log_p[:, self.target_index]), log_p[:, self.target_index] - np.logaddexp.reduce(others, axis=1)

    def record(self) -> dict:
        return {"data": self.source, "label": self.label, "target": self.target, "classes": self.counts,
                "items": self.n_items, "cv_accuracy": self.cv_accuracy, "cv_folds": self.folds,
                "chance": 1.0 / len(self.classes),
                "classifier": "logistic regression (standardised, class-balanced) on mean-pooled audio embeddings; "
                              "cross-validated accuracy over folds grouped by `group`"}


def load_data_judge(cfg, adapter, label: str, target: str, progress: ProgressFactory = no_progress) -> DataJudge | None:
    """The data judge of `cfg` (None without judge_data), fitted on the audio embeddings of its labelled audio."""
    from ..audio.io import load_audio
    from ..audio.manifest import load_dataset

    if not cfg.judge_data:
        return None
    adapter.require("audio_embeddings", "the data judge (judge_data)")
    label = cfg.judge_label or label
    manifest = load_dataset(cfg.judge_data)
    if label not in manifest.label_columns:
        raise InputError(f"the judge data {cfg.judge_data} has no label column '{label}'",
                         f"its labels: {', '.join(manifest.label_columns) or 'none'}; pass --judge-label COLUMN")
    rows = [r for r in manifest.rows if r.get(label) not in (None, "")]
    if not rows:
        raise InputError(f"no item of the judge data {cfg.judge_data} has a '{label}' value", "label the audio")
    embeddings = []
    with progress("Judge data", len(rows)) as bar:
        for r in rows:
            audio, _ = load_audio(r["path"], sample_rate=adapter.sample_rate, mono=True)
            embeddings.append(adapter.audio_embeddings([audio])[0].mean(0))  # (d,)
            bar.advance()
    y = np.asarray([str(r[label]) for r in rows], dtype=object)
    groups = np.asarray([str(r.get("group") or r["item_id"]) for r in rows], dtype=object)
    return DataJudge(str(cfg.judge_data), label, cfg.judge_target or target, np.stack(embeddings), y, groups,
                     seed=cfg.bootstrap_seed)


def pitch_class(name: str | None) -> int | None:
    """Semitones above C of a pitch-class name ('A' -> 9, 'Db' -> 1), None when it names none."""
    from ..audio.config import PITCH_CLASSES, pitch_class_name
    from ..errors import ConfigError

    if not name:
        return None
    try:
        return PITCH_CLASSES.index(pitch_class_name(str(name)))
    except ConfigError:
        return None


def pitch_class_share(f0_hz: np.ndarray, confidence: np.ndarray, target: int, confident: float) -> float:
    """The share of frames with confidence >= `confident` whose f0's nearest pitch class is `target` (semitones
    above C); NaN without a confident frame."""
    f0 = np.asarray(f0_hz, dtype=np.float64)[(np.asarray(confidence) >= confident) & (np.asarray(f0_hz) > 0)]
    if not f0.size:
        return math.nan
    classes = np.mod(np.rint(69.0 + 12.0 * np.log2(f0 / 440.0)).astype(np.int64), 12)  # MIDI 60 = C
    return float((classes == target).mean())
