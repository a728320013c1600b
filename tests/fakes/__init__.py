"""In-process fake servers for edge and hostile cases (loopback only)."""
