"""Math-verify grading in worker processes with a hard per-item timeout.

The rules, applied in this order (they are recorded in ``GRADER_INFO`` next to every result):

1. **Text.** Non-``str`` values become text (bytes decoded as UTF-8 with ``errors="replace"``, lone
   surrogates replaced too, ``None`` is empty).
2. **Thinking.** Everything up to the last ``</think>`` is dropped (closed blocks, and an orphan closer
   whose opener was in the prompt); a ``<think>`` still open never finished and is dropped to the end.
   A boxed answer written while thinking never counts.
3. **Length.** Only the last ``MAX_PREDICTION_CHARS`` characters are kept: the final answer lives in
   the tail, and math-verify's regexes are not meant for megabytes.
4. **Several boxes: the last one counts.** math-verify would merge every ``\\boxed{}`` of a completion
   into one set, so ``\\boxed{3} ... \\boxed{5}`` could never equal a gold of 5. We take the last
   complete ``\\boxed{...}`` (found by a brace-balanced scan that skips ``\\{`` and ``\\}``; a box whose
   brace never closes, e.g. a truncated output, is not complete) and give math-verify ``\\boxed{that}``.
5. **No box.** The whole (stripped, truncated) text goes to math-verify, which tries "final answer
   is"/"answer:" anchors, then the last LaTeX expression, then the last plain number: "The answer is
   5" counts as 5. Status ``no_answer`` means math-verify extracted nothing at all.
6. **Comparison.** The gold is wrapped as ``$gold$`` (unless it holds an unescaped ``$`` or a
   ``\\boxed``) and parsed with math-verify's defaults; a gold that yields no sympy expression is
   ``unparseable_gold`` (wrong, and reported). The prediction is parsed boxed-first
   (``LatexExtractionConfig(boxed_match_priority=0)`` then ``ExprExtractionConfig``); the answer is
   ``verify(gold, prediction)`` with the gold first (the function is not symmetric).

7. **Integer shortcut.** A gold ``$n$`` against a last box ``m``, both canonical integers (no leading
   zeros, no ``-0``), is decided as ``n == m`` in the parent: that is math-verify's answer for such
   pairs (a test compares the two on thousands of pairs), and it spares the workers the toy world.

math-verify's own timeouts use ``signal.alarm``: they fail in threads and miss hangs inside C code.
So they are switched off and every item runs in a long-lived worker process (forkserver context,
math-verify preloaded); the parent gives each item a wall-clock deadline, kills a worker that
overruns it and starts a fresh one. Such an item gets status ``timeout`` and counts as wrong.

No worker outlives the grading process. A hung worker runs C code and never reads its pipe, and
the forkserver stays up while any worker holds its "alive" pipe, so Linux does the killing: the
forkserver asks for ``PR_SET_PDEATHSIG`` (SIGKILL when the grading process dies, SIGKILL included)
and so does each worker (SIGKILL when the forkserver dies). Workers ignore SIGINT (a Ctrl-C reaches
the whole process group; the parent decides), and the command line turns SIGTERM, SIGINT and SIGHUP
into a clean stop: workers killed, exit code 128 + the signal number.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import importlib.metadata
import json
import logging
import multiprocessing
import multiprocessing.connection
import multiprocessing.forkserver
import os
import re
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify
from sympy import Basic
from sympy.matrices import MatrixBase

MAX_PREDICTION_CHARS = 20_000
DEFAULT_TIMEOUT = 5.0
MAX_TIMEOUT = 86_400.0  # a day per item is a hang; the pool's wait() overflows past ~24 days anyway
MAX_JSON_DEPTH = 64  # grade_file's records: far below the ~1000 levels where Python's parser gives up
WORKER_START_TIMEOUT = 120.0
WORKER_MEMORY_LIMIT = 4 * 2**30  # address-space cap per worker: 10^{10^{10}} fails fast, not by swapping
_BRACE_TOKENS = re.compile(r"\\.|[{}]", re.DOTALL)  # an escaped character, or a brace
STATUSES = ("ok", "timeout", "unparseable_gold", "no_answer", "error")
PREDICTION_EXTRACTION = (LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig())

GRADER_INFO = {
    "grader": "math-verify",
    "math_verify_version": importlib.metadata.version("math-verify"),
    "latex2sympy2_extended_version": importlib.metadata.version("latex2sympy2_extended"),
    "timeout_s": DEFAULT_TIMEOUT,
    "several_boxes": "last complete \\boxed{...} of the completion is graded",
    "missing_box": "math-verify fallback extraction (answer anchors, last LaTeX, last number)",
    "think": "text up to the last </think> dropped; an unclosed <think> dropped to the end",
    "max_prediction_chars": MAX_PREDICTION_CHARS,
    "gold": "wrapped as $gold$ unless it holds $ or \\boxed; unparseable without a sympy expression",
    "comparison": "verify(gold, prediction), math-verify defaults (float_rounding=6, strict=True)",
    "integer_shortcut": "canonical integer gold vs canonical integer last box: string equality",
}


@dataclass(frozen=True)
class GradeResult:
    correct: bool
    status: str  # one of STATUSES
    extracted: str | None  # the answer text that was graded (boxed content, or math-verify's match)


def to_text(value) -> str:
    """Any value as valid UTF-8 text: bytes decoded with replacement, lone surrogates replaced."""
    if value is None:
        return ""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", errors="replace")
    text = value if isinstance(value, str) else str(value)
    return text.encode("utf-8", errors="replace").decode("utf-8")


def strip_thinking(text: str) -> str:
    """Drop reasoning inside <think> blocks (rule 2 of the module docstring). Linear time."""
    closer = text.rfind("</think>")
    if closer >= 0:
        text = text[closer + len("</think>"):]
    opener = text.find("<think>")
    return text if opener < 0 else text[:opener]


def last_boxed(text: str) -> str | None:
    """Content of the last complete \\boxed{...} (whitespace allowed before the brace), or None.

    One pass matches every brace with a stack (a backslash escapes the next character, so ``\\{`` is
    literal), then the ``\\boxed`` occurrences are tried from the right. Linear in the text length.
    """
    closing_of: dict[int, int] = {}
    open_positions: list[int] = []
    for token in _BRACE_TOKENS.finditer(text):
        if token.group() == "{":
            open_positions.append(token.start())
        elif token.group() == "}" and open_positions:
            closing_of[open_positions.pop()] = token.start()
    start = text.rfind("\\boxed")
    while start >= 0:
        brace = start + len("\\boxed")
        while brace < len(text) and text[brace].isspace():
            brace += 1
        if brace in closing_of:
            return text[brace + 1:closing_of[brace]]
        start = text.rfind("\\boxed", 0, start)
    return None


def prepare_prediction(prediction) -> tuple[str, str | None]:
    """(text for math-verify, boxed content or None) after rules 1-4 of the module docstring."""
    text = strip_thinking(to_text(prediction))[-MAX_PREDICTION_CHARS:]
    boxed = last_boxed(text)
    return (text, None) if boxed is None else ("\\boxed{" + boxed + "}", boxed)


def prepare_gold(gold) -> str:
    text = to_text(gold).strip()
    already_math = re.search(r"(?<!\\)\$", text) or "\\boxed" in text  # an unescaped $, or a box
    return text if (not text or already_math) else f"${text}$"


@functools.lru_cache(maxsize=4096)  # avg@k grades k predictions against the same gold
def _parse_gold(gold_text: str) -> tuple:
    """math-verify's parse of the gold, or () when it yields no sympy expression: a gold that only
    survives as a raw string could match nothing but the identical string, so it is reported."""
    parsed = tuple(parse(gold_text, parsing_timeout=None)) if gold_text else ()
    return parsed if any(isinstance(item, (Basic, MatrixBase)) for item in parsed) else ()


def grade_prepared(gold_text: str, prediction_text: str, boxed: str | None) -> tuple[bool, str, str | None]:
    """Grade one prepared item with math-verify; runs inside a worker. Returns GradeResult fields."""
    gold = _parse_gold(gold_text)
    if not gold:
        return False, "unparseable_gold", boxed
    parsed = parse(prediction_text, PREDICTION_EXTRACTION, parsing_timeout=None)
    if not parsed:
        return False, "no_answer", boxed
    extracted = boxed if boxed is not None else str(parsed[-1])[:500]
    return bool(verify(list(gold), parsed, timeout_seconds=None)), "ok", extracted


PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
_SERVER_PID: int | None = None  # set in the forkserver (at the bottom); forked workers inherit it


def _die_with_parent(parent_pid: int | None) -> None:
    """Ask Linux to SIGKILL this process when its parent dies; exit now if `parent_pid` (the parent
    this process was started by) is already gone: the request only covers a parent alive at the
    call. Linux only; elsewhere the signal handlers of ``run_cli`` are the only guard."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    if ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        return  # a sandbox that forbids prctl: the signal handlers of run_cli are the only guard
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(1)


def _worker_main(connection, item_grader) -> None:
    """Worker loop: receive chunks of (index, gold, prediction text, boxed), send one result per item."""
    _die_with_parent(_SERVER_PID)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops the pool on Ctrl-C, not the item
    logging.getLogger("math_verify").setLevel(logging.CRITICAL)  # no "timeout disabled" warnings
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY_LIMIT, WORKER_MEMORY_LIMIT))
    except (ImportError, ValueError, OSError):  # not Linux, or a lower hard limit already
        pass
    connection.send("ready")  # the item clock starts after start-up (e.g. unpickling a test hook's module)
    while (chunk := connection.recv()) is not None:
        for index, gold_text, prediction_text, boxed in chunk:
            try:
                correct, status, extracted = item_grader(gold_text, prediction_text, boxed)
            except BaseException:  # noqa: BLE001 - MemoryError, RecursionError...: the item, not the worker
                correct, status, extracted = False, "error", boxed
            connection.send((index, bool(correct), status, extracted))


