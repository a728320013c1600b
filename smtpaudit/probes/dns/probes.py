"""The DNS probe classes: glue between the probe contract and the DNS modules.

``dns.domain``   per domain: MX set, MX addresses, SPF, DMARC, TLS-RPT, DNSSEC of domain and MX zones
``dns.mta_sts``  per domain: the _mta-sts record, the HTTPS policy, MX coverage
``dns.host``     per MX endpoint: addresses, PTR and forward-confirmed reverse DNS, DNSSEC of its zone
``dns.dane``     per MX endpoint: TLSA at _25._tcp.<host> (port-specific), its DNSSEC status, and
                 matching against the chain the TLS probe saw (or one fetched here)

Domain probes take the domain from ``endpoint.domain`` when the target model has it, else from
``endpoint.host``. Options (``ctx.options``): ``resolver`` ("IP[:PORT]"), ``dns_timeout``,
``dnssec_trust_anchors`` (file), ``mta_sts_ca_file``, ``mta_sts_port``, ``dnssec_now`` (tests),
``dane_fetch_chain`` (default true: handshake ourselves when no TLS probe facts exist).
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from typing import TYPE_CHECKING, Any, Mapping

from smtpaudit.probes.base import ProbeContext, ProbeResult, TranscriptLine
from smtpaudit.probes.dns.spec import ResolverSpecError, configured_nameservers
from smtpaudit.targets import Endpoint

if TYPE_CHECKING:
    from smtpaudit.probes.dns.dnssec import Validator
    from smtpaudit.probes.dns.resolver import DnsClient, Lookup

# The DNS modules (dnspython, and cryptography for DANE) are imported by the methods that ask
# questions: the registry loads these classes on every scan, and a scan of address literals
# asks no DNS question at all (see ``without_dns``).

MAX_TEXT = 2000  # stored record text is cut to this many characters
ANSWERED = ("ok", "nxdomain", "nodata")  # lookup statuses that are an answer (the rest: no answer)


def domain_of(endpoint: Endpoint) -> str:
    return (getattr(endpoint, "domain", None) or endpoint.host).rstrip(".").lower()


def _clip(texts: list[str]) -> list[str]:
    return [t[:MAX_TEXT] for t in texts]


def _ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def _local_literal(host: str) -> bool:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_link_local or ip.is_unspecified


class _DnsProbe:
    name = ""
    intrusive = False
    after: tuple[str, ...] = ()

    async def run(self, endpoint: Endpoint, ctx: ProbeContext, prior: Mapping[str, Any]) -> ProbeResult:
        result = ProbeResult(probe=self.name)
        start = time.monotonic()
        local = self.without_dns(endpoint)
        if local is not None:
            try:
                configured_nameservers(ctx.options)  # a bad resolver option is an error either way
            except ResolverSpecError as exc:
                result.status, result.error_reason, result.error_message = "error", "config", str(exc)
                return result
            result.facts.update(local)
            result.duration = time.monotonic() - start
            return result
        from smtpaudit.probes.dns.resolver import DnsClient

        try:
            client = DnsClient.from_options(ctx.options)
        except ResolverSpecError as exc:
            result.status, result.error_reason, result.error_message = "error", "config", str(exc)
            return result
        try:
            await asyncio.wait_for(self.observe(endpoint, ctx, prior, client, result.facts),
                                   ctx.timeouts.endpoint)
        except asyncio.TimeoutError:
            result.status, result.error_reason = "error", "read_timeout"
            result.error_message = f"{self.name} did not finish within {ctx.timeouts.endpoint}s"
        except Exception as exc:  # a bug or hostile data must not stop the scan
            result.status, result.error_reason = "error", "internal"
            result.error_message = f"{type(exc).__name__}: {exc}"
        result.transcript = [TranscriptLine(0.0, "*", "DNS " + line) for line in client.log[:500]]
        result.connections = client.queries
        result.duration = time.monotonic() - start
        return result

    def without_dns(self, endpoint: Endpoint) -> dict[str, Any] | None:
        """The facts when the target needs no DNS question at all (an address literal), else None."""
        return None

    async def observe(self, endpoint: Endpoint, ctx: ProbeContext, prior: Mapping[str, Any],
                      client: DnsClient, facts: dict[str, Any]) -> None:
        raise NotImplementedError


def _validator(client: DnsClient, ctx: ProbeContext) -> Validator:
    from smtpaudit.probes.dns.dnssec import Validator, anchors_from_options

    now = ctx.options.get("dnssec_now")
    return Validator(client, anchors_from_options(ctx.options), now=float(now) if now is not None else None)


def _records(lk: Lookup, pick: Any) -> list[str]:
    return [t for t in lk.txt_strings() if pick(t)]


def _lookup_status(lk: Lookup, records: list[str]) -> str:
    """TXT lookups: 'ok' only when a record of the wanted kind is there; else nodata/nxdomain/..."""
    if lk.ok and not records:
        return "nodata"
    return lk.status


class DnsDomainProbe(_DnsProbe):
    name = "dns.domain"

    async def observe(self, endpoint, ctx, prior, client, facts):
        from smtpaudit.probes.dns import mx
        from smtpaudit.probes.dns.dnssec import INDETERMINATE, SECURE

        domain = domain_of(endpoint)
        validator = _validator(client, ctx)
        facts["dns.domain"] = domain
        mxset = await mx.discover(client, domain)
        facts["dns.mx.lookup_status"] = mxset.lookup.status
        facts["dns.mx.records"] = mxset.records
        facts["dns.mx.null"] = mxset.null
        if not mxset.unresolved:
            # Else no MX and the implicit-MX check got no answer: the hosts (none, or the domain
            # itself) are unknown, so both facts stay absent and dns-mx-missing is not evaluated.
            facts["dns.mx.implicit"] = mxset.implicit
            facts["dns.mx.hosts"] = mxset.hosts
        facts["dns.mx.errors"] = mxset.errors
        addrs = await asyncio.gather(*(mx.addresses(client, h) for h in mxset.hosts))
        facts["dns.mx.addresses"] = {a.host: a.to_json() for a in addrs}
        bare = [a for a in addrs if not (a.ipv4 or a.ipv6)]
        # Only an answered question (NXDOMAIN/NODATA) shows a host without address; a timeout may
        # hide one: then the list is kept only when it already holds a real finding, else absent.
        without = [a.host for a in bare if a.status in ANSWERED]
        if without or len(without) == len(bare):
            facts["dns.mx.hosts_without_address"] = without
        facts["dns.mx.cname_hosts"] = [a.host for a in addrs if a.cname and not mxset.implicit]
        facts["dns.mx.ipv6_hosts"] = [a.host for a in addrs if a.ipv6]

        st, why, _zone = await validator.zone_status(domain)
        # "indeterminate" (a lookup without answer, no chain to a trust anchor) proves neither a
        # signed nor an unsigned zone: the verdict facts stay absent, their rules not evaluated.
        if st != INDETERMINATE:
            facts["dns.dnssec.domain"] = st
        facts["dns.dnssec.domain_reason"] = why
        mx_status: dict[str, str] = {}
        for host in mxset.hosts:
            mx_status[host] = (await validator.zone_status(host))[0]
        facts["dns.dnssec.mx_zones"] = mx_status
        not_secure = [h for h, s in mx_status.items() if s not in (SECURE, INDETERMINATE)]
        if not_secure or INDETERMINATE not in mx_status.values():
            facts["dns.dnssec.mx_not_secure"] = not_secure
        if mxset.lookup.ok:
            facts["dns.dnssec.mx_rrset"] = (await validator.status_of(mxset.lookup))[0]
        else:
            facts["dns.dnssec.mx_rrset"] = None

        await self._spf(client, domain, facts)
        await self._dmarc(client, domain, facts)
        await self._tlsrpt(client, domain, facts)

    async def _spf(self, client: DnsClient, domain: str, facts: dict[str, Any]) -> None:
        from smtpaudit.probes.dns import spf

        lk = await client.query(domain, "TXT")
        records = _records(lk, spf.is_spf)
        facts["dns.spf.lookup_status"] = _lookup_status(lk, records)
        facts["dns.spf.records"] = _clip(records)
        if lk.failed:
            # No answer (timeout, SERVFAIL): nothing is known about the record. The facts its rules
            # read stay absent ("not evaluated"); a null count or [] would read as a pass.
            return
        facts["dns.spf.record_count"] = len(records)
        if len(records) != 1:
            for k in ("record", "all", "lookups", "void_lookups"):
                facts[f"dns.spf.{k}"] = None
            facts["dns.spf.syntax_errors"] = []
            facts["dns.spf.lookup_terms"] = []
            facts["dns.spf.permerrors"] = []
            facts["dns.spf.unresolved"] = []
            return
        parsed = spf.parse(records[0])
        ev = await spf.evaluate(client, domain, parsed)
        facts["dns.spf.record"] = records[0][:MAX_TEXT]
        facts["dns.spf.syntax_errors"] = parsed.errors
        facts["dns.spf.all"] = ev.all_qualifier
        facts["dns.spf.lookups"] = ev.lookups
        facts["dns.spf.void_lookups"] = ev.void_lookups
        facts["dns.spf.lookup_terms"] = ev.lookup_terms[:100]
        facts["dns.spf.permerrors"] = ev.permerrors[:50]
        facts["dns.spf.unresolved"] = ev.unresolved[:50]

    async def _dmarc(self, client: DnsClient, domain: str, facts: dict[str, Any]) -> None:
        from smtpaudit.probes.dns import dmarc

        lk = await client.query(f"_dmarc.{domain}", "TXT")
        records = _records(lk, dmarc.is_dmarc)
        facts["dns.dmarc.lookup_status"] = _lookup_status(lk, records)
        facts["dns.dmarc.records"] = _clip(records)
        if not lk.failed:
            facts["dns.dmarc.record_count"] = len(records)
        # The first call parses the Public Suffix List (~40 ms): off the event loop.
        org = await asyncio.to_thread(dmarc.organizational_domain, domain)
        facts["dns.dmarc.org_domain"] = org
        facts["dns.dmarc.org_records"] = []
        # RFC 7489 6.6.3: no record at the domain -> the organizational domain's, with sp.
        source: str | None = None
        applied: list[str] = []
        if lk.failed:
            source = None
        elif len(records) == 1:
            source, applied = "domain", records
        elif len(records) > 1:
            source = "multiple"  # step 6: several records -> DMARC is not applied (no fallback)
        elif org is None or org == domain:
            source = "none"
        else:
            olk = await client.query(f"_dmarc.{org}", "TXT")
            org_records = _records(olk, dmarc.is_dmarc)
            facts["dns.dmarc.org_records"] = _clip(org_records)
            if olk.failed:
                source = None
            elif len(org_records) == 1:
                source, applied = "organizational", org_records
            else:
                source = "multiple" if org_records else "none"
        if source is None:
            # The record (or the organizational domain's) got no answer: the DMARC verdict facts
            # stay absent ("not evaluated"); nulls would pass dmarc-missing and the rest.
            return
        facts["dns.dmarc.source"] = source
        d = dmarc.parse(applied[0]) if applied else None
        facts["dns.dmarc.record"] = applied[0][:MAX_TEXT] if d else None
        facts["dns.dmarc.p"] = d.p if d else None
        facts["dns.dmarc.sp"] = (d.sp or d.p) if d else None
        facts["dns.dmarc.policy"] = d.policy_for(subdomain=source == "organizational") if d else None
        facts["dns.dmarc.pct"] = d.pct if d else None
        facts["dns.dmarc.rua"] = d.rua if d else []
        facts["dns.dmarc.ruf"] = d.ruf if d else []
        facts["dns.dmarc.syntax_errors"] = d.errors if d else []
        facts["dns.dmarc.ignored_tags"] = d.ignored_tags[:20] if d else []

    async def _tlsrpt(self, client: DnsClient, domain: str, facts: dict[str, Any]) -> None:
        from smtpaudit.probes.dns import tlsrpt

        lk = await client.query(f"_smtp._tls.{domain}", "TXT")
        records = _records(lk, tlsrpt.is_tlsrpt)
        facts["tlsrpt.lookup_status"] = _lookup_status(lk, records)
        facts["tlsrpt.records"] = _clip(records)
        if lk.failed:
            return  # no answer: the facts its rules read stay absent (as for SPF above)
        facts["tlsrpt.record_count"] = len(records)
        t = tlsrpt.parse(records[0]) if len(records) == 1 else None
        facts["tlsrpt.rua"] = t.rua if t else []
        facts["tlsrpt.syntax_errors"] = t.errors if t else []


class MtaStsProbe(_DnsProbe):
    name = "dns.mta_sts"
    after = ("dns.domain",)

    async def observe(self, endpoint, ctx, prior, client, facts):
        from smtpaudit.probes.dns import mtasts, mx

        domain = domain_of(endpoint)
        lk = await client.query(f"_mta-sts.{domain}", "TXT")
        records = _records(lk, mtasts.is_sts_txt)
        facts["mta_sts.txt.lookup_status"] = _lookup_status(lk, records)
        facts["mta_sts.txt.records"] = _clip(records)
        if lk.failed:
            return  # no answer: the facts its rules read stay absent (as for SPF above)
        facts["mta_sts.txt.record_count"] = len(records)
        ident, errors = mtasts.parse_txt(records[0]) if len(records) == 1 else (None, [])
        facts["mta_sts.txt.id"] = ident
        facts["mta_sts.txt.errors"] = errors
        hosts = prior.get("dns.mx.hosts")
        if hosts is None:
            hosts = (await mx.discover(client, domain)).hosts
        policy_host = f"mta-sts.{domain}"
        # RFC 8461 3.3: fetch the policy only when a TXT record announces one.
        if len(records) != 1:
            for k in ("url", "fetched", "fetch_error", "fetch_message", "http_status", "content_type",
                      "version", "mode", "max_age", "text"):
                facts[f"mta_sts.policy.{k}"] = None
            facts["mta_sts.policy.mx"] = []
            facts["mta_sts.policy.errors"] = []
            facts["mta_sts.mx_uncovered"] = []
            return
        addrs = await mx.addresses(client, policy_host)
        fetch = await mtasts.fetch_policy(
            policy_host, addrs.ipv4 + addrs.ipv6,
            port=int(ctx.options.get("mta_sts_port", 443)),
            ca_file=ctx.options.get("mta_sts_ca_file"),
            timeout=ctx.timeouts.connect + ctx.timeouts.command,
        )
        if fetch.error == "dns" and addrs.status != "ok":
            fetch.message = f"{policy_host}: {addrs.status}"
        facts.update(mtasts.policy_facts(fetch))
        pol = mtasts.parse_policy(fetch.body) if fetch.body is not None and fetch.error is None else None
        facts["mta_sts.policy.text"] = fetch.body[:MAX_TEXT] if fetch.body is not None else None
        facts["mta_sts.policy.version"] = pol.version if pol else None
        facts["mta_sts.policy.mode"] = pol.mode if pol else None
        facts["mta_sts.policy.mx"] = pol.mx[:100] if pol else []
        facts["mta_sts.policy.max_age"] = pol.max_age if pol else None
        facts["mta_sts.policy.errors"] = pol.errors if pol else []
        facts["mta_sts.mx_uncovered"] = mtasts.uncovered(pol.mx, list(hosts), pol.mode) if pol else []


class DnsHostProbe(_DnsProbe):
    name = "dns.host"
    after = ("smtp.session",)

    def without_dns(self, endpoint):
        host = endpoint.host.rstrip(".").lower()
        if not _local_literal(host):
            return None
        # A loopback/link-local literal has no public DNS: asking would only leak the query
        # to whatever resolver the machine has.
        return {
            "dns.host.name": host, "dns.host.address_status": "ok", "dns.host.addresses": [host],
            "dns.host.ptr": {}, "dns.host.ptr_missing": [], "dns.host.fcrdns_failed": [], "dns.host.ptr_names": [],
            "dns.host.ptr_matches_host": None, "dns.host.ptr_matches_banner": None, "dns.host.zone": None,
            "dns.host.dnssec": None, "dns.host.dnssec_reason": "local address: public DNS does not apply",
        }

    async def observe(self, endpoint, ctx, prior, client, facts):
        from smtpaudit.probes.dns import mx

        host = endpoint.host.rstrip(".").lower()
        validator = _validator(client, ctx)
        a = await mx.addresses(client, host)
        ips = a.ipv4 + a.ipv6
        facts["dns.host.name"] = host
        facts["dns.host.address_status"] = a.status
        facts["dns.host.addresses"] = ips
        ptr: dict[str, list[str]] = {}
        missing: list[str] = []
        unconfirmed: list[str] = []
        # Questions that got no answer (timeout, SERVFAIL) prove neither a record nor its absence:
        # a list they leave incomplete is kept only when it already holds a finding, else absent.
        ptr_unknown = a.status not in ANSWERED
        fcrdns_unknown = ptr_unknown
        for ip in ips:
            lk = await client.query(mx.reverse_name(ip), "PTR")
            names = [r.target.to_text().rstrip(".").lower() for r in lk.rrset] if lk.ok and lk.rrset else []
            ptr[ip] = names[:10]
            if lk.failed:
                ptr_unknown = fcrdns_unknown = True
                continue
            if not names:
                missing.append(ip)
                continue
            # FCrDNS: some PTR name resolves back to this very address.
            back = await asyncio.gather(*(mx.addresses(client, n) for n in names[:10]))
            if not any(ip in (b.ipv4 + b.ipv6) for b in back):
                if any(b.status not in ANSWERED for b in back):
                    fcrdns_unknown = True  # the name that would confirm it may be the unanswered one
                else:
                    unconfirmed.append(ip)
        facts["dns.host.ptr"] = ptr
        if missing or not ptr_unknown:
            facts["dns.host.ptr_missing"] = missing
        if unconfirmed or not fcrdns_unknown:
            facts["dns.host.fcrdns_failed"] = unconfirmed
        names_all = sorted({n for v in ptr.values() for n in v})
        facts["dns.host.ptr_names"] = names_all
        facts["dns.host.ptr_matches_host"] = (host in names_all) if names_all else None
        banner = prior.get("smtp.greeting.hostname") or prior.get("smtp.ehlo.hostname")
        matches = banner.rstrip(".").lower() in names_all if isinstance(banner, str) and names_all else None
        if matches or not ptr_unknown:  # an unanswered PTR may hold the banner's name
            facts["dns.host.ptr_matches_banner"] = matches
        st, why, zone = await validator.zone_status(host)
        facts["dns.host.zone"] = zone
        facts["dns.host.dnssec"] = st
        facts["dns.host.dnssec_reason"] = why


class DaneProbe(_DnsProbe):
    name = "dns.dane"
    # Reads tls.cert.chain_pem when present; add the TLS probe's name here once it is registered,
    # so it runs first (until then the chain comes from this probe's own STARTTLS handshake).
    after = ("smtp.session", "tls.cert")

    def without_dns(self, endpoint):
        if not _ip_literal(endpoint.host.rstrip(".").lower()):
            return None
        # TLSA records hang off host names (RFC 7672 section 2.2); an address has none to look up.
        return {
            "dane.tlsa.name": None, "dane.tlsa.lookup_status": "not_applicable", "dane.tlsa.records": [],
            "dane.tlsa.present": False, "dane.tlsa.usages": [], "dane.tlsa.pkix_usages": [],
            "dane.tlsa.dnssec": None, "dane.tlsa.dnssec_reason": "target is an IP address", "dane.tlsa.zone_dnssec": None,
            "dane.chain.source": None, "dane.chain.error": None, "dane.match.any": None, "dane.match.unmatched": None,
            "dane.cert.days_left": None, "dane.rollover_ready": None, "dane.match.results": [],
        }

    async def observe(self, endpoint, ctx, prior, client, facts):
        from smtpaudit.probes.dns import dane, mx

        host = endpoint.host.rstrip(".").lower()
        validator = _validator(client, ctx)
        # RFC 7672: an MX is always reached on port 25, whatever port this scan uses for it.
        port = 25 if str(endpoint.role) == "mx" else endpoint.port
        qname = f"_{port}._tcp.{host}"
        lk = await client.query(qname, "TLSA")
        records = [dane.record_dict(r.usage, r.selector, r.mtype, r.cert) for r in lk.rrset] if lk.ok and lk.rrset else []
        facts["dane.tlsa.name"] = qname
        facts["dane.tlsa.lookup_status"] = lk.status
        if lk.failed:
            # No answer (timeout, SERVFAIL): whether TLSA records exist is unknown, so the DANE
            # facts rules read stay absent ("not evaluated"); present=False would pass them all.
            return
        facts["dane.tlsa.records"] = records[:50]
        facts["dane.tlsa.present"] = bool(records)
        facts["dane.tlsa.usages"] = sorted({r["usage"] for r in records})
        facts["dane.tlsa.pkix_usages"] = sorted({r["usage"] for r in records if r["usage"] in (0, 1)})
        st, why = await validator.status_of(lk)
        facts["dane.tlsa.dnssec"] = st
        facts["dane.tlsa.dnssec_reason"] = why
        facts["dane.tlsa.zone_dnssec"] = (await validator.zone_status(host))[0]
        match_keys = ("dane.chain.source", "dane.chain.error", "dane.match.any", "dane.match.unmatched",
                      "dane.cert.days_left", "dane.rollover_ready")
        for k in match_keys:
            facts[k] = None
        facts["dane.match.results"] = []
        if not records:
            return
        chain = prior.get("tls.cert.chain_pem")
        if chain:
            facts["dane.chain.source"] = "tls"
        elif ctx.options.get("dane_fetch_chain", True):
            facts["dane.chain.source"] = "handshake"
            # Connect to the address the configured DNS gives (the lab resolver, not the system's).
            addrs = await mx.addresses(client, host)
            target = endpoint.address or (addrs.ipv4 + addrs.ipv6 or [endpoint.host])[0]
            try:
                chain = await dane.fetch_chain(
                    target, endpoint.port, host, ehlo=ctx.ehlo_name, timeout=ctx.timeouts.tls,
                    starttls=str(endpoint.mode) == "starttls",
                )
            except Exception as exc:  # connection or TLS failure: a fact, not a crash
                facts["dane.chain.error"] = f"{type(exc).__name__}: {exc}"[:300]
                chain = None
        if not chain:
            return
        results = []
        for r in records:
            results.append({**r, "usage_name": dane.USAGES.get(r["usage"], "?"), "matched": dane.tlsa_matches(r, chain)})
        facts["dane.match.results"] = results
        usable = [r for r in results if r["usage"] in (2, 3)]
        facts["dane.match.any"] = any(r["matched"] for r in usable) if usable else False
        facts["dane.match.unmatched"] = sum(1 for r in results if not r["matched"])
        now = float(ctx.options.get("dnssec_now") or time.time())
        days = dane.cert_days_left(chain[0], now)
        facts["dane.cert.days_left"] = round(days, 1) if days is not None else None
        # Renewal-safe: a matching trust-anchor record survives a leaf change, and an unmatched
        # DANE-EE record is the published next key (RFC 7671 section 8.1 "current + next").
        facts["dane.rollover_ready"] = any(r["usage"] == 2 and r["matched"] for r in results) or any(
            r["usage"] == 3 and not r["matched"] for r in results)
