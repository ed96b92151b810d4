#!/usr/bin/env bash
# Security lint of the deployment, two parts:
#  1. checkov on template.yaml against infra/checkov-baseline.json. Fails when checkov reports a
#     finding the baseline does not accept, when a baseline entry has no reason, when a baseline
#     entry matches no finding any more (delete it: the baseline holds only findings that exist),
#     or when checkov could not parse the template.
#  2. infra/security_invariants.py: the properties SECURITY.md promises that no generic rule can
#     know (which function may read which kind of secret, the only public route, throttling,
#     the caller's identity in the admin access log, stream scope, table settings, …).
#
#   infra/security-lint.sh            # from anywhere; CI runs it after `make sam-validate`
#
# checkov is pinned and lives in its own virtualenv (target/checkov-venv, or $CHECKOV_VENV): a
# new release adds checks, which would fail CI with no change here, and its dependency pins would
# otherwise fight SAM CLI's and moto's in the shared Python environment. Checkov's `serverless`
# framework reads serverless.yml (Serverless Framework) files only, so `cloudformation` is the
# one that applies to this SAM template.
set -euo pipefail
cd "$(dirname "$0")/.."

CHECKOV_VERSION=3.3.30
VENV="${CHECKOV_VENV:-target/checkov-venv}"
BASELINE=infra/checkov-baseline.json
TEMPLATE=template.yaml

if [ ! -x "$VENV/bin/checkov" ] || [ "$("$VENV/bin/checkov" --version 2>/dev/null)" != "$CHECKOV_VERSION" ]; then
  echo "security-lint: installing checkov $CHECKOV_VERSION into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "checkov==$CHECKOV_VERSION"
fi

report=$(mktemp)
trap 'rm -f "$report"' EXIT
# --soft-fail: checkov always exits 0 here; the comparison below decides. --skip-download: no
# calls to the Bridgecrew platform (CI reaches package registries only).
"$VENV/bin/checkov" -f "$TEMPLATE" --framework cloudformation --output json \
  --skip-download --soft-fail >"$report"

set +e
python3 - "$report" "$BASELINE" "$CHECKOV_VERSION" <<'PY'
import json
import sys

report_path, baseline_path, pinned = sys.argv[1:4]
with open(report_path) as f:
    report = json.load(f)
with open(baseline_path) as f:
    baseline = json.load(f)

problems = []
# checkov prints a list when it ran several runners, one object for one.
if isinstance(report, list):
    report = next((r for r in report if r.get("check_type") == "cloudformation"), {})
summary = report.get("summary", {})
results = report.get("results", {})
if summary.get("parsing_errors", 0) or not summary.get("resource_count"):
    problems.append(f"checkov did not parse the template: {summary}")
if baseline.get("checkov_version") != pinned:
    problems.append(f"baseline written for checkov {baseline.get('checkov_version')}, script pins {pinned}")

accepted = {}
for entry in baseline.get("accepted", []):
    check, reason = entry.get("check", ""), entry.get("reason", "").strip()
    if len(reason) < 40:
        problems.append(f"baseline entry {check} {entry.get('resources')}: no written reason")
    for resource in entry.get("resources", []):
        if (check, resource) in accepted:
            problems.append(f"baseline lists {check} on {resource} twice")
        accepted[(check, resource)] = reason

failed = results.get("failed_checks", [])
found = set()
for finding in failed:
    key = (finding["check_id"], finding["resource"])
    found.add(key)
    if key not in accepted:
        lines = finding.get("file_line_range") or ["?", "?"]
        problems.append(
            f"NEW finding {key[0]} on {key[1]} (template.yaml lines {lines[0]}-{lines[1]}): "
            f"{finding.get('check_name')}. Fix it, or accept it in {baseline_path} with a reason."
        )
for key in sorted(set(accepted) - found):
    problems.append(f"stale baseline entry: {key[0]} on {key[1]} no longer fails; remove it from {baseline_path}")

passed = len(results.get("passed_checks", []))
print(
    f"security-lint: checkov {summary.get('checkov_version', '?')} on template.yaml: "
    f"{passed} checks pass, {len(found & set(accepted))} findings accepted with a reason, "
    f"{len(found - set(accepted))} new, {len(set(accepted) - found)} stale baseline entries"
)
for problem in problems:
    print(f"security-lint: {problem}")
sys.exit(1 if problems else 0)
PY
checkov_status=$?
set -e
"$VENV/bin/python" infra/security_invariants.py "$TEMPLATE" || exit 1
exit "$checkov_status"
