"""DNSSEC validation done by the scanner itself, from a trust anchor down (RFC 4033-4035).

Statuses (RFC 4035 section 4.3): ``secure`` (chain of signatures from a trust anchor),
``insecure`` (a signed proof that a zone on the path is unsigned), ``bogus`` (signatures or
the chain are broken), ``indeterminate`` (no trust anchor covers the name, or DNS failed).
The resolver's AD bit is never trusted: we ask with CD and check every signature ourselves
with dnspython's ``dns.dnssec`` (which uses ``cryptography``).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.dnssec
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.zone

from smtpaudit.probes.dns.resolver import DnsClient, Lookup

SECURE, INSECURE, BOGUS, INDETERMINATE = "secure", "insecure", "bogus", "indeterminate"

ANCHORS_FILE = Path(__file__).with_name("trust_anchors.toml")

Anchors = dict[dns.name.Name, list[dns.rdata.Rdata]]  # zone -> DS or DNSKEY rdatas


def builtin_anchors() -> Anchors:
    data = tomllib.loads(ANCHORS_FILE.read_text(encoding="utf-8"))
    out: Anchors = {}
    for a in data["anchor"]:
        zone = dns.name.from_text(a["zone"])
        out.setdefault(zone, []).append(dns.rdata.from_text("IN", "DS", a["ds"]))
    return out


def load_anchors(path: str | Path) -> Anchors:
    """Read DS and/or DNSKEY records in zone-file syntax (absolute owner names)."""
    # Anchor files usually carry no TTL (root.ds, dsset-* files): give them one.
    text = "$TTL 3600\n" + Path(path).read_text(encoding="utf-8")
    zone = dns.zone.from_text(text, origin=dns.name.root, relativize=False, check_origin=False)
    out: Anchors = {}
    for name, node in zone.nodes.items():
        for rds in node.rdatasets:
            if rds.rdtype in (dns.rdatatype.DS, dns.rdatatype.DNSKEY):
                out.setdefault(name, []).extend(rds)
    return out


def anchors_from_options(options: dict[str, Any]) -> Anchors:
    path = options.get("dnssec_trust_anchors")
    return load_anchors(path) if path else builtin_anchors()


@dataclass
class ZoneKeys:
    zone: dns.name.Name
    status: str
    keys: dns.rrset.RRset | None = None
    reason: str | None = None


def _ds_matches(zone: dns.name.Name, key: dns.rdata.Rdata, ds: dns.rdata.Rdata) -> bool:
    if key.algorithm != ds.algorithm or dns.dnssec.key_id(key) != ds.key_tag:
        return False
    try:
        return dns.dnssec.make_ds(zone, key, ds.digest_type) == ds
    except (dns.dnssec.UnsupportedAlgorithm, ValueError):
        return False


class Validator:
    """Validates lookups made through one DnsClient against a set of trust anchors."""

    def __init__(self, client: DnsClient, anchors: Anchors, *, now: float | None = None) -> None:
        self.client = client
        self.anchors = anchors
        self.now = now
        self._zone_keys: dict[dns.name.Name, ZoneKeys] = {}
        self._zone_of: dict[dns.name.Name, dns.name.Name | None] = {}

    # -- zone cuts -------------------------------------------------------------------------
    async def zone_for(self, name: str | dns.name.Name) -> dns.name.Name | None:
        """The apex of the zone holding ``name``, found with SOA questions (None if DNS fails)."""
        qname = name if isinstance(name, dns.name.Name) else dns.name.from_text(name)
        if qname in self._zone_of:
            return self._zone_of[qname]
        candidate = qname
        result: dns.name.Name | None = None
        while True:
            lk = await self.client.query(candidate, "SOA")
            if lk.ok and lk.rrset is not None:
                result = lk.rrset.name
                break
            if lk.response is not None:
                soa = [r for r in lk.response.authority if r.rdtype == dns.rdatatype.SOA]
                if soa and qname.is_subdomain(soa[0].name):
                    result = soa[0].name
                    break
            if candidate == dns.name.root:
                break
            candidate = candidate.parent()
        self._zone_of[qname] = result
        return result

    # -- keys ------------------------------------------------------------------------------
    async def zone_keys(self, zone: dns.name.Name) -> ZoneKeys:
        if zone in self._zone_keys:
            return self._zone_keys[zone]
        zk = await self._zone_keys_uncached(zone)
        self._zone_keys[zone] = zk
        return zk

    async def _validated_dnskeys(self, zone: dns.name.Name, trusted: list[dns.rdata.Rdata]) -> ZoneKeys:
        """Fetch the zone's DNSKEY RRset and check it is signed by one of the ``trusted`` keys."""
        lk = await self.client.query(zone, "DNSKEY")
        if lk.failed:
            return ZoneKeys(zone, INDETERMINATE, reason=f"DNSKEY {zone}: {lk.status}")
        if not lk.ok or lk.rrset is None:
            return ZoneKeys(zone, BOGUS, reason=f"DS published for {zone} but no DNSKEY")
        if lk.rrsigs is None:
            return ZoneKeys(zone, BOGUS, reason=f"DNSKEY {zone} is not signed")
        anchor_keys = dns.rrset.RRset(zone, dns.rdataclass.IN, dns.rdatatype.DNSKEY)
        for k in trusted:
            anchor_keys.add(k)
        try:
            dns.dnssec.validate(lk.rrset, lk.rrsigs, {zone: anchor_keys}, now=self.now)
        except dns.dnssec.ValidationFailure as exc:
            return ZoneKeys(zone, BOGUS, reason=f"DNSKEY {zone}: {exc}")
        return ZoneKeys(zone, SECURE, keys=lk.rrset)

    async def _zone_keys_uncached(self, zone: dns.name.Name) -> ZoneKeys:
        if zone in self.anchors:
            lk = await self.client.query(zone, "DNSKEY")
            if lk.failed:
                return ZoneKeys(zone, INDETERMINATE, reason=f"DNSKEY {zone}: {lk.status}")
            keys = list(lk.rrset) if lk.rrset is not None else []
            trusted = []
            for a in self.anchors[zone]:
                if a.rdtype == dns.rdatatype.DNSKEY:
                    trusted.append(a)
                else:
                    trusted.extend(k for k in keys if _ds_matches(zone, k, a))
            if not trusted:
                return ZoneKeys(zone, BOGUS, reason=f"no DNSKEY of {zone} matches the trust anchor")
            return await self._validated_dnskeys(zone, trusted)
        if zone == dns.name.root:
            return ZoneKeys(zone, INDETERMINATE, reason="no trust anchor covers this name")
        parent_zone = await self.zone_for(zone.parent())
        if parent_zone is None:
            return ZoneKeys(zone, INDETERMINATE, reason=f"cannot find the parent zone of {zone}")
        parent = await self.zone_keys(parent_zone)
        if parent.status != SECURE:
            return ZoneKeys(zone, parent.status, reason=parent.reason)
        ds = await self.client.query(zone, "DS")
        if ds.failed:
            return ZoneKeys(zone, INDETERMINATE, reason=f"DS {zone}: {ds.status}")
        if not ds.ok or ds.rrset is None:
            proof = self._denial_proven(ds, parent, zone, dns.rdatatype.DS)
            if proof:
                return ZoneKeys(zone, INSECURE, reason=f"{zone} has no DS record (unsigned delegation)")
            return ZoneKeys(zone, BOGUS, reason=f"no DS for {zone} and no signed proof of its absence")
        if ds.rrsigs is None:
            return ZoneKeys(zone, BOGUS, reason=f"DS {zone} is not signed")
        try:
            dns.dnssec.validate(ds.rrset, ds.rrsigs, {parent_zone: parent.keys}, now=self.now)
        except dns.dnssec.ValidationFailure as exc:
            return ZoneKeys(zone, BOGUS, reason=f"DS {zone}: {exc}")
        dnskey = await self.client.query(zone, "DNSKEY")
        keys = list(dnskey.rrset) if dnskey.rrset is not None else []
        supported = [d for d in ds.rrset if _alg_supported(d.algorithm)]
        if not supported:
            # RFC 4035 5.2: DS with only unknown algorithms makes the zone insecure, not bogus.
            return ZoneKeys(zone, INSECURE, reason=f"DS {zone} uses only unsupported algorithms")
        trusted = [k for k in keys for d in supported if _ds_matches(zone, k, d)]
        if not trusted:
            if dnskey.failed:
                return ZoneKeys(zone, INDETERMINATE, reason=f"DNSKEY {zone}: {dnskey.status}")
            return ZoneKeys(zone, BOGUS, reason=f"no DNSKEY of {zone} matches its DS record")
        return await self._validated_dnskeys(zone, trusted)

    # -- denial of existence ---------------------------------------------------------------
    def _denial_proven(self, lk: Lookup, zk: ZoneKeys, qname: dns.name.Name, rdtype: int) -> bool:
        """A signed NSEC/NSEC3 in the authority section that denies ``rdtype`` at ``qname``.

        NODATA: the matching NSEC (or NSEC3 whose hash equals the name) lacks the type.
        NXDOMAIN / opt-out: a valid, signed NSEC3 with the opt-out flag, or an NSEC covering
        the name, is accepted (closest-encloser proofs are not fully checked).
        """
        if lk.response is None or zk.keys is None:
            return False
        auth = lk.response.authority
        sigs = {(r.name, r.covers): r for r in auth if r.rdtype == dns.rdatatype.RRSIG}
        for rr in auth:
            if rr.rdtype not in (dns.rdatatype.NSEC, dns.rdatatype.NSEC3):
                continue
            sig = sigs.get((rr.name, rr.rdtype))
            if sig is None:
                continue
            try:
                dns.dnssec.validate(rr, sig, {zk.zone: zk.keys}, now=self.now)
            except dns.dnssec.ValidationFailure:
                continue
            for rd in rr:
                if rr.rdtype == dns.rdatatype.NSEC:
                    if rr.name == qname and not _bitmap_has(rd, rdtype):
                        return True
                    if _nsec_covers(rr.name, rd.next, qname):
                        return True
                else:
                    try:
                        h = dns.dnssec.nsec3_hash(qname, rd.salt, rd.iterations, rd.algorithm)
                    except (ValueError, dns.dnssec.UnsupportedAlgorithm):
                        continue
                    if rr.name.labels[0].decode().upper() == h and not _bitmap_has(rd, rdtype):
                        return True
                    if rd.flags & 1:  # opt-out: unsigned delegations may be skipped
                        return True
        return False

    # -- RRsets ----------------------------------------------------------------------------
    async def status_of(self, lk: Lookup) -> tuple[str, str | None]:
        """DNSSEC status of a lookup's answer (or of its absence). Returns (status, reason)."""
        if lk.failed:
            return INDETERMINATE, f"lookup failed: {lk.status}"
        # Every CNAME on the way must be secure too.
        for cname, csig in lk.cnames:
            st, why = await self._rrset_status(cname, csig)
            if st != SECURE:
                return st, why
        if lk.ok and lk.rrset is not None:
            return await self._rrset_status(lk.rrset, lk.rrsigs)
        target = lk.cnames[-1][0][0].target if lk.cnames else dns.name.from_text(lk.name)
        zone = await self.zone_for(target)
        if zone is None:
            return INDETERMINATE, f"cannot find the zone of {target}"
        zk = await self.zone_keys(zone)
        if zk.status != SECURE:
            return zk.status, zk.reason
        if self._denial_proven(lk, zk, target, dns.rdatatype.from_text(lk.rdtype)):
            return SECURE, None
        return BOGUS, f"{lk.status} for {target} {lk.rdtype} without a signed denial of existence"

    async def _rrset_status(self, rrset: dns.rrset.RRset, rrsigs: dns.rrset.RRset | None) -> tuple[str, str | None]:
        if rrsigs is not None and len(rrsigs):
            signer = rrsigs[0].signer
        else:
            signer = await self.zone_for(rrset.name)
            if signer is None:
                return INDETERMINATE, f"cannot find the zone of {rrset.name}"
        zk = await self.zone_keys(signer)
        if zk.status != SECURE:
            return zk.status, zk.reason
        if rrsigs is None:
            return BOGUS, f"{rrset.name} {dns.rdatatype.to_text(rrset.rdtype)} is not signed in signed zone {signer}"
        try:
            dns.dnssec.validate(rrset, rrsigs, {signer: zk.keys}, now=self.now)
        except dns.dnssec.ValidationFailure as exc:
            return BOGUS, f"{rrset.name} {dns.rdatatype.to_text(rrset.rdtype)}: {exc}"
        return SECURE, None

    async def zone_status(self, name: str | dns.name.Name) -> tuple[str, str | None, str | None]:
        """(status, reason, zone apex) of the zone that holds ``name``."""
        zone = await self.zone_for(name)
        if zone is None:
            return INDETERMINATE, "cannot find the zone (DNS failure)", None
        zk = await self.zone_keys(zone)
        return zk.status, zk.reason, zone.to_text()


def _alg_supported(alg: int) -> bool:
    # What dnspython+cryptography can verify: RSA/SHA-1/256/512, ECDSA P-256/P-384, Ed25519/Ed448.
    return int(alg) in (5, 7, 8, 10, 13, 14, 15, 16)


def _bitmap_has(rd: Any, rdtype: int) -> bool:
    for window, bitmap in rd.windows:
        if window == rdtype // 256:
            idx = (rdtype % 256)
            byte, bit = idx // 8, idx % 8
            if byte < len(bitmap) and bitmap[byte] & (0x80 >> bit):
                return True
    return False


def _nsec_covers(owner: dns.name.Name, nxt: dns.name.Name, qname: dns.name.Name) -> bool:
    if owner < nxt:
        return owner < qname < nxt
    return qname > owner or qname < nxt  # the last NSEC wraps to the apex

