# musicsae: `make test` and `make demo` each set up everything they need on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
# torch is installed first from this spec so a CPU machine never pulls CUDA wheels. GPU users override it,
# e.g.  make test TORCH_SPEC="torch==2.13.0" TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cu128"
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=
DEMO_OUT ?= demo-out
PYTEST_ARGS ?=

BIN := $(VENV)/bin
STAMP := $(VENV)/.musicsae-installed

.PHONY: venv test test-fast demo lint completions bench browser clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)" $(TORCH_PIP_ARGS)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

test: venv
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: venv
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check musicsae_cli tests bench

# The main job on the built-in defaults: synthesise a concept dataset and index it, write the tiny MusicGen
# and load it back through from_pretrained to extract every layer from the dataset, capture activations while
# generating from two prompts, then train a TopK SAE on one layer, encode the store into latents and evaluate
# the SAE (reconstruction, and spliced into the model); probe every layer for the synthesised concepts, steer
# generation with a probe direction and with an SAE latent, run a small dose-response sweep, measure how each
# layer responds to pitch, tempo and gain changes of the input, score how well the SAE latents separate the
# concepts, write a small feature dashboard (HTML with audio) and compare two concepts layer by layer; finally split
# a few synthesised mixtures into vocals/instrumental stems with a tiny local Demucs, cut the stems into chunks
# and extract them, stem and chunk provenance carried into the store.
demo: venv
	mkdir -p $(DEMO_OUT)
	$(BIN)/musicsae data synth $(DEMO_OUT)/concepts --overwrite
	$(BIN)/musicsae data index $(DEMO_OUT)/concepts/manifest.csv --out $(DEMO_OUT)/concepts-index.csv --overwrite
	$(BIN)/musicsae model save-tiny $(DEMO_OUT)/tiny-musicgen --overwrite
	$(BIN)/musicsae extract $(DEMO_OUT)/concepts -c tiny --model $(DEMO_OUT)/tiny-musicgen \
		-o $(DEMO_OUT)/store --overwrite
	$(BIN)/musicsae info $(DEMO_OUT)/store
	$(BIN)/musicsae extract -c tiny --model $(DEMO_OUT)/tiny-musicgen --prompt "calm jazz piano" \
		--prompt "fast rock drums" --duration 4 -o $(DEMO_OUT)/generated --overwrite
	$(BIN)/musicsae sae train $(DEMO_OUT)/store -c tiny --hookpoint layers.2 -o $(DEMO_OUT)/sae --overwrite
	$(BIN)/musicsae sae encode $(DEMO_OUT)/store --sae $(DEMO_OUT)/sae -o $(DEMO_OUT)/latents --overwrite
	$(BIN)/musicsae sae evaluate $(DEMO_OUT)/sae $(DEMO_OUT)/store --downstream --items 8
	$(BIN)/musicsae probe train $(DEMO_OUT)/store -o $(DEMO_OUT)/probes --label concept --overwrite
	$(BIN)/musicsae steer generate -c tiny --model $(DEMO_OUT)/tiny-musicgen --probe $(DEMO_OUT)/probes \
		--target notes -o $(DEMO_OUT)/steered-probe --overwrite
	$(BIN)/musicsae steer generate -c sae-latent --set device=cpu --model $(DEMO_OUT)/tiny-musicgen \
		--prompt "calm jazz piano" --duration 2 --sae $(DEMO_OUT)/sae --latent 3 --store $(DEMO_OUT)/store \
		-o $(DEMO_OUT)/steered-sae --overwrite
	$(BIN)/musicsae steer sweep -c sweep-tiny --model $(DEMO_OUT)/tiny-musicgen --probe $(DEMO_OUT)/probes \
		--target notes -o $(DEMO_OUT)/sweep --overwrite
	$(BIN)/musicsae analyze sensitivity $(DEMO_OUT)/concepts -c sensitivity-tiny --model $(DEMO_OUT)/tiny-musicgen \
		-o $(DEMO_OUT)/sensitivity --overwrite
	$(BIN)/musicsae analyze separation $(DEMO_OUT)/latents -c separation-tiny -l concept -l timbre \
		-o $(DEMO_OUT)/separation --overwrite
	$(BIN)/musicsae analyze features $(DEMO_OUT)/latents --sae $(DEMO_OUT)/sae -c features-tiny \
		--probes $(DEMO_OUT)/probes -o $(DEMO_OUT)/dashboard --overwrite
	$(BIN)/musicsae analyze compare $(DEMO_OUT)/store -c compare-labels --contrast concept=notes:tempos \
		-o $(DEMO_OUT)/compare --overwrite
	$(BIN)/musicsae data synth $(DEMO_OUT)/mixes -c synth-small --overwrite
	$(BIN)/musicsae model save-tiny-demucs $(DEMO_OUT)/demucs-models --overwrite
	$(BIN)/musicsae data split $(DEMO_OUT)/mixes -c split-tiny --repo $(DEMO_OUT)/demucs-models --two-stems vocals \
		-o $(DEMO_OUT)/stems --overwrite
	$(BIN)/musicsae data chunk $(DEMO_OUT)/stems -c chunk-5s --length-s 0.5 -o $(DEMO_OUT)/stem-chunks --overwrite
	$(BIN)/musicsae extract $(DEMO_OUT)/stem-chunks -c tiny --model $(DEMO_OUT)/tiny-musicgen \
		-o $(DEMO_OUT)/stem-store --overwrite
	$(BIN)/musicsae info $(DEMO_OUT)/stem-store
	@echo "feature dashboard: open $(DEMO_OUT)/dashboard/index.html in a browser"

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
	$(BIN)/python bench/sae_bench.py
	$(BIN)/python bench/probe_bench.py
	$(BIN)/python bench/steer_bench.py
	$(BIN)/python bench/separation_bench.py
	$(BIN)/python bench/data_bench.py

clean:
	rm -rf $(DEMO_OUT) .pytest_cache .ruff_cache
