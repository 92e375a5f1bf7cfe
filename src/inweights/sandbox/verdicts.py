"""What the sandbox's interface is made of — the limits a program runs under (``Limits``), a program with its tests
(``Program``), the structured verdict (``Verdict``) — and how the trusted side turns what the program's and the
judge's processes wrote into that verdict: an error classified (a limit, a refusal, an exception), a value test
compared with an expected value that never entered the program's process, a judged test's outcome taken as the
judge wrote it."""

from __future__ import annotations

import errno
from dataclasses import asdict, dataclass, field
from typing import Any

from inweights.sandbox.plan import TestSpec, decode, same, short


@dataclass(frozen=True)
class Limits:
    wall_seconds: float = 10.0
    cpu_seconds: float = 5.0
    memory_mb: int = 512
    file_size_mb: int = 16
    open_files: int = 64
    processes: int = 16  # processes the program may own at once (fork is refused unless allow_subprocess)
    output_bytes: int = 20_000  # of stdout and of stderr kept in the verdict
    allow_subprocess: bool = False
    network_namespace: bool = True

    def __post_init__(self):
        for name in ("wall_seconds", "cpu_seconds", "memory_mb", "file_size_mb", "open_files", "processes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"sandbox limit {name} must be > 0")


@dataclass(frozen=True)
class Program:
    """A program and the tests it must pass: ``code``, then ``setup`` (e.g. MBPP's test_setup_code), then
    each test (an assert statement)."""

    code: str
    tests: tuple[str, ...] = ()
    setup: str = ""
    id: str = ""
    # the task's own code the tests may use, run only where the tests are judged (HumanEval's prompt: its helpers
    # judge the answer, its stubs are the program's to write), and the names the program is asked to write
    context: str = ""
    entry_points: tuple[str, ...] = ()


@dataclass
class Verdict:
    status: str  # passed | failed | error | timeout | resource_limit | refused | crashed | untrusted
    reason: str  # one line: why (empty when passed)
    error_type: str | None = None
    message: str | None = None
    tests_passed: int = 0
    tests_total: int = 0
    tests: list[dict[str, Any]] = field(default_factory=list)  # per test: passed, actual, expected, error
    stdout: str = ""
    stderr: str = ""
    seconds: float = 0.0
    returncode: int | None = None
    isolation: dict[str, Any] = field(default_factory=dict)
    id: str = ""
    untrusted_tests: int = 0  # tests the judge could not decide from plain values (never counted as passed)

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


LIMIT_ERRNOS = {errno.EFBIG: "file size", errno.EMFILE: "open files", errno.ENFILE: "open files",
                errno.EAGAIN: "processes"}


def _classify_error(rec: dict[str, Any], limits: Limits) -> tuple[str, str]:
    """(status, reason) of an exception the program raised."""
    et, msg = str(rec.get("error_type")), str(rec.get("message") or "")
    if rec.get("refused"):
        return "refused", msg.removeprefix("sandbox: ")
    if et == "MemoryError":
        return "resource_limit", f"memory limit ({limits.memory_mb} MB) reached"
    if rec.get("errno") in LIMIT_ERRNOS and et in ("OSError", "BlockingIOError", "PermissionError"):
        what = LIMIT_ERRNOS[rec["errno"]]
        amount = {"file size": f"{limits.file_size_mb} MB", "open files": str(limits.open_files),
                  "processes": str(limits.processes)}[what]
        return "resource_limit", f"{what} limit ({amount}) reached: {msg}"
    if et == "AssertionError":
        return "failed", msg
    if et == "Crashed":
        return "crashed", msg
    return "error", f"{et}: {msg}" if msg else et


def _value_test(spec: TestSpec, rec: Any, expected: Any) -> dict[str, Any]:
    """A value test decided here: the value the program sent against the expected one (which never entered it)."""
    t: dict[str, Any] = {"test": spec.text[:2000], "trusted": True}
    rec = rec if isinstance(rec, dict) else {}
    if "value" in rec:
        try:
            actual = decode(rec["value"])
        except (ValueError, TypeError, RecursionError, MemoryError):
            t.update(passed=False, error_type="AssertionError", message="the result was not plain data")
        else:
            t.update(passed=same(actual, expected), actual=short(actual), expected=short(expected))
            if not t["passed"]:
                t.update(error_type="AssertionError", message=spec.text[:2000])
    elif "unsupported" in rec:
        t.update(passed=False, error_type="AssertionError", unsupported=True,
                 message=f"{spec.call} returned {str(rec['unsupported'])[:200]}")
    else:
        t.update({k: rec.get(k) for k in ("error_type", "message", "errno", "refused", "wrapped_in")}, passed=False)
        t["error_type"] = str(t["error_type"] or "Error")
        t["message"] = str(t["message"] or "")[:2000]
    return t


_JUDGE_KEYS = ("error_type", "message", "errno", "refused", "wrapped_in", "failed_line", "failed_source",
               "actual", "expected", "untrusted", "gone")


def _judged_test(spec: TestSpec, rec: Any) -> dict[str, Any]:
    """A judged test as the judge decided it (its values are the judge's own reprs of plain data)."""
    rec = rec if isinstance(rec, dict) else {}
    t: dict[str, Any] = {"test": spec.text[:2000], "trusted": not rec.get("untrusted"),
                         "passed": rec.get("passed") is True and not rec.get("untrusted")}
    for k in _JUDGE_KEYS:
        if k in rec and k != "untrusted":
            v = rec[k]
            t[k] = v if isinstance(v, (int, bool)) or v is None else str(v)[:2000]
    if not t["passed"] and "error_type" not in t and not rec.get("untrusted"):
        t["error_type"] = "Error"
    return t


def _verdict_from(out: dict[str, Any], judge: dict[str, Any] | None, limits: Limits, specs: list[TestSpec],
                  value_idx: list[int], judged_idx: list[int], expected: dict[int, Any]) -> Verdict:
    """The verdict, decided outside the program: value tests here, judged tests by the judge. Fewer results
    than tests is a crash, never a pass; a test the judge could not decide is untrusted, never a pass."""
    results = out.get("results")
    results = results if isinstance(results, list) else []
    jres = judge.get("results") if judge else None
    jres = jres if isinstance(jres, list) else []
    by_index: dict[int, dict[str, Any]] = {}
    for i, rec in zip(value_idx, results):
        by_index[i] = _value_test(specs[i], rec, expected[i])
    if not out.get("stage"):
        for i, rec in zip(judged_idx, jres):
            by_index[i] = _judged_test(specs[i], rec)
    tests = [by_index[i] for i in range(len(specs)) if i in by_index]
    isolation = {"network_namespace": bool(out.get("netns")), "unprivileged": bool(out.get("unprivileged"))}
    v = Verdict(status="passed", reason="", tests=tests, tests_total=len(specs),
                tests_passed=sum(t["passed"] for t in tests), isolation=isolation,
                untrusted_tests=sum(not t["trusted"] for t in tests))
    if out.get("stage"):  # the program (or setup) itself raised
        v.status, v.reason = _classify_error(out, limits)
        v.reason = f"{out['stage']}: {v.reason}"[:2000]
        v.error_type, v.message = str(out.get("error_type")), str(out.get("message"))[:2000]
        return v
    bad = next((t for t in tests if not t["passed"] and t["trusted"]), None)
    if bad is None:
        missing = len(specs) - len(tests)
        if missing:
            v.status = "crashed"
            v.reason = f"stopped after {len(tests)} of {len(specs)} tests"
        elif v.untrusted_tests:
            u = next(t for t in tests if not t["trusted"])
            v.status = "untrusted"
            v.reason = (f"{v.untrusted_tests} of {len(specs)} tests could not be judged outside the program "
                        f"({u.get('message') or 'not plain data'})")[:2000]
        return v
    v.status, v.reason = _classify_error(bad, limits)
    v.error_type, v.message = bad.get("error_type"), bad.get("message")
    if v.status == "failed":
        if bad.get("unsupported"):
            v.reason = bad["message"]
            return v
        # the test, or for a multi-assert judged test (HumanEval's check) the failing line of it
        multi = "\n" in bad["test"].strip()
        label = (f"test line {bad['failed_line']}: {bad['failed_source']}" if bad.get("failed_source") and multi
                 else bad["test"].strip())
        if "actual" in bad and "expected" in bad:
            v.reason = f"{label}: expected {bad['expected']}, got {bad['actual']}"
        elif bad.get("failed_source") and multi:
            v.reason = f"{label}" + (f" ({v.reason})" if v.reason and v.reason != bad["test"].strip() else "")
        elif not v.reason:
            v.reason = label
    return v
