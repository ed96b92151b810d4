#!/usr/bin/env bash
# Fuzzes the local stack against its own OpenAPI description (docs/openapi.json, served at
# /openapi.json) with schemathesis: no server error; no status code, content type, header or
# body the description does not allow; invalid input refused; the bearer token enforced.
#
#   infra/schemathesis.sh                       # needs `st` (pip install schemathesis), cargo, curl
#   ST_MAX_EXAMPLES=100 ST_SEED=7 infra/schemathesis.sh   # ST_KEEP=1 keeps logs and reports
#
# The stack runs on a free port with a fresh state directory, a generated API token, no poll loop
# and sandbox runs that stay pending (otherwise each run's start and end is a commit-status webhook
# to every integration the fuzzing connected to the sandbox, and hundreds of runs at once flood the
# one process). Its Bitbucket calls to anything but loopback go to a proxy address nothing listens
# on, so generated base URLs and credentials never leave the machine and fail at once (422
# `network`). Pass 1 fuzzes every operation that leaves the seeded `sandbox` integration in place
# and `active`; then disconnect/reconnect/rotation and target deletion; archiving; deletion.
# Exits non-zero on any failure or error, after a one-line summary.
set -euo pipefail

cd "$(dirname "$0")/.."
root=$(pwd)
max_examples=${ST_MAX_EXAMPLES:-30}
seed=${ST_SEED:-20261122}
workers=${ST_WORKERS:-2}

command -v st > /dev/null || { echo "schemathesis is not installed: pip install schemathesis" >&2; exit 2; }

cargo build --quiet -p local-stack

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

work=$(mktemp -d)
port=$(free_port)
dead_port=$(free_port) # bound and released: nothing listens there
token=$(python3 -c 'import secrets; print(secrets.token_hex(24))')
base="http://127.0.0.1:$port"
stack_pid=