class _Worker:
    """One worker process, its pipe, the items sent to it and when its current item started."""

    def __init__(self, context, item_grader):
        self.connection, child_end = context.Pipe()
        self.process = context.Process(target=_worker_main, args=(child_end, item_grader), daemon=True)
        self.process.start()
        child_end.close()  # so that recv() raises EOFError when the worker dies
        self.pending: collections.deque = collections.deque()
        self.item_started = 0.0

    def wait_ready(self) -> "_Worker":
        try:
            if self.connection.poll(WORKER_START_TIMEOUT) and self.connection.recv() == "ready":
                return self
        except (EOFError, OSError):
            pass
        self.stop(kill=True)
        raise RuntimeError(f"a grading worker did not start within {WORKER_START_TIMEOUT} s")

    def send(self, chunk: list) -> None:
        self.pending.extend(chunk)
        self.item_started = time.monotonic()
        self.connection.send(chunk)

    def stop(self, kill: bool = False) -> None:
        if not kill:
            try:
                self.connection.send(None)
                self.process.join(timeout=1.0)
            except (OSError, ValueError):
                pass
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.connection.close()


# Typical answers parsed once in the forkserver: antlr builds its prediction DFA lazily, so a fresh
# process parses its first expressions several times slower; forked workers inherit the warm DFA.
_WARM_UP_ANSWERS = ("\\frac{14}{3}", "-\\dfrac{\\sqrt{3}}{2}", "2\\sqrt[3]{13}", "\\left( 3, \\frac{\\pi}{2} \\right)",
                    "(-\\infty, 2] \\cup (3, \\infty)", "\\{1, 2\\}", "1, 3, 5", "90^\\circ", "\\text{Evelyn}",
                    "y = 2x^{2} - 1", "0.25", "10\\%", "\\begin{pmatrix} 1 \\\\ -2 \\end{pmatrix}", "e^{i\\pi}")
