#!/usr/bin/env bash
# Installs the conformance checker's packages (requirements.txt) when they are missing, as
# infra/moto.sh installs moto: on first use. `make test` calls it before the suite.
set -euo pipefail
here="$(dirname "$0")"
if ! python3 -c "import jsonschema, referencing, openapi_schema_validator, yaml, rfc3339_validator" 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt"
fi