cleanup() {
    local status=$?
    if [ -n "$stack_pid" ] && kill -0 "$stack_pid" 2> /dev/null; then
        kill "$stack_pid" 2> /dev/null || true
        wait "$stack_pid" 2> /dev/null || true
    fi
    if [ "$status" -ne 0 ] || [ -n "${ST_KEEP:-}" ]; then
        echo "schemathesis: stack log and reports kept in $work" >&2
    else
        rm -rf "$work"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -m 700 "$work/state"
proxy="http://127.0.0.1:$dead_port"
env -u ALL_PROXY -u all_proxy \
    PORT="$port" STATE_DIR="$work/state" API_TOKEN="$token" POLL_SECONDS=0 SANDBOX_PIPELINE_SECONDS=manual \
    RUST_LOG=warn \
    HTTP_PROXY="$proxy" HTTPS_PROXY="$proxy" http_proxy="$proxy" https_proxy="$proxy" \
    NO_PROXY="127.0.0.1,localhost,::1" no_proxy="127.0.0.1,localhost,::1" \
    "$root/target/debug/local-stack" > "$work/stack.log" 2>&1 &
stack_pid=$!

for _ in $(seq 1 120); do
    curl -fsS -o /dev/null "$base/health" 2> /dev/null && break
    kill -0 "$stack_pid" 2> /dev/null || { cat "$work/stack.log" >&2; echo "the local stack exited" >&2; exit 1; }
    sleep 0.5
done
curl -fsS -o /dev/null "$base/health" || { echo "the local stack did not answer /health" >&2; exit 1; }

# Random ids would reach almost only 404s: most of the time use the seeded integration and known
# target names. Generated connections point at the sandbox repository (the coverage phase still
# tries every kind of bad base URL), so some of them connect.
cat > "$work/schemathesis.toml" << TOML
[generation]
max-examples = $max_examples

[dictionaries.integration]
values = ["sandbox"]
[dictionaries.target]
values = ["orders", "settings"]
[dictionaries.repository_url]
values = ["https://bitbucket.org/sandbox/demo", "$base/sandbox/bitbucket/projects/SANDBOX/repos/demo"]
[dictionaries.email]
values = ["dev@sandbox.test"]
[dictionaries.token]
values = ["sandbox-token", "sandbox-access-token", "sandbox-dc-token"]

[parameters]
"path.id" = { dictionary = "integration", probability = 0.9 }
"path.integration_id" = { dictionary = "integration", probability = 0.9 }
"path.name" = { dictionary = "target", probability = 0.7 }
"body.credential.email" = { dictionary = "email", probability = 0.9 }
"body.credential.token" = { dictionary = "token", probability = 0.9 }

[[operations]]
include-operation-id = "createIntegration"
generation = { max-examples = $((max_examples * 2)) }
[operations.parameters]
"body.base_url" = "$base/sandbox/bitbucket/2.0"
"body.workspace" = "sandbox"
"body.project_key" = "SANDBOX"
"body.repository" = "demo"
"body.repository_url" = { dictionary = "repository_url", probability = 0.3 }
TOML

checks=not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance
checks=$checks,response_headers_conformance,negative_data_rejection,missing_required_header,ignored_auth
checks=$checks,use_after_free,ensure_resource_availability

# Run after the others, in this order: what takes the seeded integration out of `active` and
# back, or deletes a target; archiving; deleting integrations.
later=(disconnectIntegration reconnectIntegration rotateWebhookSecret deleteBackupTarget)
archive=(archiveIntegration unarchiveIntegration)
last=deleteIntegration

failed=0
run_pass() {
    local name=$1
    shift
    echo "── schemathesis $name"
    local status=0
    (cd "$work" && st --config-file "$work/schemathesis.toml" run "$base/openapi.json" \
        --url "$base" \
        --header "Authorization: Bearer $token" \
        --checks "$checks" \
        --seed "$seed" \
        --workers "$workers" \
        --request-timeout 30 \
        --generation-database none \
        --no-color \
        --report ndjson --report-ndjson-path "$work/$name.ndjson" \
        "$@") > "$work/$name.txt" 2>&1 || status=$?
    sed -n '/^=* \(FAILURES\|ERRORS\|WARNINGS\) =*$/,$p' "$work/$name.txt"
    [ "$status" -eq 0 ] || failed=1
}

run_pass pass1 "${later[@]/#/--exclude-operation-id=}" "${archive[@]/#/--exclude-operation-id=}" \
    --exclude-operation-id="$last"
# No links start from these operations, so there is nothing stateful to test.
run_pass pass2 "${later[@]/#/--include-operation-id=}" --phases examples,coverage,fuzzing
run_pass pass3 "${archive[@]/#/--include-operation-id=}" --phases examples,coverage,fuzzing
run_pass pass4 --include-operation-id="$last" --phases examples,coverage,fuzzing

# One line for CI logs, from the reports: what was exercised and what went wrong.
python3 - "$root/docs/openapi.json" "$work"/pass*.ndjson << 'PY' || failed=1
import json
import sys
from collections import Counter

with open(sys.argv[1]) as spec:
    paths = json.load(spec)["paths"]
# Schemathesis reads GET /openapi.json but does not fuzz it (tests/openapi.rs checks it).
described = {f"{method.upper()} {path}" for path, item in paths.items() for method in item if method != "parameters"}
described.discard("GET /openapi.json")
tested, answered_2xx, statuses, unique = set(), set(), Counter(), set()
cases = failed_checks = errors = 0
for report in sys.argv[2:]:
    with open(report) as lines:
        for line in lines:
            kind, event = next(iter(json.loads(line).items()))
            if kind == "NonFatalError":
                errors += 1
            if kind != "ScenarioFinished":
                continue
            errors += event["status"] == "error"
            recorder = event["recorder"]
            interactions = recorder.get("interactions", {})
            for case_id, case in recorder.get("cases", {}).items():
                cases += 1
                operation = f"{case['value']['method']} {case['value']['path']}"
                response = (interactions.get(case_id) or {}).get("response")
                if operation in described:
                    tested.add(operation)
                    if response and 200 <= response["status_code"] < 300:
                        answered_2xx.add(operation)
                if response:
                    statuses[f"{response['status_code'] // 100}xx"] += 1
            for results in recorder.get("checks", {}).values():
                for result in results:
                    if result["status"] == "failure":
                        failed_checks += 1
                        unique.add((recorder["label"], result["name"]))
answers = ", ".join(f"{count} {status}" for status, count in sorted(statuses.items()))
print(
    f"schemathesis: {len(tested)}/{len(described)} operations tested, {len(answered_2xx)} of them answered 2xx; "
    f"{cases} test cases ({answers}); {len(unique)} unique failures ({failed_checks} failed checks), {errors} errors"
)
if described - tested:
    print("not tested (a filter or the spec lost them):", ", ".join(sorted(described - tested)))
sys.exit(1 if failed_checks or errors or described - tested else 0)
PY

exit "$failed"