_FORKSERVER_FLAG = "DCOD_GRADING_IN_FORKSERVER"


def _warm_up() -> None:
    logging.getLogger("math_verify").setLevel(logging.CRITICAL)
    for answer in _WARM_UP_ANSWERS:
        grade_prepared(prepare_gold(answer), *prepare_prediction("\\boxed{" + answer + "}"))


def _forkserver_context():
    """The forkserver context, its server started with this module imported and warmed up.

    The server dies with the thread that starts it (``PR_SET_PDEATHSIG``; a dead server is started
    again by the next call), so a caller that grades from short-lived threads pays a restart each."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["dcod.grading"])
    os.environ[_FORKSERVER_FLAG] = str(os.getpid())  # read (and removed) by the import in the server, below
    try:
        multiprocessing.forkserver.ensure_running()
    finally:
        os.environ.pop(_FORKSERVER_FLAG, None)
    return context


_CANONICAL_INTEGER = re.compile(r"-?(?:0|[1-9][0-9]*)")


def _integer_fast_path(gold_text: str, boxed: str | None) -> GradeResult | None:
    """Rule 7, a shortcut that never changes a grade: when the gold is ``$n$`` and the last box holds
    ``m``, both canonical integers (no leading zeros, no ``-0``, no spaces), math-verify's
    answer is ``n == m``; decide it here without a worker (the whole toy world is such answers).
    Anything else (``007``, ``1,000``, ``3.0``, ``-0``) goes to math-verify. Tests check the
    agreement with math-verify on thousands of pairs."""
    if boxed is None or not (gold_text.startswith("$") and gold_text.endswith("$")):
        return None
    gold = gold_text[1:-1]
    canonical = _CANONICAL_INTEGER.fullmatch
    if "-0" in (gold, boxed) or not (canonical(gold) and canonical(boxed)):
        return None
    return GradeResult(gold == boxed, "ok", boxed)


def check_timeout(timeout) -> float:
    """The per-item timeout in seconds, checked: finite, > 0 and at most ``MAX_TIMEOUT``. (NaN passes
    a ``<= 0`` test and then no deadline ever expires; inf and huge values overflow the wait.)"""
    try:
        seconds = float(timeout)
    except (TypeError, ValueError):
        raise ValueError(f"timeout must be a number of seconds, got {timeout!r}") from None
    if not 0 < seconds <= MAX_TIMEOUT:  # false for NaN too
        raise ValueError(f"timeout must be a finite number of seconds in (0, {MAX_TIMEOUT:g}], "
                         f"got {timeout!r}")
    return seconds


def grade(golds: list, predictions: list, *, timeout: float = DEFAULT_TIMEOUT, workers: int = 2,
          _item_grader=grade_prepared) -> list[GradeResult]:
    """Grade predictions against golds; one GradeResult per item, in order.

    ``_item_grader`` is a test hook: a picklable function with the signature of ``grade_prepared``.
    """
    if len(golds) != len(predictions):
        raise ValueError(f"{len(golds)} golds but {len(predictions)} predictions")
    timeout = check_timeout(timeout)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers!r}")
    items = [(index, prepare_gold(gold), *prepare_prediction(prediction))
             for index, (gold, prediction) in enumerate(zip(golds, predictions))]
    results: list[GradeResult | None] = [None] * len(items)
    queue = collections.deque()
    for item in items:
        fast = _integer_fast_path(item[1], item[3]) if _item_grader is grade_prepared else None
        if fast is None:
            queue.append(item)
        else:
            results[item[0]] = fast
    if not queue:
        return results  # type: ignore[return-value]
    context = _forkserver_context()
    pool: list[_Worker] = []

    def replace(worker: _Worker, status: str) -> None:
        """Kill the worker: its current item gets `status`, the rest of its chunk is queued again."""
        worker.stop(kill=True)
        index, _, _, boxed = worker.pending.popleft()
        results[index] = GradeResult(False, status, boxed)
        queue.extendleft(reversed(worker.pending))
        worker.pending.clear()
        pool[pool.index(worker)] = _Worker(context, _item_grader).wait_ready()

    finished = False
    try:
        pool.extend(_Worker(context, _item_grader) for _ in range(min(workers, len(items))))
        for worker in pool:  # started together, waited for in turn
            worker.wait_ready()
        while queue or any(worker.pending for worker in pool):
            chunk_size = max(1, min(16, len(queue) // (2 * len(pool))))  # small chunks near the end
            for worker in pool:
                if not worker.pending and queue:
                    worker.send([queue.popleft() for _ in range(min(chunk_size, len(queue)))])
            busy = {worker.connection: worker for worker in pool if worker.pending}
            deadline = min(worker.item_started for worker in busy.values()) + timeout
            for connection in multiprocessing.connection.wait(list(busy), max(0.0, deadline - time.monotonic())):
                worker = busy[connection]
                try:
                    index, correct, status, extracted = connection.recv()
                except (EOFError, OSError):  # the worker died (killed by the OS, crashed in C code)
                    replace(worker, "error")
                    continue
                worker.pending.popleft()
                worker.item_started = time.monotonic()  # the next item of the chunk starts now
                results[index] = GradeResult(correct, status, extracted)
            now = time.monotonic()
            for worker in [worker for worker in pool if worker.pending and now - worker.item_started > timeout]:
                replace(worker, "timeout")
        finished = True
    finally:  # interrupted (an error, Ctrl-C, run_cli's SIGTERM): kill, do not wait for busy workers
        for worker in pool:
            worker.stop(kill=not finished)
    return results  # type: ignore[return-value]


def _json_depth(value) -> int:
    """How deeply lists and objects nest in a parsed JSON value (a scalar is 0); a loop, no recursion."""
    depth, level = 0, [value]
    while level := [item for item in level if isinstance(item, (dict, list))]:
        depth += 1
        level = [child for item in level for child in (item.values() if isinstance(item, dict) else item)]
    return depth


def _parse_record(line: str, where: str) -> dict:
    """One JSONL line as a record with `gold` and `prediction`; a ValueError naming `where` otherwise."""
    too_deep = f"{where} is JSON nested deeper than {MAX_JSON_DEPTH} levels"
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(f"{where} is not valid JSON: {error.msg} (column {error.colno})") from None
    except RecursionError:  # the parser recurses once per level and gives up near 1000 levels
        raise ValueError(too_deep) from None
    if _json_depth(record) > MAX_JSON_DEPTH:  # shallower but still deep: str() and dumps() recurse too
        raise ValueError(too_deep)
    if not isinstance(record, dict):
        raise ValueError(f"{where} is not a JSON object")
    for key in ("gold", "prediction"):
        if key not in record:
            raise ValueError(f"{where} has no '{key}' field")
    return record


def read_records(in_path) -> tuple[list[dict], list[int]]:
    """The records of a grading JSONL and their 1-based line numbers; blank lines are skipped. Bad
    lines and a file without records are ValueErrors that name the file (and the line and key)."""
    records, line_numbers = [], []
    try:
        handle = open(in_path, encoding="utf-8", errors="replace")
    except OSError as error:
        raise ValueError(f"{in_path}: cannot read the input: {error.strerror}") from None
    with handle:
        for line_number, line in enumerate(handle, start=1):
            if line.strip():
                records.append(_parse_record(line, f"{in_path}: line {line_number}"))
                line_numbers.append(line_number)
    if not records:  # an accuracy over nothing would read as 0.0
        raise ValueError(f"{in_path}: no records to grade (the file is empty or only blank lines)")
    return records, line_numbers


def grade_file(in_path, out_path, *, timeout: float = DEFAULT_TIMEOUT, workers: int = 2) -> dict:
    """Grade a JSONL of {gold, prediction, ...}; write it back with correct/status/extracted added.

    The output is written atomically (``out_path.tmp`` then ``os.replace``). Returns a summary: n,
    accuracy, counts per status, the ids (or line numbers) of unparseable golds and the grader info.
    """
    timeout = check_timeout(timeout)  # before any work: a bad flag fails at once
    out_path = Path(out_path)
    if not out_path.parent.is_dir():
        raise ValueError(f"{out_path}: the output folder {out_path.parent} does not exist")
    records, line_numbers = read_records(in_path)
    results = grade([r["gold"] for r in records], [r["prediction"] for r in records],
                    timeout=timeout, workers=workers)
    temporary = out_path.with_name(out_path.name + ".tmp")
    try:
        with open(temporary, "w", encoding="utf-8") as handle:
            for record, result in zip(records, results):
                record.update(correct=result.correct, status=result.status, extracted=result.extracted)
                handle.write(json.dumps(record) + "\n")  # ASCII-escaped: safe for any input text
        os.replace(temporary, out_path)
    except BaseException as error:  # a full disk, a signal: no half-written file left behind
        temporary.unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise ValueError(f"{out_path}: cannot write the graded records: {error.strerror}") from error
        raise
    counts = collections.Counter(result.status for result in results)
    return {
        "n": len(results),
        "correct": sum(result.correct for result in results),
        "accuracy": sum(result.correct for result in results) / len(results),
        "status_counts": {status: counts.get(status, 0) for status in STATUSES},
        "unparseable_gold": [record.get("id", line_number) for record, line_number, result
                             in zip(records, line_numbers, results) if result.status == "unparseable_gold"],
        "grader": {**GRADER_INFO, "timeout_s": timeout},
    }


# --- the command line: `dcod grade` and `python -m dcod.grading` --------------------------------

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class Interrupted(BaseException):
    """A stop signal as an exception, so that grade() kills its workers on the way out (a
    BaseException, like KeyboardInterrupt: an ``except Exception`` on the way does not swallow it)."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


