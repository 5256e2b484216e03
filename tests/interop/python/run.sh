#!/usr/bin/env bash
# Create/refresh the interop venv and run the suite. Extra arguments go to pytest.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
venv="${INTEROP_VENV:-$root/.venv-interop}"
python="${PYTHON:-python3.11}"
if [ ! -x "$venv/bin/pytest" ]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/pip" install -q -r "$here/requirements.txt"
cd "$root"
exec "$venv/bin/pytest" tests/interop/python "$@"
