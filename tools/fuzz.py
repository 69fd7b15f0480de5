"""The long fuzz run of the session: ``python tools/fuzz.py --minutes 10``.

Runs the fuzz target of ``tests/fuzz/harness.py`` (a ClientSession fed arbitrary and mutated-valid
broker bytes, every invariant checked after every call) until the time or iteration budget is
spent, then prints iterations per second, the total, and the outcome table: how many inputs ended
in which clean close (error class and reason code), stayed open, or closed by our own
``disconnect()``, and how many messages were delivered.

Engines:

* ``random`` (default): a plain ``random.Random`` seeded with ``--seed`` (printed; the same seed
  and ``--jobs`` give the same inputs). ``--jobs N`` runs N processes (seeds ``seed + k``).
* ``hypothesis``: the CI strategy with a large ``max_examples``, in batches of fresh seeds.
* ``atheris``: coverage-guided libFuzzer over the same target (``pip install atheris``); a case is
  decoded from the fuzzer's bytes (:func:`decode_case`), and the corpus starts from random cases.

On the first invariant violation it stops, writes the case to ``--out`` (``.json`` with the
message, ``.hex`` with the bytes) and exits 1; ``--replay FILE.json`` runs a saved case again.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import random
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the harness lives in tests/fuzz

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import seed as hypothesis_seed  # noqa: E402
from tests.fuzz.harness import (  # noqa: E402
    ACK_POLICIES,
    DTS,
    FAMILIES,
    LEVELS,
    OPS,
    STARTS,
    FuzzCase,
    InvariantViolation,
    Outcome,
    cases,
    random_case,
    run_case,
)

#: How often a progress line is printed (seconds).
PROGRESS_EVERY = 30.0
_TAILS = (0.0, 3.0, 16.0, 60.0)
#: Closes whose reason code the broker chose (CONNACK refusal, server DISCONNECT).
_BROKER_CODES = ("ConnectRefusedError", "ServerDisconnectError")


@dataclass
class Tally:
    """What a run saw."""

    iterations: int = 0
    seconds: float = 0.0
    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)
    delivered: int = 0
    completed: int = 0
    refused: int = 0
    connected: int = 0
    disconnects: Counter[int] = field(default_factory=Counter)
    broker_codes: dict[str, set[int]] = field(
        default_factory=lambda: {name: set() for name in _BROKER_CODES}
    )

    def add(self, case: FuzzCase, outcome: Outcome) -> None:
        self.iterations += 1
        label = outcome.label()
        if outcome.closed in _BROKER_CODES:
            # The code is the broker's (an input), not the session's: one row per class.
            self.broker_codes[outcome.closed].add(outcome.reason_code or 0)
            label = f"{outcome.closed} (broker's code)"
        self.outcomes[(case.family, label)] += 1
        self.delivered += outcome.delivered
        self.completed += outcome.completed
        self.refused += outcome.refused
        self.connected += outcome.connected
        if outcome.disconnect_sent is not None:
            self.disconnects[outcome.disconnect_sent] += 1

    def merge(self, other: Tally) -> None:
        self.iterations += other.iterations
        self.seconds = max(self.seconds, other.seconds)
        self.outcomes.update(other.outcomes)
        self.delivered += other.delivered
        self.completed += other.completed
        self.refused += other.refused
        self.connected += other.connected
        self.disconnects.update(other.disconnects)
        for name, codes in other.broker_codes.items():
            self.broker_codes[name] |= codes


@dataclass
class Failure:
    """The first invariant violation: the case and the message."""

    case: FuzzCase
    message: str
    where: str


# ---------------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------------


def outcome_table(tally: Tally) -> str:
    """The outcome table: one row per outcome, a column per input family."""
    seen = {family for family, _ in tally.outcomes}
    families = [f for f in FAMILIES if f in seen] + sorted(seen - set(FAMILIES)) or list(FAMILIES)
    labels = sorted({label for _, label in tally.outcomes}, key=_label_order)
    width = max([len(label) for label in labels] + [len("outcome")])
    head = f"{'outcome':<{width}}  " + "  ".join(f"{f:>10}" for f in families) + f"  {'total':>10}"
    lines = [head, "-" * len(head)]
    for label in labels:
        counts = [tally.outcomes[(f, label)] for f in families]
        row = "  ".join(f"{n:>10,}" for n in counts)
        lines.append(f"{label:<{width}}  {row}  {sum(counts):>10,}")
    totals = [sum(n for (f, _), n in tally.outcomes.items() if f == fam) for fam in families]
    lines.append("-" * len(head))
    row = "  ".join(f"{n:>10,}" for n in totals)
    lines.append(f"{'all':<{width}}  {row}  {sum(totals):>10,}")
    return "\n".join(lines)


def _label_order(label: str) -> tuple[int, str]:
    first = {"open": 0, "orderly": 1}.get(label, 2)
    return (first, label)


def summary(tally: Tally, command: str) -> str:
    rate = tally.iterations / tally.seconds if tally.seconds else 0.0
    closes = sum(n for (_, label), n in tally.outcomes.items() if label not in ("open",))
    sent = ", ".join(f"0x{code:02X}: {n:,}" for code, n in sorted(tally.disconnects.items()))
    return "\n".join(
        [
            f"command: {command}",
            f"iterations: {tally.iterations:,} in {tally.seconds:,.0f} s ({rate:,.0f}/s)",
            f"distinct outcomes: {len({label for _, label in tally.outcomes})}; "
            f"closed: {closes:,}; still open: {tally.iterations - closes:,}",
            f"messages delivered: {tally.delivered:,}; operations completed: "
            f"{tally.completed:,}; sending calls refused: {tally.refused:,}; "
            f"CONNACK accepted in the fuzzed phase: {tally.connected:,}",
            f"MQTT 5 DISCONNECT sent on protocol errors: {sent or 'none'}",
            *(
                f"{name}: {len(codes)} distinct codes from the broker"
                for name, codes in tally.broker_codes.items()
            ),
            "invariant violations: 0",
            "",
            outcome_table(tally),
        ]
    )


def save_failure(failure: Failure, out: Path, tag: str) -> Path:
    """Write the reproducer; returns the .json path."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"fuzz-failure-{tag}.json"
    obj = {"case": failure.case.to_json(), "violation": failure.message, "where": failure.where}
    path.write_text(json.dumps(obj, indent=2) + "\n")
    path.with_suffix(".hex").write_text(failure.case.data.hex() + "\n")
    return path


