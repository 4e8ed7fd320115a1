"""The `torch` family: one tiny conv encoder as TorchScript, as a .pt2 program and as a trusted py: factory.

Everything is built offline in tmp_path and loaded through the real save/load paths. The encoder: Conv1d stride 4
-> ReLU -> Conv1d stride 2 (channels first, rows every 4 and 8 samples), a Linear head on the permuted output
(channels last) and a mean over time (one row per item), at 1600 Hz.
"""

from __future__ import annotations

import importlib
import io
import re
import sys
import textwrap

import numpy as np
import pytest
import torch
from torch import nn

from musicsae_cli.errors import InputError, MusicSAEError, UsageError
from musicsae_cli.models import TRUST_CODE
from musicsae_cli.models.base import contextual
from musicsae_cli.models.script_stepper import ScriptStepper
from musicsae_cli.models.torch_family import claims, load
from musicsae_cli.models.torch_grid import measure_hop

pytestmark = [pytest.mark.smoke, pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")]

SR = 1600
ENCODER = "musicsae_test_tiny_encoder"
ENCODER_SRC = textwrap.dedent('''
    import torch
    from torch import nn


    class Head(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(8, 6)

        def forward(self, h):
            return self.lin(h.transpose(1, 2))


    class Pool(nn.Module):
        def forward(self, h):
            return h.mean(dim=1)


    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.sample_rate = 1600
            self.enc = nn.Sequential(nn.Conv1d(1, 4, 8, stride=4, padding=2), nn.ReLU(),
                                     nn.Conv1d(4, 8, 4, stride=2, padding=1))
            self.head = Head()
            self.pool = Pool()

        def forward(self, x):
            return self.pool(self.head(self.enc(x)))


    def build():
        return Encoder()


    def not_a_module():
        return 42
''')
PER_HOOKPOINT = {"enc": (8, "channels_first", 200.0), "enc.0": (4, "channels_first", 400.0),
                 "enc.1": (4, "channels_first", 400.0), "enc.2": (8, "channels_first", 200.0),
                 "head": (6, "channels_last", 200.0), "head.lin": (6, "channels_last", 200.0),
                 "pool": (6, "item", None)}


def _noise(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(n).astype(np.float32)


def _one_line(exc: BaseException) -> None:
    assert isinstance(exc, MusicSAEError)
    assert "\n" not in str(exc) and exc.hint and "\n" not in exc.hint


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The encoder's source on sys.path, its weights (seed 0) saved as .ts, .pt2 and a static-shape .pt2."""
    root = tmp_path_factory.mktemp("torch_family")
    (root / f"{ENCODER}.py").write_text(ENCODER_SRC)
    sys.path.insert(0, str(root))
    try:
        source = importlib.import_module(ENCODER)
        torch.manual_seed(0)
        model = source.build().eval()
        torch.jit.save(torch.jit.script(model), str(root / "enc.ts"))
        x = torch.randn(2, 1, SR)
        auto = torch.export.Dim.AUTO
        torch.export.save(torch.export.export(model, (x,), dynamic_shapes={"x": {0: auto, 2: auto}}),
                          str(root / "enc.pt2"))
        torch.export.save(torch.export.export(model, (x[:1],)), str(root / "static.pt2"))
        torch.save(model.state_dict(), str(root / "weights.pt"))
        (root / "noise.ts").write_bytes(np.random.default_rng(1).bytes(4096))
        (root / "noise.pt2").write_bytes(np.random.default_rng(2).bytes(4096))
        yield {"root": root, "model": model}
    finally:
        sys.path.remove(str(root))
        sys.modules.pop(ENCODER, None)


@pytest.fixture
def trusted():
    token = TRUST_CODE.set(True)
    yield
    TRUST_CODE.reset(token)


@pytest.fixture
def factory(files, tmp_path, monkeypatch):
    """A py: factory module of its own, on sys.path for this test."""
    (tmp_path / "musicsae_test_factories.py").write_text(
        f"from {ENCODER} import build, not_a_module  # noqa: F401\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "musicsae_test_factories", raising=False)
    return "py:musicsae_test_factories"


@pytest.fixture(params=["torchscript", "export", "python"])
def adapter(request, files, factory, trusted):
    if request.param == "torchscript":
        return load(str(files["root"] / "enc.ts"), device="cpu")
    if request.param == "export":
        return load(str(files["root"] / "enc.pt2"), device="cpu", sample_rate=SR)
    return load(f"{factory}:build", device="cpu", seed=0)


def test_claims_files_and_factories():
    assert claims("model.ts") and claims("dir/model.PT") and claims("m.jit") and claims("m.pt2")
    assert claims("py:pkg.mod:build") and claims("missing/nowhere.pt2")
    assert not claims("facebook/musicgen-small") and not claims("crepe-tiny") and not claims("model.onnx")


@pytest.mark.slow
def test_dry_run_finds_widths_layouts_and_rates(adapter):
    assert adapter.source in ("torchscript", "export", "python")
    assert adapter.sample_rate == SR and adapter.input_layout == "batch_channel_time"
    assert list(adapter.hookpoint_widths) == list(PER_HOOKPOINT)
    for name, (width, layout, rate) in PER_HOOKPOINT.items():
        hook = adapter.hookpoints[name]
        assert (hook.width, hook.layout) == (width, layout), name
        assert (SR / hook.hop if hook.hop else None) == rate, name
    assert adapter.frame_rate == 200.0 and adapter.hop_length == 8  # the coarsest, before any resolve
    assert adapter.resolve_hookpoints("enc.*") == ["enc.0", "enc.1", "enc.2"]
    assert adapter.hop_length == 8 and adapter.n_frames(SR) == 200 and adapter.n_frames(SR + 7) == 200
    described = adapter.describe()
    assert described["n_layers"] == 7 and described["hidden_size"] is None and described["fingerprint"]
    assert described["hookpoints"]["enc.0"] == {"width": 4, "layout": "channels_first", "native_frame_rate": 400.0,
                                                "pooled_by": 2}
    assert described["source"] == adapter.source and described["frame_rate"] == 200.0
    assert adapter.resolve_hookpoints("enc.0") == ["enc.0"]
    assert adapter.frame_rate == 400.0 and adapter.hop_length == 4 and adapter.n_frames(SR) == 400


def test_item_hookpoints_give_one_row_per_item(adapter):
    assert adapter.resolve_hookpoints("pool") == ["pool"]
    assert (adapter.frame_rate, adapter.hop_length, adapter.n_frames(SR)) == (SR, 1, 1)
    acts = adapter.audio_activations([_noise(SR), _noise(800, 1)], ["pool"])
    assert [tuple(a["pool"].shape) for a in acts] == [(1, 6), (1, 6)]
    np.testing.assert_allclose(acts[0]["pool"][0].numpy(), adapter.forward(_noise(SR)).numpy(), atol=1e-5)


def test_finer_hookpoints_are_averaged_onto_the_coarse_grid(adapter, files):
    model = files["model"]
    names = adapter.resolve_hookpoints(["enc.0", "enc", "head"])
    items = [_noise(SR), _noise(SR, 1), _noise(SR // 2, 2)]
    acts = adapter.audio_activations(items, names)
    for audio, got in zip(items, acts, strict=True):
        x = torch.from_numpy(audio)[None, None]
        with torch.no_grad():  # the same numbers by hand, no hooks anywhere
            fine = model.enc[0](x)[0].numpy().T  # (T/4, 4)
            coarse = model.enc(x)
            head = model.head(coarse)[0].numpy()
        pooled = fine.reshape(-1, 2, 4).mean(axis=1)
        n = adapter.n_frames(audio.size)
        assert n == audio.size // 8 and all(v.shape[0] == n for v in got.values())
        np.testing.assert_allclose(got["enc.0"].numpy(), pooled, atol=1e-5)
        np.testing.assert_allclose(got["enc"].numpy(), coarse[0].numpy().T, atol=1e-5)
        np.testing.assert_allclose(got["head"].numpy(), head, atol=1e-5)


def test_scripted_submodules_by_hand_match_the_stepped_capture(files):
    scripted = load(str(files["root"] / "enc.ts"), device="cpu")
    audio = _noise(SR, 3)
    got = scripted.audio_activations([audio], scripted.resolve_hookpoints("enc.1,enc.2"))[0]
    x = torch.from_numpy(audio)[None, None]
    module = scripted.module
    with torch.no_grad():
        relu = getattr(module.enc, "1")(getattr(module.enc, "0")(x))
        conv = getattr(module.enc, "2")(relu)
    np.testing.assert_allclose(got["enc.1"].numpy(), relu[0].numpy().T.reshape(-1, 2, 4).mean(axis=1), atol=1e-5)
    np.testing.assert_allclose(got["enc.2"].numpy(), conv[0].numpy().T, atol=1e-5)


def test_batches_give_what_single_items_give(adapter):
    names = adapter.resolve_hookpoints("enc.0,enc")
    items = [_noise(SR, i) for i in range(3)]
    together = adapter.audio_activations(items, names)
    for audio, got in zip(items, together, strict=True):
        alone = adapter.audio_activations([audio], names)[0]
        for h in names:
            np.testing.assert_allclose(got[h].numpy(), alone[h].numpy(), atol=1e-5)


def test_identity_edits_leave_the_output_and_zero_edits_change_it(adapter, files):
    audio = _noise(SR, 4)
    native = adapter.forward(audio)
    with torch.no_grad():
        expected = files["model"](torch.from_numpy(audio)[None, None])[0]
    np.testing.assert_allclose(native.numpy(), expected.numpy(), atol=1e-5)
    with adapter.intervene({"enc.0": lambda h: h, "head": lambda h: h, "pool": lambda h: h}):
        np.testing.assert_allclose(adapter.forward(audio).numpy(), native.numpy(), atol=1e-6)
    with adapter.intervene({"enc.0": torch.zeros_like}):
        zeroed = adapter.forward(audio)
        downstream = adapter.audio_activations([audio], ["enc", "enc.0"])[0]
    assert not torch.allclose(zeroed, native)
    bias = files["model"].enc[2].bias.detach().numpy()  # conv(relu(0)) is the second conv's bias everywhere
    np.testing.assert_allclose(downstream["enc"].numpy(), np.tile(bias, (SR // 8, 1)), atol=1e-6)
    assert float(downstream["enc.0"].abs().max()) == 0.0  # captures see the edited value
    np.testing.assert_allclose(adapter.forward(audio).numpy(), native.numpy(), atol=1e-6)  # edits removed


def test_edits_map_back_to_each_layout(adapter, files):
    model, audio = files["model"], _noise(SR, 5)
    x = torch.from_numpy(audio)[None, None]
    shift, lift = torch.arange(8.0) / 10, torch.arange(6.0) / 7
    with torch.no_grad():
        expected = model.pool(model.head(model.enc(x) + shift[None, :, None]))[0] + lift
    with adapter.intervene({"enc": lambda h: h + shift, "head.lin": lambda h: h + lift}):
        np.testing.assert_allclose(adapter.forward(audio).numpy(), expected.numpy(), atol=1e-5)


def test_context_edits_get_rows_and_batch(adapter):
    seen = {}

    def record(name):
        @contextual
        def edit(h, ctx):
            seen[name] = (tuple(h.shape), ctx.start, ctx.length, ctx.batch)
            return h
        return edit

    edits = {n: record(n) for n in ("enc.0", "head", "pool")}
    with adapter.intervene(edits):
        adapter.audio_activations([_noise(SR), _noise(SR, 1)], ["enc"])
    assert seen == {"enc.0": ((2, 400, 4), 0, 400, 2), "head": ((2, 200, 6), 0, 200, 2),
                    "pool": ((2, 1, 6), 0, 1, 2)}


class _TupleConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(1, 2, 4, stride=4)

    def forward(self, x):
        y = self.conv(x)
        return y, y.shape[-1]


class _RaveLike(nn.Module):
    """(B, N) audio, its rate in `sr`, an `encode` method and a submodule returning (tensor, int)."""

    def __init__(self):
        super().__init__()
        self.sr = 800
        self.front = _TupleConv()
        self.latent = nn.Conv1d(2, 3, 2, stride=2)

    def forward(self, x):
        return self.encode(x) * 0

    @torch.jit.export
    def encode(self, x):
        y, n = self.front(x.unsqueeze(1))
        return self.latent(y)


def test_batch_time_input_sr_attribute_method_and_tuple_outputs(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "rave_like.ts"
    torch.jit.save(torch.jit.script(_RaveLike().eval()), str(path))
    adapter = load(str(path), device="cpu", method="encode")
    assert adapter.sample_rate == 800 and adapter.input_layout == "batch_time"  # (B, 1, N) failed first
    assert adapter.hookpoint_widths == {"front": 2, "front.conv": 2, "latent": 3}
    assert adapter.resolve_hookpoints("front,latent") == ["front", "latent"] and adapter.hop_length == 8
    audio = _noise(800, 6)
    acts = adapter.audio_activations([audio], ["front", "latent"])[0]
    module, x = adapter.module, torch.from_numpy(audio)[None]
    with torch.no_grad():
        front = module.front.conv(x[:, None])
        latent = module.latent(front)
    np.testing.assert_allclose(acts["front"].numpy(), front[0].numpy().T.reshape(-1, 2, 2).mean(axis=1), atol=1e-5)
    np.testing.assert_allclose(acts["latent"].numpy(), latent[0].numpy().T, atol=1e-5)
    np.testing.assert_allclose(adapter.forward(audio).numpy(), latent[0].numpy(), atol=1e-5)  # encode, not forward
    with adapter.intervene({"front": torch.zeros_like}):  # the int beside the tensor is kept
        edited = adapter.audio_activations([audio], ["latent"])[0]["latent"]
    np.testing.assert_allclose(edited.numpy(), np.tile(module.latent.bias.detach().numpy(), (100, 1)), atol=1e-6)
    with pytest.raises(UsageError, match="has no method decode") as info:
        load(str(path), device="cpu", method="decode")
    _one_line(info.value)


def test_no_hooks_means_the_compiled_forward(files, monkeypatch):
    adapter = load(str(files["root"] / "enc.ts"), device="cpu")
    adapter.resolve_hookpoints("enc.0")  # the dry run steps everywhere, once
    adapter._stepper = stepper = ScriptStepper()
    monkeypatch.setattr(stepper, "run", lambda *a, **k: pytest.fail("stepped without hooks"))
    adapter.forward(_noise(SR))
    monkeypatch.undo()
    adapter.audio_activations([_noise(SR)], ["enc.0"])
    # TorchScript mangles a class name it has compiled before in the process (___torch_mangle_N): not our concern
    stepped = [re.sub(r"___torch_mangle_\d+\.", "", name) for name in stepper.stepped]
    assert stepped == [f"__torch__.{ENCODER}.Encoder.forward",  # only the way down to enc.0: the head,
                       "__torch__.torch.nn.modules.container.Sequential.forward"]  # and enc.0, run compiled


def test_a_static_pt2_program_needs_layouts_and_its_own_length(files):
    path = str(files["root"] / "static.pt2")
    plain = load(path, device="cpu", sample_rate=SR)
    with pytest.raises(UsageError, match="exported for inputs of 1600 samples") as info:
        plain.resolve_hookpoints("enc")
    _one_line(info.value)
    shaped = load(path, device="cpu", sample_rate=SR, layouts={"enc*": "channels_first", "pool": "item"})
    assert shaped.resolve_hookpoints("enc") == ["enc"] and shaped.frame_rate == 200.0
    acts = shaped.audio_activations([_noise(SR), _noise(SR, 1)], ["enc"])  # a static batch of 1: one by one
    assert [tuple(a["enc"].shape) for a in acts] == [(200, 8), (200, 8)]
    with pytest.raises(UsageError, match="exported for inputs of 1600 samples") as info:
        shaped.audio_activations([_noise(800)], ["enc"])
    assert "window_s" in info.value.hint
    _one_line(info.value)


# ---- the TorchScript stepper on its own ----

class _Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(3, 3, 3, padding=1)

    def forward(self, x):
        return x + torch.relu(self.conv(x))


class _Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.long = nn.Sequential(nn.Conv1d(3, 3, 1), nn.Tanh())
        self.short = nn.Conv1d(3, 3, 1)

    def forward(self, x):
        if x.dim() == 3:
            z = x
        else:
            raise ValueError("3-D input")  # z is left uninitialised on this path
        if z.shape[-1] > 10:
            y = self.long(z)
        else:
            y = self.short(z)
        return y * 2


class _Recurrent(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(3, 4, 2, stride=2)
        self.gru = nn.GRU(4, 5, batch_first=True)  # scripted, its forward is an overload: forward__0

    def forward(self, x):
        y, _ = self.gru(self.conv(x).transpose(1, 2))
        return y


class _Pair(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def forward(self, x):
        h = self.lin(x.transpose(1, 2))
        return h.transpose(1, 2), h.mean(dim=1)


class _Tupled(nn.Module):
    def __init__(self):
        super().__init__()
        self.pair = _Pair()
        self.blocks = nn.ModuleList([_Residual(), _Residual()])

    def forward(self, x):
        seq, summary = self.pair(x)
        outs = []
        for block in self.blocks:
            seq = block(seq)
            outs.append(seq)
        for _ in range(2):
            seq = seq * 0.5
        padded = torch.nn.functional.pad(seq, (1, 1))
        return torch.cat(outs, dim=1), padded, summary


def _reloaded(module: nn.Module):
    """Script, save and load (loaded graphs keep library functions as calls)."""
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(module.eval()), buf)
    buf.seek(0)
    return torch.jit.load(buf)


@pytest.mark.parametrize("build,paths", [
    (lambda: nn.Sequential(nn.Conv1d(3, 4, 3), nn.ReLU(), nn.Conv1d(4, 3, 3)), ["0", "2"]),
    (lambda: nn.Sequential(_Residual(), _Residual()), ["1.conv", "0"]),
    (_Branchy, ["long.0", "short"]),
    (_Tupled, ["pair.lin", "blocks.1.conv", "blocks.0"]),
    (_Recurrent, ["gru", "conv"]),
])
@pytest.mark.slow
def test_stepping_matches_the_compiled_forward(build, paths):
    torch.manual_seed(0)
    eager = build().eval()
    module = _reloaded(eager)
    stepper = ScriptStepper()
    for length in (8, 16):  # _Branchy takes its other branch on the longer input
        x = torch.randn(2, 3, length)
        captured, reference = {}, {}
        hooks = {p: [lambda m, a, out, p=p, seen=captured: seen.__setitem__(p, out)] for p in paths}
        handles = [eager.get_submodule(p).register_forward_hook(lambda m, a, out, p=p, seen=reference:
                                                                seen.__setitem__(p, out)) for p in paths]
        with torch.no_grad():
            native, stepped = module(x), stepper.run(module, hooks, x)
            eager(x)
        for handle in handles:
            handle.remove()
        native, stepped = (native if isinstance(native, tuple) else (native,)), \
            (stepped if isinstance(stepped, tuple) else (stepped,))
        assert len(native) == len(stepped)
        for a, b in zip(native, stepped, strict=True):
            torch.testing.assert_close(a, b)
        assert captured.keys() == reference.keys() and captured  # the same modules ran, at least one
        for p in captured:  # each hook saw what the eager module computed there
            torch.testing.assert_close(captured[p], reference[p])


def test_stepping_applies_an_edit_downstream():
    torch.manual_seed(0)
    module = _reloaded(nn.Sequential(_Residual(), _Residual()))
    x = torch.randn(1, 3, 6)
    with torch.no_grad():
        out = ScriptStepper().run(module, {"0.conv": [lambda m, a, o: torch.zeros_like(o)]}, x)
        first = getattr(module, "1")(x)  # block 0 with a zeroed conv is the identity
    torch.testing.assert_close(out, first)


class _Forked(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = nn.Sequential(nn.Conv1d(1, 3, 4, stride=4), nn.ReLU())
        self.after = nn.Conv1d(3, 3, 1)

    def forward(self, x):
        fut = torch.jit.fork(self.inner, x)
        return self.after(torch.jit.wait(fut))


def test_a_construct_the_stepper_cannot_enter_names_a_module_above(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "forked.jit"
    torch.jit.save(torch.jit.script(_Forked().eval()), str(path))
    adapter = load(str(path), device="cpu", sample_rate=SR)
    with pytest.raises(UsageError, match=r"cannot step through prim::fork in the model's forward to reach "
                                         r"hookpoint inner\.0") as info:
        adapter.resolve_hookpoints("inner.0")
    assert "hook a module above it" in info.value.hint
    _one_line(info.value)
    assert adapter.resolve_hookpoints("after") == ["after"]  # not hidden by the fork
    assert adapter.hookpoint_widths == {"after": 3}


@pytest.mark.parametrize("rate,hop,offset", [
    (1600, 4, 0), (1600, 4, 3), (1600, 4, -4),  # floor, ceiling, an unpadded conv (one row fewer)
    (16000, 160, 160),  # a frame centred on every 10 ms, one more row than whole hops
    (24000, 320, 319),  # a 75 Hz codec that pads its last frame
    (48000, 2048, 0), (44100, 2048, -1024),  # a hop that does not divide the rate
    (22050, 441, 220), (16000, 6000, 0),
])
def test_the_dry_run_pins_hop_and_offset_down(rate, hop, offset):
    def rows_at(n):
        asked.append(n)
        return (n + offset) // hop

    asked: list[int] = []
    points = [(n, rows_at(n)) for n in (rate, 2 * rate)]
    got_hop, got_offset = measure_hop(points, rows_at)
    assert got_hop == hop
    lengths = range(hop, 3 * rate, max(1, hop // 3))
    assert all((n + got_offset) // got_hop == (n + offset) // hop for n in lengths)
    assert len(asked) <= 2 + 2 * 16  # two bisections at most


def test_one_length_alone_rounds_the_hop():
    assert measure_hop([(1600, 400)]) == (4, 0)
    assert measure_hop([(1600, 399)]) == (4, -4)  # 4.01 samples a row: within 1% of 4
    assert measure_hop([(1600, 300)]) == (None, 0)  # 5.33


# ---- errors: one line each, with a hint ----

def test_files_that_are_not_torchscript_fail_with_one_line(files):
    for name in ("weights.pt", "noise.ts"):
        with pytest.raises(InputError, match="is not a TorchScript model") as info:
            load(str(files["root"] / name), device="cpu")
        assert "torch.jit.save" in info.value.hint
        _one_line(info.value)
    with pytest.raises(InputError, match="is not a torch.export program") as info:
        load(str(files["root"] / "noise.pt2"), device="cpu", sample_rate=SR)
    _one_line(info.value)
    with pytest.raises(InputError, match="does not exist") as info:
        load(str(files["root"] / "missing.pt2"), device="cpu")
    _one_line(info.value)


def test_python_factories_need_trust_and_a_module(factory):
    with pytest.raises(UsageError, match="runs Python code from musicsae_test_factories") as info:
        load(f"{factory}:build", device="cpu")
    assert "--trust-code" in info.value.hint
    _one_line(info.value)
    token = TRUST_CODE.set(True)
    try:
        with pytest.raises(UsageError, match="not a torch.nn.Module") as info:
            load(f"{factory}:not_a_module", device="cpu")
        _one_line(info.value)
        with pytest.raises(UsageError, match="form py:package.module:callable") as info:
            load("py:not a name", device="cpu")
        _one_line(info.value)
    finally:
        TRUST_CODE.reset(token)


def test_hookpoint_errors(files):
    adapter = load(str(files["root"] / "enc.ts"), device="cpu")
    with pytest.raises(UsageError, match="unknown hookpoint 'enc.O'") as info:
        adapter.resolve_hookpoints("enc.O")
    assert "'enc.0'" in info.value.hint
    _one_line(info.value)
    with pytest.raises(UsageError, match="mix frame-aligned") as info:
        adapter.resolve_hookpoints("enc,pool")
    assert "pool" in info.value.message and "separate stores" in info.value.hint
    _one_line(info.value)
    with pytest.raises(UsageError, match="mix frame-aligned"):
        adapter.resolve_hookpoints("all")
    with pytest.raises(UsageError, match="unknown hookpoint 'nowhere'"):
        with adapter.intervene({"nowhere": lambda h: h}):
            pass


def test_layout_options_are_checked(files):
    path = str(files["root"] / "enc.ts")
    timeless = load(path, device="cpu", layouts={"pool": "channels_first"})
    with pytest.raises(UsageError, match="hookpoint pool has no time axis") as info:
        timeless.resolve_hookpoints("pool")
    assert "item" in info.value.hint
    _one_line(info.value)
    with pytest.raises(UsageError, match="follows the input length"):
        load(path, device="cpu", layouts={"enc": "item"}).resolve_hookpoints("enc")
    with pytest.raises(UsageError, match="axis 1"):
        load(path, device="cpu", layouts={"enc": "channels_last"}).resolve_hookpoints("enc")
    for bad, pattern in (({"layouts": {"enc": "sideways"}}, "unknown layout"),
                         ({"layouts": {"enk.*": "item"}}, "matches nothing"),
                         ({"sample_rate": "fast"}, "sample_rate"), ({"input": "stereo"}, "input"),
                         ({"colour": 1}, "unknown model option")):
        with pytest.raises(UsageError, match=pattern) as info:
            load(path, device="cpu", **bad)
        _one_line(info.value)


def test_a_model_without_a_rate_needs_the_option(files):
    with pytest.raises(UsageError, match="does not say its sample rate") as info:
        load(str(files["root"] / "enc.pt2"), device="cpu")
    assert "sample_rate" in info.value.hint
    _one_line(info.value)
