"""Generation settings of the mmt family, importable without numpy or torch (the CLI's help lists them)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator


class EventSampling(BaseModel):
    """How the Multitrack Music Transformer samples a song, event by event (each is also `--gen KEY=VALUE`).

    Every field of an event is drawn from its own head, as MMT's generation does: the field's logits keep their
    most likely codes (MMT's top-k filter), are divided by the temperature and sampled; type and beat never
    decrease; the sequence seed is start-of-song, or with `instruments` start-of-song, one instrument event per
    instrument and start-of-notes (MMT's instrument-informed generation)."""

    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(1.0, gt=0.0, description="Sampling temperature of every field (MMT samples with 1.0).")
    filter_threshold: float = Field(0.9, ge=0.0, lt=1.0, description="MMT's top-k filter: each field keeps its "
                                    "ceil((1 - threshold) * vocabulary) most likely codes (MMT samples with 0.9, so "
                                    "the 5 event types are chosen greedily; 0 keeps every code).")
    top_k: int = Field(0, ge=0, description="Keep the k most likely codes of each field instead of the threshold's "
                       "count (0 = use filter_threshold).")
    max_events: int = Field(1024, ge=2, description="Most events per song, prompt included (at most the model's "
                            "max_seq_len).")
    tempo_bpm: float = Field(120.0, gt=0.0, description="Tempo that turns duration_s into beats: a song ends before "
                             "its first note at beat >= ceil(duration_s * tempo_bpm / 60) (the codes hold no tempo; "
                             "120 is MIDI's default, MMT's own decoder writes 100).")
    instruments: list[str] = Field([], description="MMT instrument names to prompt with (e.g. "
                                   "piano,violin): start-of-song, their instrument events, start-of-notes. Empty: "
                                   "start-of-song alone, the model picks the instruments.")

    @field_validator("instruments", mode="before")
    @classmethod
    def _split(cls, value):
        if isinstance(value, str):  # --gen instruments=piano,violin
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @field_validator("instruments")
    @classmethod
    def _known(cls, names: list[str]) -> list[str]:
        import difflib

        from .mmt_events import INSTRUMENTS  # numpy only, at validation time

        for name in names:
            if name not in INSTRUMENTS:
                close = difflib.get_close_matches(name, INSTRUMENTS, n=1)
                hint = f"did you mean {close[0]}?" if close else f"names: {', '.join(INSTRUMENTS[:6])}, ..."
                raise ValueError(f"unknown MMT instrument {name!r} ({hint})")
        # one event per instrument, in code order, as MMT's songs list them
        return sorted(set(names), key=INSTRUMENTS.index)