@contextlib.contextmanager
def _stop_signals_raise():
    """Inside: the first of SIGTERM/SIGINT/SIGHUP raises Interrupted and later ones are ignored, so
    that the cleanup it starts is not cut short. Signal handlers work in the main thread only."""

    def handler(signum, frame):
        for stop in STOP_SIGNALS:
            signal.signal(stop, signal.SIG_IGN)
        raise Interrupted(signum)

    if threading.current_thread() is not threading.main_thread():  # a library caller's thread
        yield
        return
    previous = {signum: signal.signal(signum, handler) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, action in previous.items():
            signal.signal(signum, action)


def run_cli(in_path, out_path, *, timeout: float, workers: int, prog: str = "dcod grade") -> int:
    """Grade a file for a command line and return its exit code: 0 with the summary on stdout as one
    JSON object; 2 with a message naming the bad input; 128 + the signal number when SIGTERM, SIGINT
    or SIGHUP stopped it (workers killed, no ``.tmp`` left)."""
    try:
        with _stop_signals_raise():
            summary = grade_file(in_path, out_path, timeout=timeout, workers=workers)
    except ValueError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    except Interrupted as stop:
        print(f"{prog}: {stop}; grading workers killed", file=sys.stderr)
        return 128 + stop.signum
    print(json.dumps(summary, indent=2))
    return 0


def _timeout_argument(text: str) -> float:
    try:
        return check_timeout(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def main(argv: list[str] | None = None) -> int:
    """``python -m dcod.grading IN OUT [--timeout S] [--workers N]``: as ``dcod grade``."""
    parser = argparse.ArgumentParser(prog="dcod grade", description=grade_file.__doc__.splitlines()[0])
    parser.add_argument("in_path")
    parser.add_argument("out_path")
    parser.add_argument("--timeout", type=_timeout_argument, default=DEFAULT_TIMEOUT, help="seconds per item")
    parser.add_argument("--workers", type=int, default=2)
    arguments = parser.parse_args(argv)
    return run_cli(arguments.in_path, arguments.out_path, timeout=arguments.timeout,
                   workers=arguments.workers, prog=parser.prog)


_server_parent = os.environ.pop(_FORKSERVER_FLAG, None)
if _server_parent is not None:  # this import is the forkserver's preload
    _die_with_parent(int(_server_parent))
    _SERVER_PID = os.getpid()
    _warm_up()

if __name__ == "__main__":
    sys.exit(main())
