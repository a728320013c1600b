"""DNS-side observations of a mail domain: MX, SPF, DMARC, MTA-STS, TLS-RPT, DANE, DNSSEC, PTR.

Pure dnspython (plus ``ssl`` for the MTA-STS policy fetch and pyOpenSSL for a DANE fallback
handshake). Every lookup failure (SERVFAIL, timeout, NXDOMAIN, REFUSED) becomes a fact.
"""
