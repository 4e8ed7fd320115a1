"""Version pins for the Makefile's environments (standard library only).

    python .ci/pins.py oldest [NAME ...]   constraints pinning NAMEs to the lower bounds pyproject.toml admits
    pip freeze --all | python .ci/pins.py lock "TORCH_SPEC"   the lock: every installed package but torch and musicsae
"""

from __future__ import annotations

import datetime
import platform
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The libraries whose oldest admitted release `make test-oldest` installs (the rest resolve to what those allow).
OLDEST = ("transformers", "numpy", "typer", "scikit-learn", "pyarrow", "demucs")
NOT_LOCKED = {"torch", "musicsae"}  # torch comes from TORCH_SPEC; musicsae is this checkout


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared() -> dict[str, str]:
    """Normalised name -> version specifier of every dependency in pyproject.toml (optional ones included)."""
    text = (ROOT / "pyproject.toml").read_text("utf-8")
    try:
        import tomllib  # Python 3.11+
    except ImportError:  # Python 3.10: the quoted requirement strings of the two [project] tables
        block = text[text.index("[project]"):text.index("[project.scripts]")]
        lists = re.findall(r"^([\w-]+)\s*=\s*\[(.*?)\]", re.sub(r"#.*", "", block), re.S | re.M)
        requirements = [r for key, body in lists if key != "dynamic" for r in re.findall(r'"([^"]+)"', body)]
    else:
        project = tomllib.loads(text)["project"]
        requirements = [*project.get("dependencies", []),
                        *(r for extra in project.get("optional-dependencies", {}).values() for r in extra)]
    specs = {}
    for requirement in requirements:
        match = re.match(r"\s*([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?\s*([^;]*)", requirement)
        specs[_norm(match.group(1))] = match.group(2).strip()
    return specs


def oldest(names: list[str]) -> list[str]:
    """`name==X` for each name's `>=X` lower bound; an error when a name has no lower bound."""
    specs, lines = declared(), []
    for name in names:
        low = re.search(r">=\s*([0-9][^,\s]*)", specs.get(_norm(name), ""))
        if not low:
            sys.exit(f"pins: {name} has no >= lower bound in pyproject.toml")
        lines.append(f"{name}=={low.group(1)}")
        if _norm(name) == "typer":
            # typer-slim ships the same `typer` package (transformers 5.0 depends on it): the same release of
            # both, or two versions' files mix in one folder.
            lines.append(f"typer-slim=={low.group(1)}")
    return lines


def lock(freeze: str, torch_spec: str) -> list[str]:
    """The lock file's lines from `pip freeze --all` output."""
    pins = []
    for line in freeze.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or line.startswith("-e ") or "==" not in line:
            continue
        name = line.split("==", 1)[0]
        if _norm(name) not in NOT_LOCKED:
            pins.append(line)
    if not pins:
        sys.exit("pins: no packages in the freeze output")
    today = datetime.date.today().isoformat()
    head = [f"# The exact versions `make test`, `make demo` and `make bench` install (pip constraints), written by "
            f"`make lock` on {today}",
            f"# with Python {platform.python_version()} after the full test suite passed on them. torch is not "
            f"listed: it comes from TORCH_SPEC ({torch_spec}).",
            "# Refresh with `make lock`; do not edit by hand."]
    return head + sorted(pins, key=lambda p: _norm(p.split("==", 1)[0]))


def main(argv: list[str]) -> None:
    if argv[:1] == ["oldest"]:
        print("\n".join(oldest(argv[1:] or list(OLDEST))))
    elif argv[:1] == ["lock"] and len(argv) == 2:
        print("\n".join(lock(sys.stdin.read(), argv[1])))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
