#!/usr/bin/env bash
# Install the real-mail-server test lab (tests/lab) on Debian 12, as root.
#
# Postfix, Dovecot (Postfix SASL), swaks, nmap, testssl.sh and openssl come from apt.
# Exim and OpenSMTPD conflict with Postfix (all provide mail-transport-agent), so they are
# fetched with `apt-get download` and unpacked with `dpkg -x` into $SMTPAUDIT_LAB_PREFIX
# (default /opt/smtpaudit-lab); the test suite runs them from there with its own configs.
# Idempotent; starts no daemon (the tests start and stop every server by PID).
set -euo pipefail

PREFIX="${SMTPAUDIT_LAB_PREFIX:-/opt/smtpaudit-lab}"
export DEBIAN_FRONTEND=noninteractive

if [ "$(id -u)" -ne 0 ]; then
    echo "install-lab.sh: must run as root" >&2
    exit 1
fi

start=$(date +%s)

# Refuse daemon starts from maintainer scripts even on machines with an init system:
# the lab starts its own instances on free loopback ports.
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    created_policy=1
else
    created_policy=0
fi
cleanup() {
    if [ "$created_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
}
trap cleanup EXIT

# "No configuration": Postfix's postinst writes no /etc/postfix/main.cf; tests bring their own.
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections

apt_packages=(
    postfix dovecot-core swaks nmap testssl.sh openssl ca-certificates util-linux
    # swaks needs these for STARTTLS and AUTH (recommends, skipped by --no-install-recommends)
    libnet-ssleay-perl libio-socket-ssl-perl libauthen-sasl-perl
    # runtime libraries of the unpacked exim4-daemon-light and opensmtpd (see `ldd`)
    libidn12 libgnutls-dane0 libgnutls30 libidn2-0 libnsl2 libpcre2-8-0 libdb5.3
    libevent-2.1-7 libssl3 libpam0g zlib1g libcrypt1
)

missing=()
for p in "${apt_packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done

if [ "${#missing[@]}" -gt 0 ]; then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        "${missing[@]}" >/dev/null
fi

# Users the unpacked binaries have compiled in.
getent group Debian-exim >/dev/null || groupadd --system Debian-exim
getent passwd Debian-exim >/dev/null || \
    useradd --system --gid Debian-exim --home-dir /var/spool/exim4 --no-create-home \
        --shell /usr/sbin/nologin Debian-exim
# OpenSMTPD chroots its unprivileged processes into the home of these users.
for name in opensmtpd opensmtpq; do
    getent group "$name" >/dev/null || groupadd --system "$name"
    getent passwd "$name" >/dev/null || \
        useradd --system --gid "$name" --home-dir /var/lib/opensmtpd/empty --no-create-home \
            --shell /usr/sbin/nologin "$name"
done
# Mount points for OpenSMTPD's compiled-in paths: the lab bind-mounts private directories over
# them inside a private mount namespace (unshare -m), so they stay empty on the host.
install -d -m 0755 /var/lib/opensmtpd/empty /usr/libexec/opensmtpd
install -d -m 0711 /var/spool/smtpd

# Exim and OpenSMTPD, unpacked (not installed) into the prefix. A stamp per package version
# keeps re-runs instant.
unpack_pkgs=(exim4-daemon-light exim4-base opensmtpd)
mkdir -p "$PREFIX/debs"
need_download=0
for p in "${unpack_pkgs[@]}"; do
    ver=$(apt-cache policy "$p" | awk '/Candidate:/ {print $2}')
    if [ -z "$ver" ] || [ "$ver" = "(none)" ]; then
        apt-get update -qq
        ver=$(apt-cache policy "$p" | awk '/Candidate:/ {print $2}')
    fi
    if [ ! -e "$PREFIX/.stamp-$p-$ver" ]; then
        need_download=1
    fi
done

if [ "$need_download" = 1 ]; then
    tmp=$(mktemp -d)
    (
        cd "$tmp"
        # _apt cannot write into root's mktemp dir; download as root explicitly.
        apt-get download -qq -o APT::Sandbox::User=root "${unpack_pkgs[@]}"
        rm -f "$PREFIX"/.stamp-*
        for deb in ./*.deb; do
            dpkg -x "$deb" "$PREFIX"
        done
        for p in "${unpack_pkgs[@]}"; do
            ver=$(apt-cache policy "$p" | awk '/Candidate:/ {print $2}')
            touch "$PREFIX/.stamp-$p-$ver"
        done
        mv ./*.deb "$PREFIX/debs/" 2>/dev/null || true
    )
    rm -rf "$tmp"
fi

# Fail now, not in the middle of a test run, if a runtime library is missing.
for bin in "$PREFIX/usr/sbin/exim4" "$PREFIX/usr/sbin/smtpd"; do
    if [ ! -x "$bin" ]; then
        echo "install-lab.sh: $bin missing after unpack" >&2
        exit 1
    fi
    if ldd "$bin" | grep -q "not found"; then
        echo "install-lab.sh: unresolved libraries for $bin:" >&2
        ldd "$bin" | grep "not found" >&2
        exit 1
    fi
done

for bin in postfix dovecot swaks nmap testssl openssl unshare; do
    command -v "$bin" >/dev/null || [ -x "/usr/sbin/$bin" ] || {
        echo "install-lab.sh: $bin not found after install" >&2
        exit 1
    }
done

# aiosmtpd is a library: tests/lab/aiosmtpd_server.py embeds it (the aiosmtpd-* instances).
python3 -c 'import aiosmtpd' 2>/dev/null || python3 -m pip install -q "aiosmtpd==1.4.6"

echo "install-lab.sh: lab ready in $(( $(date +%s) - start )) s (prefix $PREFIX)"
