# sse-relay — the commands a developer (and CI) runs.
.PHONY: run test lint build fuzz validate-deploy bench

FUZZ_SECONDS ?= 60

# Builds and starts the system locally: Redis (installed if missing), the relay and forecast-api.
run:
	scripts/ensure-deps.sh redis
	cargo build --release --locked -p sse-relay -p forecast-api
	scripts/run-local.sh

# Every test: unit and property tests, black-box tests against real Redis, SQLite and PostgreSQL,
# schema-driven API testing (schemathesis), the dashboard in headless Chromium, the multi-replica
# topology behind nginx, the deployment files (Helm chart, kustomize, Dockerfile) and a brief run
# of each fuzz target.
test:
	scripts/ensure-deps.sh redis sentinel postgres openssl schemathesis browser nginx haproxy nchan bench deploy-tools prometheus
	scripts/validate-deploy.sh
	cargo test --workspace --locked
	scripts/fuzz.sh --smoke 10

# The benchmarks (docs/performance.md): the relay, nginx+nchan and the floor server side by side,
# servers pinned to core 0 and load to core 1; a table, and every figure in BENCH_OUT.
BENCH_OUT ?= target/bench/results.json
bench:
	scripts/ensure-deps.sh redis nchan bench
	cargo build --release --locked -p sse-relay -p forecast-api -p sse-bench
	target/release/sse-bench suite --out $(BENCH_OUT)

# Each fuzz target for FUZZ_SECONDS, release build with AddressSanitizer.
fuzz:
	scripts/fuzz.sh $(FUZZ_SECONDS)

# helm lint, helm template and Kubernetes schema validation of the chart and kustomize base.
validate-deploy:
	scripts/ensure-deps.sh deploy-tools prometheus
	scripts/validate-deploy.sh

lint:
	cargo fmt --all --check
	cargo clippy --workspace --locked --all-targets -- -D warnings

# The two services (the benchmark harness is built by make bench only).
build:
	cargo build --release --locked -p sse-relay -p forecast-api
