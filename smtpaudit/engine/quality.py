"""Detection quality (QoD): how reliable the evidence behind a finding is, and whether it may gate.

Modelled on OpenVAS's Quality of Detection: an active test that showed the flaw is worth more than a
remote banner, and a banner of software that distributions routinely patch without changing the
version (Debian, Ubuntu, RHEL backports) is an unreliable guess. Findings whose quality is below
GATE_MIN_QUALITY are still listed in every report but do not count towards the grade, the score or
the exit code (``gate = false``). Findings of ordinary rules carry no quality (null) and always gate.
"""

from __future__ import annotations

# OpenVAS QoD types and values (Greenbone's "Quality of Detection" table, e.g. as copied at
# https://hostedscan.com/openvas-qod), the subset smtpaudit produces.
METHODS: dict[str, int] = {
    "remote_active": 95,  # an active check showed the flaw
    "remote_banner": 80,  # version from a banner of software that is not routinely backported
    "remote_banner_unreliable": 30,  # version from a banner of routinely backported software
}
# OpenVAS hides results below QoD 70 by default (gvmd MIN_QOD_DEFAULT); smtpaudit keeps them out of the gate the same way.
GATE_MIN_QUALITY = 70


def gates(quality: int | None) -> bool:
    """True when a finding of this quality counts for the grade, the score and the exit code."""
    return quality is None or quality >= GATE_MIN_QUALITY
