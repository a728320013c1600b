#!/usr/bin/env bash
# Peer tools the side-by-side tests and benchmarks compare against: sslyze (PyPI) in its own venv,
# because it pins cryptography<47 and must not downgrade the project's environment. Idempotent.
set -euo pipefail
PREFIX="${SMTPAUDIT_LAB_PREFIX:-/opt/smtpaudit-lab}"
VENV="$PREFIX/sslyze-venv"
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import sslyze" 2>/dev/null; then
    echo "sslyze already installed in $VENV"
    exit 0
fi
mkdir -p "$PREFIX"
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet 'sslyze>=6,<7'
"$VENV/bin/python" -m sslyze --help >/dev/null
echo "sslyze installed in $VENV"
