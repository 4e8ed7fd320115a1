"""The feature dashboard's media: audio clips of the top frames, their spectrograms, and the PNG plots.

Audio: each top frame's clip is cut from `source_path` around time_s (absolute seconds in the source file)
plus half a frame, `clip_s` long, shifted to stay inside the file; a missing or unreadable file, or a frame
without source_path or time_s, leaves the clip out with the reason shown on the page.

Spectrograms: STFT magnitude (Hann window of about 32 ms, hop a quarter of it) in dB relative to the clip's
loudest bin, 80 dB shown, computed with numpy from the written clip; the frame itself is a shaded band with a
line at its centre, other top frames of the same latent that fall inside the clip are lighter bands.

Every figure goes through musicsae_cli.plotting.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import AudioError

FLOOR_DB = 80.0  # dynamic range shown in the spectrograms
WINDOW_S = 0.032  # STFT window length (rounded to a power of two samples)


# ---------------------------------------------------------------------------------------------------------------
# audio clips
def write_clips(stage: Path, entries: list[dict], clip_s: float, frame_rate: float | None,
                store_path: Path) -> list[str]:
    """Cut every top frame's clip into stage/audio/; each frame entry gets an "audio" dict (file or reason)."""
    from ..audio.io import audio_info, load_audio, write_wav

    infos: dict[str, object] = {}  # path -> AudioInfo, or the reason it cannot be read
    written = []
    half_frame = 0.5 / frame_rate if frame_rate else 0.0
    for entry in entries:
        for f in entry["top_frames"]:
            audio = {"file": None, "start_s": None, "duration_s": None, "frame_offset_s": None, "reason": None}
            f["audio"] = audio
            if not f["source_path"]:
                audio["reason"] = "the store has no source_path for this frame"
                continue
            if f["time_s"] is None:
                audio["reason"] = "the store has no time_s for this frame"
                continue
            path = source_file(f["source_path"], store_path)
            if str(path) not in infos:
                try:
                    infos[str(path)] = audio_info(path)
                except AudioError as exc:
                    infos[str(path)] = exc.message
            info = infos[str(path)]
            if isinstance(info, str):
                audio["reason"] = info
                continue
            centre = f["time_s"] + half_frame
            length = min(clip_s, info.duration_s)
            start = min(max(0.0, centre - clip_s / 2), max(0.0, info.duration_s - clip_s))
            name = f"audio/latent{entry['latent']}_{f['rank']}.wav"
            try:
                samples, rate = load_audio(path, sample_rate=None, mono=True, offset_s=start, duration_s=length)
                if samples.size == 0:
                    raise AudioError(f"no audio at {start:.3f} s in {path}")
                write_wav(stage / name, samples, rate)
            except AudioError as exc:
                audio["reason"] = exc.message
                continue
            except Exception as exc:  # an unreadable file never fails the dashboard
                audio["reason"] = f"cannot read {path}: {type(exc).__name__}: {exc}"
                continue
            audio.update(file=name, start_s=round(start, 6), duration_s=round(samples.size / rate, 6),
                         frame_offset_s=round(centre - start, 6), sample_rate=rate)
            written.append(name)
    return written


def source_file(source_path: str, store_path: Path) -> Path:
    path = Path(source_path)
    if not path.is_absolute() and not path.exists() and (store_path.parent / path).exists():
        return store_path.parent / path
    return path


