"""MusicGen (transformers `MusicgenForConditionalGeneration`) behind the model-adapter interface.

Teacher forcing: EnCodec codes (K, T) get the codebook delay pattern (input position s holds codebook k of
frame s-1-k, with a BOS/pad column first) and the decoder runs once per batch; forward hooks on the decoder
blocks capture the residual stream after each requested block in that one pass.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from ..errors import UsageError
from .base import GenerationOutput, ModelAdapter
from .hookpoints import layer_index, layer_name, parse_hookpoints
from .hooks import StopForward, scoped_hooks
from .identity import canonical_id, weights_fingerprint
from .musicgen_hub import load_pretrained
from .musicgen_settings import Sampling
from .positions import DecoderPositions, check_transformers, unsupported

POSITION_CONVENTION = (
    "frame t is decoder position t+1, the first position whose input holds codebook 0 of frame t "
    "(delay pattern: input position s holds codebook k of frame s-1-k); it has seen codebook k of frames "
    "<= t-k. time_s = window start + t / frame_rate. BOS (position 0), delay padding and batch padding "
    "are never stored."
)


class MusicGenAdapter(ModelAdapter):
    """A loaded MusicGen model and processor, with hookpoints `layers.0 .. layers.{L-1}`."""

    family = "musicgen"
    position_convention = POSITION_CONVENTION
    capabilities = frozenset({"audio", "tokens", "loss", "generate", "intervene", "audio_embeddings",
                              "text_adherence", "concepts"})
    settings_model = Sampling

    def __init__(self, model, processor, model_id: str, revision: str | None = None):
        self.model = model
        self.processor = processor
        self.model_id = model_id
        self.revision = revision
        self.fingerprint = weights_fingerprint(model)  # as built/loaded (fp32), before any precision cast
        self.layers = model.decoder.model.decoder.layers
        self.num_codebooks = int(model.decoder.config.num_codebooks)
        self.pad_id = int(model.generation_config.pad_token_id if model.generation_config.pad_token_id is not None
                          else model.decoder.config.pad_token_id)
        self._guided_batch: int | None = None  # set while generating with guidance (see guided_layout)
        self.concepts: dict[str, int] = {}  # learned prompt concepts: name -> number of tokens (see add_concepts)
        if model.decoder.config.audio_channels != 1:
            raise UsageError(f"{model_id} is a stereo MusicGen", "only mono MusicGen checkpoints are supported")
        _check_decoder_interface(model.decoder.model.decoder)

    # ---- loading ----
    @classmethod
    def load(cls, name: str, revision: str | None = None, device: str = "auto", dtype: str = "fp32",
             seed: int = 0) -> MusicGenAdapter:
        """From the built-in `tiny-musicgen` (random) or `tiny-musicgen-trained` (shipped weights), a local
        save_pretrained directory, or a hub id."""
        from ..runtime import resolve_device, resolve_dtype
        from .tiny import TINY_NAME, TRAINED_NAME, build_tiny_musicgen, trained_path

        check_transformers()  # before any work: an unsupported release fails here, not mid-generation
        torch_device, torch_dtype = resolve_device(device), resolve_dtype(dtype)
        if name == TINY_NAME:
            model, processor = build_tiny_musicgen(seed)
            adapter = cls(model, processor, TINY_NAME, None)
        elif name == TRAINED_NAME:
            model, processor = load_pretrained(str(trained_path()), None)
            adapter = cls(model, processor, TRAINED_NAME, None)
        else:
            model, processor = load_pretrained(name, revision)
            adapter = cls(model, processor, canonical_id(name), revision)  # a local folder by its resolved path
        return adapter.placed(torch_device, torch_dtype)

    def placed(self, device, dtype) -> MusicGenAdapter:
        """Move the model to `device` with the language model in `dtype` (EnCodec stays fp32); returns self."""
        model = self.model
        # Only the language model runs in the requested precision. EnCodec stays in fp32: it is the
        # tokenizer, and in bf16 most codes flip to a neighbouring codebook entry.
        for part in (model.decoder, model.text_encoder, getattr(model, "enc_to_dec_proj", None)):
            if part is not None:
                part.to(dtype=dtype)
        model.to(device=device).eval()
        return self

    # ---- facts ----
    @property
    def device(self):
        return self.model.device

    @property
    def dtype(self):
        """Precision of the language model (the decoder); EnCodec always runs in fp32."""
        return self.model.decoder.dtype

    @property
    def sample_rate(self) -> int:
        return int(self.model.config.audio_encoder.sampling_rate)

    @property
    def hop_length(self) -> int:
        return int(np.prod(self.model.config.audio_encoder.upsampling_ratios))

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def hookpoint_widths(self) -> dict[str, int]:
        d = int(self.model.decoder.config.hidden_size)
        return {layer_name(i): d for i in range(self.n_layers)}

    def resolve_hookpoints(self, spec: str | list[str]) -> list[str]:
        return parse_hookpoints(spec, self.n_layers)

    def n_frames(self, n_samples: int) -> int:
        return -(-int(n_samples) // self.hop_length) if n_samples > 0 else 0

    def describe(self) -> dict:
        cfg = self.model.decoder.config
        return {**super().describe(), "fingerprint": self.fingerprint, "n_layers": self.n_layers,
                "hidden_size": int(cfg.hidden_size),
                "num_codebooks": self.num_codebooks, "codebook_size": int(cfg.vocab_size),
                "dtype": str(self.dtype).replace("torch.", "")}

    # ---- audio -> codes ----
    def encode(self, audio: list[np.ndarray]):
        """EnCodec codes (K, T) per mono item, each item encoded on its own, so its codes never depend on the batch.

        Why not one EnCodec batch: batched convolutions take other kernels, whose outputs differ by about 1e-7,
        and that flips near-tie codebook choices (measured: 172 of 3,000 stored rows changed between batch
        sizes 1 and 4). Alone, an item's codes are a function of its audio only. Cost at musicgen-small size on a 2-core
        CPU: none measurable (10 s windows, 1.4-1.7 s each either way: the convolutions run faster alone, the LSTM
        slower). The decoder pass stays batched.
        """
        import torch

        encoder = self.model.audio_encoder
        out = []
        with torch.inference_mode():
            for a in audio:
                x = torch.from_numpy(np.asarray(a, dtype=np.float32))[None, None]  # (1, 1, N)
                out.append(encoder.encode(x.to(self.device, encoder.dtype)).audio_codes[0, 0])  # (K, T)
        return out

    # ---- conditioning ----
    def conditioning(self, texts: list[str | None]):
        """Encoder states (B, L, d) and mask (B, L) as the model's own forward builds them; None = unconditional."""
        import torch

        if all(t is None for t in texts):
            states = torch.zeros((len(texts), 1, self.model.decoder.config.hidden_size), device=self.device,
                                 dtype=self.dtype)
            return states, torch.zeros((len(texts), 1), device=self.device, dtype=torch.long)
        ids, mask = self.text_inputs(texts)
        with torch.inference_mode():
            states = self.model.text_encoder(input_ids=ids, attention_mask=mask).last_hidden_state
            if getattr(self.model, "enc_to_dec_proj", None) is not None:
                states = self.model.enc_to_dec_proj(states)
        uncond = torch.tensor([t is None for t in texts], device=self.device)
        mask = mask.masked_fill(uncond[:, None], 0)  # an unconditional item attends to nothing, as in CFG
        return states * mask[..., None].to(states.dtype), mask

    def text_inputs(self, texts: list[str | None]):
        """(input_ids, attention_mask) of prompts (None: empty), learned `<concept>` placeholders expanded."""
        from .musicgen_concepts import expand

        tok = self.processor(text=[expand(t, self.concepts) or "" for t in texts], padding=True,
                             return_tensors="pt")
        return tok["input_ids"].to(self.device), tok["attention_mask"].to(self.device)

    # ---- learned prompt concepts ----
    def add_concepts(self, counts: dict[str, int]) -> dict[str, list[int]]:
        from .musicgen_concepts import add_tokens

        ids = add_tokens(self, counts)
        self.concepts.update(counts)
        return ids

    def initial_concept_rows(self, n: int, noise: float, generator):
        from .musicgen_concepts import initial_rows

        return initial_rows(self, n, noise, generator)

    def concept_loss(self, tokens, texts: list[str], ids, rows):
        import torch

        from .musicgen_concepts import prompt_loss

        input_ids, mask = self.text_inputs(list(texts))
        codes = tokens if isinstance(tokens, torch.Tensor) else torch.stack([torch.as_tensor(t) for t in tokens])
        return prompt_loss(self, codes.long(), input_ids, mask, torch.as_tensor(ids), rows)

    def set_concept_rows(self, ids: list[int], rows) -> None:
        from .musicgen_concepts import set_rows

        set_rows(self, ids, rows)

    def concept_neighbours(self, rows, k: int = 5):
        from .musicgen_concepts import vocabulary_neighbours

        return vocabulary_neighbours(self, rows, k)

    def tokenizer_fingerprint(self) -> str:
        from .musicgen_concepts import tokenizer_fingerprint

        return tokenizer_fingerprint(self.processor.tokenizer)

    # ---- teacher forcing ----
    def delayed_inputs(self, codes: list) -> tuple:
        """Decoder input (B*K, T_max+1) with the delay pattern, right-padded; and each item's T."""
        import torch

        k_books, pad = self.num_codebooks, self.pad_id
        lengths = [int(c.shape[-1]) for c in codes]
        t_max = max(lengths)
        seq = torch.full((len(codes), k_books, t_max + 1), pad, dtype=torch.long, device=self.device)
        for b, c in enumerate(codes):
            for k in range(k_books):
                n = min(lengths[b], t_max - k)  # codebook k of frame t sits at position k+1+t
                if n > 0:
                    seq[b, k, k + 1:k + 1 + n] = c[k, :n]
        return seq.reshape(len(codes) * k_books, t_max + 1), lengths

    def audio_activations(self, audio, hookpoints, texts=None):
        return self.code_activations(self.encode(audio), hookpoints, texts)

    def tokenize(self, audio):
        """EnCodec codes (K, T) per item (see `encode`)."""
        return self.encode(audio)

    def token_activations(self, tokens, hookpoints, texts=None):
        import torch

        return self.code_activations([t if isinstance(t, torch.Tensor) else torch.from_numpy(np.asarray(t))
                                      for t in tokens], hookpoints, texts)

    def next_token_log_probs(self, tokens, texts=None):
        from .musicgen_loss import codebook_log_probs

        return codebook_log_probs(self, tokens, texts)

    def code_activations(self, codes: list, hookpoints: list[str], texts: list[str | None] | None = None):
        """Per item, hookpoint -> (T, d) residuals at positions 1..T (frames 0..T-1), one decoder pass."""
        import torch

        texts = texts if texts is not None else [None] * len(codes)
        ids, lengths = self.delayed_inputs(codes)
        states, mask = self.conditioning(texts)
        captured: dict[str, torch.Tensor] = {}
        deepest = max(layer_index(h) for h in hookpoints)

        def hook_for(name: str, last: bool):
            def hook(module, args, output):
                captured[name] = output[0] if isinstance(output, tuple) else output  # (B, T_max+1, d)
                if last:
                    raise StopForward  # later blocks and the LM heads are not needed
            return hook

        regs = [(self.layers[layer_index(h)], "forward", hook_for(h, layer_index(h) == deepest), False)
                for h in hookpoints]
        with torch.inference_mode(), scoped_hooks(regs):
            try:
                self.model.decoder.model.decoder(input_ids=ids, encoder_hidden_states=states,
                                                 encoder_attention_mask=mask, use_cache=False)
            except StopForward:
                pass
        return [{h: captured[h][b, 1:n + 1] for h in hookpoints} for b, n in enumerate(lengths)]

    @contextmanager
    def intervene(self, edits: dict):
        """Replace block outputs: edits maps a hookpoint to fn(h (batch, seq, d)) -> h, or to fn(h, ctx) when fn
        has `needs_context` (ctx: EditContext, positions counted from what the decoder is fed); hooks removed
        on exit."""
        from .base import EditContext

        for name in edits:
            self.resolve_hookpoints(name)  # unknown or out-of-range names fail here
        state: dict = {}
        tracker = DecoderPositions()

        def decoder_pre(module, args, kwargs):
            # Positions are counted from what the decoder is fed, never by call count (the prefill may run
            # twice). Rows: 2B during guided generation (declared by generate), else B.
            ids = kwargs.get("input_ids", args[0] if args else None)
            ref = ids if ids is not None else kwargs["inputs_embeds"]
            rows = ref.shape[0] // self.num_codebooks if ids is not None else ref.shape[0]
            guided = self._guided_batch is not None and rows == 2 * self._guided_batch
            state["ctx"] = EditContext(start=tracker.begin(kwargs, int(ref.shape[1])), length=int(ref.shape[1]),
                                       batch=rows // 2 if guided else rows,
                                       streams=("cond", "uncond") if guided else ())

        def hook_for(fn):
            takes_ctx = bool(getattr(fn, "needs_context", False))

            def hook(module, args, output):
                h = output[0] if isinstance(output, tuple) else output
                edited = fn(h, state["ctx"]) if takes_ctx else fn(h)
                # Keep the block's output structure: some transformers releases return (h, ...) tuples.
                return (edited, *output[1:]) if isinstance(output, tuple) else edited
            return hook

        regs = [(self.model.decoder.model.decoder, "pre", decoder_pre, True)]
        regs += [(self.layers[layer_index(h)], "forward", hook_for(fn), False) for h, fn in edits.items()]
        with scoped_hooks(regs):
            yield

    @contextmanager
    def guided_layout(self, batch: int | None):
        """Declare that decoder passes of 2*batch rows are classifier-free-guidance doubled (None: not guided)."""
        previous, self._guided_batch = self._guided_batch, batch
        try:
            yield
        finally:
            self._guided_batch = previous

    def generate(self, texts, duration_s, hookpoints, *, seed: int = 0, streams: str = "both",
                 prompt_audio=None, settings: dict | None = None, prompt_codes=None, **sampling) -> GenerationOutput:
        """Generation with capture; `settings` (or keyword arguments) are `Sampling` fields; an audio prompt is
        continued from its EnCodec codes (`prompt_audio`, or `prompt_codes` (K, P) directly)."""
        from .musicgen_generate import generate_with_capture

        options = Sampling.model_validate({**(settings or {}), **sampling}).model_dump()
        if prompt_audio is not None:
            prompt_codes = self.encode([np.asarray(prompt_audio, dtype=np.float32)])[0]
        return generate_with_capture(self, texts, duration_s, hookpoints, seed=seed, streams=streams,
                                     prompt_codes=prompt_codes, **options)

    # ---- evaluation of generated clips ----
    def audio_embeddings(self, audio: list[np.ndarray]) -> list[np.ndarray]:
        """EnCodec's encoder output before quantisation, (frames, d) float32 per mono item at `sample_rate`: the
        representation FAD's "encodec-emb" uses. Each item is encoded on its own (see `encode`)."""
        import torch

        encoder = self.model.audio_encoder
        out = []
        with torch.inference_mode():
            for a in audio:
                x = torch.from_numpy(np.asarray(a, dtype=np.float32))[None, None].to(self.device, encoder.dtype)
                if encoder.config.normalize:  # as EnCodec's own encode does before its encoder
                    x = x / (x.pow(2).mean(dim=-1, keepdim=True).sqrt() + 1e-8)
                emb = encoder.encoder(x)  # (1, d, frames)
                out.append(emb[0].T.float().cpu().numpy())  # (frames, d)
        return out

    def text_log_likelihood(self, tokens: list, texts: list[str | None]) -> np.ndarray:
        """(B,) per clip: mean over its codes of log p(code | text) - log p(code | no text), by teacher forcing
        with and without the text (the pointwise mutual information of the codes with their prompt, in nats per
        code); NaN for a clip without text."""
        import torch

        codes = [t if isinstance(t, torch.Tensor) else torch.from_numpy(np.asarray(t)) for t in tokens]
        out = np.full(len(codes), np.nan)
        keep = [i for i, t in enumerate(texts) if t]
        if not keep:
            return out
        picked = [codes[i] for i in keep]
        per_clip = []
        for conditioning in ([texts[i] for i in keep], [None] * len(keep)):
            log_probs, targets, mask = self.next_token_log_probs(picked, conditioning)  # (B, K, S, V), (B, K, S)
            lp = log_probs.gather(-1, targets[..., None])[..., 0] * mask  # (B, K, S)
            per_clip.append((lp.sum(dim=(1, 2)) / mask.sum(dim=(1, 2))).double().cpu().numpy())  # (B,)
        out[keep] = per_clip[0] - per_clip[1]
        return out


def load(name: str, revision: str | None = None, device: str = "auto", dtype: str = "fp32",
         seed: int = 0, **options) -> MusicGenAdapter:
    """The registry's loader (see models/__init__.py)."""
    from . import no_options

    no_options("musicgen", options)
    return MusicGenAdapter.load(name, revision=revision, device=device, dtype=dtype, seed=seed)


def _check_decoder_interface(decoder) -> None:
    """DependencyError when the decoder no longer takes what teacher forcing and capture pass it."""
    import inspect

    params = inspect.signature(decoder.forward).parameters
    missing = [p for p in ("input_ids", "encoder_hidden_states", "encoder_attention_mask", "use_cache")
               if p not in params]
    if missing:
        raise unsupported(f"MusicGen's decoder no longer takes {', '.join(missing)}")
