"""Learned prompt concepts (textual inversion) for MusicGen: new tokens in its T5 tokenizer whose input embedding
rows are the only weights ever trained.

A concept `drums` learned with n tokens is n added tokens `<drums_0>` .. `<drums_{n-1}>`; a prompt names it as
`<drums>`, which `expand` replaces by the n tokens before tokenising. In training the rows live in their own
tensor and are spliced into the embedding lookup out of place, so no gradient ever reaches another weight; for
use (`attach`) they are written into the resized embedding matrix, so generation and teacher forcing tokenise
and embed them like any word. Every other row, and every other weight, is left exactly as loaded.
Imports torch: load lazily.
"""

from __future__ import annotations

import difflib
import hashlib
import re

import torch

from ..errors import InputError

PLACEHOLDER = re.compile(r"<([A-Za-z][A-Za-z0-9_.-]*)>")


def token_names(concept: str, n: int) -> list[str]:
    return [f"<{concept}_{i}>" for i in range(n)]


def tokenizer_fingerprint(tokenizer) -> str:
    """sha256 (16 hex) of the tokenizer's base vocabulary (token -> id, added tokens excluded): a concepts file
    learned on one tokenizer means nothing on another."""
    added = set(tokenizer.get_added_vocab()) if hasattr(tokenizer, "get_added_vocab") else set()
    vocab = sorted((t, i) for t, i in tokenizer.get_vocab().items() if t not in added)
    return hashlib.sha256(repr(vocab).encode()).hexdigest()[:16]


def input_embeddings(adapter) -> torch.nn.Embedding:
    return adapter.model.text_encoder.get_input_embeddings()


def check_names(adapter, names: list[str]) -> None:
    """InputError when a concept name is not a plain word or when it (or one of its tokens) is already a token."""
    tokenizer = adapter.processor.tokenizer
    vocab = tokenizer.get_vocab()
    for name in names:
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_.-]*", name):
            raise InputError(f"concept name {name!r} is not a plain word",
                             "name concept folders with letters, digits, '_', '-' or '.', starting with a letter")
        taken = [t for t in (name, f"\u2581{name}", f"<{name}>", f"<{name}_0>") if t in vocab]
        if taken:
            raise InputError(f"concept name {name!r} is already a token of {adapter.model_id}'s tokenizer "
                             f"({taken[0]!r})", "rename the concept (its folder or its value in the concept column)")


def add_tokens(adapter, counts: dict[str, int]) -> dict[str, list[int]]:
    """Add each concept's tokens to the tokenizer and grow the embedding matrix to hold them (new rows: the mean
    row, as placeholders until `set_rows`). Returns concept -> its token ids."""
    tokenizer = adapter.processor.tokenizer
    check_names(adapter, list(counts))
    names = [t for c, n in counts.items() for t in token_names(c, n)]
    tokenizer.add_tokens(names)
    ids = {c: tokenizer.convert_tokens_to_ids(token_names(c, n)) for c, n in counts.items()}
    emb = input_embeddings(adapter)
    needed = max(max(v) for v in ids.values()) + 1
    if needed > emb.num_embeddings:
        old = emb.weight.detach().clone()
        adapter.model.text_encoder.resize_token_embeddings(needed)
        emb = input_embeddings(adapter)
        with torch.no_grad():  # transformers may re-initialise on resize: the old rows stay bit for bit
            emb.weight[: old.shape[0]] = old
            emb.weight[old.shape[0]:] = old.mean(0)
    return ids


def initial_rows(adapter, n: int, noise: float, generator: torch.Generator) -> torch.Tensor:
    """(n, d) rows at the mean embedding of the base vocabulary plus Gaussian noise of `noise` x its per-dim std."""
    weight = input_embeddings(adapter).weight.detach().float()
    base = weight[: len(adapter.processor.tokenizer) - n] if len(adapter.processor.tokenizer) > n else weight
    mean, std = base.mean(0), base.std(0)
    return (mean + noise * std * torch.randn(n, weight.shape[1], generator=generator)).to(weight.device)


def set_rows(adapter, ids: list[int], rows: torch.Tensor) -> None:
    with torch.no_grad():
        weight = input_embeddings(adapter).weight
        weight[torch.tensor(ids, device=weight.device)] = rows.to(weight.device, weight.dtype)


def expand(text: str | None, concepts: dict[str, int]) -> str | None:
    """`text` with every `<concept>` replaced by its tokens; InputError (with the closest names) for a
    placeholder that names no learned concept. Text without placeholders comes back unchanged."""
    if not text or "<" not in text:
        return text

    def one(m: re.Match) -> str:
        name = m.group(1)
        if re.fullmatch(r".+_\d+", name) and name.rsplit("_", 1)[0] in concepts:
            return m.group(0)  # a concept's own token, written out
        if name not in concepts:
            close = difflib.get_close_matches(name, list(concepts), n=3)
            known = ", ".join(f"<{c}>" for c in concepts) or "none"
            raise InputError(f"prompt {text!r} names <{name}>, which is not a learned concept (learned: {known})",
                             f"did you mean {', '.join(f'<{c}>' for c in close)}?" if close else
                             "learn it with `musicsae concept learn`, or pass the --concepts file that holds it")
        return " ".join(token_names(name, concepts[name]))

    return PLACEHOLDER.sub(one, text)


def spliced_embeddings(adapter, input_ids: torch.Tensor, ids: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Input embeddings (B, L, d) of input_ids with the rows of token ids `ids` (n,) taken from `rows` (n, d):
    the only tensor the result depends on with a gradient."""
    weight = input_embeddings(adapter).weight.detach()
    table = weight.index_put((ids.to(weight.device),), rows.to(weight.dtype))  # out of place
    return torch.nn.functional.embedding(input_ids, table)


def prompt_loss(adapter, codes: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                ids: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """MusicGen's teacher-forced cross-entropy (nats per code) of codes (B, K, T) given prompts, with the concept
    rows spliced into the text embeddings (differentiable in `rows` only)."""
    from .musicgen_loss import delayed

    adapter.model.requires_grad_(False)  # the rows are the only leaf with a gradient: no work spent on the rest
    embeds = spliced_embeddings(adapter, input_ids, ids, rows)
    inputs, labels = delayed(codes.to(adapter.device), adapter.pad_id)
    out = adapter.model(inputs_embeds=embeds, attention_mask=attention_mask, decoder_input_ids=inputs,
                        labels=labels.to(adapter.device))
    return out.loss


def vocabulary_neighbours(adapter, rows: torch.Tensor, k: int = 5) -> list[list[tuple[str, float]]]:
    """The k base-vocabulary tokens nearest each row by cosine similarity."""
    tokenizer = adapter.processor.tokenizer
    added = set(tokenizer.get_added_vocab()) if hasattr(tokenizer, "get_added_vocab") else set()
    vocab = [(i, t) for t, i in tokenizer.get_vocab().items() if t not in added]
    vocab.sort()
    weight = input_embeddings(adapter).weight.detach().float()
    index = torch.tensor([i for i, _ in vocab if i < weight.shape[0]])
    base = torch.nn.functional.normalize(weight[index], dim=1)
    sims = torch.nn.functional.normalize(rows.float().to(base.device), dim=1) @ base.T  # (n, V)
    top = sims.topk(min(k, base.shape[0]), dim=1)
    names = dict(vocab)
    return [[(names[int(index[j])], float(v)) for v, j in zip(vals, idx, strict=True)]
            for vals, idx in zip(top.values, top.indices, strict=True)]
