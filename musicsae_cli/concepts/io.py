"""Read a `concept learn` output and attach its concepts to a loaded model, after checking they belong to it."""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError


def read_concepts(path: str | Path) -> tuple[dict, dict]:
    """(manifest, concept -> rows (tokens, d)) of a concepts folder; InputError when it is not one."""
    from safetensors.torch import load_file

    from ..artifacts import check_format_version
    from ..kinds import CONCEPTS, expect_kind
    from .learn import FORMAT_VERSION

    path = Path(path)
    if not path.is_dir():
        raise InputError(f"no such concepts folder: {path}", "pass the folder `musicsae concept learn` wrote")
    manifest = expect_kind(path, CONCEPTS.name, error=InputError, message="{path} is a {kind!r} artefact, not {noun}")
    check_format_version(manifest, FORMAT_VERSION, f"concepts {path}")
    rows = load_file(str(path / "embeddings.safetensors"))
    missing = [c for c in manifest["concepts"] if c not in rows]
    if missing:
        raise InputError(f"{path}/embeddings.safetensors lacks {', '.join(missing)}", "the folder is corrupt; "
                         "learn the concepts again")
    return manifest, {c: rows[c] for c in manifest["concepts"]}


def with_concepts(adapter, path: str | Path | None):
    """`adapter` with the concepts of `path` attached (none: unchanged); returns it."""
    if path:
        attach(adapter, path)
    return adapter


def attach(adapter, path: str | Path) -> list[str]:
    """Add the concepts of `path` to `adapter` so its prompts may name them; returns their names.

    Refused (one line) when the concepts were learned on another model (weights' fingerprint) or tokenizer."""
    manifest, rows = read_concepts(path)
    adapter.require("concepts", "--concepts")
    if manifest["fingerprint"] != adapter.fingerprint:
        raise InputError(f"{path} was learned on {manifest['model_id']} (weights {manifest['fingerprint']}), not on "
                         f"{adapter.model_id} (weights {adapter.fingerprint})",
                         f"pass --model {manifest['model_id']}, or learn the concepts on this model")
    if manifest["tokenizer"] != adapter.tokenizer_fingerprint():
        raise InputError(f"{path} was learned with another tokenizer than {adapter.model_id}'s",
                         "use the model and tokenizer the concepts were learned with")
    dim = next(iter(rows.values())).shape[1]
    if dim != manifest["embedding_dim"]:
        raise InputError(f"{path}: rows of width {dim}, manifest says {manifest['embedding_dim']}",
                         "the folder is corrupt; learn the concepts again")
    ids = adapter.add_concepts({c: int(r.shape[0]) for c, r in rows.items()})
    for c, r in rows.items():
        adapter.set_concept_rows(ids[c], r)
    return list(rows)
