"""The preflight's report: findings (ok / warn / fail, a code, one line each), shared by every check."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Level = Literal["ok", "warn", "fail"]


@dataclass(frozen=True)
class Finding:
    level: Level
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.level.upper():4} {self.code}: {self.message}"


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)
    name: str = "preflight"  # what the summary line calls these checks

    def add(self, level: Level, code: str, message: str) -> None:
        self.findings.append(Finding(level, code, message))

    @property
    def failed(self) -> bool:
        return any(f.level == "fail" for f in self.findings)

    def by_level(self, level: Level) -> list[Finding]:
        return [f for f in self.findings if f.level == level]

    def codes(self, level: Level | None = None) -> set[str]:
        return {f.code for f in self.findings if level is None or f.level == level}

    def summary(self) -> str:
        fails, warns = len(self.by_level("fail")), len(self.by_level("warn"))
        verdict = "FAILED" if fails else "passed"
        return f"{self.name} {verdict}: {fails} failure(s), {warns} warning(s)"

    def to_text(self) -> str:
        order = {"fail": 0, "warn": 1, "ok": 2}
        lines = [str(f) for f in sorted(self.findings, key=lambda f: order[f.level])]
        return "\n".join([*lines, self.summary()])

    def to_json(self) -> dict:
        return {
            "failed": self.failed,
            "findings": [{"level": f.level, "code": f.code, "message": f.message} for f in self.findings],
        }
