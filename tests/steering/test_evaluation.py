"""The evaluation's numbers against independent computations: Frechet distance (closed forms, an eigenvalue
computation), bootstrap CIs (a plain numpy loop), slopes (np.polyfit), p-values; the pitch-class share; the two
model capabilities on the tiny MusicGen."""

from __future__ import annotations

import math

import numpy as np
import pytest

from musicsae_cli.steering.evaluation import (
    clip_matrix,
    clip_series,
    evaluate,
    frechet_series,
    resample_units,
)
from musicsae_cli.steering.frechet import PooledFrames, frechet_between, frechet_distance, gaussian


def _sqrt_psd(m):
    w, v = np.linalg.eigh(m)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def _fd_eig(x, y):
    """FD by the symmetric form tr((A^1/2 B A^1/2)^1/2), all in numpy eigendecompositions."""
    ma, mb = x.mean(0), y.mean(0)
    a, b = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    ra = _sqrt_psd(a)
    return np.sum((ma - mb) ** 2) + np.trace(a) + np.trace(b) - 2 * np.trace(_sqrt_psd(ra @ b @ ra))


def test_frechet_closed_forms():
    # diagonal Gaussians: ||mu_a - mu_b||^2 + sum (s_a + s_b - 2 sqrt(s_a s_b))
    mu_a, mu_b = np.array([0.0, 1.0, -2.0]), np.array([0.5, 1.0, 0.0])
    s_a, s_b = np.array([1.0, 4.0, 0.25]), np.array([2.0, 1.0, 0.25])
    want = np.sum((mu_a - mu_b) ** 2) + np.sum(s_a + s_b - 2 * np.sqrt(s_a * s_b))
    assert frechet_distance(mu_a, np.diag(s_a), mu_b, np.diag(s_b)) == pytest.approx(want, rel=1e-10)
    # 1-D: (m1 - m2)^2 + (sd1 - sd2)^2
    assert frechet_distance(np.array([1.0]), np.array([[9.0]]), np.array([-1.0]), np.array([[4.0]])) == \
        pytest.approx(4.0 + 1.0, rel=1e-10)
    # identical sets: 0
    x = np.random.default_rng(0).standard_normal((200, 5))
    assert frechet_between(x, x) == pytest.approx(0.0, abs=1e-8)


def test_frechet_full_covariances_against_numpy():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((400, 6)) @ rng.standard_normal((6, 6))
    y = rng.standard_normal((300, 6)) @ rng.standard_normal((6, 6)) + 0.7
    assert frechet_between(x, y) == pytest.approx(_fd_eig(x, y), rel=1e-6)
    # singular covariances (frames in a 2-D subspace of 6, fewer frames than dimensions): still finite
    basis = rng.standard_normal((2, 6))
    low_a, low_b = rng.standard_normal((5, 2)) @ basis, rng.standard_normal((4, 2)) @ basis + 0.1
    fd = frechet_between(low_a, low_b)
    assert math.isfinite(fd) and fd == pytest.approx(_fd_eig(low_a, low_b), rel=1e-3, abs=1e-5)
    with pytest.raises(Exception, match="at least 2 embedding frames"):
        gaussian(np.zeros((1, 6)))


def test_pooled_frames_match_stacked_frames():
    rng = np.random.default_rng(2)
    frames = [rng.standard_normal((n, 4)) + i for i, n in enumerate((7, 9, 5))]
    pooled = PooledFrames(frames)
    units = np.array([2, 0, 2])  # a bootstrap draw: repeats count twice
    mu, cov = pooled.gaussian(units)
    stacked = np.concatenate([frames[u] for u in units])
    np.testing.assert_allclose(mu, stacked.mean(0), rtol=1e-12)
    np.testing.assert_allclose(cov, np.cov(stacked, rowvar=False), rtol=1e-10, atol=1e-12)


