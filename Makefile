# The task list. `make` (or `make help`) lists the targets; .ci/run calls fmt-check, lint, test,
# deploy-check.

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

.PHONY: help fmt fmt-check lint openapi fuzz-api deny test test-rust test-ui test-chaos docs docs-check build run run-backend run-client bench chaos ci deploy-tools deploy-check base-images images bench-images compose-up compose-down compose-check kube-play-check

help: ## list the targets
	@echo "usage: make TARGET [VAR=value ...]"
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo "run:   REDIS_URL (unset: a private redis-server), REDIS_PORT=6390, LISTEN_ADDR=127.0.0.1:8080"
	@echo "images: ENGINE=podman|docker BINARIES=auto|source|prebuilt REGISTRY=ghcr.io/guestbook"
	@echo "bench: DURATION=5 STRATEGIES='lua watch lock' INSTANCES='1 3' CONNECTIONS='1 16 64 256'"

fmt: ## format the code
	cargo fmt --all

fmt-check: ## fail if the code is not formatted
	cargo fmt --all -- --check

lint: ## clippy on every target, warnings are errors
	cargo clippy --workspace --all-targets --locked -- -D warnings

openapi: ## rewrite openapi/*.json from the code (a test fails while they differ)
	UPDATE_OPENAPI=1 cargo test --locked -p guestbook-backend -p guestbook-client --test api openapi::the_checked_in_document

fuzz-api: ## schemathesis against both services on loopback (about 3 min; MAX_TIME=60 s per service)
	cargo build --locked -p guestbook-backend -p guestbook-client
	scripts/schemathesis.sh

deny: ## cargo deny: licences, bans, sources; advisories too when the RustSec database can be fetched
	cargo deny --locked check licenses bans sources
	@out=$$(cargo deny --locked check advisories 2>&1) && { echo "$$out" | tail -n 1; exit 0; }; \
	if grep -q "failed to fetch advisory database" <<<"$$out"; then \
	  echo "cargo deny: advisories NOT checked: the RustSec database (GitHub) cannot be fetched from here"; \
	else echo "$$out"; exit 1; fi

test: docs-check test-rust test-ui test-chaos ## every test (needs redis-server, chromium and node on PATH)

# The settings tables in docs/configuration.md come from the two services' --help (debug builds:
# the same text as release, and the build test-ui and test-chaos need anyway).
DOCS_FROM := --doc docs/configuration.md --backend target/debug/guestbook-backend --client target/debug/guestbook-client

docs: ## rewrite docs/configuration.md's settings tables from the services' --help
	cargo build --locked -p guestbook-backend -p guestbook-client
	python3 scripts/settings-table.py $(DOCS_FROM)

docs-check: ## fail when docs/configuration.md differs from --help ("run make docs") or a doc link is broken
	cargo build --locked -p guestbook-backend -p guestbook-client
	python3 scripts/settings-table.py --check $(DOCS_FROM)
	python3 scripts/check_links.py

test-rust: ## the Rust tests (unit and black-box; needs redis-server)
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "make test: redis-server is not on PATH; the tests start their own." >&2; \
	  echo "Install it (Debian: apt-get install -y redis-server) and run make test again." >&2; \
	  exit 1; }
	cargo test --workspace --locked

test-ui: ## the UI in Debian's chromium (playwright-core) against a real client, backend, Redis
	@command -v chromium >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || { \
	  echo "make test-ui: needs chromium and node/npm (Debian: apt-get install -y chromium)." >&2; \
	  exit 1; }
	cargo build --locked -p guestbook-backend -p guestbook-client
	npm ci --prefix tests/ui --no-audit --no-fund --loglevel=error
	cd tests/ui && node --test --test-concurrency=1 guestbook.test.mjs

test-chaos: ## the chaos harness and the fleet fault matrix, bounded (~3 min): debug binaries; fails on any loss or duplicate
	@command -v redis-server >/dev/null 2>&1 || { echo "make test-chaos: needs redis-server" >&2; exit 1; }
	cargo build --locked -p guestbook-backend -p guestbook-client -p guestbook-loadtest -p guestbook-testkit
	python3 scripts/chaos/harness.py --quick --bin-dir target/debug --out target/chaos-quick
	python3 scripts/chaos/matrix.py --quick --bin-dir target/debug --out target/chaos-matrix-quick

build: ## release build
	cargo build --release --locked

run: build ## the whole stack: redis-server (private), backend on :8080, client + UI on :8081
	scripts/run-stack.sh

run-backend: build ## the backend alone with its own redis-server (fault injection on)
	WITH_CLIENT=0 scripts/run-stack.sh

run-client: build ## the client alone, against BACKEND_URL (default http://127.0.0.1:8080)
	LISTEN_ADDR=$${CLIENT_LISTEN_ADDR:-127.0.0.1:8081} FRONTEND_DIR=frontend target/release/guestbook-client

bench: build ## every benchmark; a full run rewrites BENCHMARKS.md
	CALLGRIND=1 scripts/bench-appends.sh
	python3 scripts/bench_loadtest.py
	python3 scripts/bench_backpressure.py
	python3 scripts/bench_client.py
	INSTRUCTIONS=1 python3 scripts/bench_proxy.py
	python3 scripts/bench_resilience.py
	python3 scripts/bench_replication.py
	python3 scripts/bench_cluster_failover.py
	python3 scripts/bench_shards.py
	python3 scripts/bench_idempotency_memory.py
	python3 scripts/bench_append_script.py
	python3 scripts/bench_stream.py
	python3 scripts/bench_memory.py

chaos: build ## the chaos scenarios and the fleet fault matrix in full (~8 min); rewrites RELIABILITY.md's tables, plots in docs/chaos/
	python3 scripts/chaos/harness.py --bin-dir target/release --out target/chaos \
	  --write-doc RELIABILITY.md --copy-plots docs/chaos
	python3 scripts/chaos/matrix.py --bin-dir target/release --out target/chaos-matrix \
	  --write-doc RELIABILITY.md --copy-plots docs/chaos

deploy-tools: ## install the deployment checkers (apt + a venv in ~/.cache; needs root)
	scripts/deploy-tools.sh

deploy-check: ## lint and validate Dockerfiles, compose, kustomize, helm, chaos; live HPA-metric check
	scripts/deploy-check.sh

ci: fmt-check lint test deploy-check fuzz-api ## what .ci/run checks (and `make deny` when cargo-deny is installed)

base-images: ## stand-ins for debian, redis, prometheus, redis_exporter from Debian's packages (no registry; root)
	scripts/local-base-images.sh

images: ## build the backend, loadtest and client images (podman or docker; offline: host-built binaries)
	scripts/images.sh

bench-images: ## image sizes (compressed) and start-to-ready times into BENCHMARKS.md
	python3 scripts/bench_images.py

compose-up: ## deploy/compose for real (builds the images when missing): UI :8081, Prometheus :9090
	scripts/compose.sh up

compose-down: ## stop the compose stack, remove its volumes; fails if anything is left
	scripts/compose.sh down

compose-check: ## up, then the UI in chromium, /fetch, Prometheus + HPA query, a backend killed under load, the Redis primary frozen (Sentinel promotes a replica), down
	scripts/compose.sh check

kube-play-check: ## the kustomize and Helm renders as pods (podman kube play): probes pass, they answer
	scripts/kube-play-check.sh