# ---------------------------------------------------------------------------------------------------------------
# spectrograms
def spectrogram_db(samples: np.ndarray, rate: int, window_s: float = WINDOW_S,
                   floor_db: float = FLOOR_DB) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dB (F, T) relative to the loudest bin, floored at -floor_db; frame centre times (T,) s; bin freqs (F,) Hz)."""
    x = np.asarray(samples, dtype=np.float64).ravel()
    n_fft = int(2 ** max(6, round(np.log2(max(window_s * rate, 1.0)))))
    hop = n_fft // 4
    if x.size < n_fft:
        x = np.pad(x, (0, n_fft - x.size))
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop]  # (T, n_fft), a view
    mag = np.abs(np.fft.rfft(frames * np.hanning(n_fft), axis=1)).T  # (F, T)
    ref = float(mag.max())
    if ref <= 0:
        db = np.full(mag.shape, -floor_db)
    else:
        db = 20.0 * np.log10(np.maximum(mag / ref, 10.0 ** (-floor_db / 20.0)))
    times = (np.arange(mag.shape[1]) * hop + n_fft / 2) / rate
    return db, times, np.fft.rfftfreq(n_fft, 1.0 / rate)


def frame_marks(entry: dict, f: dict, frame_rate: float | None) -> list[dict]:
    """Bands to mark on frame f's clip (seconds in the clip): f itself first, then the latent's other top frames
    from the same file that fall inside the clip."""
    a = f["audio"]
    half = 0.5 / frame_rate if frame_rate else 0.0
    marks = []
    for g in entry["top_frames"]:
        if g["source_path"] != f["source_path"] or g["time_s"] is None:
            continue
        centre = g["time_s"] + half - a["start_s"]
        if g is f or 0.0 <= centre <= a["duration_s"]:
            marks.append({"rank": g["rank"], "centre_s": round(centre, 6), "start_s": round(centre - half, 6),
                          "end_s": round(centre + half, 6), "this_frame": g is f})
    marks.sort(key=lambda m: not m["this_frame"])
    return marks


def write_spectrograms(stage: Path, entries: list[dict], frame_rate: float | None, tracker=None) -> list[str]:
    """spectrograms/latent<i>_<rank>.png for every written clip; audio["spectrogram"] names it and its marks
    (`tracker` advances by one per top frame)."""
    from ..audio.io import load_audio
    from ..plotting import figure, style_axis

    names = []
    for entry in entries:
        for f in entry["top_frames"]:
            a = f["audio"]
            if tracker is not None:
                tracker.advance()
            if not a.get("file"):
                continue
            samples, rate = load_audio(stage / a["file"], sample_rate=None, mono=True)
            db, _, _ = spectrogram_db(samples, rate)
            marks = frame_marks(entry, f, frame_rate)
            name = f"spectrograms/latent{entry['latent']}_{f['rank']}.png"
            (stage / "spectrograms").mkdir(exist_ok=True)
            duration = samples.size / rate
            with figure(stage / name, size=(3.3, 1.6), dpi=150, layout=None) as (fig, (ax,)):
                fig.subplots_adjust(left=0.13, right=0.88, bottom=0.22, top=0.87)
                im = ax.imshow(db, origin="lower", aspect="auto", cmap="magma", vmin=-FLOOR_DB, vmax=0.0,
                               extent=(0.0, duration, 0.0, rate / 2000.0), interpolation="nearest")
                for m in reversed(marks):  # this frame drawn last, on top
                    ax.axvspan(m["start_s"], m["end_s"], color="#00e5ff", alpha=0.45 if m["this_frame"] else 0.18,
                               lw=0)
                    if m["this_frame"]:
                        ax.axvline(m["centre_s"], color="#00e5ff", lw=0.9)
                ax.set_xlim(0.0, duration)
                ax.set_title(f"latent {entry['latent']} #{f['rank']}: {f['item_id']}, frame {f['frame']}",
                             fontsize=6.5)
                ax.grid(False)
                style_axis(ax, xlabel="time in clip", xunit="s", ylabel="frequency", unit="kHz", legend=False)
                for item in (ax.xaxis.label, ax.yaxis.label):
                    item.set_fontsize(6)
                ax.tick_params(labelsize=5.5, length=2, pad=1)
                bar = fig.colorbar(im, cax=fig.add_axes((0.9, 0.22, 0.025, 0.65)))
                bar.ax.set_title("dB", fontsize=6, pad=2)
                bar.ax.tick_params(labelsize=5, length=2, pad=1)
            a["spectrogram"] = {"file": name, "floor_db": FLOOR_DB, "marks": marks}
            names.append(name)
    return names


# ---------------------------------------------------------------------------------------------------------------
# plots
def write_histograms(stage: Path, entries: list[dict], where: dict) -> list[str]:
    """plots/latent<i>.png: the histogram of each latent's non-zero activations (`where`: title parts)."""
    from ..plotting import figure, style_axis, title

    (stage / "plots").mkdir(exist_ok=True)
    names = []
    for e in entries:
        name = f"plots/latent{e['latent']}.png"
        head = title(f"latent {e['latent']}: activations on active frames (density {e['density']:.4g})", **where)
        with figure(stage / name, size=(5.6, 3.0), dpi=100, title=head) as (_, (ax,)):
            counts, edges = np.asarray(e["histogram"]["counts"]), np.asarray(e["histogram"]["edges"])
            log = False
            if counts.size and counts.sum():
                ax.stairs(counts, edges, fill=True, color="#4c72b0")
                nz = counts[counts > 0]
                log = bool(nz.max() / nz.min() > 100)
                if log:
                    ax.set_yscale("log")
            else:
                ax.text(0.5, 0.5, "never active", ha="center", va="center", transform=ax.transAxes)
            style_axis(ax, xlabel="activation (SAE latent value)", ylabel="frames" + (", log scale" if log else ""),
                       unit="count", bounded=None if log else (0.0, None), legend=False, integer=not log)
        e["histogram"]["png"] = name
        names.append(name)
    return names


