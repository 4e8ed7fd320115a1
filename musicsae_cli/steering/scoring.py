"""Everything a sweep measures on each generated clip, timed: re-extraction at the scoring (and judge) hookpoints,
the scoring probe, the judges, pitch, text adherence, and the audio embeddings kept for the Frechet distance."""

from __future__ import annotations

import math
import time
from contextlib import contextmanager

import numpy as np

from ..errors import ConfigError, UsageError
from ..progress import ProgressFactory, no_progress
from .judges import load_data_judge, load_probe_judge, pitch_class, pitch_class_share
from .pitch import CONFIDENT, PitchScorer, cents, median_f0
from .report import reextract, score_acts

PHASES = ("generation", "reextraction", "scoring", "embedding", "judge_fit")  # seconds spent in each


class SweepScorer:
    """Scores the clips of one sweep and keeps what its evaluation needs."""

    def __init__(self, cfg, adapter, probe, target: str, hookpoint: str, layers: list[str], resynthesis: bool,
                 progress: ProgressFactory = no_progress):
        self.cfg, self.adapter, self.probe, self.target, self.hookpoint = cfg, adapter, probe, target, hookpoint
        self.target_index = probe.class_index(target)
        self.timing = dict.fromkeys(PHASES, 0.0)
        self.judge_probe = load_probe_judge(cfg, adapter, layers, target)
        with self.timed("judge_fit"):  # reading, embedding and fitting the judge's labelled audio, once
            self.data_judge = load_data_judge(cfg, adapter, probe.label, target, progress)
        self.pitch = PitchScorer(cfg.f0_model, cfg.device) if cfg.score_f0 else None
        self.f0_class, self.f0_name = None, cfg.f0_target or cfg.judge_target or target
        if cfg.f0_target and pitch_class(cfg.f0_target) is None:
            raise ConfigError(f"f0_target {cfg.f0_target!r} is not a pitch class", "e.g. A, C# or Db")
        if self.pitch is not None:
            self.f0_class = pitch_class(self.f0_name)
        self.unavailable: dict[str, str] = {}
        self.frechet = cfg.frechet and self._available("frechet", "audio_embeddings", resynthesis=False)
        self.text = cfg.text_adherence and self._available("text_adherence", "text_adherence", resynthesis)
        self.frames: dict[tuple, dict[tuple, np.ndarray]] = {}  # (control, index, strength) -> unit -> (T, d)
        self._plain_f0: dict[tuple, float] = {}

    def _available(self, what: str, capability: str, resynthesis: bool) -> bool:
        if resynthesis:
            self.unavailable[what] = "the model re-synthesises audio without text prompts"
        elif not self.adapter.can(capability):
            self.unavailable[what] = (f"model '{self.adapter.model_id}' (family {self.adapter.family}) does not offer "
                                      "it")
        return what not in self.unavailable

    @contextmanager
    def timed(self, phase: str):
        t = time.perf_counter()
        try:
            yield
        finally:
            self.timing[phase] += time.perf_counter() - t

    def score(self, res, texts: list, units: list[tuple], kind: str, index: int | None, strength: float) -> list[dict]:
        """Per clip of `res` (unit = (seed, prompt or item index)), its score columns."""
        hps = [self.hookpoint] + ([self.judge_probe.hookpoint] if self.judge_probe else [])
        with self.timed("reextraction"):
            acts = reextract(self.adapter, list(dict.fromkeys(hps)), res, self.cfg.rescore_from)
        with self.timed("scoring"):
            scores = score_acts(self.probe, self.hookpoint, acts, res.prompt_frames)
            probs, logits = scores.probs, scores.log_odds(self.target_index)  # (B, C), (B,)
            cols = [{"target_prob": float(probs[j, self.target_index]), "target_logit": float(logits[j]),
                     "input_rms": float(scores.input_rms[j]),
                     **{f"p_{c}": float(probs[j, k]) for k, c in enumerate(self.probe.classes)}}
                    for j in range(len(units))]
            if self.judge_probe is not None:
                jp = score_acts(self.judge_probe.probe, self.judge_probe.hookpoint, acts, res.prompt_frames)
                jl = jp.log_odds(self.judge_probe.target_index)
                for j, c in enumerate(cols):
                    c |= {"judge_probe_prob": float(jp.probs[j, self.judge_probe.target_index]),
                          "judge_probe_logit": float(jl[j])}
        if self.pitch is not None or self.frechet or self.data_judge is not None:
            if res.audio is None:
                raise UsageError(f"model '{self.adapter.model_id}' generates tokens without audio, which pitch, the "
                                 "data judge and the Frechet distance read", "drop --score-f0 and --judge-data, and "
                                 "set frechet: false")
        skip_s = res.prompt_frames / self.adapter.frame_rate
        if self.frechet or self.data_judge is not None:
            with self.timed("embedding"):
                skip = int(round(skip_s * self.adapter.sample_rate))
                emb = self.adapter.audio_embeddings([a.mean(axis=0)[skip:] for a in res.audio])  # [(T, d)]
            if self.frechet:
                key = ("none", None, 0.0) if kind == "none" else (kind, index, strength)
                self.frames.setdefault(key, {}).update(zip(units, emb, strict=True))
            if self.data_judge is not None:
                with self.timed("scoring"):
                    p, z = self.data_judge.score(emb)
                for j, c in enumerate(cols):
                    c |= {"judge_data_prob": float(p[j]), "judge_data_logit": float(z[j])}
        if self.pitch is not None:
            with self.timed("scoring"):
                for j, c in enumerate(cols):
                    f0_hz, confidence = self.pitch.frames(res.audio[j], self.adapter.sample_rate, skip_s)
                    f0 = median_f0(f0_hz, confidence)
                    if kind == "none":
                        self._plain_f0[units[j]] = f0
                    c |= {"f0_hz": f0, "f0_cents": cents(f0, self._plain_f0.get(units[j], math.nan))}
                    if self.f0_class is not None:
                        c["f0_target"] = pitch_class_share(f0_hz, confidence, self.f0_class, CONFIDENT)
        if self.text:
            with self.timed("scoring"):
                tokens = res.tokens if not res.lengths else [t[:n] for t, n in zip(res.tokens, res.lengths,
                                                                                   strict=True)]
                pmi = self.adapter.text_log_likelihood(list(tokens), texts)
            for j, c in enumerate(cols):
                c["text_adherence"] = float(pmi[j])
        return cols

    def record(self) -> dict:
        """The manifest's `judges`."""
        f0 = None
        if self.pitch is not None:
            f0 = {**self.pitch.record(), "target": self.f0_name if self.f0_class is not None else None,
                  "target_score": "f0_target: share of frames with confidence >= confident whose f0's nearest "
                                  "pitch class is the target's (NaN without a confident frame)"
                  if self.f0_class is not None else f"not computed: '{self.f0_name}' is not a pitch class"}
        return {"probe": self.judge_probe.record() if self.judge_probe else None,
                "data": self.data_judge.record() if self.data_judge else None, "f0": f0,
                "frechet": "audio embeddings of steered vs unsteered clips" if self.frechet
                else self.unavailable.get("frechet", "off (frechet: false)"),
                "text_adherence": "mean log p(tokens | prompt) - log p(tokens | no prompt) per token, in nats"
                if self.text else self.unavailable.get("text_adherence", "off (text_adherence: false)")}
