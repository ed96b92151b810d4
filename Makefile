# The two commands the README opens with:
#   make run   — the whole system locally (SQLite state, local secret file) on 127.0.0.1:$PORT
#   make test  — every test, with the moto server started for the AWS adapter tests and stopped after
SHELL := /bin/bash
MOTO_PORT ?= 5055
CARGO ?= cargo
TEST_ENV := AWS_ENDPOINT_URL=http://127.0.0.1:$(MOTO_PORT) AWS_ACCESS_KEY_ID=testing \
	AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true

.PHONY: run test lint layers fmt moto-start moto-stop lambda-build sam-validate sam-build watch-seed bench bench-quick bench-scale

run:
	$(CARGO) run -p local-stack

# Tests run with a private TMPDIR that must be empty afterwards: a test that leaves a file or
# directory behind fails the run (they used to leave ~2,300 directories after a few runs).
# Every exchange with the sandbox Bitbucket, over the whole suite, goes to a fresh traffic log that
# infra/conformance/check.py then holds to Atlassian's descriptions: any violation outside
# infra/conformance/allowlist.yaml fails the run. The checker's packages are installed on first
# use, and the sandbox's own route sweep may not skip.
TRAFFIC_LOG := $(CURDIR)/target/conformance/traffic.jsonl
test:
	$(TEST_ENV) $(CARGO) test --workspace --all-targets --no-run
	@infra/conformance/ensure.sh
	@MOTO_PORT=$(MOTO_PORT) infra/moto.sh start
	@tmp=$$(mktemp -d "$${TMPDIR:-/tmp}/make-test.XXXXXX"); status=0; \
	mkdir -p "$(dir $(TRAFFIC_LOG))"; rm -f "$(TRAFFIC_LOG)"; \
	TMPDIR=$$tmp $(TEST_ENV) SANDBOX_TRAFFIC_LOG="$(TRAFFIC_LOG)" SANDBOX_CONFORMANCE_REQUIRED=1 \
	  $(CARGO) test --workspace --all-targets --no-fail-fast || status=$$?; \
	MOTO_PORT=$(MOTO_PORT) infra/moto.sh stop; \
	left=$$(ls -A "$$tmp"); \
	if [ -n "$$left" ]; then echo "tests left these behind in TMPDIR:"; echo "$$left" | head -20; status=1; fi; \
	rm -rf "$$tmp"; \
	echo "== conformance of the suite's Bitbucket traffic ($(TRAFFIC_LOG))"; \
	python3 infra/conformance/check.py "$(TRAFFIC_LOG)" || status=1; \
	exit $$status

lint: layers
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	cfn-lint template.yaml

# The dependency rule (docs/ARCHITECTURE.md): the application core's normal dependencies hold
# no AWS SDK, no HTTP server or client, no Lambda runtime and no SQLite.
# Patterns (grep -E, whole crate names): every AWS SDK crate, whichever services are added later.
FORBIDDEN_IN_CORE := aws-config 'aws-sdk-.*' 'aws-smithy-.*' lambda_http lambda_runtime axum hyper reqwest rusqlite
layers:
	@tree=$$($(CARGO) tree -p domain -e normal --prefix none --format '{p}' | cut -d' ' -f1 | sort -u); \
	bad=$$(for c in $(FORBIDDEN_IN_CORE); do echo "$$tree" | grep -xE "$$c"; done); \
	if [ -n "$$bad" ]; then echo "the domain crate depends on: $$bad"; exit 1; fi; \
	echo "layers ok: domain's $$(echo "$$tree" | wc -l) normal dependencies include none of $(FORBIDDEN_IN_CORE)"

fmt:
	$(CARGO) fmt --all

moto-start:
	@MOTO_PORT=$(MOTO_PORT) infra/moto.sh start

moto-stop:
	@MOTO_PORT=$(MOTO_PORT) infra/moto.sh stop

# Every function as an arm64 Lambda zip (target/lambda/<function>/bootstrap.zip), sizes listed.
FUNCTIONS := webhook-receiver integrations-api backup-committer pipeline-trigger status-poller branch-pruner event-publisher
# One package per build, as `sam build` does (`--bin <function>`): the same feature sets, so
# `sam build` afterwards reuses every artifact instead of building again.
lambda-build:
	@for f in $(FUNCTIONS); do $(CARGO) lambda build --release --arm64 --output-format zip -p $$f || exit 1; done
	@for f in $(FUNCTIONS); do stat -c "%n %s bytes" target/lambda/$$f/bootstrap.zip; done

# SAM needs a region and credentials to validate, never an account: dummy ones do.
SAM_ENV := AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 AWS_ACCESS_KEY_ID=dummy AWS_SECRET_ACCESS_KEY=dummy \
	SAM_CLI_TELEMETRY=0
sam-validate:
	$(SAM_ENV) sam validate --lint
	cfn-lint template.yaml

sam-build:
	$(SAM_ENV) sam build

# `cargo lambda watch` on the AWS emulator: start moto, create the table and the demo
# integration the sample events under events/ are written for.
watch-seed: moto-start
	$(TEST_ENV) STATE_TABLE=bitbucket-automation-dev ADMIN_TOKEN_SECRET=bitbucket-automation/admin-api-token \
		$(CARGO) run -q -p local-stack --bin seed-emulator

# Cold start, memory and size of every function against the hello-world floor, then the
# receiver's hot path against HMAC + serde_json (BENCHMARKS.md). bench-quick is CI's short run.
# Two builds: with the benchmarks in the same one, cargo would unify features and give the
# functions the local stack's SQLite.
bench:
	$(CARGO) build --release $(addprefix -p ,$(FUNCTIONS))
	$(CARGO) build --release -p benchmarks --bin hello-floor --bin hello-floor-current-thread --bin coldstart
	@MOTO_PORT=$(MOTO_PORT) infra/moto.sh start
	@status=0; $(TEST_ENV) target/release/coldstart $(BENCH_ARGS) || status=$$?; \
	MOTO_PORT=$(MOTO_PORT) infra/moto.sh stop; exit $$status
	$(CARGO) bench -p benchmarks --bench hot_path -- $(HOT_PATH_ARGS)

# CI's run keeps the harness from rotting; its figures are not the published ones, so it trades
# fat LTO for a build twice as fast.
bench-quick:
	CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
	$(MAKE) bench BENCH_ARGS="--runs 2 --warm 3" HOT_PATH_ARGS="--quick --noplot"

# Operations at scale (BENCHMARKS.md, "Scale"): poll and reconcile cycles over 100, 1,000 and
# 10,000 integrations (100 per credential) against the sandbox with 100 ms of latency and Cloud's
# 1,000 requests an hour per user, a simulated hour of schedules, the receiver at concurrency
# 8/32/64, and the counts the cost model is computed from. Prints JSON; no moto needed.
# SCALE_ARGS="--sizes 100,1000 --latency-ms 100" for a shorter run.
bench-scale:
	$(CARGO) build --release -p benchmarks --bin scale
	$${CARGO_TARGET_DIR:-target}/release/scale $(SCALE_ARGS)