def write_density_plot(stage: Path, count: np.ndarray, n: int, where: dict) -> str:
    """plots/density.png: log10 density of every latent (dead latents counted in the title)."""
    from ..plotting import figure, style_axis, title

    (stage / "plots").mkdir(exist_ok=True)
    alive = count[count > 0]
    name = "plots/density.png"
    head = title(f"density of the {count.size} latents: {alive.size} active, {int((count == 0).sum())} never "
                 f"active on {n} frames", **where)
    with figure(stage / name, size=(6.6, 3.0), dpi=100, title=head) as (_, (ax,)):
        if alive.size:
            ax.hist(np.log10(alive / n), bins=40, color="#55a868")
        style_axis(ax, xlabel="log10 density (share of frames active)", ylabel="latents", unit="count",
                   bounded=(0.0, None), legend=False, integer=True)
    return name


def write_heatmap(path: Path, x, shown: list[int], times: np.ndarray, frames: np.ndarray, item: str,
                  n_active: int, where: dict) -> None:
    """The item view's latent x time heatmap of the `shown` latents."""
    from ..plotting import figure, style_axis, title

    n = x.shape[0]
    mat = x[:, np.asarray(shown, np.int64)].toarray().T if shown else np.zeros((1, n), np.float32)  # (L, T)
    seconds = not np.isnan(times).any() and n > 0
    if seconds:
        step = float(np.median(np.diff(times))) if n > 1 else 1.0
        extent = [times[0], times[-1] + step, len(mat) - 0.5, -0.5]
    else:
        extent = [frames[0] if n else 0, (frames[-1] + 1) if n else 1, len(mat) - 0.5, -0.5]
    head = title(f"{item}: the {len(shown)} latents with the largest total activation (of {n_active} active)",
                 **where)
    with figure(path, size=(9.0, min(12.0, 2.0 + 0.22 * len(mat))), dpi=100, title=head) as (fig, (ax,)):
        im = ax.imshow(mat, aspect="auto", interpolation="nearest", cmap="magma", extent=extent)
        ax.set_yticks(range(len(mat)), [str(j) for j in shown] if shown else ["(none)"], fontsize=7)
        ax.grid(False)
        style_axis(ax, xlabel="time in the source file" if seconds else "frame", xunit="s" if seconds else None,
                   ylabel="latent", legend=False)
        ax.set_ylim(len(mat) - 0.5, -0.5)
        fig.colorbar(im, ax=ax, label="activation (SAE latent value)")


ROLL_COLUMNS = ("pitch", "onset_beats", "duration_beats")  # rows that are notes (symbolic stores) carry these


