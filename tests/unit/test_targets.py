"""Target parsing: every accepted form, and precise errors before any connection."""

import pytest

from smtpaudit.targets import Mode, Role, TargetError, dedupe, parse_target, read_targets_file


@pytest.mark.parametrize(
    "spec, host, port, mode, role",
    [
        # A bare name is a mail domain (its MX hosts are scanned); host:25 is written host:25.
        ("mx.example.org", "mx.example.org", 25, Mode.STARTTLS, Role.DOMAIN),
        ("MX.Example.ORG.", "mx.example.org", 25, Mode.STARTTLS, Role.DOMAIN),
        ("domain:Example.ORG", "example.org", 25, Mode.STARTTLS, Role.DOMAIN),
        ("mx.example.org:25", "mx.example.org", 25, Mode.STARTTLS, Role.MX),
        ("mx.example.org:587", "mx.example.org", 587, Mode.STARTTLS, Role.SUBMISSION),
        ("mx.example.org:465", "mx.example.org", 465, Mode.IMPLICIT, Role.SUBMISSION),
        ("192.0.2.1:2525", "192.0.2.1", 2525, Mode.STARTTLS, Role.MX),
        ("[2001:db8::1]:25", "2001:db8::1", 25, Mode.STARTTLS, Role.MX),
        ("2001:db8::1", "2001:db8::1", 25, Mode.STARTTLS, Role.MX),
        ("smtp://mx.example.org", "mx.example.org", 25, Mode.STARTTLS, Role.MX),
        ("smtp://mx.example.org:2525/", "mx.example.org", 2525, Mode.STARTTLS, Role.MX),
        ("submission://mail.example.org", "mail.example.org", 587, Mode.STARTTLS, Role.SUBMISSION),
        ("smtps://mail.example.org", "mail.example.org", 465, Mode.IMPLICIT, Role.SUBMISSION),
        ("smtps://[::1]:10465", "::1", 10465, Mode.IMPLICIT, Role.SUBMISSION),
    ],
)
def test_accepted_forms(spec, host, port, mode, role):
    ep = parse_target(spec)
    assert (ep.host, ep.port, ep.mode, ep.role) == (host, port, mode, role)


def test_ids_and_urls_bracket_ipv6():
    ep = parse_target("[2001:db8::1]:25")
    assert ep.id == "[2001:db8::1]:25"
    assert ep.url == "smtp://[2001:db8::1]:25"
    assert parse_target("smtps://mail.example.org").url == "smtps://mail.example.org:465"


def test_role_override():
    assert parse_target("mx.example.org:25", role=Role.SUBMISSION).role is Role.SUBMISSION


@pytest.mark.parametrize(
    "spec, fragment",
    [
        ("", "empty target"),
        ("http://example.org", "unknown scheme 'http'"),
        ("mx.example.org:0", "out of range"),
        ("mx.example.org:99999", "out of range"),
        ("mx.example.org:smtp", "not a number"),
        ("[2001:db8::1", "unterminated"),
        ("[not-v6]:25", "not an IPv6 address"),
        ("2001:db8::1:25:x", "must be bracketed"),
        ("bad_host!.example", "not a valid host name"),
        ("smtp://user@mx.example.org", "no user, path or query"),
        ("mx.example.org 25", "cannot contain spaces"),
    ],
)
def test_rejected_with_clear_message(spec, fragment):
    with pytest.raises(TargetError) as err:
        parse_target(spec)
    assert fragment in str(err.value)


def test_targets_file_comments_lines_and_errors(tmp_path):
    f = tmp_path / "fleet.txt"
    f.write_text("# fleet\nmx1.example.org:25\n\nsmtps://mail.example.org  # submission\nmx1.example.org:25\n")
    eps = read_targets_file(f)
    assert [(e.id, e.origin_line) for e in eps] == [("mx1.example.org:25", 2), ("mail.example.org:465", 4), ("mx1.example.org:25", 5)]
    assert [e.id for e in dedupe(eps)] == ["mx1.example.org:25", "mail.example.org:465"]
    f.write_text("mx1.example.org\nhttp://nope.example\n")
    with pytest.raises(TargetError, match=r"fleet.txt: line 2: .*unknown scheme"):
        read_targets_file(f)
    with pytest.raises(TargetError, match="cannot read targets file"):
        read_targets_file(tmp_path / "missing.txt")
