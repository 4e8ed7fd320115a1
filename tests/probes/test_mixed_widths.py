"""Hookpoints of different widths (CREPE's blocks, any torch model) are probed in one run: each probe is that of
its own width, as if trained alone."""

from __future__ import annotations

import numpy as np
import pytest

from .conftest import GENRES


def _mixed_store(path, n_groups=60, seed=1):
    from musicsae_cli.store import StoreWriter

    rng = np.random.default_rng(seed)
    means = {"narrow": rng.normal(size=(4, 6)) * 1.5, "wide": rng.normal(size=(4, 20)) * 0.6}
    with StoreWriter.create(path, {"narrow": 6, "wide": 20}, "float32", frame_rate=50.0,
                            model={"family": "synthetic", "id": "mixed"}) as w:
        for i in range(n_groups * 2):
            genre = i % 4
            acts = {hp: (m[genre] + rng.normal(size=(3, m.shape[1]))).astype(np.float32) for hp, m in means.items()}
            w.add_item(f"item{i:04d}", acts, item_meta={"group": f"track{i // 2:03d}", "genre": GENRES[genre]})
    return path


@pytest.mark.slow
def test_mixed_widths_train_together_like_alone(tmp_path):
    from musicsae_cli.probes.config import ProbeConfig
    from musicsae_cli.probes.model import ProbeSet
    from musicsae_cli.store import ActivationStore

    store = _mixed_store(tmp_path / "mixed")
    from musicsae_cli.probes.train import train_probes

    both = train_probes(store, tmp_path / "both", ProbeConfig(label="genre"))
    alone = train_probes(store, tmp_path / "alone", ProbeConfig(label="genre", hookpoints=["narrow"]))
    acc = {r["hookpoint"]: r["balanced_accuracy"] for r in both["layers"]}
    assert abs(acc["narrow"] - alone["layers"][0]["balanced_accuracy"]) <= 0.02
    probes, single = ProbeSet.load(tmp_path / "both"), ProbeSet.load(tmp_path / "alone")
    assert probes.widths == {"narrow": 6, "wide": 20}
    h = probes.index("narrow")
    assert np.all(probes.weight[h, :, 6:] == 0)  # the padded inputs carry no weight
    x = ActivationStore.open(store).read_rows("narrow", np.arange(30))  # (30, 6)
    agree = (probes.logits("narrow", x).argmax(1) == single.logits("narrow", x).argmax(1)).mean()
    assert agree >= 0.9
    assert probes.direction("narrow", "jazz").shape == (6,) and probes.direction("wide", "jazz").shape == (20,)
