# raftlease developer entry points. Every tool runs from .venv/bin explicitly, so nothing here
# depends on an activated virtualenv; `make test` works on a machine with python3, pip, make.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.install-stamp
SEEDS ?= 300

PROTOS := $(wildcard protos/raftlease/v1/*.proto)
GEN_DIR := raftlease/v1
# protoc finds the mypy-protobuf plugins through explicit --plugin paths, not through $PATH.
PROTOC := $(BIN)/python -m grpc_tools.protoc -I protos \
	--plugin=protoc-gen-mypy=$(BIN)/protoc-gen-mypy \
	--plugin=protoc-gen-mypy_grpc=$(BIN)/protoc-gen-mypy_grpc

.PHONY: install proto verify-proto lint test sim run jepsen jepsen-long jepsen-membership bench

install: $(STAMP)

# Re-installs only when pyproject.toml or constraints.txt changed (or the venv is new). The
# exact versions come from constraints.txt (pyproject.toml declares ranges). The editable
# install means source edits never need a re-install.
$(STAMP): pyproject.toml constraints.txt
	@if [ ! -x $(BIN)/python ]; then \
		echo "creating $(VENV) with $(PYTHON) -m venv"; \
		$(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); \
			echo "error: '$(PYTHON) -m venv' failed (on Debian/Ubuntu: apt install python3-venv)" >&2; \
			exit 1; }; \
		$(BIN)/python -m pip install --quiet --upgrade pip; \
	fi
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $@

# Regenerate raftlease/v1 from protos/. The proto tree mirrors the package, so the generated
# modules import each other as `raftlease.v1.*` with no post-processing (grpc/grpc#29459).
proto: install
	rm -f $(GEN_DIR)/*_pb2.py $(GEN_DIR)/*_pb2.pyi $(GEN_DIR)/*_pb2_grpc.py $(GEN_DIR)/*_pb2_grpc.pyi
	$(PROTOC) --python_out=. --grpc_python_out=. --mypy_out=. --mypy_grpc_out=. $(PROTOS)

# Regenerate into a temporary directory and compare with the committed files.
verify-proto: install
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	$(PROTOC) --python_out="$$tmp" --grpc_python_out="$$tmp" --mypy_out="$$tmp" \
		--mypy_grpc_out="$$tmp" $(PROTOS) >"$$tmp/protoc.log" 2>&1 || \
		{ cat "$$tmp/protoc.log" >&2; echo "verify-proto: protoc failed" >&2; exit 1; } && \
	if diff -r -x __pycache__ -x __init__.py "$$tmp/$(GEN_DIR)" $(GEN_DIR); then \
		echo "verify-proto: $(GEN_DIR) matches protos/"; \
	else \
		echo "verify-proto: FAILED: $(GEN_DIR) is out of date with protos/ (or was edited by hand)." >&2; \
		echo "verify-proto: run 'make proto' and commit the regenerated files." >&2; \
		exit 1; \
	fi

lint: install
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy raftlease tests

# Unit + simulation tests, then integration tests (real processes), then a seed sweep.
# pytest exits 5 when every test is deselected; that is not a failure for the integration step.
test: install
	$(MAKE) lint
	$(MAKE) verify-proto
	$(BIN)/pytest -q -m "not integration"
	$(BIN)/pytest -q -m integration; rc=$$?; \
		if [ $$rc -eq 5 ]; then echo "no integration tests collected"; \
		elif [ $$rc -ne 0 ]; then exit $$rc; fi
	$(MAKE) sim SEEDS=200
	$(MAKE) sim SEEDS=100 SIM_START=1000 SIM_SET=$(SERVER_TIMING)

# SIM_SET: RaftConfig overrides for every seed. SERVER_TIMING is what the server ships
# (NodeConfig: 10 ms ticks, 100 ms heartbeats, 200-400 ms election timeout); the bare core's
# defaults are heartbeat 2, election 10-20.
SERVER_TIMING = heartbeat_ticks=10,election_ticks_min=20,election_ticks_max=40
# Each seed draws its own swarm fault mix (docs/simulator.md). SIM_FLAGS: more sweep options,
# e.g. SIM_FLAGS=--coverage (branch coverage of the core) or SIM_FLAGS="--mix random".
SIM_START ?= 0
SIM_SET ?=
SIM_FLAGS ?=
sim: install
	$(BIN)/python -m raftlease.testing.sweep --seeds $(SEEDS) --start $(SIM_START)$(if $(SIM_SET), --set $(SIM_SET))$(if $(SIM_FLAGS), $(SIM_FLAGS))

run: install
	$(BIN)/raftlease cluster --nodes 3 --data-dir ./data

# The quick fault suite (every covered row once, a few minutes). Seeded, so a failure can be
# replayed; jepsen-long sweeps many seeds of every row.
JEPSEN_SEED ?= 1
jepsen: install
	$(BIN)/python jepsen-style/runner.py --quick --seed $(JEPSEN_SEED)

jepsen-long: install
	$(BIN)/python jepsen-style/runner.py --long --seeds $(or $(SEEDS_LONG),5)

# Row 18, membership changes, in full: 18a (replace a SIGKILLed node; also in `make jepsen`),
# 18b (grow 3 -> 5 and shrink back), 18c (remove the leader). About a minute.
jepsen-membership: install
	$(BIN)/python jepsen-style/runner.py --membership --seed $(JEPSEN_SEED)

bench: install
	$(BIN)/python bench/run.py $(ARGS)