def test_frechet_series_against_direct_distances():
    rng = np.random.default_rng(3)
    n_units, strengths = 3, [0.0, 1.0, 2.0]
    base = [rng.standard_normal((20, 3)) for _ in range(n_units)]
    steered = {(c, s): [rng.standard_normal((20, 3)) * (1 + s) + c * s for _ in range(n_units)]
               for c in (0, 1) for s in (1.0, 2.0)}
    draws = resample_units(n_units, 15, seed=4)
    series = frechet_series({k: PooledFrames(v) for k, v in steered.items()}, PooledFrames(base), strengths, 1, draws)
    for (c, s), frames in steered.items():
        want = _fd_eig(np.concatenate(frames), np.concatenate(base))
        assert series.point[c, strengths.index(s)] == pytest.approx(want, rel=1e-6)
        u = draws[7]
        want = _fd_eig(np.concatenate([frames[i] for i in u]), np.concatenate([base[i] for i in u]))
        assert series.boot[7, c, strengths.index(s)] == pytest.approx(want, rel=1e-6)
    assert (series.point[:, 0] == 0).all() and series.point.shape == (3, 3)  # direction, random0, random mean
    np.testing.assert_allclose(series.point[2], series.point[1])  # one control: its mean is itself


def _rows(rng, n_seeds=4, n_prompts=3, strengths=(2.0, 4.0), n_random=3, slope=0.5):
    rows = []
    for seed in range(n_seeds):
        for p in range(n_prompts):
            base = rng.normal()
            rows.append({"seed": seed, "prompt_index": p, "control": "none", "control_index": "", "strength": 0.0,
                         "score": base})
            for s in strengths:
                rows.append({"seed": seed, "prompt_index": p, "control": "direction", "control_index": "",
                             "strength": s, "score": base + slope * s + rng.normal(scale=0.3)})
                for i in range(n_random):
                    rows.append({"seed": seed, "prompt_index": p, "control": "random", "control_index": i,
                                 "strength": s, "score": base + rng.normal(scale=0.3)})
    return rows


def test_bootstrap_slopes_and_p_values_against_numpy():
    rng = np.random.default_rng(5)
    rows = _rows(rng)
    strengths, n_random, resamples = [0.0, 2.0, 4.0], 3, 400
    y = clip_matrix(rows, "score", strengths, n_random)  # (C, U, S)
    assert y.shape == (4, 12, 3) and np.isfinite(y).all()
    draws = resample_units(12, resamples, seed=9)
    result = evaluate([clip_series("score", y, draws)], strengths, n_random, ci=0.9)
    table = {(r["condition"], r["strength"]): r for r in result["table"]}
    slopes = {r["condition"]: r for r in result["slopes"]}
    # independent: per condition, the clips as a (units, strengths) array from the rows, and a numpy loop
    units = [(r["seed"], r["prompt_index"]) for r in rows if r["control"] == "none"]

    def matrix(control, index=None):
        m = np.zeros((len(units), 3))
        for r in rows:
            u = units.index((r["seed"], r["prompt_index"]))
            if r["control"] == "none":
                m[u, 0] = r["score"]
            elif r["control"] == control and (index is None or r["control_index"] == index):
                m[u, strengths.index(r["strength"])] = r["score"]
        return m

    direction = matrix("direction")
    randoms = [matrix("random", i) for i in range(n_random)]
    rand_mean = np.mean(randoms, axis=0)
    boot_d, boot_r = [], []
    for b in range(resamples):
        idx = np.random.default_rng(9).integers(0, 12, size=(resamples, 12))[b]
        boot_d.append(np.polyfit(strengths, direction[idx].mean(0), 1)[0])
        boot_r.append(np.polyfit(strengths, rand_mean[idx].mean(0), 1)[0])
        if b == 0:
            first = direction[idx].mean(0)
    boot_d, boot_r = np.array(boot_d), np.array(boot_r)
    for j, s in enumerate(strengths):
        row = table[("direction", s)]
        assert row["mean"] == pytest.approx(direction[:, j].mean(), rel=1e-12) and row["n"] == 12
    means = np.array([np.mean(direction[np.random.default_rng(9).integers(0, 12, size=(resamples, 12))[b]], axis=0)
                      for b in range(resamples)])
    np.testing.assert_allclose(means[0], first)
    for j, s in enumerate(strengths):
        lo, hi = np.percentile(means[:, j], [5, 95])
        assert table[("direction", s)]["ci_low"] == pytest.approx(lo, rel=1e-9)
        assert table[("direction", s)]["ci_high"] == pytest.approx(hi, rel=1e-9)
    d = slopes["direction"]
    assert d["slope"] == pytest.approx(np.polyfit(strengths, direction.mean(0), 1)[0], rel=1e-9)
    assert (d["ci_low"], d["ci_high"]) == pytest.approx(tuple(np.percentile(boot_d, [5, 95])), rel=1e-9)
    assert slopes["random"]["slope"] == pytest.approx(np.polyfit(strengths, rand_mean.mean(0), 1)[0], rel=1e-9)
    assert d["p_boot"] == pytest.approx((1 + np.sum(boot_d - boot_r <= 0)) / (1 + resamples))
    rand_slopes = [np.polyfit(strengths, m.mean(0), 1)[0] for m in randoms]
    assert d["p_rank"] == pytest.approx((1 + sum(r >= d["slope"] for r in rand_slopes)) / (1 + n_random))
    # a real effect (slope 0.5 per unit strength) is found; the controls' slopes are near 0
    assert d["slope"] == pytest.approx(0.5, abs=0.1) and d["p_boot"] < 0.01 and d["p_rank"] == 0.25
    assert abs(slopes["random"]["slope"]) < 0.1 and slopes["random0"]["p_boot"] is None


