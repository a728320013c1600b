"""The explicit probe registry: probe name (as in smtpaudit/facts/<name>.toml) -> probe class."""

from __future__ import annotations

from smtpaudit.probes.base import Probe
from smtpaudit.probes.dns.probes import DaneProbe, DnsDomainProbe, DnsHostProbe, MtaStsProbe
from smtpaudit.probes.smtp.session import SessionProbe
from smtpaudit.probes.smtp.vrfy import VrfyProbe
from smtpaudit.probes.tls.certificate import TlsCertificateProbe
from smtpaudit.probes.tls.injection import StarttlsInjectionProbe
from smtpaudit.probes.tls.protocols import TlsProtocolsProbe

PROBES: dict[str, type[Probe]] = {
    SessionProbe.name: SessionProbe,
    VrfyProbe.name: VrfyProbe,
    TlsProtocolsProbe.name: TlsProtocolsProbe,
    TlsCertificateProbe.name: TlsCertificateProbe,
    StarttlsInjectionProbe.name: StarttlsInjectionProbe,
    DnsDomainProbe.name: DnsDomainProbe,
    MtaStsProbe.name: MtaStsProbe,
    DnsHostProbe.name: DnsHostProbe,
    DaneProbe.name: DaneProbe,
}

# Probes that observe a mail domain (run on ``domain:`` entries only); all others run on
# host endpoints only.
DOMAIN_PROBES = frozenset({DnsDomainProbe.name, MtaStsProbe.name})
