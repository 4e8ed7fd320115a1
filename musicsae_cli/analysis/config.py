"""The config of `musicsae analyze sensitivity`."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..errors import ConfigError
from ..extract.config import ExtractConfig
from ..models.selection import Hookpoints, ModelSelection


class SensitivityConfig(ModelSelection):
    """Which model and hookpoints, which perturbations of which excerpts, and how to aggregate."""

    hookpoints: Hookpoints = "all"
    batch_size: int = Field(8, ge=1, description="Clips per forward pass.")
    seed: int = Field(0, ge=0, description="Seed for the tiny model's weights, the noise perturbation and the "
                      "bootstrap.")
    excerpt_s: float = Field(4.0, gt=0, description="Seconds of each clip to analyse (whole excerpts, not "
                             "short chunks); shorter clips are used whole.")
    excerpt_at: Literal["start", "center"] = Field("start", description="Where the excerpt is cut from.")
    perturbations: dict[str, list[float]] = Field(
        default_factory=lambda: {"identity": [0.0], "pitch": [-2.0, -1.0, 1.0, 2.0],
                                 "tempo": [0.8, 0.9, 1.1, 1.25]},
        description="Perturbation name -> settings: pitch (semitones), tempo (stretch rates > 0), gain (dB), "
                    "noise (SNR dB), identity (control, setting ignored).")
    by: str | None = Field(None, description="Also aggregate per value of this manifest label column.")
    max_clips: int | None = Field(None, ge=1, description="Use at most this many clips (manifest order).")
    n_bootstrap: int = Field(1000, ge=1, description="Bootstrap resamples over clips for the CIs.")
    ci: float = Field(0.95, gt=0, lt=1, description="Confidence level of the bootstrap intervals.")
    text: str | None = Field(None, description="Condition every clip on this text (default: unconditional).")
    strict: bool = Field(False, description="Fail on the first unreadable audio file instead of skipping it.")

    @model_validator(mode="after")
    def _check_perturbations(self) -> SensitivityConfig:
        from .perturb import check_perturbations

        check_perturbations(self.perturbations)
        return self


class PatchConfig(ModelSelection):
    """`analyze patch`: which model, pairs, hookpoints, metric and interventions."""

    hookpoints: str = Field("all", description="Hookpoints to patch and ablate (names, ranges, globs, all).")
    seed: int = Field(0, ge=0, description="Seed of the model's random weights, the perturbations and the bootstrap.")
    perturbation: str | None = Field(None, description="Make pairs from a dataset: each item (clean) and the item "
                                     "perturbed (corrupt), NAME=SETTING: pitch=2 (semitones), gain=-6 (dB), "
                                     "noise=10 (SNR dB), tempo=0.8 (rate; the pair is cropped to the shorter).")
    target_column: str | None = Field(None, description="With perturbation: the dataset column naming each pair's "
                                      "probe class (default: the class the probe gives the clean input).")
    excerpt_s: float | None = Field(None, gt=0, description="Read at most this many seconds of each clip.")
    max_pairs: int | None = Field(None, ge=1, description="Use at most this many pairs.")
    length: Literal["crop", "refuse"] = Field("crop", description="Pairs of different lengths: crop both to the "
                                              "shorter, or refuse.")
    metric: Literal["probe", "latent", "outputs", "loss"] = Field(
        "probe", description="What a run is scored by: a probe's logit for a class (probe), an SAE latent's mean "
                             "activation (latent), the distance of the model's own outputs to the clean run's "
                             "(outputs), or the model's own loss: the mean log-probability of the clean input's "
                             "tokens (loss).")
    probe: str | None = Field(None, description="Probes folder (metric probe).")
    probe_hookpoint: str | None = Field(None, description="The probe layer the metric reads (default: the probe's "
                                                          "best).")
    target: str | None = Field(None, description="The probe class whose logit is the metric (default: per pair, "
                                                 "its target column or the class the probe gives the clean input).")
    sae: str | None = Field(None, description="SAE folder (metric latent).")
    latents: list[int] = Field(default_factory=list, description="SAE latents whose mean activation is the metric.")
    allow_other_model: bool = Field(False, description="Accept probes or SAEs made with another model than the one "
                                    "patched (compared by a fingerprint of the weights); widths must still match.")
    directions: Literal["both", "clean_to_corrupt", "corrupt_to_clean"] = Field(
        "both", description="Which patches to run: clean activations into the corrupt run, the reverse, or both.")
    ablations: list[Literal["zero", "mean"]] = Field(
        default_factory=lambda: ["zero", "mean"], description="Ablations per hookpoint on the clean input: zero, "
                                                              "mean (over the clean inputs).")
    subspace: Literal["full", "direction", "latents"] = Field(
        "full", description="What a patch or ablation replaces: the whole activation (full), its component along "
                            "one direction (direction, see direction_from), or a set of SAE latents with the SAE's "
                            "error term kept (latents: patch_sae, patch_latents).")
    direction_from: Literal["mean_diff", "probe"] = Field(
        "mean_diff", description="subspace direction: the difference of the clean and corrupt mean activations "
                                 "per hookpoint (mean_diff), or the probe's direction for the pair's class (probe).")
    patch_sae: str | None = Field(None, description="subspace latents: the SAE whose latents are patched (default: "
                                                    "--sae).")
    patch_latents: list[int] = Field(default_factory=list, description="subspace latents: the latents patched.")
    windows: int = Field(1, ge=1, le=64, description="Also patch each of this many equal time windows of the "
                                                     "input separately (1: the whole input at once).")
    batch: int = Field(8, ge=1, description="Patched runs per forward pass (families that batch copies of an "
                                            "input; others run them one by one).")
    n_bootstrap: int = Field(1000, ge=1, description="Bootstrap resamples over pairs for the CIs.")
    ci: float = Field(0.95, gt=0, lt=1, description="Confidence level of the bootstrap intervals.")


__all__ = ["ConfigError", "PatchConfig", "SensitivityConfig"]


class SeparationConfig(BaseModel):
    """Which features (raw activations or SAE latents) and labels, and how each separation measure is run."""

    model_config = ConfigDict(extra="forbid")

    labels: list[str] = Field(default_factory=list, description="Label columns of the store to analyse "
                              "(repeatable --label, or comma-separated).")
    sae: str | None = Field(None, description="SAE folder or training run: analyse its latents (read from a latent "
                            "store, or encoded on the fly from the activation store). Without it: the raw hookpoint.")
    member: str | None = Field(None, description="Which SAE of a sweep run.")
    allow_other_model: bool = Field(False, description="Accept an SAE or probes made with another model than the "
                                    "store's (compared by a fingerprint of the weights); widths must still match.")
    hookpoint: str | None = Field(None, description="Store hookpoint to read (default: the SAE's, or the only one).")
    where: list[str] = Field(default_factory=list, description="Store row filters, e.g. stream=cond.")
    pooling: Literal["frame", "mean", "max"] = Field("frame", description="Samples are frames, or items pooled "
                                                     "over their frames (mean or max).")
    task: Literal["auto", "classification", "regression"] = Field(
        "auto", description="auto: numeric labels with more than max_classes values are continuous (binned for "
        "class measures, regressed in cross-validation); others are classes.")
    max_classes: int = Field(24, ge=2, description="auto task: numeric labels with more distinct values are "
                             "continuous.")
    n_bins: int = Field(4, ge=2, description="Quantile bins of a continuous label (class measures never use raw "
                        "floats).")
    max_rows: int | None = Field(None, ge=2, description="Analyse a seeded stratified sample of at most this many "
                                 "samples (default: all).")
    top_n: int = Field(10, ge=1, description="Top latents listed per class, by mean difference and by AUROC.")
    mi_bins: int = Field(4, ge=1, description="Quantile levels of a latent's non-zero values for mutual "
                         "information (plus one level for zero).")
    measures: list[Literal["latents", "silhouette", "cv", "projections"]] = Field(
        default_factory=lambda: ["latents", "silhouette", "cv", "projections"],
        description="Which measures to run.")
    silhouette_max: int = Field(4000, ge=3, description="Stratified sample size for silhouette scores.")
    silhouette_metric: Literal["cosine", "euclidean"] = Field("cosine", description="Distance for silhouettes.")
    folds: int = Field(5, ge=2, description="Cross-validation folds (grouped by split_column, stratified).")
    split_column: str = Field("group", description="Samples sharing a value (a track) stay in one fold; "
                              "item_id when the store lacks it.")
    cv_max_rows: int = Field(20000, ge=10, description="Stratified sample size for cross-validation.")
    n_estimators: int = Field(100, ge=1, description="Trees of the random forests.")
    min_samples_leaf: int = Field(1, ge=1, description="Random forest minimum samples per leaf.")
    rf_features: int = Field(1024, ge=1, description="Wider inputs: the forest sees the features with the highest "
                             "mutual information on each training fold (selected on training rows only).")
    linear_c: float = Field(1.0, gt=0, description="Inverse regularisation of the logistic-regression baseline "
                            "(ridge alpha = 1 / linear_c).")
    n_jobs: int = Field(-1, description="Parallel jobs of the forests (-1: every core).")
    projections: list[Literal["tsne", "umap"]] = Field(default_factory=lambda: ["tsne", "umap"],
                                                       description="2-D projections drawn per label.")
    embed_max: int = Field(2000, ge=10, description="Stratified sample size for the projections.")
    svd_dims: int = Field(50, ge=2, description="Features are reduced to this many SVD/PCA components before "
                          "t-SNE and UMAP.")
    perplexity: float = Field(30.0, gt=0, description="t-SNE perplexity (capped for small samples).")
    umap_neighbors: int = Field(15, ge=2, description="UMAP n_neighbors (capped for small samples).")
    device: str = Field("cpu", description="Device for encoding with the SAE: cpu, cuda, cuda:N, mps, auto.")
    batch_size: int = Field(4096, ge=1, description="Rows per SAE encoding batch.")
    seed: int = Field(0, ge=0, description="Seed of every sample, split, forest and projection.")

    @field_validator("labels", mode="before")
    @classmethod
    def _split_labels(cls, value):
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return [p.strip() for v in value for p in v.split(",") if p.strip()]
        return value

    @field_validator("where", mode="before")
    @classmethod
    def _where_list(cls, value):
        return [value] if isinstance(value, str) else value


class CompareConfig(BaseModel):
    """Two sets of items, two values of a store label (store mode) or two prompt lists generated here (prompt
    mode), compared layer by layer."""

    model_config = ConfigDict(extra="forbid")

    # store mode
    label: str | None = Field(None, description="Store mode: the label column whose values `a` and `b` name the "
                              "two sets.")
    a: str | None = Field(None, description="Store mode: the label value of set a.")
    b: str | None = Field(None, description="Store mode: the label value of set b.")
    where: list[str] = Field(default_factory=list, description="Row filters applied to both sets (e.g. "
                             "stream=cond); prompt mode adds stream=cond itself.")
    hookpoints: list[str] = Field(default_factory=list, description="Dense store hookpoints: names, comma lists or "
                                  "globs such as 'layers.*' (default: every dense hookpoint). Prompt mode: also "
                                  "limits the layers extracted.")
    pooling: Literal["item", "frame"] = Field("item", description="item: one sample per item, the mean of its "
                                              "frames; frame: every frame is a sample (frames of one item are not "
                                              "independent, so the p-value is optimistic).")
    max_samples: int = Field(2000, ge=2, description="At most this many samples per set (a seeded subsample, "
                             "reported): the pairwise cosines cost n_a * n_b.")
    n_permutations: int = Field(1000, ge=0, description="Label permutations for the p-value of ||mean_a - mean_b|| "
                                "(0: no test).")
    seed: int = Field(0, ge=0, description="Seed of the permutations and subsamples.")
    group_column: str = Field("group", description="The permutation test moves samples sharing a value of this "
                              "column (a track: all windows of one recording) together, so windows of one track "
                              "never count as independent evidence; item_id permutes items. A store without the "
                              "column (e.g. generated prompts) permutes items.")
    # prompt mode
    prompts_a: list[str] = Field(default_factory=list, description="Prompt mode: prompts of set a.")
    prompts_b: list[str] = Field(default_factory=list, description="Prompt mode: prompts of set b.")
    prompts_a_file: str | None = Field(None, description="Prompt mode: prompts of set a, a .txt file (one per "
                                       "line) or a manifest with a prompt column.")
    prompts_b_file: str | None = Field(None, description="Prompt mode: prompts of set b (as prompts_a_file).")
    extract: ExtractConfig = Field(default_factory=ExtractConfig, description="Prompt mode: generation and capture "
                                   "settings as for `musicsae extract --prompts` (model, device, dtype, hookpoints, "
                                   "duration_s, samples_per_prompt, generation, seed, store_dtype, ...).")

    @model_validator(mode="before")
    @classmethod
    def _coerce(cls, data):
        if isinstance(data, dict):
            data = dict(data)
            for key in ("a", "b", "label"):  # YAML reads `a: 1` as a number
                if isinstance(data.get(key), int | float) and not isinstance(data.get(key), bool):
                    data[key] = str(data[key])
            for key in ("where", "hookpoints", "prompts_a", "prompts_b"):
                if isinstance(data.get(key), str):
                    data[key] = [data[key]]
            if isinstance(data.get("hookpoints"), list):
                names = [p.strip() for h in data["hookpoints"] for p in str(h).split(",") if p.strip()]
                data["hookpoints"] = [] if names == ["all"] else names
        return data

    @property
    def prompt_mode(self) -> bool:
        """True when any prompts are given (the sets are generated), else store mode."""
        return bool(self.prompts_a or self.prompts_b or self.prompts_a_file or self.prompts_b_file)


class FeaturesConfig(BaseModel):
    """Which latents to show, how many top frames and clips per latent, and what to compare them with."""

    model_config = ConfigDict(extra="forbid")

    sae: str | None = Field(None, description="SAE folder or training run (its latents are encoded on the fly from "
                            "an activation store); optional for a latent store, needed there for probes.")
    member: str | None = Field(None, description="Which SAE of a sweep run.")
    allow_other_model: bool = Field(False, description="Accept an SAE or probes made with another model than the "
                                    "store's (compared by a fingerprint of the weights); widths must still match.")
    hookpoint: str | None = Field(None, description="Store hookpoint (default: the SAE's, or the latent store's).")
    where: list[str] = Field(default_factory=list, description="Store row filters, e.g. stream=cond.")
    select: Literal["density", "latents", "label", "random"] = Field(
        "density", description="Which latents: the n most frequently active (density), a given list (latents), "
        "the n most associated with each value of by_label (label), or n alive latents at random (seeded).")
    n: int = Field(16, ge=1, description="Latents to show (density, random), or per label value (label).")
    latents: list[int] | None = Field(None, description="select=latents: latent indices, e.g. [3, 17, 42] or "
                                      "'3,17,42'.")
    by_label: str | None = Field(None, description="select=label: the label column whose values pick latents by the "
                                 "largest mean-activation difference (frames of a value minus all other frames).")
    top_k: int = Field(8, ge=1, description="Top activating frames (with audio clips) per latent.")
    clip_s: float = Field(2.0, gt=0, le=60, description="Seconds of source audio per clip, centred on the frame.")
    bins: int = Field(40, ge=2, description="Histogram bins of a latent's non-zero activations.")
    labels: list[str] | None = Field(None, description="Label columns for the co-occurrence tables (default: "
                                     "columns with 2 .. max_label_values distinct values).")
    max_label_values: int = Field(32, ge=2, description="Most distinct values a label column may have.")
    min_lift: float = Field(1.5, ge=1.0, description="Pages list (and pick top labels among) only label values "
                            "with at least this lift, P(value | active) / P(value); features.json keeps all.")
    min_lift_frames: int = Field(3, ge=1, description="Listed label values also need at least this many of the "
                                 "latent's active frames.")
    probes: list[str] = Field(default_factory=list, description="Probe folders: cosine of each decoder direction "
                              "with their class directions at the SAE's hookpoint.")
    item: str | None = Field(None, description="Item view only: which latents fire on each frame of this item.")
    item_latents: int = Field(32, ge=1, description="Item view: latents in the heatmap (largest total activation).")
    per_frame: int = Field(5, ge=1, description="Item view: latents listed per frame.")
    block_rows: int = Field(16384, ge=1, description="Rows read (or encoded) per block.")
    batch_size: int = Field(4096, ge=1, description="Rows per SAE forward pass when encoding on the fly.")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N or mps (encoding on the fly).")
    seed: int = Field(0, ge=0, description="Seed of select=random.")

    @field_validator("latents", "labels", mode="before")
    @classmethod
    def _split_commas(cls, value):
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, int):
            return [value]
        return value

    @model_validator(mode="after")
    def _check_select(self) -> FeaturesConfig:
        if self.select == "latents" and not self.latents:
            raise ConfigError("select=latents needs a list of latents", "pass --latent 3,17,42")
        if self.select == "label" and not self.by_label:
            raise ConfigError("select=label needs a label column", "pass --by COLUMN")
        return self
