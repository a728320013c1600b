"""SMTP probes: the session (greeting, EHLO, STARTTLS, AUTH), VRFY/EXPN, and the client they share."""
