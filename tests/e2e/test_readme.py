"""Every shell example in README.md, run in README order against the real CLI (in-process), offline.

How it works:
- README.md is parsed: in every ```bash block, each command line starting with `musicsae ` is an example
  (lines ending in `\\` are joined, trailing `# comments` dropped, chains split on `&&` / `;`); lines starting
  with anything else (make, source, cp, pip, python ...) are ignored.
- The inputs the examples name and that no earlier example writes are synthesised once in a sandbox folder,
  which is the working directory of every example (see FIXTURES). An input that is neither written by an
  earlier example nor in FIXTURES fails that example, naming the path: nothing is invented silently.
- Each example runs with typer's CliRunner against `musicsae_cli.commands.app.app`, after the substitutions of
  SUBSTITUTIONS (what cannot run offline or on 2 CPU cores: hub models -> a tiny MusicGen / a tiny Demucs,
  cuda -> cpu, shorter generated clips, settings sized for the sandbox's 20 clips). Every substitution that
  fired is printed with its reason (run with -s to see them for passing examples too).
- A ```text / ```console block that directly follows a bash block (only blank lines between) is expected output
  of the last example of that bash block: each of its non-empty lines must appear, in order, in what the example
  printed (stdout + stderr), with numbers free to differ (see `match_excerpt`).

Examples run lazily in order: selecting one example (e.g. `-k L330`, the README line) first runs every earlier
example, since it may depend on them. `python tests/e2e/test_readme.py` lists the examples as they would run.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import audio_dataset, build_syntheory_repo

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"

# ----------------------------------------------------------------------------------------------------------------------
# Substitutions: (regex, replacement, why), applied in this order with re.sub to the example's argv written as one
# shell-quoted line (`shlex.join(argv)`, without the leading `musicsae`). Placeholders in replacements:
# {tiny} = the tiny 24-layer MusicGen folder, {demucs} = the tiny Demucs model repository. Only what cannot run
# offline or on 2 CPU cores is swapped; the later entries exist for speed only.
# ----------------------------------------------------------------------------------------------------------------------
# commands that load a MusicGen (analyze compare only in prompt mode)
_LOADS_MUSICGEN = (r"^(?=(?:extract|steer generate|steer sweep|analyze sensitivity) "
                   r"|analyze compare (?=.* --prompts?-[ab][ =]))")
_HUB_PRESET = (r"(?=.* (?:-c|--config)[ =](?:musicgen-small|musicgen-medium|musicgen-large|generate-small|probe"
               r"|probe-period|sae-latent|sae-clamp|sweep|pitch-tempo|sensitivity-pitch-tempo)(?: |$))")
_NO_MODEL = r"(?!.* (?:-m|--model)[ =])"
_NO_PRESET = r"(?!.* (?:-c|--config)[ =])"

SUBSTITUTIONS: list[tuple[str, str, str]] = [
    (r"(?<!\S)(?:facebook/musicgen-(?:small|medium|large)|\./musicgen-small/?)(?!\S)", "{tiny}",
     "hub MusicGen checkpoints cannot be downloaded offline, and ./musicgen-small is a local copy the README assumes: "
     "the test's tiny MusicGen with musicgen-small's 24 layers (so layers.12-19 exist)"),
    (rf"{_LOADS_MUSICGEN}{_HUB_PRESET}{_NO_MODEL}(.*)$", r"\1 --model {tiny}",
     "the preset names a hub MusicGen (facebook/musicgen-small): the tiny 24-layer MusicGen instead"),
    (rf"{_LOADS_MUSICGEN}{_NO_PRESET}{_NO_MODEL}(.*)$", r"\1 --model {tiny}",
     "no model and no preset: the default model is facebook/musicgen-small (hub); the tiny 24-layer MusicGen instead"),
    (r"^(?=data split )(?!.* --repo[ =])(.*)$", r"\1 -m tiny-htdemucs --repo {demucs}",
     "without --repo, Demucs models (htdemucs, htdemucs_ft) come from the hub: the test's tiny HTDemucs, offline"),
    (r"(?<!\S)hf:meganwei/syntheory(?!\S)", "syntheory",
     "the hub cannot be reached offline: a local copy of a SynTheory-like repository (notes and tempos subsets as "
     "Parquet files, 48 notes), built by the test"),
    (r"(?<!\S)(--device[ =])(?:cuda|mps)(?::\d+)?(?!\S)", r"\1cpu", "no GPU here"),
    # speed only (2 CPU cores); what each example does is unchanged
    (r"^(?=steer (?:generate|sweep) )(?=.* --audio[ =])(.*)$", r"\1 --duration-s 2",
     "speed: 2 s clips instead of 10 (the audio prompt intro.wav is 1 s and must be shorter than the clip)"),
    (r"^(?=steer (?:generate|sweep) )(?!.* --audio[ =])(.*)$", r"\1 --duration-s 1", "speed: 1 s clips instead of 10"),
    (r"^(?=extract )(?=.* --prompts?[ =])(.*)$", r"\1 --duration-s 1", "speed: 1 s generated clips instead of 10"),
    (r"^(?=analyze compare )(?=.* --prompts?-[ab][ =])(.*)$", r"\1 --duration-s 1",
     "speed: 1 s generated clips instead of 10"),
    (r"^(?=data synth )(?=.* -c crepe(?: |$))(.*)$", r"\1 --set octaves=[4] --set timbres=[sine,piano]",
     "speed: 24 notes instead of 144"),
    (r"^(?=probe train )(?=.* -c crepe-pitch(?: |$))(.*)$", r"\1 --set folds=2",
     "size: the 24 test notes are played by 2 instruments, so 2 instrument folds instead of 4"),
    (r"(?<!\S)crepe-full(?=(?:-random)?(?!\S))", "crepe-tiny",
     "speed: CREPE-tiny has the same hookpoints and input as CREPE-full at 1/45 of the parameters"),
    (r"^(?=sae train )(?!.* --batch-size[ =])(.*)$", r"\1 --batch-size 256",
     "size: the sandbox store holds ~2,000 frames, fewer than one of the presets' 4,096-row batches"),
]

# ----------------------------------------------------------------------------------------------------------------------
# README parsing
# ----------------------------------------------------------------------------------------------------------------------
SHELL_LANGS = {"bash", "sh", "shell"}
OUTPUT_LANGS = {"text", "console"}
_FENCE = re.compile(r"^\s*(```+|~~~+)\s*([\w+-]*)")


@dataclass
class Block:
    lang: str
    first_line: int  # README line of the opening fence
    lines: list[tuple[int, str]]  # (README line number, text) of the content
    blank_before: bool = True  # only blank lines between the previous block's closing fence and this one


@dataclass
class Example:
    line: int  # README line number
    source: str  # the README line as written (continuations joined)
    argv: list[str]  # the words after `musicsae`
    expected: list[str] | None = None  # output excerpt that follows the block
    expected_line: int | None = None

    @property
    def id(self) -> str:
        words = [w for w in self.argv[:2] if not w.startswith("-")]
        return f"L{self.line}-{'-'.join(words)}"


def parse_blocks(text: str) -> list[Block]:
    blocks: list[Block] = []
    current: Block | None = None
    fence = ""
    gap_only_blank = True
    for n, line in enumerate(text.splitlines(), 1):
        if current is None:
            m = _FENCE.match(line)
            if m:
                fence = m.group(1)
                current = Block(m.group(2).lower(), n, [], blank_before=gap_only_blank)
            elif line.strip():
                gap_only_blank = False
            continue
        if line.strip().startswith(fence[:3]) and line.strip().strip(fence[0]) == "":
            blocks.append(current)
            current, gap_only_blank = None, True
            continue
        current.lines.append((n, line))
    return blocks


def _logical_lines(lines: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Join lines ending in a backslash with the next; each result keeps the number of its first line."""
    out: list[tuple[int, str]] = []
    pending: tuple[int, str] | None = None
    for n, line in lines:
        if pending is not None:
            start, text = pending
            line = text + " " + line.strip()
            n = start
        if line.rstrip().endswith("\\"):
            pending = (n, line.rstrip()[:-1].rstrip())
            continue
        pending = None
        out.append((n, line))
    if pending is not None:
        out.append(pending)
    return out


