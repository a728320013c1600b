"""smtpaudit: security hardening audit scanner for SMTP servers.

Probes observe, rules judge, reporters render. See README.md.
"""

__version__ = "0.1.0"
