"""The endpoint score and grade: one documented formula, with caps that say why.

Formula (printed in reports):
  score = max(0, 100 - sum of penalties of open findings)
  penalty = weight[severity] x factor[confidence]
      weight: critical 40, high 20, medium 8, low 2, info 0
      factor: certain 1.0, firm 1.0, tentative 0.5
  grade from score: A+ = 100 with nothing above info, A >= 90, B >= 80, C >= 70, D >= 60, E >= 50, F < 50
  caps: a rule may set grade_cap; the grade is the worse of the score grade and every cap of an
  finding (e.g. an open relay or plaintext AUTH caps at F, TLS 1.0 at B).
  only a complete endpoint (every planned probe finished) is graded: an incomplete or unreachable
  endpoint has no score and no grade, because what was not seen cannot be scored as good.
  findings accepted by a baseline still count: a baseline changes the gate (exit code), not the grade.
  findings with "gate": false (a version guess below detection quality 70, e.g. a banner version of
  software distributions backport; engine/quality.py) are listed but count for neither score nor caps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from smtpaudit.engine.severity import GRADES

WEIGHTS = {"critical": 40, "high": 20, "medium": 8, "low": 2, "info": 0}
CONFIDENCE_FACTOR = {"certain": 1.0, "firm": 1.0, "tentative": 0.5}
THRESHOLDS = (("A", 90), ("B", 80), ("C", 70), ("D", 60), ("E", 50))
FORMULA = __doc__.split("Formula (printed in reports):", 1)[1].strip() if __doc__ else ""


@dataclass
class ScoredFinding:
    rule_id: str
    severity: str
    confidence: str
    grade_cap: str | None = None
    title: str = ""
    gate: bool = True  # False: listed, but kept out of score and caps (engine/quality.py)


@dataclass
class Score:
    score: int | None
    grade: str | None
    caps: list[dict[str, str]] = field(default_factory=list)
    complete: bool = True

    def to_json(self) -> dict[str, Any]:
        return {"score": self.score, "grade": self.grade, "caps": self.caps, "complete": self.complete}


def grade_for(score: float, *, only_info: bool) -> str:
    if score >= 100 and only_info:
        return "A+"
    for grade, floor in THRESHOLDS:
        if score >= floor:
            return grade
    return "F"


def worse(a: str, b: str) -> str:
    return a if GRADES.index(a) >= GRADES.index(b) else b


def score_endpoint(findings: Iterable[ScoredFinding], *, complete: bool = True) -> Score:
    findings = [f for f in findings if f.gate]
    penalty = sum(WEIGHTS[f.severity] * CONFIDENCE_FACTOR[f.confidence] for f in findings)
    value = max(0, round(100 - penalty))
    grade = grade_for(value, only_info=all(f.severity == "info" for f in findings))
    caps = []
    for f in findings:
        if f.grade_cap:
            caps.append({"rule_id": f.rule_id, "cap": f.grade_cap, "reason": f"grade at most {f.grade_cap} while {f.rule_id} is open: {f.title}"})
    for cap in caps:
        grade = worse(grade, cap["cap"])
    if not complete:
        return Score(None, None, caps, False)
    return Score(value, grade, caps, True)
