#!/usr/bin/env bash
# Install what the DNS lab needs: BIND's named (authoritative server for the lab zones) and its
# signer tools (dnssec-keygen, dnssec-signzone), plus dnspython for the probes.
# Idempotent and fast: does nothing when everything is already present.
set -euo pipefail

need=()
for bin in named dnssec-keygen dnssec-signzone; do
    command -v "$bin" >/dev/null 2>&1 || need+=("$bin")
done
if ((${#need[@]})); then
    export DEBIAN_FRONTEND=noninteractive
    # Another installer (the mail lab) may hold the dpkg lock: wait for it instead of failing.
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends bind9 bind9-utils >/dev/null
fi
python3 -c 'import dns.dnssec, cryptography' 2>/dev/null || python3 -m pip install -q "dnspython>=2.6" cryptography
echo "dns lab: $(named -v) ready"
