"""Hostile input, one suite: servers that misbehave on the wire and files that are malformed.

Every test asserts what the issue asks of hostile input: finished within the deadline plus a
small margin, the documented exit code, a valid report when one is written, no traceback, and
other endpoints of the same run unaffected.
"""
