"""Stub DNS for conformance vectors: answers from an in-memory zone, no sockets at all.

``with StubZone(...).installed():`` replaces ``DnsClient.raw`` (the one place the client puts a
question on the wire) with a lookup in the zone, so everything above it (CNAME chasing, status
words, record parsing, the probes, the rules) runs unchanged. The zone format is the openspf test
suite's ``zonedata``: ``{name: [{TYPE: value}, ..., "TIMEOUT"]}`` with TXT/SPF values as a string
or a list of strings, MX as ``[preference, exchange]``. A name listed with ``"TIMEOUT"`` never
answers (as the suite's driver does); an unknown name is NXDOMAIN; a known name without the asked
type is NODATA. SPF-type (99) records stand in for TXT when the name has no TXT record of its own,
which is how the suite's own driver (pyspf's testspf.py) reads its data after RFC 7208 retired
type 99.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterable, Iterator

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.rrset

from smtpaudit.probes.dns.resolver import DnsClient

TIMEOUT = "TIMEOUT"


def _txt_rdata(value: str | list[str]) -> dns.rdtypes.ANY.TXT.TXT:
    strings = [value] if isinstance(value, str) else list(value)
    chunks: list[bytes] = []
    for s in strings:
        raw = s.encode("utf-8")
        # One character-string holds at most 255 octets; longer text spans several (RFC 7208 3.3).
        chunks.extend(raw[i:i + 255] for i in range(0, max(len(raw), 1), 255))
    return dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, dns.rdatatype.TXT, chunks)


class StubZone:
    """Records by lower-case owner name: list of (TYPE, value) pairs, or TIMEOUT markers."""

    def __init__(self, zonedata: dict[str, Any] | None = None) -> None:
        self.records: dict[str, list[Any]] = {}
        self.questions: list[tuple[str, str]] = []
        for name, rrs in (zonedata or {}).items():
            self.add_many(name, rrs)

    def add_many(self, name: str, rrs: Iterable[Any]) -> None:
        rows = self.records.setdefault(name.rstrip(".").lower(), [])
        for r in rrs:
            if r == TIMEOUT:
                rows.append(TIMEOUT)
            else:
                rows.extend(r.items())

    def add(self, name: str, rdtype: str, value: Any) -> "StubZone":
        self.records.setdefault(name.rstrip(".").lower(), []).append((rdtype, value))
        return self

    # -- answering ---------------------------------------------------------------------------

    def _rows(self, name: str, rdtype: str) -> list[Any]:
        rows = self.records.get(name, [])
        out = [v for t, v in (r for r in rows if r != TIMEOUT) if t == rdtype]
        if rdtype == "TXT" and not any(r != TIMEOUT and r[0] == "TXT" for r in rows):
            out = [v for t, v in (r for r in rows if r != TIMEOUT) if t == "SPF"]
        return [v for v in out if v != "NONE"]

    def _rrset(self, owner: dns.name.Name, rdtype: str, values: list[Any]) -> dns.rrset.RRset:
        rrset = dns.rrset.RRset(owner, dns.rdataclass.IN, dns.rdatatype.from_text(rdtype))
        for v in values:
            if rdtype == "TXT":
                rrset.add(_txt_rdata(v), 60)
            elif rdtype == "MX":
                pref, exch = v
                rrset.add(dns.rdata.from_text("IN", "MX", f"{int(pref)} {exch.rstrip('.')}."), 60)
            elif rdtype in ("CNAME", "PTR"):
                rrset.add(dns.rdata.from_text("IN", rdtype, v.rstrip(".") + "."), 60)
            else:
                rrset.add(dns.rdata.from_text("IN", rdtype, str(v)), 60)
        return rrset

    def answer(self, qname: dns.name.Name, rdtype: str) -> dns.message.Message | None:
        """The response a recursive resolver would give, or None for silence (timeout). It goes
        through wire format and back, as a real answer would."""
        resp = self._answer(qname, rdtype)
        if resp is None:
            return None
        return dns.message.from_wire(resp.to_wire(max_size=65535))

    def _answer(self, qname: dns.name.Name, rdtype: str) -> dns.message.Message | None:
        self.questions.append((qname.to_text(), rdtype))
        q = dns.message.make_query(qname, rdtype)
        resp = dns.message.make_response(q)
        resp.flags |= dns.flags.RA
        name = qname.to_text(omit_final_dot=True).lower()
        for _ in range(8):  # follow CNAMEs inside the zone like a recursive resolver
            rows = self.records.get(name)
            if rows is None:
                if name.startswith("error."):
                    return None  # the suite's driver turns these names into timeouts
                if not resp.answer:
                    resp.set_rcode(dns.rcode.NXDOMAIN)
                return resp
            if TIMEOUT in rows and not self._rows(name, rdtype):
                return None
            owner = dns.name.from_text(name)
            try:
                values = self._rows(name, rdtype)
                if values:
                    resp.answer.append(self._rrset(owner, rdtype, values))
                    return resp
                cname = self._rows(name, "CNAME") if rdtype != "CNAME" else []
                if not cname:
                    return resp  # NODATA
                resp.answer.append(self._rrset(owner, "CNAME", cname[:1]))
            except (dns.exception.DNSException, ValueError):
                return resp  # zone data dnspython cannot encode: answer NODATA
            name = cname[0].rstrip(".").lower()
        return resp

    @contextmanager
    def installed(self) -> Iterator["StubZone"]:
        """Answer every DnsClient question from this zone while the block runs."""
        zone = self

        async def raw(client: DnsClient, qname: dns.name.Name, rdtype: str):
            client.queries += 1
            resp = zone.answer(qname, rdtype)
            if resp is None:
                client.log.append(f"{qname} {rdtype} @stub -> timeout")
                return None, "timeout", "stub zone: no answer"
            client.log.append(f"{qname} {rdtype} @stub -> {dns.rcode.to_text(resp.rcode())}")
            return resp, "ok", None

        saved = DnsClient.raw
        DnsClient.raw = raw  # type: ignore[method-assign]
        try:
            yield self
        finally:
            DnsClient.raw = saved  # type: ignore[method-assign]
