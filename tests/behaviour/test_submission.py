"""The submission probe: TLS enforcement, AUTH requirement, credential checks that never leak the password."""

from __future__ import annotations

import json
from pathlib import Path

from smtpaudit.probes.smtp.submission import SubmissionProbe
from tests.behaviour.helpers import async_test, run_probe
from tests.fakes.certs import server_context
from tests.fakes.mta import FakeMta

PASSWORD = "s3cret-Passw0rd!"


@async_test
async def test_mx_gets_no_connection() -> None:
    async with FakeMta() as mta:
        result = await run_probe(SubmissionProbe, mta.port)
    assert result.facts["smtp.submission.checked"] is False and mta.connections == 0
    assert result.facts["smtp.submission.unauth_accepted"] is None


@async_test
async def test_hardened_submission(tmp_path: Path) -> None:
    mta = FakeMta(tls_context=server_context(tmp_path), require_tls_for_mail=True, require_auth=True,
                  auth_mechanisms=("PLAIN", "LOGIN"), auth_users={"alice": PASSWORD})
    async with mta:
        result = await run_probe(SubmissionProbe, mta.port, role="submission")
    f = result.facts
    assert result.status == "ok", result.error_message
    assert f["smtp.submission.mail_before_tls_code"] == 530 and f["smtp.submission.mail_before_tls_accepted"] is False
    assert f["smtp.submission.unauth_over_tls"] is True
    assert f["smtp.submission.unauth_refusal_code"] == 530 and f["smtp.submission.unauth_accepted"] is False
    assert f["smtp.submission.auth_tested"] is False and result.connections == 2
    assert "DATA" not in mta.all_commands


@async_test
async def test_submission_without_auth_requirement_and_plaintext_mail(tmp_path: Path) -> None:
    async with FakeMta(tls_context=server_context(tmp_path), open_relay=True) as mta:
        result = await run_probe(SubmissionProbe, mta.port, role="submission")
    f = result.facts
    assert f["smtp.submission.mail_before_tls_accepted"] is True
    assert f["smtp.submission.rcpt_before_tls_code"] == 250
    assert f["smtp.submission.unauth_accepted"] is True and f["smtp.submission.unauth_refusal_code"] is None


@async_test
async def test_credentials_only_over_tls_and_redacted(tmp_path: Path) -> None:
    mta = FakeMta(tls_context=server_context(tmp_path), require_auth=True, auth_mechanisms=("PLAIN", "LOGIN", "CRAM-MD5"),
                  auth_users={"alice": PASSWORD})
    async with mta:
        result = await run_probe(SubmissionProbe, mta.port, role="submission", secrets=(PASSWORD,),
                                 options={"auth_user": "alice", "auth_password": PASSWORD})
    f = result.facts
    assert f["smtp.submission.auth_tested"] is True
    assert f["smtp.submission.auth_ok_mechanisms"] == ["PLAIN", "LOGIN", "CRAM-MD5"]
    # 2 checks + one connection per mechanism
    assert result.connections == 5
    dump = json.dumps([ln.to_json() for ln in result.transcript]) + json.dumps(f)
    import base64
    assert PASSWORD not in dump
    assert base64.b64encode(f"\0alice\0{PASSWORD}".encode()).decode() not in dump
    assert base64.b64encode(PASSWORD.encode()).decode() not in dump


@async_test
async def test_no_tls_means_credentials_are_never_sent() -> None:
    mta = FakeMta(require_auth=True, auth_mechanisms=("PLAIN",), auth_requires_tls=False, auth_users={"alice": PASSWORD})
    async with mta:
        result = await run_probe(SubmissionProbe, mta.port, role="submission",
                                 options={"auth_user": "alice", "auth_password": PASSWORD})
    f = result.facts
    assert f["smtp.submission.unauth_over_tls"] is False
    assert f["smtp.submission.auth_tested"] is False
    assert f["smtp.submission.auth_results"][0]["note"] == "no TLS: not tried"
    assert not any(c.upper().startswith("AUTH") for c in mta.all_commands)


@async_test
async def test_wrong_credentials_recorded_per_mechanism(tmp_path: Path) -> None:
    mta = FakeMta(tls_context=server_context(tmp_path), require_auth=True, auth_mechanisms=("PLAIN", "CRAM-MD5"),
                  auth_users={"alice": "other"})
    async with mta:
        result = await run_probe(SubmissionProbe, mta.port, role="submission",
                                 options={"auth_user": "alice", "auth_password": PASSWORD})
    f = result.facts
    assert f["smtp.submission.auth_tested"] is True and f["smtp.submission.auth_ok_mechanisms"] == []
    assert [o["code"] for o in f["smtp.submission.auth_results"]] == [535, 535]
