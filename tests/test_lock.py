"""The lock and the drift checks' pins: every declared dependency is locked exactly, torch never is."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PINS = [sys.executable, str(ROOT / ".ci" / "pins.py")]


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _locked() -> dict[str, str]:
    lines = (ROOT / "requirements.lock").read_text("utf-8").splitlines()
    pins = [line for line in lines if line and not line.startswith("#")]
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]+==[^=\s]+", p) for p in pins), "every line is name==version"
    return {_norm(p.split("==")[0]): p.split("==")[1] for p in pins}


def _declared() -> dict[str, str]:
    sys.path.insert(0, str(ROOT / ".ci"))
    try:
        import pins
    finally:
        sys.path.pop(0)
    return pins.declared()


def test_every_declared_dependency_is_locked_within_its_range():
    from packaging.specifiers import SpecifierSet

    locked, declared = _locked(), _declared()
    assert "torch" not in locked and "musicsae" not in locked  # torch comes from TORCH_SPEC
    for name, spec in declared.items():
        if name in ("torch", "hatchling"):
            continue
        assert name in locked, f"{name} is declared in pyproject.toml but not locked: run make lock"
        assert locked[name] in SpecifierSet(spec), f"locked {name}=={locked[name]} is outside {spec}"


def test_lock_matches_the_installed_environment_of_make_test():
    """`make test` installs the lock, so its environment has exactly the locked versions of what it declares."""
    from importlib.metadata import version

    locked = _locked()
    for name in ("transformers", "numpy", "typer", "scikit-learn", "pyarrow", "demucs"):
        assert name in locked
    if (ROOT / ".venv").resolve() == Path(sys.prefix).resolve():  # only the locked environment, not a drift check's
        assert version("transformers") == locked["transformers"]


def test_oldest_pins_are_the_lower_bounds():
    out = subprocess.run([*PINS, "oldest"], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["transformers==5.0", "numpy==1.26", "typer==0.18", "typer-slim==0.18", "scikit-learn==1.4",
                   "pyarrow==16", "demucs==4.1"]
    bad = subprocess.run([*PINS, "oldest", "nonexistent-package"], capture_output=True, text=True)
    assert bad.returncode != 0 and "no >= lower bound" in bad.stderr


def test_lock_lines_from_a_freeze():
    freeze = "numpy==2.4.6\ntorch==2.13.0+cpu\n-e git+https://x#egg=musicsae\nmusicsae==0.1.0\nAbc_Def==1.0\npip==25.3\n"
    out = subprocess.run([*PINS, "lock", "torch==2.13.0"], input=freeze, capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert [line for line in out if not line.startswith("#")] == ["Abc_Def==1.0", "numpy==2.4.6", "pip==25.3"]
    assert "TORCH_SPEC (torch==2.13.0)" in out[1]


def test_weight_wheels_are_locked_within_their_range():
    """Wheels installed with --no-deps for the weights they ship (Makefile WEIGHT_WHEELS) are locked too."""
    import re

    from packaging.requirements import Requirement

    make = (ROOT / "Makefile").read_text("utf-8")
    wheels = re.search(r"^WEIGHT_WHEELS \?= (.+)$", make, re.M).group(1).split()
    oldest = re.search(r"^WEIGHT_WHEELS_OLDEST \?= (.+)$", make, re.M).group(1).split()
    locked = _locked()
    for text, low in zip(wheels, oldest, strict=True):
        req, pin = Requirement(text), Requirement(low)
        assert req.name in locked and locked[req.name] in req.specifier, (req, locked.get(req.name))
        lower = next(s.version for s in req.specifier if s.operator == ">=")
        assert pin.name == req.name and str(pin.specifier) == f"=={lower}"
