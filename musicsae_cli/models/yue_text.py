"""The text side of the yue family: a YuE prompt (genre tags and lyrics) as the token ids YuE's stage 1 reads.

A prompt is one text: genre tags and lyrics in `[section]` blocks, as YuE's lyrics files write them, e.g.
"[genre] uplifting pop female vocal [verse] Staring at the sunset ... [chorus] ...". A `[genre]` block (any case)
holds the tags; text before the first block is taken as tags too; every other block is a lyrics segment, written
"[name]\\n<text>\\n\\n" as YuE splits lyrics. A text without lyrics blocks is one empty segment.

Stage 1 reads, before the audio of the first segment (the layout's `prompt_template`, `segment_start`):
  ids(template with {genre} and {lyrics}: every segment, joined by "\\n") + ids("[start_of_segment]")
  + ids(segment 1) + prefix (start-of-audio, <xcodec>) + codes + suffix (end-of-audio)
where ids() is the SentencePiece encoding of the text (no BOS/EOS), each part encoded on its own as YuE does. The
tokenizer is YuE's SentencePiece model (`tokenizer.model`, shipped with YuE's inference code as
mm_tokenizer_v0.2_hf): the model option `tokenizer`, or a `tokenizer.model` beside the checkpoint.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError, UsageError

TOKENIZER_FILE = "tokenizer.model"
SECTION = re.compile(r"\[(\w+)\](.*?)(?=\[|\Z)", re.DOTALL)


@dataclass
class YuePrompt:
    """A prompt split as YuE splits it: the genre tags and the lyrics segments."""

    genre: str
    segments: list[str] = field(default_factory=list)


def split_prompt(text: str) -> YuePrompt:
    """Genre tags and lyrics segments of a prompt (see the module doc)."""
    first = SECTION.search(text)
    lead = (text[: first.start()] if first else text).strip()
    tags, segments = [lead] if lead else [], []
    for name, body in SECTION.findall(text):
        if name.lower() == "genre":
            tags.append(body.strip())
        else:
            segments.append(f"[{name}]\n{body.strip()}\n\n")
    return YuePrompt(" ".join(t for t in tags if t), segments or [""])


class PromptTokenizer:
    """A SentencePiece model turning YuE prompts into the ids before the audio (see the module doc)."""

    def __init__(self, processor, source: str, template: str, segment_start: str):
        self.processor, self.source = processor, source
        self.template, self.segment_start = template, segment_start

    @classmethod
    def from_file(cls, path: str | Path, template: str, segment_start: str) -> PromptTokenizer:
        import sentencepiece as spm

        path = Path(path).expanduser()
        if not path.is_file():
            raise InputError(f"tokenizer file {path} does not exist", "pass YuE's SentencePiece tokenizer.model")
        try:
            processor = spm.SentencePieceProcessor(model_file=str(path))
        except (OSError, RuntimeError) as exc:
            raise InputError(f"{path}: not a SentencePiece model ({str(exc).splitlines()[0]})",
                             "pass YuE's tokenizer.model (mm_tokenizer_v0.2_hf)") from None
        return cls(processor, str(path), template, segment_start)

    @classmethod
    def from_bytes(cls, proto: bytes, source: str, template: str, segment_start: str) -> PromptTokenizer:
        import sentencepiece as spm

        return cls(spm.SentencePieceProcessor(model_proto=proto), source, template, segment_start)

    @property
    def size(self) -> int:
        return int(self.processor.get_piece_size())

    def encode(self, text: str) -> list[int]:
        return list(self.processor.encode(text, out_type=int)) if text else []

    def prompt_ids(self, text: str) -> tuple[list[int], dict]:
        """The ids before the layout's prefix for `text`, and the facts recorded with an item (genre, the
        segment the audio belongs to, how many ids the prompt is)."""
        prompt = split_prompt(text)
        try:
            head = self.template.format(genre=prompt.genre, lyrics="\n".join(prompt.segments))
        except (KeyError, IndexError, ValueError) as exc:
            raise UsageError(f"token layout prompt_template cannot be filled ({exc})",
                             "use the fields {genre} and {lyrics} only") from None
        ids = self.encode(head) + self.encode(self.segment_start) + self.encode(prompt.segments[0])
        meta = {"prompt": text, "genre": prompt.genre, "lyrics_segment": prompt.segments[0].strip(),
                "lyrics_segments": len(prompt.segments), "prompt_tokens": len(ids)}
        return ids, meta

    def describe(self) -> dict:
        return {"source": self.source, "pieces": self.size}


def find_tokenizer(option: str | None, folder: Path | None) -> str | None:
    """The tokenizer file named by the model option, else `tokenizer.model` beside the checkpoint, else None."""
    if option:
        return option
    if folder is not None and (folder / TOKENIZER_FILE).is_file():
        return str(folder / TOKENIZER_FILE)
    return None


__all__ = ["PromptTokenizer", "TOKENIZER_FILE", "YuePrompt", "find_tokenizer", "split_prompt"]
