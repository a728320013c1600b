"""Reporters: render the canonical report model (JSON) as JSON, SARIF, HTML or text."""
