"""Loading a MusicGen checkpoint from a folder or the hub (transformers kept quiet), with errors that say what to do."""

from __future__ import annotations

import logging
from pathlib import Path

from ..errors import InputError

HUB_IDS = ("facebook/musicgen-small", "facebook/musicgen-medium", "facebook/musicgen-large")


class _DropVocabWarning(logging.Filter):
    # transformers warns that pad = codebook size lies outside the vocabulary for every composite MusicGen
    # config, real checkpoints included; the embedding tables do have that extra row.
    def filter(self, record: logging.LogRecord) -> bool:
        return "integer within the vocabulary" not in record.getMessage()


_FILTER = _DropVocabWarning()


def quiet_transformers() -> None:
    """Silence transformers' harmless pad-token-outside-vocabulary warning and its progress bars."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # musicsae draws its own progress; transformers' bars are noise here
    for handler in logging.getLogger("transformers").handlers:
        if _FILTER not in handler.filters:
            handler.addFilter(_FILTER)


def load_pretrained(name: str, revision: str | None):
    """Load model and processor (fp32) from a local directory or the hub, with errors that say what to do."""
    import json

    import torch
    from transformers import AutoProcessor, MusicgenForConditionalGeneration

    path = Path(name).expanduser()
    local = path.exists()
    if local:
        config = path / "config.json"
        if not path.is_dir() or not config.is_file():
            raise InputError(f"{name} is not a MusicGen checkpoint (no config.json)",
                             "pass a directory written by save_pretrained, a hub id, or tiny-musicgen")
        model_type = json.loads(config.read_text("utf-8")).get("model_type")
        if model_type != "musicgen":
            raise InputError(f"{name} is not a MusicGen checkpoint (model_type {model_type!r})",
                             "pass a facebook/musicgen-{small,medium,large} checkpoint directory")
    elif _looks_like_path(name):
        first = name.split("/")[0]
        shadowed = not name.startswith((".", "/", "~")) and "/" in name and Path(first).is_dir()  # org/name shape
        raise InputError(f"no such model directory: {name}",
                         f"a folder '{first}' exists here, so this reads as a path; run from another folder to use "
                         "the hub id" if shadowed else "check the path; pass a directory written by save_pretrained, "
                         f"a hub id such as {HUB_IDS[0]}, or tiny-musicgen")
    elif "/" not in name:
        raise InputError(f"unknown model '{name}'", f"use tiny-musicgen, a local directory or a hub id such as "
                                                    f"{HUB_IDS[0]}")
    kwargs = {"revision": revision} if revision and not local else {}
    quiet_transformers()
    if not local:
        kwargs.update(hub_access(name, revision))  # fails in seconds, not after minutes of retries, when offline
    try:
        model = MusicgenForConditionalGeneration.from_pretrained(str(path) if local else name,
                                                                 dtype=torch.float32, **kwargs)
        processor = AutoProcessor.from_pretrained(str(path) if local else name, **kwargs)
    except OSError as exc:
        if local:
            raise InputError(f"cannot load the MusicGen checkpoint in {name}: {str(exc).splitlines()[0]}",
                             "the directory may be incomplete; save it again with save_pretrained") from exc
        raise InputError(f"cannot load '{name}' from the Hugging Face hub: this machine is offline or the id is "
                         "wrong", _OFFLINE_HINT) from exc
    return model, processor


_OFFLINE_HINT = ("save it where there is network (model.save_pretrained(DIR) and processor.save_pretrained(DIR)) "
                 "and pass --model DIR; with a filled cache, HF_HUB_OFFLINE=1 skips the network")
_HUB_PROBE_TIMEOUT_S = 5.0  # one request; DNS and refused connections fail at once, a silent network after this


def _looks_like_path(name: str) -> bool:
    """Whether a `name` that does not exist was meant as a folder: ./x, /x, ~/x, a/b/c, or a/b when ./a exists."""
    import os

    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if name.startswith((".", "/", "~")) or any(sep in name for sep in (os.sep, os.altsep) if sep and sep != "/"):
        return True
    parts = name.split("/")
    if len(parts) < 2:
        return False  # a bare name: neither a path nor a hub id ('unknown model')
    try:
        validate_repo_id(name)  # org/name, the only shape a hub id has
    except HFValidationError:
        return True
    return Path(parts[0]).is_dir()


def hub_access(name: str, revision: str | None) -> dict:
    """from_pretrained options for hub id `name`: {} when the hub answers, local_files_only when it does not but the
    model is cached; without either an InputError after one quick request.

    Without this, transformers retries every file with backoff (about 40 s uncached, minutes with a filled
    cache, one 'Retrying in' line each) before its own error.
    """
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url, try_to_load_from_cache
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    if constants.HF_HUB_OFFLINE:
        return {}  # deliberately offline: from_pretrained reads the cache only, and fails at once without it
    try:
        get_hf_file_metadata(hf_hub_url(name, "config.json", revision=revision), timeout=_HUB_PROBE_TIMEOUT_S)
        return {}
    except RevisionNotFoundError as exc:
        raise InputError(f"'{name}' on the Hugging Face hub has no revision '{revision}'",
                         "pass a branch, tag or commit of the model, or leave --revision out") from exc
    except RepositoryNotFoundError as exc:  # also what a private or gated model answers without a token
        raise InputError(f"no model '{name}' on the Hugging Face hub",
                         f"check the id (e.g. {HUB_IDS[0]}); for a private or gated model, log in with "
                         "`hf auth login`") from exc
    except HfHubHTTPError:
        return {}  # the hub answered (rate limit, a missing file...): from_pretrained says what it means
    except Exception as exc:  # no answer: DNS, refused connection, timeout, proxy
        if isinstance(try_to_load_from_cache(name, "config.json", revision=revision), str):
            logging.getLogger("musicsae").info("the Hugging Face hub is unreachable; loading %s from the local "
                                               "cache", name)
            return {"local_files_only": True}
        raise InputError(f"cannot load '{name}' from the Hugging Face hub: this machine is offline or the id is "
                         f"wrong ({type(exc).__name__}; not in the local cache either)", _OFFLINE_HINT) from exc
