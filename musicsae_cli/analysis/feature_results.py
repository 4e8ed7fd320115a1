"""What `analyze features` reports: the dashboard (one line per latent shown) or the item view (one line per
frame of the item)."""

from __future__ import annotations

from dataclasses import dataclass

from ..results import Result, internal


@dataclass(kw_only=True)
class FeaturesResult(Result):
    """What both modes report first: where the latents came from."""

    out: str
    mode: str  # dashboard or item
    store: str
    sae: str | None
    member: str | None
    source: dict
    hookpoint: str
    elapsed_s: float = 0.0


@dataclass(kw_only=True)
class FeatureDashboard(FeaturesResult):
    """The dashboard: features.json's summary (but the config and every latent's details) and the index page."""

    model_hookpoint: str
    width: int
    n_rows: int
    where: list[str]
    stream: dict | None
    frame_rate: float | None
    label_columns: list[str]
    run: str
    architecture: str | None
    min_lift: float
    min_lift_frames: int
    selection: dict
    seed: int
    dead_latents: int
    mean_l0: float
    probes: list[dict]
    probe_notes: list[str]
    audio: dict
    piano_rolls: int
    latents: list[dict]
    index_html: str

    def lines(self) -> list[str]:
        lines = [self.index_html, f"{len(self.latents)} of {self.width} latents over {self.n_rows} frames of "
                                  f"{self.hookpoint}: {self.selection['description']}",
                 (f"{self.piano_rolls} piano rolls of the notes around the top events (no audio: symbolic rows) "
                  if self.piano_rolls and not self.audio["clips"] else
                  f"{self.audio['clips']} clips written, {self.audio['unavailable']} unavailable ")
                 + f"({self.elapsed_s:.1f} s)"]
        for e in self.latents:
            tops = ", ".join(f"{t['column']}={t['value']} (lift {t['lift']:.2f})" for t in e["top_labels"])
            probe = e["nearest_probe"]
            near = f"; probe {probe['label']}{'=' + str(probe['class']) if probe['class'] is not None else ''} " \
                   f"(cos {probe['cosine']:.3f})" if probe else ""
            mean = f"{e['mean_active']:.4g}" if e["mean_active"] is not None else "-"
            position = f"; position feature (every top frame at frame {e['position_frame']})" \
                if e["position_frame"] is not None else ""
            lines.append(f"  latent {e['latent']}: density {e['density']:.4g}, mean {mean}"
                         f"{'; ' + tops if tops else ''}{near}{position}")
        return lines + [f"note: {n}" for n in self.probe_notes]


@dataclass(kw_only=True)
class FeatureItemView(FeaturesResult):
    """The item view: the item's latents, the heatmap and CSV written, and the top latents of each frame."""

    width: int
    item_id: str
    n_frames: int
    where: list[str]
    stream: dict | None
    latents_active: int
    heatmap_latents: list[int]
    totals: dict[str, float]
    heatmap: str
    csv: str
    frames: list[dict]
    per_frame: int = internal()  # latents listed per frame

    def lines(self) -> list[str]:
        lines = [f"{self.heatmap}  {self.csv}",
                 f"item {self.item_id}: {self.n_frames} frames, {self.latents_active} latents active; "
                 f"top {self.per_frame} per frame (latent (value)):"]
        for f in self.frames:
            when = f"{f['time_s']:8.3f} s" if f["time_s"] is not None else "        "
            fired = ", ".join(f"{x['latent']} ({x['value']:.3g})" for x in f["latents"]) or "-"
            lines.append(f"  {when}  frame {f['frame']:>5}: {fired}")
        return lines