def write_piano_rolls(stage: Path, entries: list[dict], store, context: int = 16) -> list[str]:
    """rolls/latent<i>_<rank>.png for stores whose rows are notes and other events (symbolic models): the notes
    within `context` events of each top row, drawn as a piano roll with that row marked, and rendered as sine tones
    (rolls/latent<i>_<rank>.wav). Each top frame gets a "roll" dict (files and window) or None. Stores without the
    note columns get no rolls."""
    from ..audio.io import write_wav
    from ..plotting import figure, style_axis

    if not set(ROLL_COLUMNS) <= set(store.metadata_columns):
        for entry in entries:
            for f in entry["top_frames"]:
                f["roll"] = None
        return []
    extra = [c for c in ("instrument", "type") if c in store.metadata_columns]
    table = store.metadata(["item_id", "frame", *ROLL_COLUMNS, *extra])
    cols = {c: table.column(c).to_numpy(zero_copy_only=False) for c in table.column_names}
    by_item: dict[str, np.ndarray] = {}
    for i, item in enumerate(cols["item_id"]):
        by_item.setdefault(item, []).append(i)
    names = []
    for entry in entries:
        for f in entry["top_frames"]:
            f["roll"] = None
            idx = np.asarray(by_item.get(f["item_id"], []), dtype=np.int64)
            if idx.size == 0:
                continue
            idx = idx[np.argsort(cols["frame"][idx], kind="stable")]
            here = int(np.searchsorted(cols["frame"][idx], f["frame"]))
            window = idx[max(0, here - context): here + context + 1]
            pitch = np.asarray(cols["pitch"][window], dtype=np.float64)
            onset = np.asarray(cols["onset_beats"][window], dtype=np.float64)
            dur = np.asarray(cols["duration_beats"][window], dtype=np.float64)
            notes = np.isfinite(onset) & np.isfinite(dur) & (pitch >= 0)
            if not notes.any():
                continue
            this = idx[here] if here < idx.size else None
            instruments = cols.get("instrument", np.full(idx.size, ""))
            names_here = list(dict.fromkeys(str(instruments[w]) for w in window[notes]))
            name = f"rolls/latent{entry['latent']}_{f['rank']}.png"
            (stage / "rolls").mkdir(exist_ok=True)
            with figure(stage / name, size=(3.3, 1.6), dpi=150, layout=None) as (fig, (ax,)):
                fig.subplots_adjust(left=0.13, right=0.97, bottom=0.22, top=0.87)
                for w, p, o, d in zip(window[notes], pitch[notes], onset[notes], dur[notes], strict=True):
                    colour = f"C{names_here.index(str(instruments[w])) % 10}"
                    marked = w == this
                    ax.add_patch(_note_patch(o, p, d, colour, marked))
                if this is not None and np.isfinite(cols["onset_beats"][this]):
                    ax.axvline(float(cols["onset_beats"][this]), color="#d62728", lw=0.8)
                ax.set_xlim(float(np.min(onset[notes])) - 0.25, float(np.max(onset[notes] + dur[notes])) + 0.25)
                ax.set_ylim(float(np.min(pitch[notes])) - 2, float(np.max(pitch[notes])) + 2)
                kind = str(cols["type"][this]) if this is not None and "type" in cols else "event"
                ax.set_title(f"latent {entry['latent']} #{f['rank']}: {f['item_id']}, {kind} {f['frame']}",
                             fontsize=6.5)
                style_axis(ax, xlabel="beat", ylabel="MIDI pitch", legend=False)
                for item in (ax.xaxis.label, ax.yaxis.label):
                    item.set_fontsize(6)
                ax.tick_params(labelsize=5.5, length=2, pad=1)
            f["roll"] = {"file": name, "events": [int(cols["frame"][window[0]]), int(cols["frame"][window[-1]])],
                         "notes": int(notes.sum()), "instruments": names_here}
            names.append(name)
            wav = f"rolls/latent{entry['latent']}_{f['rank']}.wav"
            write_wav(stage / wav, render_notes(pitch[notes], onset[notes], dur[notes]), RENDER_RATE)
            f["roll"]["audio"] = {"file": wav, "sample_rate": RENDER_RATE, "tempo_bpm": RENDER_BPM,
                                  "start_beat": float(np.min(onset[notes]))}
            names.append(wav)
    return names


RENDER_RATE, RENDER_BPM = 16000, 120.0  # rolls are heard as sine tones at this rate and tempo


def render_notes(pitch: np.ndarray, onset_beats: np.ndarray, duration_beats: np.ndarray) -> np.ndarray:
    """The notes as sine tones (equal temperament, A4 = 440 Hz) with 10 ms fades, from the first onset, at
    RENDER_BPM; peak-normalised to 0.5."""
    spb = 60.0 / RENDER_BPM
    start = float(np.min(onset_beats))
    end = float(np.max(onset_beats + duration_beats))
    out = np.zeros(int(np.ceil((end - start) * spb * RENDER_RATE)) + 1, np.float32)
    fade = int(0.01 * RENDER_RATE)
    for p, o, d in zip(pitch, onset_beats, duration_beats, strict=True):
        a = int(round((o - start) * spb * RENDER_RATE))
        n = max(1, int(round(d * spb * RENDER_RATE)))
        t = np.arange(n) / RENDER_RATE
        tone = np.sin(2 * np.pi * 440.0 * 2 ** ((p - 69) / 12) * t).astype(np.float32)
        ramp = np.minimum(1.0, np.minimum(np.arange(n), np.arange(n)[::-1]) / max(1, fade)).astype(np.float32)
        out[a:a + n] += (tone * ramp)[: max(0, out.size - a)]
    peak = float(np.abs(out).max())
    return out * (0.5 / peak) if peak > 0 else out


def _note_patch(onset: float, pitch: float, duration: float, colour: str, marked: bool):
    from matplotlib.patches import Rectangle

    return Rectangle((onset, pitch - 0.4), max(duration, 0.05), 0.8, facecolor=colour, alpha=0.9 if marked else 0.55,
                     edgecolor="#d62728" if marked else "none", linewidth=1.2 if marked else 0)
