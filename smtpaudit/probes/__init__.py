"""Probes: the only code that touches the network. Each module observes and records facts."""
