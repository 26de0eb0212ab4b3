# One command each: `make demo` (set up + train the demo), `make test` (set up + test suite).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# pytest-xdist workers for `make test`, each given whole test files, longest first, and one
# torch thread (tests/conftest.py)
TEST_WORKERS ?= 2

.PHONY: setup demo test bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -e '.[test]'
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(PY) -m sdgdml.train --dataset DigitsDG --source mnist --algorithm ProxyAnchor \
		--output_dir runs/demo --save_model

# as root, first bring up the single-node Slurm that tests/test_slurm.py uses, and install
# pdflatex so that the LaTeX tables are compiled (best effort: where either is impossible,
# those tests skip and say why)
test: setup
	@if [ "$$(id -u)" = 0 ]; then bash tests/slurm/setup_slurm.sh start \
		|| echo "warning: Slurm could not be started; the Slurm tests will skip"; \
	else echo "not root: Slurm not started; the Slurm tests skip unless it is running"; fi
	@if [ "$$(id -u)" = 0 ] && ! command -v pdflatex >/dev/null; then \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		texlive-latex-base texlive-latex-recommended >/dev/null \
		|| echo "warning: pdflatex could not be installed; the LaTeX is not compiled"; fi
	HF_HUB_OFFLINE=1 $(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

clean:
	rm -rf runs
