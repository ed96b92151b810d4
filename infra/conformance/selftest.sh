#!/usr/bin/env bash
# Self-test of the conformance checker: hand-written exchanges it must pass (selftest/good.jsonl,
# allow-list applied) and must fail (selftest/bad.jsonl: each line's `expect` names the checks it
# must raise as violations), the same bad lines without the allow-list, then a timing run over a
# few thousand lines. Needs python3 with requirements.txt installed; no network, no cargo.
#
#   infra/conformance/selftest.sh            # BITBUCKET_OPENAPI_DIR overrides ../shared/bitbucket-openapi
set -euo pipefail
cd "$(dirname "$0")"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail=0

echo "== good exchanges pass"
if python3 check.py selftest/good.jsonl > "$work/good.txt"; then
    echo "ok: no violation ($(tail -n +1 "$work/good.txt" | grep -m1 'exchanges checked' | sed 's/^ *//'))"
else
    echo "FAIL: the good exchanges raised violations:"; cat "$work/good.txt"; fail=1
fi

echo "== bad exchanges fail with the expected checks"
set +e
python3 check.py --json selftest/bad.jsonl > "$work/bad.json"
status=$?
set -e
if [ "$status" -ne 1 ]; then
    echo "FAIL: check.py exited $status on the bad exchanges (expected 1)"; fail=1
fi
python3 - "$work/bad.json" selftest/bad.jsonl <<'PY' || fail=1
import json, sys
findings, expected = {}, {}
for line in open(sys.argv[1]):
    o = json.loads(line)
    if "summary" in o:
        continue
    if o["state"] == "violation":
        findings.setdefault(o["line"], set()).add(o["check"])
for n, text in enumerate(open(sys.argv[2]), 1):
    if text.strip() and not text.startswith("//"):
        o = json.loads(text)
        expected[n] = (o.get("test"), set(o.get("expect", [])))
bad = 0
for n, (test, want) in sorted(expected.items()):
    got = findings.get(n, set())
    missing = want - got
    if missing or not got:
        bad += 1
        print(f"FAIL line {n} ({test}): expected {sorted(want)}, got {sorted(got)}")
    else:
        print(f"ok   line {n} ({test}): {', '.join(sorted(got))}")
sys.exit(1 if bad else 0)
PY

echo "== without the allow-list, the allowed findings come back"
set +e
python3 check.py --no-allowlist --json selftest/good.jsonl > "$work/raw.json"
status=$?
set -e
count=$(grep -c '"state": "violation"' "$work/raw.json" || true)
if [ "$status" -eq 1 ] && [ "$count" -gt 0 ]; then
    echo "ok: $count findings without the allow-list"
else
    echo "FAIL: expected violations without the allow-list (exit $status, $count findings)"; fail=1
fi

echo "== speed: 4,400 exchanges"
for _ in $(seq 200); do grep -v '^//' selftest/good.jsonl; done > "$work/many.jsonl"
start=$(date +%s.%N)
python3 check.py "$work/many.jsonl" > "$work/many.txt"
end=$(date +%s.%N)
tail -n 1 "$work/many.txt" >/dev/null
python3 -c "import sys; t=float(sys.argv[2])-float(sys.argv[1]); print(f'ok: {t:.2f}s'); sys.exit(0 if t < 30 else 1)" "$start" "$end" || {
    echo "FAIL: too slow"; fail=1; }

if [ "$fail" -ne 0 ]; then
    echo "selftest: FAILED"
    exit 1
fi
echo "selftest: passed"
