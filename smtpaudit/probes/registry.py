"""The explicit probe registry: probe name (as in smtpaudit/facts/<name>.toml) -> probe class."""

from __future__ import annotations

from smtpaudit.probes.base import Probe
from smtpaudit.probes.dns.probes import DaneProbe, DnsDomainProbe, DnsHostProbe, MtaStsProbe
from smtpaudit.probes.smtp.session import SessionProbe
from smtpaudit.probes.smtp.vrfy import VrfyProbe

PROBES: dict[str, type[Probe]] = {
    SessionProbe.name: SessionProbe,
    VrfyProbe.name: VrfyProbe,
    DnsDomainProbe.name: DnsDomainProbe,
    MtaStsProbe.name: MtaStsProbe,
    DnsHostProbe.name: DnsHostProbe,
    DaneProbe.name: DaneProbe,
}

# Probes that observe a mail domain (run on ``domain:`` entries only); all others run on
# host endpoints only.
DOMAIN_PROBES = frozenset({DnsDomainProbe.name, MtaStsProbe.name})