def test_no_effect_gives_a_large_p_value():
    rows = _rows(np.random.default_rng(6), slope=0.0)
    y = clip_matrix(rows, "score", [0.0, 2.0, 4.0], 3)
    result = evaluate([clip_series("score", y, resample_units(12, 500, seed=1))], [0.0, 2.0, 4.0], 3)
    (d,) = [r for r in result["slopes"] if r["condition"] == "direction"]
    assert d["p_boot"] > 0.05 and d["ci_low"] < 0 < d["ci_high"]


def test_pitch_class_share():
    from musicsae_cli.steering.judges import pitch_class, pitch_class_share

    assert [pitch_class(n) for n in ("C", "A", "Db", "c#", "notes", None)] == [0, 9, 1, None, None, None]
    f0 = np.array([440.0, 220.0, 452.0, 466.16, 261.63, 880.0, 0.0])  # A, A, A (+47 cents), A#, C, A, unvoiced
    conf = np.array([0.9, 0.9, 0.9, 0.9, 0.9, 0.2, 0.9])
    assert pitch_class_share(f0, conf, 9, 0.5) == pytest.approx(3 / 5)
    assert math.isnan(pitch_class_share(f0, np.zeros(7), 9, 0.5))


@pytest.mark.slow
def test_audio_embeddings_quantise_to_the_models_codes(tiny_adapter):
    """The embeddings are what the codes quantise: the adapter's own quantiser on them gives its tokens."""
    import torch

    res = tiny_adapter.generate(["a song"], 0.5, [], seed=0, top_k=50)
    audio = res.audio[0, 0]
    (emb,) = tiny_adapter.audio_embeddings([audio])
    (codes,) = tiny_adapter.tokenize([audio])
    enc = tiny_adapter.model.audio_encoder
    again = enc.quantizer.encode(torch.from_numpy(emb.T)[None], enc.config.target_bandwidths[0])  # (K, 1, T)
    assert emb.shape == (codes.shape[-1], enc.config.hidden_size)
    np.testing.assert_array_equal(again[:, 0].numpy(), codes.numpy())


def test_text_adherence_is_the_likelihood_ratio(tiny_adapter):
    import torch

    res = tiny_adapter.generate(["calm jazz piano", "fast rock"], 0.5, [], seed=0, top_k=50)
    tokens = list(res.tokens)
    got = tiny_adapter.text_log_likelihood(tokens, ["calm jazz piano", None])
    assert math.isnan(got[1])
    # independent: the summed log-probabilities of the real codes, read off the full log-softmax
    want = []
    for texts in (["calm jazz piano"], [None]):
        log_probs, targets, mask = tiny_adapter.next_token_log_probs([torch.from_numpy(tokens[0])], texts)
        lp, t, m = log_probs[0].numpy(), targets[0].numpy(), mask[0].numpy()
        k, s = np.nonzero(m)
        want.append(lp[k, s, t[k, s]].mean())
    assert got[0] == pytest.approx(want[0] - want[1], rel=1e-5, abs=1e-9)
    assert got[0] != 0.0  # the text does change the likelihood


def test_capabilities_missing_are_one_line():
    from musicsae_cli.errors import UsageError
    from musicsae_cli.models import load_adapter

    adapter = load_adapter("crepe-tiny-random", device="cpu")
    for call, what in ((lambda: adapter.audio_embeddings([]), "audio embeddings"),
                       (lambda: adapter.text_log_likelihood([], []), "text adherence")):
        with pytest.raises(UsageError, match=what) as err:
            call()
        assert "\n" not in str(err.value)
