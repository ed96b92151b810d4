# The two commands the README opens with:
#   make run   — the whole system locally (SQLite state, local secret file) on 127.0.0.1:$PORT
#   make test  — every test, with the moto server started for the AWS adapter tests and stopped after
SHELL := /bin/bash
MOTO_PORT ?= 5055
CARGO ?= cargo
TEST_ENV := AWS_ENDPOINT_URL=http://127.0.0.1:$(MOTO_PORT) AWS_ACCESS_KEY_ID=testing \
	AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true

.PHONY: run test lint fmt moto-start moto-stop

run:
	$(CARGO) run -p local-stack

test:
	@MOTO_PORT=$(MOTO_PORT) infra/moto.sh start
	@status=0; $(TEST_ENV) $(CARGO) test --workspace --all-targets || status=$$?; \
	MOTO_PORT=$(MOTO_PORT) infra/moto.sh stop; exit $$status

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	cfn-lint template.yaml

fmt:
	$(CARGO) fmt --all

moto-start:
	@MOTO_PORT=$(MOTO_PORT) infra/moto.sh start

moto-stop:
	@MOTO_PORT=$(MOTO_PORT) infra/moto.sh stop