# ---------------------------------------------------------------------------------------------
# Engines
# ---------------------------------------------------------------------------------------------


def _check(case: FuzzCase, tally: Tally) -> Failure | None:
    try:
        outcome = run_case(case)
    except InvariantViolation as exc:
        return Failure(case, str(exc), traceback.format_exc())
    tally.add(case, outcome)
    return None


def run_random(
    seed: int,
    deadline: float,
    iterations: int | None,
    family: str | None,
    stop: Any = None,
    progress: Callable[[Tally], None] | None = None,
) -> tuple[Tally, Failure | None]:
    """The plain-random engine: cases from ``random.Random(seed)`` until the budget is spent."""
    rng = random.Random(seed)
    tally = Tally()
    started = time.monotonic()
    next_report = started + PROGRESS_EVERY
    limit = iterations if iterations is not None else sys.maxsize
    for _ in range(limit):
        case = random_case(rng, family)
        failure = _check(case, tally)
        if failure is not None:
            tally.seconds = time.monotonic() - started
            return tally, failure
        if tally.iterations % 64 == 0:
            now = time.monotonic()
            if now >= deadline or (stop is not None and stop.is_set()):
                break
            if progress is not None and now >= next_report:
                tally.seconds = now - started
                progress(tally)
                next_report = now + PROGRESS_EVERY
    tally.seconds = time.monotonic() - started
    return tally, None


def _worker(args: tuple[int, float, int | None, str | None, Any]) -> tuple[Tally, Failure | None]:
    seed, deadline, iterations, family, stop = args
    tally, failure = run_random(seed, deadline, iterations, family, stop)
    if failure is not None:
        stop.set()
    return tally, failure


