# stn_lab developer commands. `make install` then `make test` is the whole set-up.
PY ?= .venv/bin/python
DATA ?= $(or $(STN_LAB_DATA),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/stn_lab)
ARGS ?=
EXTRAS ?= dev
PYTEST_ARGS ?=

.PHONY: install test test-slow test-all train lint format data compare bench clean

install:
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[$(EXTRAS)]'

# The fast set (under 2 minutes on 2 cores), the slow end-to-end set, or both; PYTEST_ARGS adds
# pytest flags (PYTEST_ARGS="--durations=15" lists the slowest tests). docs/testing.md.
# Both sets run on two pytest-xdist workers of one thread each: tiny models gain nothing from
# torch's threads, and two single-threaded workers keep both cores busy (docs/testing.md).
test:
	OMP_NUM_THREADS=1 $(PY) -m pytest -m "not slow" -q -n 2 $(PYTEST_ARGS)

test-slow:
	OMP_NUM_THREADS=1 $(PY) -m pytest -m slow -q -n 2 $(PYTEST_ARGS)

test-all:
	$(PY) -m pytest -q $(PYTEST_ARGS)

train:
	$(PY) -m stn_lab.train $(ARGS)

lint:
	$(PY) -m ruff check src tests
	$(PY) -m ruff format --check src tests

format:
	$(PY) -m ruff check --fix src tests
	$(PY) -m ruff format src tests

# Fashion-MNIST from Debian's package where we are root with apt; MNIST and CIFAR10 through
# torchvision when online. Then every dataset is reported as ready or missing (with the fix).
data:
	@if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		dpkg -s dataset-fashion-mnist >/dev/null 2>&1 || \
		{ apt-get update -q && apt-get install -y -q dataset-fashion-mnist; } || \
		echo "could not install dataset-fashion-mnist with apt"; \
	else \
		echo "Not root with apt: install Fashion-MNIST with 'sudo apt-get install dataset-fashion-mnist'," \
			"or copy its four IDX files into $(DATA)/FashionMNIST/raw"; \
	fi
	$(PY) -m stn_lab.data.fetch --data-dir $(DATA)

compare:
	$(PY) -m stn_lab.compare $(ARGS)

# Refreshes the measured sections of bench/results.md; ARGS="--quick --out FILE" for a smoke run.
bench:
	$(PY) -m stn_lab.bench $(ARGS)

clean:
	rm -rf logs results .pytest_cache .ruff_cache
