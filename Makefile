# Two entry points for a fresh machine: `make demo` and `make test`.
# Each creates .venv if needed, installs the pinned packages and the project, and the
# Debian packages with Fashion-MNIST and the fortunes corpus when running as root with apt available.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
FASHION_MNIST := /usr/share/datasets/fashion-mnist
FORTUNES := /usr/share/games/fortunes/literature

.PHONY: demo test test-fast lint setup data clean package docs

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test,autopq,tracking,hf]'
	touch $(STAMP)

data:
	@if [ -d $(FASHION_MNIST) ]; then \
		echo "Fashion-MNIST: found in $(FASHION_MNIST)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null) \
		|| echo "notice: could not install dataset-fashion-mnist; Fashion-MNIST runs will need --data-dir or --download"; \
	else \
		echo "notice: not root or no apt-get: skipping dataset-fashion-mnist (Fashion-MNIST needs --data-dir or --download)"; \
	fi
	@if [ -f $(FORTUNES) ]; then \
		echo "fortunes corpus: found in $(dir $(FORTUNES))"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get install -y -qq fortunes >/dev/null || (apt-get update -qq && apt-get install -y -qq fortunes >/dev/null)) \
		|| echo "notice: could not install fortunes; the fortunes corpus will need --data-dir"; \
	else \
		echo "notice: not root or no apt-get: skipping fortunes (the fortunes corpus needs --data-dir)"; \
	fi

demo: setup data
	$(BIN)/beyondbp compare --dataset digits --methods bp,shallow,fa,dfa,drtp,f3 --seeds 1,2 \
		--hidden 500 --activation tanh --epochs 20 --lr 1e-3 --batch-size 50 --out runs/demo

test: setup data
	$(BIN)/python -m pytest -q -m "not docs"

test-fast: setup  # everything but the multi-process and subprocess tests
	$(BIN)/python -m pytest -q -m "not slow and not docs"

lint: setup
	$(BIN)/ruff check .

# The documentation site in build/site, from docs/ and mkdocs.yml; strict: a broken link, anchor or reference fails.
# Then every documented command and Python example runs at small settings (tests/test_docs_examples.py).
docs: setup data
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[docs]'
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet
	$(BIN)/python -m pytest -q -m docs tests/test_docs_examples.py

# The wheel and sdist, checked by twine, then the wheel installed into a fresh virtual environment that runs
# `beyondbp list` and a one-epoch `train` (what a project depending on beyondbp gets).
SMOKE := build/smoke
package: setup
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[package]'
	rm -rf dist $(SMOKE) && mkdir -p $(SMOKE)
	$(BIN)/python -m build --no-isolation --sdist --wheel --outdir dist . >$(SMOKE)/build.log
	$(BIN)/twine check --strict dist/*
	$(PYTHON) -m venv $(SMOKE)/venv
	$(SMOKE)/venv/bin/python -m pip install --quiet -c constraints.txt dist/beyondbp-*.whl
	cd $(SMOKE) && venv/bin/beyondbp --version && venv/bin/beyondbp list >/dev/null && \
		venv/bin/beyondbp train --dataset digits --epochs 1 --out run --no-progress

clean:
	rm -rf $(VENV) runs build dist