def split_commands(line: str) -> list[list[str]]:
    """Shell words of each command of a line (comments dropped, chains split on `&&`, `;`, `||`, pipes)."""
    lex = shlex.shlex(line, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    lex.commenters = "#"
    commands: list[list[str]] = [[]]
    for tok in lex:
        if tok in ("&&", ";", "||", "|"):
            commands.append([])
        elif tok and set(tok) <= set("<>&") and commands[-1][:1] == ["musicsae"]:
            raise ValueError(f"unsupported shell syntax {tok!r} in: {line.strip()}")
        else:
            commands[-1].append(tok)
    return [c for c in commands if c]


def parse_readme(text: str) -> list[Example]:
    examples: list[Example] = []
    blocks = parse_blocks(text)
    for i, block in enumerate(blocks):
        if block.lang in SHELL_LANGS:
            found = []
            for n, line in _logical_lines(block.lines):
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                for words in split_commands(line):
                    if words[0] == "musicsae":
                        found.append(Example(n, line.strip(), words[1:]))
            following = blocks[i + 1] if i + 1 < len(blocks) else None
            if found and following is not None and following.lang in OUTPUT_LANGS and following.blank_before:
                found[-1].expected = [t for _, t in following.lines]
                found[-1].expected_line = following.first_line
            examples += found
    return examples


EXAMPLES = parse_readme(README.read_text(encoding="utf-8")) if README.is_file() else []

# ----------------------------------------------------------------------------------------------------------------------
# Expected-output excerpts
# ----------------------------------------------------------------------------------------------------------------------
_NUMBER = r"[-+]?(?:\d[\d,]*(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _line_pattern(expected: str) -> re.Pattern:
    """A README output line as a regex: numbers match any number, runs of spaces any run of spaces, `...` inside
    a line anything; everything else literally."""
    parts = []
    for piece in re.split(rf"(\.\.\.|{_NUMBER}|[ \t]+)", expected.strip()):
        if not piece:
            continue
        if piece == "...":
            parts.append(".*?")
        elif piece.isspace():
            parts.append(r"[ \t]+")
        elif re.fullmatch(_NUMBER, piece):
            parts.append(_NUMBER)
        else:
            parts.append(re.escape(piece))
    return re.compile("".join(parts))


def match_excerpt(expected: list[str], actual: str) -> str | None:
    """None when the excerpt matches `actual`, else why not.

    Each non-empty expected line must be found inside one output line. Consecutive expected lines must match
    consecutive output lines; a line holding only `...` allows any number of output lines in between. The first
    line may match anywhere (an excerpt need not start at the top). Console prompt lines (`$ ...`) are skipped.
    """
    lines = [ln.rstrip() for ln in _ANSI.sub("", actual).replace("\r", "\n").splitlines()]
    groups: list[list[str]] = [[]]
    for raw in expected:
        s = raw.strip()
        if not s or s.startswith("$ "):
            continue
        if s == "...":
            groups.append([])
        else:
            groups[-1].append(raw)
    groups = [g for g in groups if g]
    pos = 0
    for group in groups:
        patterns = [_line_pattern(g) for g in group]
        start = next((i for i in range(pos, len(lines) - len(patterns) + 1)
                      if all(p.search(lines[i + k]) for k, p in enumerate(patterns))), None)
        if start is None:
            # name the first line that cannot be found where it should be
            for k, p in enumerate(patterns):
                hits = [i for i in range(pos, len(lines)) if p.search(lines[i])]
                if not hits:
                    return f"expected line not found in the output: {group[k].strip()!r}"
            return f"expected lines not found consecutively in the output: {[g.strip() for g in group]!r}"
        pos = start + len(patterns)
    return None


# ----------------------------------------------------------------------------------------------------------------------
# Fixtures: the inputs the README names; name (a path relative to the sandbox) -> builder(sandbox)
# ----------------------------------------------------------------------------------------------------------------------
GENRES = {
    # rock: power chords (root + fifth + octave) in E, hard square-ish tone, straight eighths, noise-burst drums,
    # fast; jazz: soft sine seventh chords (maj7 / m7), swung eighths, no drums, slower.
    "rock": {"tracks": {"track1": 128, "track2": 136, "track3": 144, "track4": 152, "track5": 160},
             "chords": [[82.4, 123.5, 164.8],
                        [110.0, 164.8, 220.0],
                        [98.0, 146.8, 196.0]],
             "swing": 0.5, "drums": True, "hard": True},
    "jazz": {"tracks": {"track6": 92, "track7": 100, "track8": 108, "track9": 84, "track10": 116},
             "chords": [[261.6, 329.6, 392.0, 493.9],
                        [293.7, 349.2, 440.0, 523.3],
                        [220.0, 261.6, 329.6, 392.0]],
             "swing": 0.62, "drums": False, "hard": False},
}
RATES = (16000, 22050, 44100, 32000)
FORMATS = ("wav", "flac", "mp3")
CLIP_S = 3.0
LONG_S = 6.0  # part 1 of the first track of each genre: long enough for the README's 5 s chunks
CAPTIONS = {"rock": "fast rock with loud guitar and drums", "jazz": "slow jazz piano chord with bass"}


def _song(genre: str, bpm: int, seed: int, sr: int, seconds: float = CLIP_S) -> np.ndarray:
    g = GENRES[genre]
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    out = np.zeros(n)
    beat = 60.0 / bpm
    eighths = np.arange(0, seconds, beat)
    onsets = np.sort(np.concatenate([eighths, eighths + g["swing"] * beat]))
    for k, onset in enumerate(onsets):
        chord = g["chords"][(k // 4 + seed) % len(g["chords"])]
        start, length = int(onset * sr), int(0.9 * g["swing"] * beat * sr)
        seg = t[: max(0, min(length, n - start))]
        env = np.exp(-seg * (6.0 if g["hard"] else 2.5))
        for f in chord:
            tone = np.sin(2 * np.pi * f * seg)
            if g["hard"]:
                tone = np.tanh(4 * tone)  # clipped: rich in harmonics
            out[start:start + len(seg)] += env * tone / len(chord)
        if g["drums"] and k % 2 == 0:  # a noise burst on every beat
            m = min(int(0.05 * sr), n - start)
            out[start:start + m] += 0.6 * rng.standard_normal(m) * np.exp(-np.arange(m) / (0.01 * sr))
    out = 0.7 * out / max(1e-9, np.abs(out).max())
    return out.astype(np.float32)


def _song_files() -> list[dict]:
    rows, i = [], 0
    for genre, g in GENRES.items():
        for track, bpm in g["tracks"].items():
            for part in range(2):
                ext, sr = FORMATS[i % len(FORMATS)], RATES[i % len(RATES)]
                seconds = LONG_S if part == 1 and track == next(iter(g["tracks"])) else CLIP_S
                rows.append({"path": f"songs/{genre}/{track}_part{part}.{ext}", "genre": genre, "bpm": bpm,
                             "track": track, "sr": sr, "seed": i, "caption": CAPTIONS[genre], "seconds": seconds})
                i += 1
    return rows


def build_songs(root: Path) -> None:
    for row in _song_files():
        path = root / row["path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), _song(row["genre"], row["bpm"], row["seed"], row["sr"], row["seconds"]), row["sr"])


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    import csv

    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


def build_songs_csv(root: Path) -> None:
    _ensure(root, "songs")
    _write_csv(root / "songs.csv", ["path", "genre", "bpm", "caption", "group"],  # group: the track (musicsae's column)
               [[r["path"], r["genre"], r["bpm"], r["caption"], r["track"]] for r in _song_files()])


def build_meta_csv(root: Path) -> None:
    _ensure(root, "songs")
    _write_csv(root / "meta.csv", ["file", "genre", "bpm", "track"],
               [[r["path"], r["genre"], r["bpm"], r["track"]] for r in _song_files()])


def _text(*lines: str) -> Callable[[Path], None]:
    return lambda path: path.write_text("\n".join(lines) + "\n")


def build_intro(root: Path) -> None:
    sr = 32000
    t = np.arange(sr) / sr
    sf.write(str(root / "intro.wav"), (0.4 * np.sin(2 * np.pi * 220 * t) * np.minimum(1, 4 * t)).astype(np.float32), sr)


def build_encoder(root: Path) -> None:
    """A small scripted conv encoder (16 kHz, stride 4 then 2) saved with torch.jit.save, as a user would."""
    import torch
    from torch import nn

    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.sample_rate = 16000
            self.encoder = nn.Sequential(nn.Conv1d(1, 8, 8, stride=4, padding=2), nn.ReLU(),
                                         nn.Conv1d(8, 16, 4, stride=2, padding=1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.encoder(x)

    torch.manual_seed(0)
    torch.jit.save(torch.jit.script(Encoder().eval()), str(root / "encoder.ts"))


FIXTURES: dict[str, Callable[[Path], None]] = {
    # songs/<genre>/<track>_part<N>.<wav|flac|mp3>: 2 genres x 5 tracks x 2 parts at 16/22.05/32/44.1 kHz, 3 s
    # (6 s for part 1 of each genre's first track); track<N> numbers are unique across genres
    "songs": build_songs,
    "songs.csv": build_songs_csv,  # path, genre, bpm, caption, group (the track)
    "meta.csv": build_meta_csv,  # file, genre, bpm, track
    "prompts.txt": lambda root: _text("calm jazz piano", "fast rock drums", "slow ambient music")(root / "prompts.txt"),
    "happy.txt": lambda root: _text("happy pop song", "fast happy guitar")(root / "happy.txt"),
    "sad.txt": lambda root: _text("sad slow piano", "quiet sad music")(root / "sad.txt"),
    "intro.wav": build_intro,  # 1 s of audio (an audio prompt to continue)
    "encoder.ts": build_encoder,  # a TorchScript conv encoder (the torch family)
    "syntheory": lambda root: build_syntheory_repo(root),  # SynTheory-like repository: notes, tempos (Parquet)
    "pairs.csv": lambda root: build_pairs(root),  # clean/corrupt tone pairs for analyze patch
    "genres-saved": lambda root: build_genres_saved(root),  # save_to_disk DatasetDict: train + test genre clips
}


def build_genres_saved(root: Path) -> None:
    """A Hugging Face DatasetDict written by save_to_disk: genre clips (a class label) in train and test splits."""
    import io

    from datasets import ClassLabel, DatasetDict, Value

    def split(n: int, seed: int):
        rows = {"audio": [], "genre": [], "artist": []}
        for i in range(n):
            buf = io.BytesIO()
            sf.write(buf, _song(("jazz", "rock")[i % 2], 90 + 10 * i, seed + i, 22050, 1.0), 22050, format="WAV")
            rows["audio"].append({"bytes": buf.getvalue(), "path": f"clip{seed + i}.wav"})
            rows["genre"].append(i % 2)
            rows["artist"].append(f"artist{i // 2}")
        return audio_dataset(rows, {"genre": ClassLabel(names=["jazz", "rock"]), "artist": Value("string")})

    DatasetDict({"train": split(6, 0), "test": split(4, 100)}).save_to_disk(str(root / "genres-saved"))


def build_pairs(root: Path) -> None:
    """pairs.csv: three clean/corrupt pairs of 16 kHz tones a few semitones apart (analyze patch)."""
    t = np.arange(8000) / 16000
    lines = ["clean,corrupt"]
    for i, (a, b) in enumerate(((220.0, 262.0), (330.0, 392.0), (440.0, 523.0))):
        for name, freq in (("clean", a), ("corrupt", b)):
            sf.write(str(root / f"pair{i}-{name}.wav"), 0.4 * np.sin(2 * np.pi * freq * t), 16000)
        lines.append(f"pair{i}-clean.wav,pair{i}-corrupt.wav")
    (root / "pairs.csv").write_text("\n".join(lines) + "\n")


def _ensure(root: Path, name: str) -> None:
    if not (root / name).exists():
        FIXTURES[name](root)


# ----------------------------------------------------------------------------------------------------------------------
# Which paths an example reads and writes (from the real command's parameters)
# ----------------------------------------------------------------------------------------------------------------------
OUTPUT_PARAMS = {"out", "legacy_out"}
INPUT_OPTIONS = {"sae", "store", "probe", "score_probe", "file", "audio", "prompts", "prompts_a", "prompts_b", "repo",
                 "init_from"}


def _norm(p) -> str:
    return os.path.normpath(str(p))


def _looks_like_path(value: str) -> bool:
    return value.startswith(("./", "../", "/", "~")) or value.endswith("/")


def inputs_outputs(argv: list[str]) -> tuple[list[str], list[str]]:
    """(input paths, output paths) named by an example, from the command's own parameter declarations."""
    import typer

    from musicsae_cli.commands._command import rewrite_aliases
    from musicsae_cli.commands.app import app

    cmd = typer.main.get_command(app)
    ctx = cmd.context_class(cmd, info_name="musicsae", resilient_parsing=True)
    words, name = list(argv), "musicsae"
    while hasattr(cmd, "list_commands") and words and not words[0].startswith("-"):
        sub = cmd.get_command(ctx, words[0])
        if sub is None:
            return [], []
        name, cmd = words.pop(0), sub
        ctx = cmd.context_class(cmd, info_name=name, parent=ctx, resilient_parsing=True)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            words = rewrite_aliases(words, getattr(cmd, "aliases", {}))
            params = cmd.make_context(name, words, parent=ctx.parent, resilient_parsing=True).params
    except Exception:  # the command itself will report the mistake when it runs
        return [], []
    inputs, outputs = [], []
    for param in cmd.params:
        value = params.get(param.name)
        values = ([] if value is None or isinstance(value, bool)
                  else list(value) if isinstance(value, list | tuple) else [value])
        values = [str(v) for v in values]
        if param.name in OUTPUT_PARAMS:
            outputs += values
        elif param.name == "config":
            inputs += [v for v in values if v.endswith((".yaml", ".yml"))]
        elif param.name == "model":
            inputs += [v for v in values if _looks_like_path(v)]
        elif param.param_type_name == "argument" or param.name in INPUT_OPTIONS:
            inputs += values
    return [_norm(v) for v in inputs], [_norm(v) for v in outputs]


# ----------------------------------------------------------------------------------------------------------------------
# Running the examples
# ----------------------------------------------------------------------------------------------------------------------
def substitute(argv: list[str], values: dict[str, str]) -> tuple[list[str], list[tuple[str, str, str]]]:
    """argv after SUBSTITUTIONS, and the (why, before, after) of each that fired."""
    line = shlex.join(argv)
    fired = []
    for pattern, replacement, why in SUBSTITUTIONS:
        new = re.sub(pattern, replacement, line)
        if new != line:
            for key, value in values.items():
                new = new.replace("{" + key + "}", shlex.quote(value))
            fired.append((why, line, new))
            line = new
    return shlex.split(line), fired


@dataclass
class Outcome:
    example: Example
    argv: list[str]
    fired: list[tuple[str, str, str]]
    exit_code: int | None = None
    stdout: str = ""
    stderr: str = ""
    output: str = ""
    problem: str | None = None  # why it did not run, or the exception it raised
    seconds: float = 0.0

    def report(self) -> str:
        lines = [f"README line {self.example.line}: {self.example.source}",
                 f"  ran: musicsae {shlex.join(self.argv)}"]
        lines += [f"  substituted ({why}):\n      {before}\n   -> {after}" for why, before, after in self.fired]
        if self.problem:
            lines.append(f"  problem: {self.problem}")
        else:
            lines.append(f"  exit code {self.exit_code} in {self.seconds:.1f} s")
        if self.stderr.strip():
            lines.append("  stderr:\n" + "\n".join("    " + ln for ln in self.stderr.rstrip().splitlines()[-40:]))
        return "\n".join(lines)


@dataclass
class ReadmeSession:
    sandbox: Path
    values: dict[str, str]
    examples: list[Example]
    plans: list[tuple[list[str], list[tuple[str, str, str]], list[str], list[str]]] = field(default_factory=list)
    outcomes: dict[int, Outcome] = field(default_factory=dict)
    fixtures_built: list[str] = field(default_factory=list)

    def prepare(self) -> None:
        """Substitute every example, find the inputs no earlier example writes, build those that are fixtures."""
        written: set[str] = set()
        needed: list[str] = []
        for ex in self.examples:
            argv, fired = substitute(ex.argv, self.values)
            ins, outs = inputs_outputs(argv)
            self.plans.append((argv, fired, ins, outs))
            needed += [p for p in ins if not _produced(p, written) and p not in needed]
            written.update(outs)
        for name in FIXTURES:
            if any(_produced(p, {name}) for p in needed):
                _ensure(self.sandbox, name)
                self.fixtures_built.append(name)

    def missing_inputs(self, index: int) -> list[str]:
        """Why example `index` cannot run: each input path it names that does not exist, and who should have made it."""
        problems = []
        for p in self.plans[index][2]:
            if (self.sandbox / p).exists():  # (an absolute path joins to itself)
                continue
            writers = [j for j in range(index) if _produced(p, set(self.plans[j][3]))]
            later = [j for j in range(index + 1, len(self.examples)) if _produced(p, set(self.plans[j][3]))]
            if writers:
                j = writers[-1]
                ran = self.outcomes.get(j)
                status = ("it did not run" if ran is None or ran.exit_code is None
                          else f"it exited with {ran.exit_code}" if ran.exit_code else "it exited with 0")
                problems.append(f"input {p} does not exist: README line {self.examples[j].line} was to write it "
                                f"({status})")
            else:
                where = f" (README line {self.examples[later[0]].line} writes it later)" if later else ""
                problems.append(f"input {p} is written by no earlier example and is not a test fixture{where}: "
                                f"fix the README or add a builder to FIXTURES in {Path(__file__).name}")
        return problems

    def run_through(self, index: int) -> Outcome:
        from typer.testing import CliRunner

        from musicsae_cli.commands.app import app

        for i in range(index + 1):
            if i in self.outcomes:
                continue
            ex = self.examples[i]
            argv, fired, _, _ = self.plans[i]
            outcome = Outcome(ex, argv, fired)
            missing = self.missing_inputs(i)
            if missing:
                outcome.problem = "; ".join(missing)
            else:
                start = time.perf_counter()
                result = CliRunner().invoke(app, argv, prog_name="musicsae")
                outcome.seconds = time.perf_counter() - start
                outcome.exit_code = result.exit_code
                outcome.stdout, outcome.stderr, outcome.output = result.stdout, result.stderr, result.output
                if result.exception is not None and not isinstance(result.exception, SystemExit):
                    outcome.problem = "".join(traceback.format_exception(result.exception)).rstrip()
            self.outcomes[i] = outcome
            print(outcome.report() if outcome.fired or outcome.problem or outcome.exit_code
                  else f"README line {ex.line}: musicsae {shlex.join(argv)}  (exit 0 in {outcome.seconds:.1f} s)")
        return self.outcomes[index]


def _produced(path: str, outputs: set[str]) -> bool:
    return any(path == o or path.startswith(o.rstrip("/") + "/") for o in outputs)


@pytest.fixture(scope="module")
def tiny_musicgen_24(tmp_path_factory) -> Path:
    """The tiny random-weight MusicGen with 24 decoder layers (musicgen-small's count), saved with save_pretrained."""
    from musicsae_cli.models.tiny import save_tiny_musicgen

    path = tmp_path_factory.mktemp("readme-models") / "tiny-musicgen-24"
    save_tiny_musicgen(path, seed=0, num_layers=24)
    return path


@pytest.fixture(scope="module")
def tiny_demucs_repo(tmp_path_factory) -> Path:
    """A local Demucs model repository holding a tiny random-weight HTDemucs `tiny-htdemucs`, the stand-in for the
    hub's htdemucs / htdemucs_ft. Lighter than the built-in tiny one (`model save-tiny-demucs`): a 16 kHz model one
    level deeper, so its transformer attends over 4x fewer time positions (~8x less CPU per segment)."""
    from musicsae_cli.audio.tiny_demucs import save_tiny_demucs

    path = tmp_path_factory.mktemp("readme-demucs") / "repo"
    save_tiny_demucs(path, sample_rate=16000, depth=4)
    return path


@pytest.fixture(scope="module")
def readme(tmp_path_factory, tiny_musicgen_24, tiny_demucs_repo) -> ReadmeSession:
    sandbox = tmp_path_factory.mktemp("readme-sandbox")
    session = ReadmeSession(sandbox, {"tiny": str(tiny_musicgen_24), "demucs": str(tiny_demucs_repo)}, EXAMPLES)
    session.prepare()
    print(f"sandbox {sandbox}; fixtures built: {', '.join(session.fixtures_built) or 'none'}")
    return session


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(EXAMPLES)), ids=[ex.id for ex in EXAMPLES])
def test_readme_example(index, readme, monkeypatch):
    monkeypatch.chdir(readme.sandbox)
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):  # nothing may reach the network
        monkeypatch.setenv(var, "1")
    monkeypatch.delenv("MUSICSAE_DEBUG", raising=False)
    outcome = readme.run_through(index)
    earlier = [o for i, o in readme.outcomes.items() if i < index and (o.problem or o.exit_code)]
    context = ("\n\nearlier README examples that failed (this one may depend on them): "
               + ", ".join(f"line {o.example.line}" for o in earlier)) if earlier else ""
    if outcome.problem is not None or outcome.exit_code != 0:
        pytest.fail(outcome.report() + context, pytrace=False)
    ex = outcome.example
    if ex.expected:
        why = match_excerpt(ex.expected, outcome.output)
        if why is not None:
            pytest.fail(f"README line {ex.line}: the output differs from the excerpt at README line "
                        f"{ex.expected_line}: {why}\n{outcome.report()}\n  output:\n{outcome.output}", pytrace=False)


def test_readme_has_examples():
    assert EXAMPLES, f"no `musicsae ...` lines in ```bash blocks of {README}"
    for ex in EXAMPLES:
        assert ex.argv and not ex.argv[0].startswith("#"), ex


# ----------------------------------------------------------------------------------------------------------------------
# The parser, the substitutions and the excerpt matcher on synthetic cases
# ----------------------------------------------------------------------------------------------------------------------
SYNTHETIC = """\
Intro.

```bash
make demo   # not musicsae
musicsae data synth concepts/           # a comment
musicsae extract songs/ -o store/ \\
    --layers layers.1 --text 'a # not a comment'
source x && musicsae info store/ && musicsae info concepts/ --json
```

```text
store/manifest.json
12 items, ... 3 hookpoints
...
done in 1.5 s
```

```python
musicsae is not run here
```

```bash
musicsae steer generate -c probe --prompt "a calm song" -o out/rock --device cuda
```
Prose between.
```text
not attached: prose lies between
```
"""


def test_parse_readme_synthetic():
    ex = parse_readme(SYNTHETIC)
    assert [(e.line, e.argv) for e in ex] == [
        (5, ["data", "synth", "concepts/"]),
        (6, ["extract", "songs/", "-o", "store/", "--layers", "layers.1", "--text", "a # not a comment"]),
        (8, ["info", "store/"]),
        (8, ["info", "concepts/", "--json"]),
        (23, ["steer", "generate", "-c", "probe", "--prompt", "a calm song", "-o", "out/rock", "--device", "cuda"]),
    ]
    assert ex[3].expected == ["store/manifest.json", "12 items, ... 3 hookpoints", "...", "done in 1.5 s"]
    assert ex[3].expected_line == 11 and ex[2].expected is None and ex[4].expected is None


def test_substitutions_fire_and_are_recorded():
    values = {"tiny": "/m/tiny", "demucs": "/m/demucs"}
    argv, fired = substitute(["steer", "generate", "-c", "probe", "--prompt", "a calm song", "-o", "out/rock",
                              "--device", "cuda"], values)
    assert argv == ["steer", "generate", "-c", "probe", "--prompt", "a calm song", "-o", "out/rock", "--device", "cpu",
                    "--model", "/m/tiny", "--duration-s", "1"]
    assert len(fired) == 3
    argv, _ = substitute(["extract", "songs/", "-o", "store/", "--model", "./musicgen-small"], values)
    assert argv == ["extract", "songs/", "-o", "store/", "--model", "/m/tiny"]
    argv, _ = substitute(["data", "split", "songs/", "-o", "stems/", "-c", "split-htdemucs"], values)
    assert argv[-4:] == ["-m", "tiny-htdemucs", "--repo", "/m/demucs"]
    argv, fired = substitute(["data", "split", "songs/", "-o", "s/", "-m", "mine", "--repo", "./r/"], values)
    assert fired == [] and argv[-1] == "./r/"
    argv, fired = substitute(["extract", "songs/", "-o", "store/", "-c", "tiny"], values)
    assert fired == []
    argv, _ = substitute(["analyze", "compare", "--prompts-a", "h.txt", "--prompts-b", "s.txt", "--model",
                          "facebook/musicgen-small", "-o", "cmp/"], values)
    assert argv[-4:] == ["/m/tiny", "-o", "cmp/", "--duration-s", "1"][-4:]


def test_inputs_and_outputs_come_from_the_command_parameters():
    assert inputs_outputs(["data", "synth", "concepts/"]) == ([], ["concepts"])
    ins, outs = inputs_outputs(["steer", "generate", "--store", "store/", "--contrast", "genre=rock:jazz",
                                "--layers", "layers.12", "--audio", "intro.wav", "-o", "out/c"])
    assert sorted(ins) == ["intro.wav", "store"] and outs == ["out/c"]
    ins, outs = inputs_outputs(["data", "split", "songs/", "-o", "stems/", "-m", "my-model", "--repo",
                                "./demucs-models/"])
    assert sorted(ins) == ["demucs-models", "songs"] and outs == ["stems"]
    assert _produced("cmp/directions.safetensors", {"cmp"}) and not _produced("cmpx", {"cmp"})


def test_missing_inputs_name_the_path_and_who_should_have_written_it(tmp_path):
    examples = parse_readme("```bash\n"
                            "musicsae extract --prompts prompts.txt -o gen/ -m tiny-musicgen\n"
                            "musicsae probe evaluate probes/genre gen/ -o out/\n"
                            "musicsae data split clips/ -o stems/ -m mine --repo demucs-models/\n"
                            "musicsae model save-tiny-demucs -o demucs-models/\n"
                            "```\n")
    session = ReadmeSession(tmp_path, {"tiny": "T", "demucs": "D"}, examples)
    session.prepare()
    assert session.fixtures_built == ["prompts.txt"] and (tmp_path / "prompts.txt").is_file()
    assert session.missing_inputs(0) == []
    problems = session.missing_inputs(1)
    assert problems[0].startswith("input probes/genre is written by no earlier example and is not a test fixture")
    assert problems[1] == "input gen does not exist: README line 2 was to write it (it did not run)"
    problems = session.missing_inputs(2)
    assert "input clips is written by no earlier example" in problems[0]
    assert "input demucs-models is written by no earlier example" in problems[1]
    assert "(README line 5 writes it later)" in problems[1]


OUTPUT = """\
warning: --layers is deprecated; use --hookpoint
/tmp/x/store/manifest.json
1,024 items, 24 layers, 3 hookpoints
\x1b[1mwriting\x1b[0m
done in 12.25 s
"""


@pytest.mark.parametrize(("excerpt", "ok"), [
    (["store/manifest.json", "12 items, ... 3 hookpoints", "...", "done in 1.5 s"], True),
    (["store/manifest.json", "12 items, 4 layers, 3 hookpoints", "writing"], True),  # numbers may differ
    (["   12   items,  4 layers, 3   hookpoints  ", "", "writing"], True),  # spacing may differ
    (["$ musicsae extract ...", "store/manifest.json"], True),  # prompt lines skipped
    (["12 items, 4 layers, 3 hookpoints", "done in 1.5 s"], False),  # not consecutive without `...`
    (["done in 1.5 s", "...", "store/manifest.json"], False),  # order matters
    (["12 clips, 4 layers, 3 hookpoints"], False),  # wording changed
    (["12 items 4 layers"], False),  # punctuation changed
    (["finished in 1.5 s"], False),
    (["store/manifest.json", "...", "items, 4 layers, 3 hookpoints, 2 streams"], False),
])
def test_match_excerpt(excerpt, ok):
    why = match_excerpt(excerpt, OUTPUT)
    assert (why is None) == ok, why
    if not ok:
        assert why.startswith("expected")


if __name__ == "__main__":  # list the examples and what would run: python tests/e2e/test_readme.py
    for e in EXAMPLES:
        a, f = substitute(e.argv, {"tiny": "TINY", "demucs": "DEMUCS"})
        print(f"L{e.line}: musicsae {shlex.join(a)}" + "".join(f"\n      ({w})" for w, _, _ in f))
    sys.exit(0)
