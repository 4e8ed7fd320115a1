"""MMT generation: songs sampled event by event from the six heads, with hookpoints captured; mixed into MmtAdapter.

Generation (`MmtAdapter.generate`, settings in mmt_settings) samples songs event by event as MMT's own generation
does: each field from its own head, filtered to its most likely codes and divided by a temperature; event type and
beat never decrease; a song ends at its end-of-song event. `duration_s` becomes beats at a tempo (120 bpm by
default): a song also ends before its first note at or past that beat. Captured rows are teacher-forcing rows.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import UsageError
from . import mmt_events
from .base import GenerationOutput
from .hookpoints import layer_index
from .hooks import scoped_hooks
from .mmt_settings import EventSampling


class MmtGeneration:
    """The generation of an MmtAdapter (its `model`, `config`, `device`, `resolve_hookpoints` and
    `generation_settings`)."""

    def prompt_events(self, instruments: list[str] | tuple[str, ...] = ()) -> np.ndarray:
        """The events a generated song starts from, (P, 6): start-of-song alone, or with instruments start-of-song,
        one instrument event per instrument (in code order) and start-of-notes, as MMT's instrument-informed
        generation feeds the beginning of a real song."""
        rows = [[mmt_events.SOS, 0, 0, 0, 0, 0]]
        if instruments:
            codes = sorted({mmt_events.INSTRUMENTS.index(name) + 1 for name in instruments})
            rows += [[mmt_events.INSTRUMENT, 0, 0, 0, 0, c] for c in codes]
            rows.append([mmt_events.SON, 0, 0, 0, 0, 0])
        return np.asarray(rows, dtype=np.int64)

    def generate(self, texts, duration_s, hookpoints, *, seed=0, streams="both", prompt_audio=None, settings=None):
        """Sample one song per entry of `texts` (each None: MMT takes no text) from the prompt events (see
        `prompt_events`), one event per step, capturing `hookpoints` at every event.

        Each step feeds every row's whole sequence so far (MMT's songs are short; there is no cache) and draws the
        next event from the six heads at its last event: the type first (never below the row's highest type so
        far, never start-of-song), then each other field from its head (code 0, "none", excluded; the beat never
        below the row's latest beat); the event keeps the fields its type uses (a note all five, an instrument
        event its instrument, others none). Every field is filtered to its most likely codes (top_k, else
        MMT's ceil((1 - filter_threshold) * vocabulary)), divided by the temperature and drawn with a
        torch.Generator seeded by `seed`. A row ends at its end-of-song event (kept), before a note at beat >=
        ceil(duration_s * tempo_bpm / 60) (dropped: the song covers duration_s at that tempo), or at max_events
        events (at most max_seq_len); rows end independently, later rows of an ended row are zeros.

        Active edits (`intervene`) apply in every pass, with EditContext(start=0, length=events fed, batch=B): the
        positions teacher forcing gives. The rows are captured in a last pass over the finished songs, so
        acts[h][b, :n_b] equal token_activations(tokens[b, :n_b]) under the same edits. Returns tokens (B, T, 6)
        int64 (prompt included, zero-padded), acts {"main": {h: (B, T, d)}} aligned with them (padding rows 0),
        n_frames = T, prompt_frames = the prompt's events, and each row's length in `lengths` (also
        settings["lengths"], with why it ended in settings["stops"])."""
        if any(t is not None for t in texts):
            raise UsageError("MMT generates without text: it takes no text prompt",
                             "drop --prompt; to choose the instruments, pass --gen instruments=piano,violin")
        if prompt_audio is not None:
            raise UsageError("MMT reads MIDI events, not audio: it cannot continue an audio prompt",
                             "generate without --audio")
        try:
            seconds = float(duration_s)
        except (TypeError, ValueError):
            seconds = float("nan")
        if not (math.isfinite(seconds) and seconds > 0):
            raise UsageError(f"duration_s must be a positive number of seconds, got {duration_s!r}",
                             "pass --duration-s, e.g. 10")
        s: EventSampling = self.generation_settings(settings)
        names = self.resolve_hookpoints(list(hookpoints)) if hookpoints else []
        batch = max(1, len(texts))
        prompt = torch.from_numpy(self.prompt_events(s.instruments))
        n_prompt = len(prompt)
        limit = min(s.max_events, self.config.max_seq_len)
        if n_prompt >= limit:
            raise UsageError(f"the prompt has {n_prompt} events, leaving no room under the limit of {limit} events",
                             "raise max_events or prompt fewer instruments")
        n_beats = max(1, math.ceil(seconds * s.tempo_bpm / 60 - 1e-9))  # beats 0 .. n_beats - 1
        device = self.device
        codes = torch.zeros((batch, limit, 6), dtype=torch.long, device=device)
        codes[:, :n_prompt] = prompt.to(device)
        lengths = torch.full((batch,), n_prompt, dtype=torch.long, device=device)
        done = torch.zeros(batch, dtype=torch.bool, device=device)
        floor = {f: codes[:, :n_prompt, f].amax(1) for f in MONOTONIC}  # (B,) lowest code each may take next
        stops: list[str | None] = [None] * batch
        gen = torch.Generator(device=device).manual_seed(int(seed))
        rows = torch.arange(batch, device=device)
        captured: dict[str, torch.Tensor] = {}

        def capture(name: str):
            def hook(module, args, output):
                captured[name] = output
            return hook

        blocks = self.model.block_outputs
        regs = [(blocks[layer_index(h)], "forward", capture(h), False) for h in names]
        with torch.inference_mode(), scoped_hooks(regs):
            while True:
                if bool(done.all()) and not names:
                    break
                width = int(lengths.max())
                mask = torch.arange(width, device=device)[None] < lengths[:, None]
                heads = self.model(codes[:, :width], mask=mask)
                if bool(done.all()):
                    break  # this last pass read the finished songs: its captures are the rows
                last = [h[rows, lengths - 1].float() for h in heads]
                event = _sample_event(last, floor, s, gen)  # (B, 6)
                for b in torch.nonzero(~done).flatten().tolist():
                    kind, beat = int(event[b, 0]), int(event[b, 1])
                    if kind == mmt_events.NOTE and beat > n_beats:  # beat code = beat + 1
                        done[b], stops[b] = True, "duration"
                        continue
                    codes[b, lengths[b]] = event[b]
                    lengths[b] += 1
                    for f in MONOTONIC:
                        floor[f][b] = torch.maximum(floor[f][b], event[b, f])
                    if kind == mmt_events.EOS:
                        done[b], stops[b] = True, "end-of-song"
                    elif int(lengths[b]) >= limit:
                        done[b], stops[b] = True, "max_events"
        width = int(lengths.max())
        valid = (torch.arange(width, device=device)[None] < lengths[:, None])[..., None]
        acts = {h: (captured[h][:, :width].float() * valid).detach() for h in names}
        n = [int(v) for v in lengths.tolist()]
        record = {**s.model_dump(mode="json"), "seed": int(seed), "duration_s": seconds,
                  "beats": n_beats, "event_limit": limit, "prompt_events": n_prompt, "lengths": n, "stops": stops}
        return GenerationOutput(audio=None, tokens=codes[:, :width].cpu().numpy(), acts={"main": acts},
                                n_frames=width, settings=record, prompt_frames=n_prompt, lengths=n)


MONOTONIC = (mmt_events.FIELDS.index("type"), mmt_events.FIELDS.index("beat"))  # MMT's monotonicity_dim


def _keep(n: int, s: EventSampling) -> int:
    """How many of a field's n codes its filter keeps."""
    k = s.top_k if s.top_k else math.ceil((1 - s.filter_threshold) * n)
    return min(max(int(k), 1), n)


def _draw(logits: torch.Tensor, s: EventSampling, generator) -> torch.Tensor:
    """One code per row of (B, n) logits (disallowed codes at -inf): keep the most likely codes (exactly
    `_keep` of them, ties by index order of topk), divide by the temperature, draw."""
    k = _keep(logits.shape[-1], s)
    if k < logits.shape[-1]:
        top = logits.topk(k, dim=-1)
        logits = torch.full_like(logits, float("-inf")).scatter(-1, top.indices, top.values)
    probs = torch.softmax(logits / s.temperature, dim=-1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


def _sample_event(logits: list[torch.Tensor], floor: dict[int, torch.Tensor], s: EventSampling,
                  generator) -> torch.Tensor:
    """The next event (B, 6) from each field's logits at the last event: the type (not start-of-song, not below
    the row's floor), then every other field (not 0, the beat not below its floor), each drawn for every row; the
    fields an event type does not use are zeroed."""
    out = []
    for f, lg in enumerate(logits):
        lg = lg.clone()
        codes = torch.arange(lg.shape[-1], device=lg.device)[None]
        if f in floor:
            lg = lg.masked_fill(codes < floor[f][:, None], float("-inf"))
        lg[:, 0] = float("-inf")  # type: no second start-of-song (code 0); other fields: not "none"
        out.append(_draw(lg, s, generator))
    event = torch.stack(out, dim=1)
    kind = event[:, 0]
    event[:, 1:5] *= (kind == mmt_events.NOTE)[:, None]
    event[:, 5] *= ((kind == mmt_events.NOTE) | (kind == mmt_events.INSTRUMENT))
    return event
