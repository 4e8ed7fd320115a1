"""The `data` configs import without the heavy libraries (--help shows their defaults) and stay re-exported."""

import subprocess
import sys


def test_configs_import_without_heavy_libraries():
    code = ("import sys; import musicsae_cli.audio.config as c; "
            "c.SynthConfig(); c.IndexConfig(); c.SplitConfig(); c.ChunkConfig(); "
            "print([m for m in ('numpy', 'torch', 'pyarrow', 'soundfile') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_configs_are_re_exported():
    from musicsae_cli.audio import chunk, config, dataset, split, synth

    assert synth.SynthConfig is config.SynthConfig and synth.CONCEPTS is config.CONCEPTS
    assert dataset.IndexConfig is config.IndexConfig
    assert split.SplitConfig is config.SplitConfig
    assert chunk.ChunkConfig is config.ChunkConfig
