"""`concept learn`: textual inversion. New prompt tokens per concept, only their embedding rows trained, with the
model's own training loss on the concept audio's codes given a prompt that names the concept.

The recipe follows textual inversion as adapted to text-to-music models: rows start at the vocabulary's mean embedding
plus a little noise; Adam with a step-decayed learning rate; the loss is the decoder's cross-entropy on the codes
of fixed-length chunks (encoded once, see data.py), plus a penalty on the cosine similarity between new rows
(orthogonality) and, with several concepts, a hinge on the cosine of their mean rows (margin). Validation CE on
held-out clips of each concept is measured before training and every `eval_every` steps.

Resumable: rows, Adam moments, the step and the log are checkpointed in the hidden sibling `.<OUT>.partial`
(with the codes cache); each step's batch comes from (seed, step), so a resumed run ends with the same rows.
The output folder: embeddings.safetensors (one tensor per concept, (tokens, d)), manifest.json (the model and
its weights' fingerprint, the tokenizer's fingerprint, each concept's tokens and validation CE), config.yaml,
train_log.jsonl, validation.csv and the codes cache codes/.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, InputError
from ..progress import ProgressFactory, no_progress
from ..results import Result
from .config import ConceptLearnConfig

FORMAT_VERSION = 1
log = logging.getLogger("musicsae")


@dataclass(kw_only=True)
class ConceptLearnResult(Result):
    """What `concept learn` prints and records."""

    path: str
    model: str
    concepts: dict[str, dict]  # name -> tokens, chunks (train/val), val CE before / after
    steps: int
    seconds: float
    resumed: bool
    cache: str  # "encoded" or "reused"
    skipped: list[str]

    def lines(self) -> list[str]:
        out = [self.path, f"{len(self.concepts)} concept(s) on {self.model}, {self.steps} steps in "
                          f"{self.seconds:.0f} s (codes {self.cache})"]
        for name, c in self.concepts.items():
            ce = (f"validation CE {c['val_ce_before']:.3f} -> {c['val_ce_after']:.3f}"
                  if c["val_ce_before"] is not None else "no held-out clip: no validation CE")
            out.append(f"  <{name}>: {c['tokens']} tokens, {c['train_chunks']} train / {c['val_chunks']} val "
                       f"chunks; {ce}")
        if self.skipped:
            out.append(f"skipped {len(self.skipped)} clip(s): " + "; ".join(self.skipped[:5])
                       + (" ..." if len(self.skipped) > 5 else ""))
        return out


def _penalties(rows, spans: list[tuple[int, int]], cfg: ConceptLearnConfig):
    """(orthogonality, margin) terms of rows (n, d); spans: each concept's [start, end) rows."""
    import torch

    unit = torch.nn.functional.normalize(rows, dim=1)
    gram = unit @ unit.T
    n = rows.shape[0]
    off = gram - torch.eye(n, device=rows.device, dtype=rows.dtype)
    ortho = off.pow(2).sum() / max(1, n * (n - 1))
    margin = rows.new_zeros(())
    if len(spans) > 1:
        means = torch.nn.functional.normalize(torch.stack([rows[a:b].mean(0) for a, b in spans]), dim=1)
        cos = means @ means.T
        iu = torch.triu_indices(len(spans), len(spans), 1)
        margin = torch.relu(cos[iu[0], iu[1]] - cfg.margin_cos).mean()
    return ortho, margin


def _val_ce(adapter, codes, chunks, prompts, ids, rows, batch: int = 8) -> dict[str, float | None]:
    """Mean validation CE per concept (None for a concept without held-out chunks)."""
    import torch

    out: dict[str, float | None] = {}
    for concept in dict.fromkeys(c["concept"] for c in chunks):
        idx = [i for i, c in enumerate(chunks) if c["concept"] == concept and c["split"] == "val"]
        if not idx:
            out[concept] = None
            continue
        total = 0.0
        with torch.no_grad():
            for s in range(0, len(idx), batch):
                part = idx[s:s + batch]
                loss = adapter.concept_loss(codes[part], [prompts[concept]] * len(part), ids, rows)
                total += float(loss) * len(part)
        out[concept] = total / len(idx)
    return out


