"""The registry of artefact kinds: every kind musicsae writes is in it, its functions resolve, and wrong-kind errors
keep their wording."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from musicsae_cli import kinds
from musicsae_cli.artifacts import new_manifest, write_json
from musicsae_cli.errors import InputError, StoreError

PACKAGE = Path(kinds.__file__).parent


def _written_kinds() -> set[str]:
    """Every kind name the source writes: `*KIND = "..."` constants and string literals given to new_manifest."""
    names = set()
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text("utf-8")
        names.update(re.findall(r'^\w*KIND = "([^"]+)"', text, flags=re.M))
        names.update(re.findall(r'new_manifest\(\s*"([^"]+)"', text))
    return names


def test_every_kind_musicsae_writes_is_registered():
    written = _written_kinds()
    assert {"activation_store", "sae", "sae_run", "probes", "dataset", "patch"} <= written
    assert sorted(name for name in written if kinds.get(name) is None) == []


def test_registry_imports_nothing_heavy():
    code = ("import sys; import musicsae_cli.kinds; "
            "print(sorted(m for m in ('torch', 'numpy', 'pyarrow', 'typer', 'rich') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_each_kind_names_a_command_and_functions_that_exist():
    for kind in kinds.all_kinds():
        assert kind.made_by.startswith("musicsae ") and kind.description and kind.noun
        assert callable(kind.describer()) and callable(kind.verifier())
        assert kind.open is None or callable(kind.opener())
        assert "{" not in kind.wrong_kind_hint()


def test_a_name_is_registered_once():
    with pytest.raises(ValueError, match="registered twice"):
        kinds.register(kinds.Kind(("probes",), "other probes", "musicsae other", "probes"))
    assert kinds.get("probes") is kinds.PROBES


def test_expect_kind_returns_the_manifest_or_names_both_kinds(tmp_path):
    write_json(tmp_path / "manifest.json", new_manifest("patch", 1))
    assert kinds.expect_kind(tmp_path, "sae", "patch")["kind"] == "patch"
    with pytest.raises(StoreError) as err:
        kinds.expect_kind(tmp_path, "activation_store")
    assert err.value.message == f"{tmp_path} is a musicsae 'patch' artefact, not an activation store"
    assert err.value.hint == "pass the folder written by `musicsae extract`"
    with pytest.raises(InputError) as err:
        kinds.expect_kind(tmp_path, "probes", error=InputError)
    assert err.value.hint == "pass a folder written by `musicsae probe train`"
    with pytest.raises(InputError) as err:
        kinds.expect_kind(tmp_path, "concepts", error=InputError, message="{path} is a {kind!r} artefact, not {noun}")
    assert err.value.message == f"{tmp_path} is a 'patch' artefact, not learned concepts"
    with pytest.raises(StoreError, match="no manifest.json"):
        kinds.expect_kind(tmp_path / "missing", "sae")


def test_is_kind_and_of():
    assert kinds.is_kind({"kind": "sae_run"}, "sae", "sae_run") and not kinds.is_kind(None, "sae_run")
    assert kinds.of({"kind": "no-such-kind"}) is None and kinds.of({}) is None
    assert kinds.of({"kind": "activation_store"}) is kinds.ACTIVATION_STORE
