"""The real-mail-server lab: Postfix, Exim and OpenSMTPD from Debian 12, configured and run by the tests.

Entry points: `tests.lab.mta` (start/stop/restart instances), `tests.lab.fixtures` (pytest fixtures),
`tests.lab.certs` (the lab PKI). Install the servers with `.ci/install-lab.sh`.
"""
