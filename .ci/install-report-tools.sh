#!/usr/bin/env bash
# Install the tools the report tests use (tests/report): headless Chromium (Debian package), poppler's
# pdftoppm/pdfinfo (print-to-PDF check), the Microsoft SARIF Multitool (npm, self-contained linux
# binary, runs offline), axe-core (npm, the accessibility engine injected into Chromium) and the
# Python validators (jsonschema + rfc3986-validator for SARIF's uri-reference format).
#
# Idempotent and fast on a second run: each step checks first. Run as root (apt).
#   SMTPAUDIT_TOOLS_DIR  where the Multitool is installed (default /opt/smtpaudit-tools);
#                        the tests look there too (or at $SARIF_MULTITOOL).
set -euo pipefail

TOOLS="${SMTPAUDIT_TOOLS_DIR:-/opt/smtpaudit-tools}"
MT_DIR="$TOOLS/sarif-multitool"
MT_BIN="$MT_DIR/node_modules/@microsoft/sarif-multitool-linux/Sarif.Multitool"
AXE_DIR="$TOOLS/axe-core"
AXE_JS="$AXE_DIR/node_modules/axe-core/axe.min.js"
export DEBIAN_FRONTEND=noninteractive
start=$(date +%s)

need_apt=()
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
command -v pdftoppm >/dev/null 2>&1 || need_apt+=(poppler-utils)
if [ "${#need_apt[@]}" -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "install-report-tools.sh: need root to apt-get install ${need_apt[*]}" >&2
        exit 1
    fi
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}" fonts-dejavu-core >/dev/null
fi

if [ ! -x "$MT_BIN" ]; then
    mkdir -p "$MT_DIR"
    (
        cd "$MT_DIR"
        [ -f package.json ] || npm init -y >/dev/null
        # Only the package: its linux binary is self-contained (.NET bundled), no browser downloads.
        npm install --no-audit --no-fund --loglevel=error @microsoft/sarif-multitool >/dev/null
    )
fi
chmod +x "$MT_BIN" 2>/dev/null || true

if [ ! -f "$AXE_JS" ]; then
    mkdir -p "$AXE_DIR"
    (
        cd "$AXE_DIR"
        [ -f package.json ] || npm init -y >/dev/null
        # axe-core 4.x: the browser bundle axe.min.js is what the tests inject (no Node runner needed).
        npm install --no-audit --no-fund --loglevel=error "axe-core@4" >/dev/null
    )
fi

python3 - <<'PY' 2>/dev/null || python3 -m pip install -q "jsonschema>=4.18" "rfc3986-validator>=0.1.1" "Jinja2>=3.1"
import jinja2, jsonschema, rfc3986_validator  # noqa: F401
PY

echo "chromium: $(command -v chromium)  pdftoppm: $(command -v pdftoppm)  multitool: $MT_BIN  axe: $AXE_JS  ($(( $(date +%s) - start )) s)"
