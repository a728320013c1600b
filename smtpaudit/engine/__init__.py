"""The rule engine: loading and validating rules, evaluating conditions, planning, scoring. No I/O to servers."""
