"""smtpaudit's test suite (a package so helpers such as tests.lab can be imported)."""
