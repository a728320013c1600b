"""The one vocabulary of outcomes: probe status, why a probe did not finish, rule outcome, endpoint status.

Shared by probes (which report how they ended), the engine (which judges) and the reports (which
render). They are ``StrEnum`` so a value *is* its JSON string: reports stay plain JSON, and a
string read back from a saved report is checked with ``parse`` instead of being trusted.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TypeVar

E = TypeVar("E", bound=StrEnum)


class ProbeStatus(StrEnum):
    OK = "ok"            # the probe finished and recorded what it observed
    ERROR = "error"      # it could not finish: the facts it would have produced are absent
    SKIPPED = "skipped"  # it did not run (see Reason: nothing to observe, not allowed, not installed)


class Reason(StrEnum):
    """Why a probe ended in error or was skipped. One token per cause; ``internal`` is a bug of ours."""

    # Network and protocol failures: the endpoint did not let us look.
    CONNECT = "connect"
    CONNECT_REFUSED = "connect_refused"
    CONNECT_TIMEOUT = "connect_timeout"
    DNS = "dns"
    READ_TIMEOUT = "read_timeout"
    CONNECTION_CLOSED = "connection_closed"
    PROTOCOL = "protocol"
    REPLY_TOO_LARGE = "reply_too_large"
    TLS_HANDSHAKE = "tls_handshake"
    SERVICE_UNAVAILABLE = "service_unavailable"  # 421, or 554 at the greeting
    STARTTLS_REFUSED = "starttls_refused"
    ENDPOINT_UNUSABLE = "endpoint_unusable"      # the session probe got no usable greeting
    DEADLINE = "deadline"                        # the endpoint deadline cut the probe short
    # Our side.
    INTERNAL = "internal"                        # a bug in a probe (exception), recorded, never a crash
    FACT_CONTRACT = "fact_contract"              # a probe emitted an undeclared fact or a wrong type
    CONFIG = "config"                            # a user option the probe cannot use (bad resolver, CA file)
    # Skips.
    NO_TLS = "no_tls"                            # nothing to observe: STARTTLS not offered
    NOT_APPLICABLE = "not_applicable"            # nothing to observe for another reason
    INTRUSIVE = "intrusive"                      # needs --intrusive
    UNAVAILABLE = "unavailable"                  # probe not installed
    UNREACHABLE = "unreachable"                  # not run: the endpoint could not be reached
    NEEDS_OPTION = "needs_option"                # needs a user option (e.g. --smuggling-rcpt)

    @classmethod
    def coerce(cls, value: str | None) -> "Reason":
        """A reason token from a probe or a saved report; unknown tokens (older reports) map to ``protocol``."""
        if value in (None, ""):
            return cls.PROTOCOL
        value = _REASON_ALIASES.get(value, value)
        try:
            return cls(value)
        except ValueError:
            return cls.PROTOCOL


# Words older versions and reports used for the same causes.
_REASON_ALIASES = {"bug": "internal", "no_starttls": "no_tls", "timeout": "read_timeout"}

# Skips that mean "there was nothing to observe": rules needing only those facts do not apply.
NOTHING_TO_OBSERVE = frozenset({Reason.NO_TLS, Reason.NOT_APPLICABLE})


class RuleOutcome(StrEnum):
    FINDING = "finding"
    PASSED = "passed"                  # every fact the rule read was observed and the condition is false
    NOT_EVALUATED = "not_evaluated"    # evidence missing (timeout, refusal, deadline...): never a pass
    NOT_APPLICABLE = "not_applicable"  # the rule does not concern this endpoint


class EndpointStatus(StrEnum):
    COMPLETE = "complete"          # every planned probe finished: the endpoint gets a grade
    INCOMPLETE = "incomplete"      # reached, but some planned probe did not finish: no grade
    UNREACHABLE = "unreachable"    # no usable SMTP session at all: no grade

    @classmethod
    def coerce(cls, value: str | None) -> "EndpointStatus":
        """Also reads the words of older reports (scanned / partial / failed)."""
        legacy = {"scanned": cls.COMPLETE, "partial": cls.INCOMPLETE, "failed": cls.UNREACHABLE}
        if value in legacy:
            return legacy[value]
        try:
            return cls(value)  # type: ignore[arg-type]
        except ValueError:
            return cls.INCOMPLETE


def parse(enum: type[E], value: str) -> E:
    """Strict parse at a boundary: an unknown value is an error that names the accepted ones."""
    try:
        return enum(value)
    except ValueError:
        raise ValueError(f"{value!r} is not one of {', '.join(m.value for m in enum)}") from None
