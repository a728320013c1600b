"""`python -m smtpaudit` entry point."""

from smtpaudit.cli import main

raise SystemExit(main())
