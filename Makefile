# da3_ros: one-command setup, tests and demo on a machine without a ROS install.
# `make demo` and `make test` set up .venv first when needed (idempotent).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
STAMP  := $(VENV)/.da3-setup-stamp
WEIGHTS ?=
DEMO_ARGS ?=
PYTEST_ARGS ?=

# Every process started from here keeps DDS on loopback (see config/fastdds_localhost.xml).
export FASTDDS_DEFAULT_PROFILES_FILE := $(CURDIR)/config/fastdds_localhost.xml
export ROS_LOG_DIR ?= $(CURDIR)/out/ros_logs
export PYTHONUNBUFFERED := 1

.PHONY: setup test lint demo clean

setup: $(STAMP)

$(STAMP): requirements.txt requirements-test.txt setup.py Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# CPU torch first, alone, so no resolver ever pulls a CUDA build here.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -r requirements.txt -r requirements-test.txt
	# Upstream DA3: a test-only reference for the parity test; its unneeded deps are skipped.
	$(PIP) install -q --no-deps depth-anything-3==0.1.1
	$(PIP) install -q --no-deps --no-build-isolation -e .
	$(PY) -c "import rclpy, torch, da3_ros; print('setup ok: torch', torch.__version__)"
	touch $(STAMP)

lint: setup
	$(VENV)/bin/ruff check da3_ros test bench launch

test: setup lint
	ROS_DOMAIN_ID=$${ROS_DOMAIN_ID:-$$(( $$$$ % 90 + 5 ))} $(PY) -m pytest $(PYTEST_ARGS)

demo: setup
	$(PY) -m da3_ros.tools.demo $(if $(WEIGHTS),--weights $(WEIGHTS),) $(DEMO_ARGS)

clean:
	rm -rf $(VENV) out build install log