def run_hypothesis(
    seed: int, deadline: float, iterations: int | None, family: str | None
) -> tuple[Tally, Failure | None]:
    """The Hypothesis engine: batches of 2,000 examples, each batch with its own seed."""
    tally = Tally()
    started = time.monotonic()
    last: list[FuzzCase] = []
    batch = 2_000 if iterations is None else min(2_000, iterations)

    @settings(
        max_examples=batch,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(cases(family))
    def target(case: FuzzCase) -> None:
        last[:] = [case]
        tally.add(case, run_case(case))

    for n in range(sys.maxsize):
        try:
            hypothesis_seed(seed + n)(target)()
        except InvariantViolation as exc:
            # Hypothesis ran the shrunk example last.
            tally.seconds = time.monotonic() - started
            return tally, Failure(last[0], str(exc), traceback.format_exc())
        if time.monotonic() >= deadline or (iterations and tally.iterations >= iterations):
            break
        print(f"  hypothesis batch {n + 1}: {tally.iterations:,} examples", flush=True)
    tally.seconds = time.monotonic() - started
    return tally, None


def encode_case(case: FuzzCase) -> bytes:
    """A case as atheris input bytes (the inverse of :func:`decode_case`)."""
    head = bytearray(
        (
            LEVELS.index(case.level),
            STARTS.index(case.start),
            ACK_POLICIES.index(case.ack_policy) | (0x80 if case.trace else 0),
            _TAILS.index(case.tail) if case.tail in _TAILS else 0,
            len(case.cuts[:7]),
        )
    )
    for cut in case.cuts[:7]:
        head += (cut % 65_536).to_bytes(2, "big")
    head.append(len(case.steps[:4]))
    for dt, op in case.steps[:4]:
        head += bytes((DTS.index(dt) if dt in DTS else 0, op))
    return bytes(head) + case.data


def decode_case(raw: bytes) -> FuzzCase:
    """Any bytes as a case: a small header (level, start, ack policy, trace, tail, cuts,
    steps), then the broker bytes."""
    pos = 0

    def take() -> int:
        nonlocal pos
        value = raw[pos] if pos < len(raw) else 0
        pos += 1
        return value

    level = LEVELS[take() % len(LEVELS)]
    start = STARTS[take() % len(STARTS)]
    flags = take()
    tail = _TAILS[take() % len(_TAILS)]
    cuts = tuple((take() << 8) | take() for _ in range(take() % 8))
    steps = tuple((DTS[take() % len(DTS)], take() % len(OPS)) for _ in range(take() % 5))
    return FuzzCase(
        level=level,
        start=start,
        data=raw[pos:],
        cuts=cuts,
        steps=steps,
        ack_policy=ACK_POLICIES[(flags & 0x7F) % len(ACK_POLICIES)],
        trace=bool(flags & 0x80),
        tail=tail,
        family="atheris",
    )


def run_atheris(
    seed: int, seconds: float, iterations: int | None, out: Path, corpus: Path, command: str
) -> None:  # pragma: no cover - needs atheris; libFuzzer exits the process itself
    """The atheris engine; never returns (libFuzzer exits). Crashes go to ``out``."""
    try:
        import atheris  # type: ignore[import-untyped]  # noqa: PLC0415 - optional engine
    except ImportError:
        sys.exit("atheris is not installed: pip install atheris (it bundles libFuzzer)")
    atheris.instrument_all()  # the session, codec and harness are already imported
    corpus.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for i in range(256):  # seeds: random cases of both families, so mutation starts from valid
        (corpus / f"seed-{seed}-{i}").write_bytes(encode_case(random_case(rng)))
    tally = Tally()
    started = time.monotonic()
    # libFuzzer exits the process without running Python's atexit handlers: the final summary
    # is printed on the last run (-runs), or in the last second of the time budget.
    state = {"next": started + PROGRESS_EVERY, "calls": 0, "final": False}
    end = started + seconds - 1.0

    def test_one_input(raw: bytes) -> None:
        state["calls"] += 1
        case = decode_case(raw)
        try:
            outcome = run_case(case)
        except InvariantViolation as exc:
            path = save_failure(Failure(case, str(exc), traceback.format_exc()), out, "atheris")
            print(f"\nINVARIANT VIOLATION: {exc}\nreproducer: {path}", flush=True)
            raise
        tally.add(case, outcome)
        now = time.monotonic()
        last = state["calls"] == iterations if iterations else now >= end
        if (last and not state["final"]) or now >= state["next"]:
            state["final"] = state["final"] or last
            tally.seconds = now - started
            print("\n" + summary(tally, command), flush=True)
            state["next"] = now + PROGRESS_EVERY

    args = [sys.argv[0], str(corpus), f"-seed={seed}", f"-artifact_prefix={out}/"]
    args.append(f"-runs={iterations}" if iterations else f"-max_total_time={int(seconds)}")
    out.mkdir(parents=True, exist_ok=True)
    atheris.Setup(args, test_one_input)
    atheris.Fuzz()


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=None, help="time budget (default 1)")
    parser.add_argument("--iterations", type=int, default=None, help="iteration budget")
    parser.add_argument("--seed", type=int, default=None, help="default: a fresh one, printed")
    parser.add_argument("--engine", choices=("random", "hypothesis", "atheris"), default="random")
    parser.add_argument("--family", choices=(*FAMILIES, "both"), default="both")
    parser.add_argument("--jobs", type=int, default=1, help="processes (random engine)")
    parser.add_argument("--out", type=Path, default=Path("fuzz-failures"), help="reproducers")
    parser.add_argument(
        "--corpus", type=Path, default=None, help="atheris corpus (default: in the temp dir)"
    )
    parser.add_argument("--replay", type=Path, default=None, help="run a saved .json case")
    args = parser.parse_args(argv)
    # Fuzzed brokers earn the session's warnings by the thousand; errors (an internal error is
    # logged with its traceback) still show.
    logging.getLogger("mqttkit").setLevel(logging.ERROR)

    if args.replay is not None:
        obj = json.loads(args.replay.read_text())
        case = FuzzCase.from_json(obj.get("case", obj))
        try:
            outcome = run_case(case)
        except InvariantViolation:
            traceback.print_exc()
            return 1
        print(f"no violation; outcome: {outcome.label()} ({outcome})")
        return 0

    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "big")
    family = None if args.family == "both" else args.family
    minutes = args.minutes if args.minutes is not None else (None if args.iterations else 1.0)
    seconds = minutes * 60 if minutes is not None else float("inf")
    deadline = time.monotonic() + seconds
    command = " ".join(["python tools/fuzz.py", *(argv if argv is not None else sys.argv[1:])])
    if args.seed is None:
        command += f" --seed {seed}"
    budget = " and ".join(
        ([f"{minutes:g} min"] if minutes is not None else [])
        + ([f"{args.iterations:,} iterations"] if args.iterations else [])
    )
    print(
        f"fuzzing ClientSession: engine {args.engine}, seed {seed}, family {args.family}, "
        f"budget {budget}",
        flush=True,
    )

    if args.engine == "atheris":
        corpus = args.corpus or Path(tempfile.gettempdir()) / "mqttkit-fuzz-corpus"
        run_atheris(seed, seconds, args.iterations, args.out, corpus, command)
        return 0

    def progress(tally: Tally) -> None:
        rate = tally.iterations / tally.seconds if tally.seconds else 0.0
        print(
            f"  {tally.seconds:6.0f} s  {tally.iterations:>10,} iterations  {rate:8,.0f}/s",
            flush=True,
        )

    if args.engine == "hypothesis":
        tally, failure = run_hypothesis(seed, deadline, args.iterations, family)
    elif args.jobs <= 1:
        tally, failure = run_random(seed, deadline, args.iterations, family, None, progress)
    else:
        tally, failure = Tally(), None
        per_job = None if args.iterations is None else -(-args.iterations // args.jobs)
        with multiprocessing.Manager() as manager:
            stop = manager.Event()
            jobs = [(seed + k, deadline, per_job, family, stop) for k in range(args.jobs)]
            with multiprocessing.Pool(args.jobs) as pool:
                for part, part_failure in pool.imap_unordered(_worker, jobs):
                    tally.merge(part)
                    failure = failure or part_failure
        tally.seconds = max(tally.seconds, 1e-9)

    if failure is not None:
        path = save_failure(failure, args.out, str(seed))
        print(failure.where, file=sys.stderr)
        print(f"INVARIANT VIOLATION after {tally.iterations:,} good iterations: {failure.message}")
        print(f"case: {json.dumps(failure.case.to_json())}")
        print(
            f"reproducer: {path} (bytes in {path.with_suffix('.hex')}); rerun with "
            f"python tools/fuzz.py --replay {path}"
        )
        return 1
    print(summary(tally, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
