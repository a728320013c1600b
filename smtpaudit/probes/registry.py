"""The explicit probe registry: probe name (as in smtpaudit/facts/<name>.toml) -> probe class."""

from __future__ import annotations

from smtpaudit.probes.base import Probe
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
}