def learn(data: str | Path, out: str | Path, cfg: ConceptLearnConfig, overwrite: bool = False,
          progress: ProgressFactory = no_progress, adapter=None) -> ConceptLearnResult:
    """Learn the concepts of `data` (concept subfolders or a manifest with cfg.concept_column) into `out`."""
    import numpy as np
    import torch

    from ..artifacts import check_output, check_replaceable, hold_lock, load_state, save_state
    from ..models import load_adapter
    from .data import cache_matches, chunk_plan, concept_clips, encode_chunks, read_cache, write_cache

    out = Path(out)
    check_output(out, overwrite, "concepts")
    if out.exists():
        check_replaceable(out)
    if "{concept}" not in cfg.prompt:
        raise ConfigError(f"prompt {cfg.prompt!r} does not name the concept", "put {concept} in the prompt")
    clips = concept_clips(data, cfg.concept_column)
    chunks, skipped = chunk_plan(clips, cfg.chunk_s, cfg.max_chunks_per_clip, cfg.val_fraction, cfg.seed)
    if adapter is None:
        adapter = load_adapter(cfg.model, revision=cfg.revision, device=cfg.device)
    adapter.require("concepts", "concept learn")
    adapter.require("tokens", "concept learn (the audio's codes)")
    counts = {c: cfg.tokens for c in clips}
    ids_by = adapter.add_concepts(counts)  # refuses names that are already tokens, before any encoding
    names = list(counts)
    ids = [i for c in names for i in ids_by[c]]
    spans, start = [], 0
    for c in names:
        spans.append((start, start + counts[c]))
        start += counts[c]
    prompts = {c: cfg.prompt.format(concept=f"<{c}>") for c in names}
    record = cfg.model_dump(mode="json")
    cache_record = {"model": adapter.model_id, "fingerprint": adapter.fingerprint, "chunk_s": cfg.chunk_s,
                    "chunks": [[c["concept"], c["path"], c["start_s"]] for c in chunks]}

    partial = out.parent / f".{out.name}.partial"
    partial.mkdir(exist_ok=True)
    lock = hold_lock(partial / ".learn.lock", f"another `concept learn` is writing {partial}", "wait for it to finish")
    try:
        t0 = time.perf_counter()
        cache_state = "reused"
        cache_dir = partial / "codes"
        if not cache_matches(cache_dir, cache_record):
            if cache_matches(out / "codes", cache_record):  # a finished earlier run's cache (rerun with --overwrite)
                shutil.rmtree(cache_dir, ignore_errors=True)
                shutil.copytree(out / "codes", cache_dir)
            else:
                shutil.rmtree(cache_dir, ignore_errors=True)
                codes = encode_chunks(adapter, chunks, cfg.chunk_s, progress)
                tmp = partial / ".codes.tmp"
                shutil.rmtree(tmp, ignore_errors=True)
                write_cache(tmp, codes, chunks, cache_record)
                os.replace(tmp, cache_dir)
                cache_state = "encoded"
        codes, cached_chunks = read_cache(cache_dir)
        codes = codes.long()
        chunks = [{**c, "split": s["split"]} for c, s in zip(cached_chunks, chunks, strict=True)]

        state = load_state(partial)
        if state is not None and state["config"] != record:
            if not overwrite:
                changed = [k for k in record if state["config"].get(k) != record[k]]
                raise ConfigError(f"an interrupted concept learn with other settings ({', '.join(changed)}) waits "
                                  f"in {partial}", "rerun with its settings to resume it, or pass --overwrite")
            state = None
        resumed = state is not None
        g = torch.Generator().manual_seed(cfg.seed)
        rows = torch.nn.Parameter(adapter.initial_concept_rows(len(ids), cfg.init_noise, g).float())
        opt = torch.optim.Adam([rows], lr=cfg.lr)
        step, history, before = 0, [], None
        if state is not None:
            with torch.no_grad():
                rows.copy_(state["rows"])
            opt.load_state_dict(state["optimizer"])
            step, history, before = int(state["step"]), list(state["history"]), state["val_before"]
        if before is None:
            before = _val_ce(adapter, codes, chunks, prompts, ids, rows.detach())
        train_by = {c: [i for i, ch in enumerate(chunks) if ch["concept"] == c and ch["split"] == "train"]
                    for c in names}
        empty = [c for c, idx in train_by.items() if not idx]
        if empty:
            raise InputError(f"concept {empty[0]!r} has no training chunk left after holding out validation clips",
                             "add clips to it, or lower val_fraction")
        writer = _tensorboard(out.parent / f".{out.name}.tensorboard") if cfg.tensorboard else None
        with progress("Learning concepts", cfg.steps) as tracker:
            tracker.advance(step)
            while step < cfg.steps:
                rng = np.random.default_rng([cfg.seed, step])
                picked = [names[int(rng.integers(len(names)))] for _ in range(cfg.batch_size)]
                batch = [train_by[c][int(rng.integers(len(train_by[c])))] for c in picked]
                for group in opt.param_groups:
                    group["lr"] = cfg.lr * cfg.lr_gamma ** (step // cfg.lr_step)
                ce = adapter.concept_loss(codes[batch], [prompts[c] for c in picked], ids, rows)
                ortho, margin = _penalties(rows, spans, cfg)
                loss = ce + cfg.orthogonality * ortho + cfg.margin * margin
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                entry = {"step": step, "loss": float(loss.detach()), "ce": float(ce.detach()),
                         "orthogonality": float(ortho.detach()), "margin": float(margin.detach()),
                         "lr": opt.param_groups[0]["lr"]}
                if step % cfg.eval_every == 0 or step == cfg.steps:
                    entry["val_ce"] = _val_ce(adapter, codes, chunks, prompts, ids, rows.detach())
                history.append(entry)
                if writer is not None:
                    for k in ("loss", "ce", "orthogonality", "margin", "lr"):
                        writer.add_scalar(f"train/{k}", entry[k], step)
                    for c, v in (entry.get("val_ce") or {}).items():
                        if v is not None:
                            writer.add_scalar(f"val_ce/{c}", v, step)
                if step % cfg.checkpoint_every == 0 and step < cfg.steps:
                    save_state(partial, {"config": record, "step": step, "rows": rows.detach(),
                                         "optimizer": opt.state_dict(), "history": history, "val_before": before})
                tracker.advance(1)
        if writer is not None:
            writer.close()
        after = history[-1].get("val_ce") if history and "val_ce" in history[-1] else \
            _val_ce(adapter, codes, chunks, prompts, ids, rows.detach())
        seconds = time.perf_counter() - t0
        summary = {c: {"tokens": counts[c], "token_names": [f"<{c}_{i}>" for i in range(counts[c])],
                       "train_chunks": sum(ch["concept"] == c and ch["split"] == "train" for ch in chunks),
                       "val_chunks": sum(ch["concept"] == c and ch["split"] == "val" for ch in chunks),
                       "val_ce_before": before[c], "val_ce_after": after[c]} for c in names}
        result = ConceptLearnResult(path=str(out), model=adapter.model_id, concepts=summary, steps=step,
                                    seconds=round(seconds, 2), resumed=resumed, cache=cache_state, skipped=skipped)
        _save(out, overwrite, adapter, cfg, rows.detach(), spans, names, prompts, chunks, history, result,
              cache_dir, partial)
    finally:
        if lock is not None:
            os.close(lock)
    shutil.rmtree(partial, ignore_errors=True)
    tb = out.parent / f".{out.name}.tensorboard"
    if tb.is_dir():
        shutil.rmtree(out / "tensorboard", ignore_errors=True)
        os.replace(tb, out / "tensorboard")
    return result


def _tensorboard(folder: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        raise ConfigError("tensorboard logging needs the tensorboard package", "pip install tensorboard") from exc
    return SummaryWriter(str(folder))


def _save(out, overwrite, adapter, cfg, rows, spans, names, prompts, chunks, history, result, cache_dir,
          partial) -> None:
    from safetensors.torch import save_file

    from ..artifacts import new_manifest, staged_directory, write_config, write_csv_rows, write_json

    with staged_directory(out, overwrite) as stage:
        save_file({c: rows[a:b].contiguous().cpu() for c, (a, b) in zip(names, spans, strict=True)},
                  str(stage / "embeddings.safetensors"), metadata={"format": "musicsae-concepts"})
        write_json(stage / "manifest.json", new_manifest(
            "concepts", FORMAT_VERSION, cfg.model_dump(mode="json"), model=adapter.describe(),
            model_id=adapter.model_id, revision=adapter.revision, fingerprint=adapter.fingerprint,
            tokenizer=adapter.tokenizer_fingerprint(), embedding_dim=int(rows.shape[1]),
            concepts=result.concepts, prompts=prompts, steps=result.steps, seconds=result.seconds))
        write_config(stage, cfg.model_dump(mode="json"))
        (stage / "train_log.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))
        write_csv_rows(stage / "validation.csv", [
            {"concept": c, "tokens": v["tokens"], "val_chunks": v["val_chunks"], "val_ce_before": v["val_ce_before"],
             "val_ce_after": v["val_ce_after"]} for c, v in result.concepts.items()])
        shutil.copytree(cache_dir, stage / "codes")
