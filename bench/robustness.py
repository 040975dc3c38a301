"""`revtaf bench --robustness`: does the demo survive strangers? Measured, not assumed.

Four checks, each a function the tests reuse with small sizes:
1. hostile inputs (`run_library`, `run_app_corpus`): every file of the generated corpus through `read_image`
   + `REVTAF.predict` in a sandboxed child process with a time limit, then through the running app's
   `/generate` API; each must end in a report or a typed, readable error, and a good request must succeed
   right after every bad one;
2. load (`run_load`, `session_isolation`): concurrent `gradio_client` sessions on loopback mixing good and
   bad files; latency percentiles, throughput, peak RSS of the server, same image -> same report;
3. patient data (`privacy_probe`): DICOMs whose identifying tags (and file name) carry marker strings; no
   marker may appear in any API output, downloaded file, server log line or file left under the server's
   temporary folders, and no upload may stay on disk;
4. weights integrity (`integrity_checks`, `unsafe_weight_loads`): corrupted, truncated and missing files of
   a model directory are refused by name; weights are read only by safetensors or torch.load(weights_only=True).

The app runs as its own process (`python -m app`, `AppServer`), exactly as users start it, so its log is
the real log and a crash cannot take the harness down with it.
"""

from __future__ import annotations

import ast
import hashlib
import json
import math
import multiprocessing
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# What a stack trace looks like in text a user is shown: never acceptable there.
_TRACE = re.compile(r"Traceback \(most recent call last\)|File \"[^\"]*\", line \d+|\bline \d+, in \w+")


def message_problems(message: str | None, secrets: Iterable[str] = ()) -> list[str]:
    """What is wrong with an error message meant for a user (empty list = fine): missing, a stack trace,
    or one of `secrets` (patient-data markers, file names) quoted back."""
    if not message or not message.strip():
        return ["no message"]
    problems = ["stack trace"] if _TRACE.search(message) else []
    problems += [f"quotes {s!r}" for s in secrets if s and s in message]
    return problems


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered), max(1, math.ceil(q / 100 * len(ordered)))) - 1]


# ============================================================================ 1a. the library, sandboxed


@dataclass
class Outcome:
    """What one input turned into. kind: report | error (typed ImageReadError) | untyped (any other
    exception) | nonfinite (decoded, but the display image holds NaN/inf) | hang (no answer within the time
    limit) | crash (the process died)."""

    name: str
    expected: str | None  # ImageReadError subclass name the input must raise, None = must give a report
    kind: str
    error_type: str | None = None
    message: str = ""
    report: str | None = None
    seconds: float = 0.0
    error_mro: tuple[str, ...] = ()
    warned: bool | None = None  # the report came with the input check's warning (None: the model has no check)
    expect_warning: bool = False

    @property
    def clean(self) -> bool:
        """A report or a typed error: the two acceptable endings."""
        return self.kind in ("report", "error")

    @property
    def as_expected(self) -> bool:
        if self.expected is None:
            return self.kind == "report" and (self.warned is None or not self.expect_warning or self.warned)
        return self.kind == "error" and self.expected in self.error_mro


def _sandbox_main(conn, checkpoint: str | None, memory_bytes: int | None, threads: int) -> None:
    """Child process: load the model once, then answer one input at a time until told to stop (None)."""
    if memory_bytes:
        import resource

        # an allocation beyond this fails with MemoryError here instead of the machine's OOM killer
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    import warnings

    import numpy as np
    import torch

    from revtaf.data.imageio import ImageReadError, read_image

    torch.set_num_threads(threads)
    model = None
    if checkpoint:
        from revtaf.model.revtaf import REVTAF

        model = REVTAF.from_pretrained(checkpoint)
    conn.send("ready")
    while (data := conn.recv()) is not None:
        start = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                image = read_image(data)
                if not np.isfinite(image.render()).all():
                    raise FloatingPointError("the decoded image has NaN or infinite display values")
                prediction = model.predict(image) if model is not None else None
            out = {"kind": "report", "report": prediction.report if prediction else None,
                   "warned": None if prediction is None or prediction.in_distribution is None
                   else prediction.warning is not None}
        except ImageReadError as exc:
            out = {"kind": "error", "error_type": type(exc).__name__, "message": str(exc),
                   "error_mro": tuple(c.__name__ for c in type(exc).__mro__)}
        except Exception as exc:  # everything else is a finding, reported with its type
            kind = "nonfinite" if isinstance(exc, FloatingPointError) else "untyped"
            out = {"kind": kind, "error_type": type(exc).__name__, "message": str(exc)[:500],
                   "error_mro": tuple(c.__name__ for c in type(exc).__mro__)}
        out["seconds"] = time.perf_counter() - start
        conn.send(out)


class Sandbox:
    """`read_image` (+ `REVTAF.predict` when a checkpoint is given) on untrusted bytes in a child process.

    A hang is cut after `timeout_s`, a crash (segfault, MemoryError beyond `memory_gb` of address space)
    ends the child, not the caller; a fresh child is started for the next input.
    """

    def __init__(self, checkpoint: str | os.PathLike | None = None, timeout_s: float = 60.0,
                 memory_gb: float | None = 6.0, threads: int = 1, startup_timeout_s: float = 300.0):
        self.checkpoint = str(checkpoint) if checkpoint else None
        self.timeout_s, self.threads, self.startup_timeout_s = timeout_s, threads, startup_timeout_s
        self.memory_bytes = int(memory_gb * 2**30) if memory_gb else None
        self._ctx = multiprocessing.get_context("spawn")  # no fork of a process that runs threads
        self._proc = self._conn = None

    def _start(self) -> None:
        parent, child = self._ctx.Pipe()
        self._proc = self._ctx.Process(target=_sandbox_main, daemon=True,
                                       args=(child, self.checkpoint, self.memory_bytes, self.threads))
        self._proc.start()
        child.close()
        self._conn = parent
        try:
            ready = parent.poll(self.startup_timeout_s) and parent.recv() == "ready"
        except (EOFError, ConnectionResetError):
            ready = False
        if not ready:
            self.close()
            raise RuntimeError("the sandbox process did not start (model load failed or timed out)")

    def run(self, data: bytes) -> dict:
        """{"kind", "error_type", "message", "report", "seconds", "error_mro"} for one input."""
        if self._proc is None or not self._proc.is_alive():
            self._start()
        start = time.perf_counter()
        self._conn.send(data)
        try:
            if self._conn.poll(self.timeout_s):
                return self._conn.recv()
            kind, message = "hang", f"no answer within {self.timeout_s:.0f} s"
        except (EOFError, ConnectionResetError):
            kind = "crash"
            self._proc.join(5)
            message = f"the process died (exit code {self._proc.exitcode})"
        self.close()
        return {"kind": kind, "message": message, "seconds": time.perf_counter() - start}

    def close(self) -> None:
        if self._proc is not None:
            if self._proc.is_alive():
                try:
                    self._conn.send(None)
                except (BrokenPipeError, OSError):
                    pass
                self._proc.join(2)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join(5)
        if self._conn is not None:
            self._conn.close()
        self._proc = self._conn = None

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def run_library(items: Sequence, checkpoint: str | os.PathLike | None, timeout_s: float = 60.0) -> list[Outcome]:
    """Every corpus item (objects with .name, .data, .expect) through the sandboxed library path."""
    with Sandbox(checkpoint, timeout_s) as box:
        return [Outcome(item.name, item.expect.__name__ if item.expect else None, **box.run(item.data),
                        expect_warning=getattr(item, "warn", False)) for item in items]


# ============================================================================ the app as a process


def _path_without(program: str) -> str:
    """PATH minus the folders that hold `program`."""
    keep = [d for d in os.environ.get("PATH", "").split(os.pathsep) if d and not (Path(d) / program).exists()]
    return os.pathsep.join(keep)


_LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only, never a proxy


class AppServer:
    """`python -m app` on 127.0.0.1:<free port>, with its own temporary folders under `workdir`.

    `workdir/gradio` is Gradio's cache and upload folder (GRADIO_TEMP_DIR), `workdir/tmp` is TMPDIR (review
    exports), `workdir/cwd` its working directory and `workdir/server.log` its stdout + stderr: everything it
    may write is in one place for the privacy scan. `java=False` hides Java (no METEOR warm-up: less CPU for
    tests that do not need METEOR); `threads` sets OMP_NUM_THREADS; `env` adds variables.
    """

    def __init__(self, checkpoint: str | os.PathLike, workdir: str | os.PathLike,
                 data_root: str | os.PathLike | None = None, java: bool = True, threads: int | None = None,
                 env: dict[str, str] | None = None, startup_timeout_s: float = 300.0):
        self.checkpoint, self.data_root = Path(checkpoint), data_root
        self.workdir = Path(workdir)
        self.java, self.threads, self.extra_env = java, threads, env or {}
        self.startup_timeout_s = startup_timeout_s
        from revtaf_bench.harness import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log_path = self.workdir / "server.log"
        self.proc: subprocess.Popen | None = None

    @property
    def temp_dirs(self) -> list[Path]:
        return [self.workdir / "gradio", self.workdir / "tmp", self.workdir / "cwd"]

    def start(self) -> AppServer:
        for d in self.temp_dirs:
            d.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "GRADIO_TEMP_DIR": str(self.workdir / "gradio"), "TMPDIR": str(self.workdir / "tmp"),
               "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
               **self.extra_env}
        if not self.java:
            env["PATH"] = _path_without("java")
        if self.threads:
            env["OMP_NUM_THREADS"] = str(self.threads)
        cmd = [sys.executable, "-m", "revtaf_app", "--checkpoint", str(self.checkpoint), "--host", "127.0.0.1",
               "--port", str(self.port)]
        if self.data_root:
            cmd += ["--data-root", str(self.data_root)]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.workdir / "cwd",
                                         start_new_session=True)
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"the app exited with code {self.proc.returncode} while starting:\n{self.log_tail()}")
            try:
                with _LOCAL.open(self.url + "config", timeout=5) as response:
                    if response.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"the app did not answer within {self.startup_timeout_s:.0f} s:\n{self.log_tail()}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.is_file() else ""

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-n:])

    def _status(self, field_name: str) -> int | None:
        """A /proc/<pid>/status memory field in bytes (Linux), None elsewhere or after exit."""
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith(field_name + ":"):
                    return int(line.split()[1]) * 1024
        except (OSError, AttributeError):
            return None
        return None

    def peak_rss(self) -> int | None:
        """Peak resident memory of the server process so far (VmHWM), bytes."""
        return self._status("VmHWM")

    def rss(self) -> int | None:
        return self._status("VmRSS")

    def stop(self) -> None:
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGTERM)  # its own session: METEOR's Java child goes too
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)

    def __enter__(self) -> AppServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# ============================================================================ calling the API


@dataclass
class Call:
    """One API call. kind: ok | error (the app's readable refusal, gradio AppError) | busy (queue full) |
    timeout | failure (anything else: a broken connection, a server error without a message)."""

    kind: str
    value: object = None
    message: str = ""
    seconds: float = 0.0


def call(client, *args, api_name: str, timeout_s: float = 120.0) -> Call:
    from gradio_client.exceptions import AppError
    from gradio_client.utils import QueueError

    start = time.perf_counter()
    try:
        value = client.submit(*args, api_name=api_name).result(timeout=timeout_s)
        return Call("ok", value, seconds=time.perf_counter() - start)
    except AppError as exc:
        kind, message = "error", str(exc)
    except QueueError as exc:
        kind, message = "busy", str(exc)
    except TimeoutError:
        kind, message = "timeout", f"no answer within {timeout_s:.0f} s"
    except Exception as exc:  # the harness records it; a healthy app never gets here
        kind, message = "failure", f"{type(exc).__name__}: {exc}"
    return Call(kind, None, message, time.perf_counter() - start)


def client(url: str, download: bool = False):
    """A gradio Client = one session. `download`: fetch returned files (needed to read them; slower)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from gradio_client import Client

    return Client(url, verbose=False, download_files=download)


def generate(c, path: str | os.PathLike, timeout_s: float = 120.0, grp_off: bool = False,
             lrp_off: bool = False) -> Call:
    """`/generate` with an image file; ok only if the prediction has a non-empty report."""
    from gradio_client import handle_file

    result = call(c, handle_file(str(path)), grp_off, lrp_off, api_name="/generate", timeout_s=timeout_s)
    if result.kind == "ok":
        report = (result.value[0] or {}).get("report") if isinstance(result.value, (list, tuple)) else None
        if not (isinstance(report, str) and report.strip()):
            return Call("failure", result.value, "the app answered without a report", result.seconds)
    return result


def fingerprint(prediction: dict) -> str:
    """What must be identical when the same image is analysed twice (timings excluded)."""
    keep = {k: prediction.get(k) for k in ("report", "diseases", "neighbours", "entities", "grp_sentences", "ablation")}
    return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]


# ============================================================================ 1b. hostile inputs via the app


@dataclass
class ApiOutcome:
    name: str
    expected: str | None
    kind: str  # Call.kind of the hostile request
    message: str
    seconds: float
    problems: list[str] = field(default_factory=list)  # message_problems of what the user saw
    good_after: bool | None = None  # the good request right after a refused one succeeded (None = not sent)

    @property
    def clean(self) -> bool:
        return self.kind in ("ok", "error") and not self.problems and self.good_after is not False


def run_app_corpus(url: str, items: Sequence, good: str | os.PathLike, workdir: str | os.PathLike,
                   secrets: Iterable[str] = (), timeout_s: float = 120.0) -> list[ApiOutcome]:
    """Every corpus item uploaded to `/generate` under its own file name, in one session; `secrets` must never
    appear in a message (markers, file names).

    The request right after each refused upload must succeed. Items are sent alternately refused / decodable,
    so that request is usually the next corpus item that must give a report (a valid upload, only an odd one);
    when there is none, or it fails, the good image is sent to decide.
    """
    folder = Path(workdir)
    folder.mkdir(parents=True, exist_ok=True)
    c = client(url)
    secrets = tuple(secrets)
    refused = [item for item in items if item.expect is not None]
    decodable = [item for item in items if item.expect is None]
    order = [x for pair in zip(refused, decodable) for x in pair]
    order += refused[len(decodable):] + decodable[len(refused):]
    out, pending = [], None  # pending: the last refused outcome, waiting for its next request
    for item in order:
        if pending is not None and item.expect is not None:
            pending.good_after, pending = generate(c, good, timeout_s).kind == "ok", None
        path = folder / item.filename
        path.write_bytes(item.data)
        result = generate(c, path, timeout_s)
        path.unlink()
        outcome = ApiOutcome(item.name, item.expect.__name__ if item.expect else None, result.kind, result.message,
                             result.seconds)
        if pending is not None:
            pending.good_after = result.kind == "ok" or generate(c, good, timeout_s).kind == "ok"
            pending = None
        if result.kind != "ok":
            outcome.problems = message_problems(result.message, (*secrets, item.filename))
            pending = outcome
        out.append(outcome)
    if pending is not None:
        pending.good_after = generate(c, good, timeout_s).kind == "ok"
    by_name = {o.name: o for o in out}
    return [by_name[item.name] for item in items]


# ============================================================================ 2. load


@dataclass
class LoadResult:
    clients: int
    requests: int  # sent in total
    wall_s: float
    good_latencies_s: list[float]
    good_failed: list[str]  # "client/request: kind message" of good files that got no report
    bad_not_refused: list[str]  # bad files that did not get a readable refusal
    busy: int  # answered "queue full"
    fingerprints: dict[str, set[str]]  # good file -> distinct prediction fingerprints (1 = deterministic)

    @property
    def served(self) -> int:
        return len(self.good_latencies_s)

    @property
    def deterministic(self) -> bool:
        return all(len(v) == 1 for v in self.fingerprints.values())

    def summary(self) -> dict:
        lat = self.good_latencies_s
        return {"clients": self.clients, "requests": self.requests, "good_served": self.served,
                "good_failed": len(self.good_failed), "bad_refused_cleanly": not self.bad_not_refused,
                "busy": self.busy, "p50_s": round(percentile(lat, 50), 3), "p95_s": round(percentile(lat, 95), 3),
                "throughput_per_min": round(60 * self.served / self.wall_s, 1) if self.wall_s else None,
                "wall_s": round(self.wall_s, 1), "deterministic": self.deterministic}


def run_load(url: str, good: Sequence[str | os.PathLike], bad: Sequence[str | os.PathLike], clients: int = 8,
             requests: int = 4, timeout_s: float = 300.0) -> LoadResult:
    """`clients` concurrent sessions (threads, one gradio Client each, all started together), each sending
    `requests` `/generate` calls one after the other; every third call (shifted per client) is a bad file.
    A good file must get its report, a bad one a readable refusal, the same good file the same prediction."""
    lock = threading.Lock()
    latencies, good_failed, bad_wrong, prints = [], [], [], {str(g): set() for g in good}
    busy = [0]
    barrier = threading.Barrier(clients)

    def session(i: int) -> None:
        c = client(url)
        barrier.wait()
        for r in range(requests):
            is_bad = (i + r) % 3 == 2
            path = str(bad[(i + r) % len(bad)] if is_bad else good[(i + r) % len(good)])
            result = generate(c, path, timeout_s)
            with lock:
                busy[0] += result.kind == "busy"
                if is_bad and (result.kind != "error" or message_problems(result.message)):
                    bad_wrong.append(f"{i}/{r} {Path(path).name}: {result.kind} {result.message[:120]}")
                elif not is_bad and result.kind == "ok":
                    latencies.append(result.seconds)
                    prints[path].add(fingerprint(result.value[0]))
                elif not is_bad:
                    good_failed.append(f"{i}/{r} {Path(path).name}: {result.kind} {result.message[:120]}")

    threads = [threading.Thread(target=session, args=(i,), daemon=True) for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    return LoadResult(clients, clients * requests, wall, latencies, good_failed, bad_wrong, busy[0],
                      {k: v for k, v in prints.items() if v})


def burst(url: str, path: str | os.PathLike, n: int, timeout_s: float = 300.0) -> list[Call]:
    """`n` `/generate` calls of the same file from `n` sessions released at once (queue-limit probe)."""
    barrier = threading.Barrier(n)
    results: list[Call | None] = [None] * n

    def one(i: int) -> None:
        c = client(url)
        barrier.wait()
        results[i] = generate(c, path, timeout_s)

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def session_isolation(url: str, good: Sequence[str | os.PathLike], sessions: int = 4, timeout_s: float = 300.0) -> dict:
    """Concurrent sessions that each set their own ground truth, ablation toggles and review note (all
    carrying a per-session token); returns {"sessions", "isolated", "failures": [...]}: a session's outputs
    must carry its own token and settings and never another session's token."""
    from gradio_client import handle_file

    tokens = [f"ZZSESSION{i:02d}TOKEN" for i in range(sessions)]
    failures: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(sessions)

    def fail(i: int, what: str) -> None:
        with lock:
            failures.append(f"session {i}: {what}")

    def one(i: int) -> None:
        c = client(url, download=True)
        gt = f"the heart is normal . {tokens[i]} the lungs are clear ."
        grp, lrp = i % 2 == 1, i % 4 >= 2
        barrier.wait()
        seen = []
        steps = [
            ("/analyze_upload", (handle_file(str(good[i % len(good)])), False, False, [], 0.6, "inferno", "all")),
            ("/compare", (gt,)),
            ("/ablate", (grp, lrp, [], gt, 0.6, "inferno", "all")),
            ("/save_review", (["style"], f"note of {tokens[i]}")),
        ]
        for api_name, args in steps:
            result = call(c, *args, api_name=api_name, timeout_s=timeout_s)
            if result.kind != "ok":
                return fail(i, f"{api_name} {result.kind} {result.message[:120]}")
            seen.append((api_name, _text_of(result.value)))
        text = "\n".join(t for _, t in seen).lower()  # the comparison shows cleaned (lower-case) text
        others = [t for j, t in enumerate(tokens) if j != i and t.lower() in text]
        if others:
            fail(i, f"sees other sessions' data {others}")
        compared, ablated, reviewed = seen[1][1], seen[2][1], seen[3][1]
        if tokens[i].lower() not in compared.lower():
            fail(i, "the comparison does not show its own ground truth")
        want = {(False, False): "full model", (True, False): "retrieval (GRP) off",
                (False, True): "entity prompts (LRP) off", (True, True): "GRP and LRP off"}[(grp, lrp)]
        if want not in ablated:
            fail(i, f"ablation status is not {want!r}")
        if reviewed.count(tokens[i]) < 1 or "1 review" not in reviewed:
            fail(i, "its review table does not hold exactly its own note")

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"sessions": sessions, "isolated": not failures, "failures": failures}


def _text_of(value) -> str:
    """All text an API result carries: JSON of the outputs plus the content of every text file it returned."""
    parts = [json.dumps(value, default=str, ensure_ascii=False)]
    for path in _paths_in(value):
        if path.suffix.lower() in (".csv", ".json", ".txt", ".html", ".md"):
            parts.append(path.read_text(encoding="utf-8", errors="replace"))
    return "\n".join(parts)


def _paths_in(value) -> list[Path]:
    """Local files (downloaded by gradio_client) referenced anywhere in an API result."""
    if isinstance(value, str):
        return [Path(value)] if os.path.isabs(value) and os.path.isfile(value) else []
    if isinstance(value, dict):
        return [p for v in value.values() for p in _paths_in(v)]
    if isinstance(value, (list, tuple)):
        return [p for v in value for p in _paths_in(v)]
    return []


# ============================================================================ 3. patient data


def _find(blob: bytes, markers: Iterable[str]) -> list[str]:
    """Markers found in `blob`, as UTF-8 or UTF-16 text (JSON escapes are decoded by the caller)."""
    return [m for m in markers if m.encode() in blob or m.encode("utf-16-le") in blob]


def privacy_probe(url: str, server: AppServer, dicoms: dict[str, bytes], markers: Sequence[str],
                  workdir: str | os.PathLike, timeout_s: float = 300.0) -> dict:
    """Send marker-carrying DICOMs (file name -> bytes; names may carry markers too) through every endpoint
    that takes an upload or returns a file, then look for the markers everywhere the server could put them.

    Returns {"markers", "requests", "places_scanned", "leaks": ["where: marker"], "uploads_kept": [paths]}.
    """
    from gradio_client import handle_file

    folder = Path(workdir)
    folder.mkdir(parents=True, exist_ok=True)
    needles = tuple(markers) + tuple(Path(n).stem for n in dicoms if any(m in n for m in markers))
    digests = {hashlib.sha256(d).hexdigest() for d in dicoms.values()}
    leaks, outputs, requests = [], [], 0
    for name, data in dicoms.items():
        path = folder / name
        path.write_bytes(data)
        c = client(url, download=True)
        steps = [("/generate", (handle_file(str(path)), False, False)),
                 ("/analyze_upload", (handle_file(str(path)), False, False, [], 0.6, "inferno", "all")),
                 ("/compare", ("the heart is normal . the lungs are clear .",)),
                 ("/heatmap", ("grp:0", 0.5, "jet")),
                 ("/save_review", (["other"], "checked the upload")),
                 ("/ablate", (True, False, [], "", 0.6, "inferno", "all"))]
        for api_name, args in steps:
            result = call(c, *args, api_name=api_name, timeout_s=timeout_s)
            requests += 1
            outputs.append((f"{api_name} ({name})", result.message + "\n" + _text_of(result.value)))
            for p in _paths_in(result.value):
                outputs.append((f"{api_name} ({name}) file {p.name}", p.read_bytes()))
        path.unlink()
    places = 0
    for where, blob in outputs:
        blob = blob.encode() if isinstance(blob, str) else blob
        places += 1
        leaks += [f"{where}: {m}" for m in _find(blob, needles)]
    places += 1
    leaks += [f"server log: {m}" for m in _find(server.log_text().encode(), needles)]
    kept = []
    for root in server.temp_dirs:
        for p in root.rglob("*"):
            leaks += [f"file name {p}: {m}" for m in needles if m in str(p.relative_to(root))]
            if p.is_file():
                places += 1
                blob = p.read_bytes()
                leaks += [f"file {p}: {m}" for m in _find(blob, needles)]
                if hashlib.sha256(blob).hexdigest() in digests:
                    kept.append(str(p))
    return {"markers": len(needles), "requests": requests, "places_scanned": places, "leaks": leaks,
            "uploads_kept": kept}


# ============================================================================ 4. weights integrity


def unsafe_weight_loads(roots: Iterable[str | os.PathLike] = (REPO / "revtaf", REPO / "app", REPO / "train", REPO / "bench"),
                        ) -> list[str]:
    """Places that could unpickle arbitrary objects: torch.load without weights_only=True, pickle/dill/joblib
    loads, np.load(allow_pickle=True). "file:line call" strings (an AST scan, comments cannot fool it)."""
    found = []
    for root in roots:
        for path in sorted(Path(root).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for node in ast.walk(tree):
                if not isinstance(node, ast.Call):
                    continue
                name = ast.unparse(node.func)
                kw = {k.arg: k.value for k in node.keywords}
                unsafe = (
                    name.endswith("torch.load")
                    and not (isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True)
                ) or name in ("pickle.load", "pickle.loads", "dill.load", "joblib.load", "cloudpickle.load") or (
                    name.endswith("np.load") and isinstance(kw.get("allow_pickle"), ast.Constant)
                    and kw["allow_pickle"].value is True)
                if unsafe:
                    rel = path.relative_to(REPO) if REPO in path.parents else path
                    found.append(f"{rel}:{node.lineno} {ast.unparse(node)[:90]}")
    return found


def _variant(source: Path, target: Path, change: Callable[[Path], None]) -> Path:
    """A copy of a model directory (hard links where possible) with `change` applied to the copy."""
    if target.exists():
        shutil.rmtree(target)

    def link_or_copy(src, dst):
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, target, copy_function=link_or_copy)
    change(target)
    return target


def _rewrite(path: Path, edit: Callable[[bytes], bytes]) -> None:
    data = path.read_bytes()
    path.unlink()  # break the hard link before writing
    path.write_bytes(edit(data))


def integrity_checks(model_dir: str | os.PathLike, workdir: str | os.PathLike) -> list[dict]:
    """Load the intact model and damaged copies of it with REVTAF.from_pretrained(require_manifest=True),
    as the demo loads its model.

    Each check: {"check", "passed", "detail"}. Damaged copies must be refused with an IntegrityError that
    names the damaged file; the intact one must load.
    """
    from revtaf.integrity import IntegrityError, MANIFEST
    from revtaf.model.revtaf import REVTAF, WEIGHTS_FILE

    source, root = Path(model_dir), Path(workdir)
    root.mkdir(parents=True, exist_ok=True)

    def flip(data: bytes) -> bytes:
        mid = len(data) // 2  # inside the tensor data, past the header: safetensors itself would load it
        return data[:mid] + bytes([data[mid] ^ 0x01]) + data[mid + 1:]

    cases = [
        ("intact model loads", lambda d: None, None),
        ("one bit flipped in the weights", lambda d: _rewrite(d / WEIGHTS_FILE, flip), WEIGHTS_FILE),
        ("weights truncated to half", lambda d: _rewrite(d / WEIGHTS_FILE, lambda b: b[: len(b) // 2]), WEIGHTS_FILE),
        ("weights file missing", lambda d: (d / WEIGHTS_FILE).unlink(), WEIGHTS_FILE),
        ("config grown by one byte", lambda d: _rewrite(d / "config.json", lambda b: b + b" "), "config.json"),
        ("bank ids edited, same size", lambda d: _rewrite(d / "bank.json", lambda b: b.replace(b"ids", b"IDS", 1)),
         "bank.json"),
        ("manifest missing", lambda d: (d / MANIFEST).unlink(), MANIFEST),
    ]
    results = []
    for label, change, culprit in cases:
        target = _variant(source, root / "variant", change)
        try:
            REVTAF.from_pretrained(target, require_manifest=True)
            passed, detail = culprit is None, "loaded"
        except IntegrityError as exc:
            passed = culprit is not None and culprit in str(exc)
            detail = str(exc)
        except Exception as exc:  # a refusal that is not the clear integrity error is a failed check
            passed, detail = False, f"{type(exc).__name__}: {exc}"
        results.append({"check": label, "passed": passed, "detail": detail})
    shutil.rmtree(root / "variant", ignore_errors=True)
    return results


# ============================================================================ the bench


BAD_FOR_LOAD = ("empty", "text-renamed-png", "png-bomb-20000", "dicom-multiframe", "jpeg-truncated")


def soak(server: AppServer, good: Sequence[str | os.PathLike], bad: Sequence[str | os.PathLike], minutes: float,
         clients: int = 4, windows: int = 5, timeout_s: float = 300.0) -> dict:
    """Mixed traffic for `minutes`: `clients` sessions, each sending `/generate` calls one after the other until
    the time is up, every third one a bad file. An error is a good file without its report or a bad file without
    a readable refusal. Latency percentiles of the good calls per time window; the server's RSS at the start, at
    the end and at the end of each window, sampled every few seconds (a leak grows window after window, a
    warm-up of allocator and caches levels off)."""
    if minutes <= 0 or clients < 1:
        raise ValueError(f"soak needs minutes > 0 and clients >= 1, got {minutes}, {clients}")
    lock = threading.Lock()
    calls: list[tuple[float, str, float]] = []  # (seconds since start, "good" | "bad" | "error", latency)
    errors: list[str] = []
    rss_start = server.rss()
    start = time.perf_counter()
    deadline = start + 60 * minutes

    def session(i: int) -> None:
        c, r = client(server.url), 0
        while time.perf_counter() < deadline:
            is_bad = (i + r) % 3 == 2
            path = str(bad[(i + r) % len(bad)] if is_bad else good[(i + r) % len(good)])
            result = generate(c, path, timeout_s)
            ok = (result.kind == "error" and not message_problems(result.message)) if is_bad else result.kind == "ok"
            with lock:
                calls.append((time.perf_counter() - start, ("bad" if is_bad else "good") if ok else "error",
                              result.seconds))
                if not ok:
                    errors.append(f"{i}/{r} {Path(path).name}: {result.kind} {result.message[:120]}")
            r += 1

    rss_samples: list[tuple[float, int]] = []  # (seconds since start, bytes)
    done = threading.Event()

    def sample_rss() -> None:
        while not done.wait(min(5.0, 60 * minutes / (4 * windows))):
            if (value := server.rss()) is not None:
                rss_samples.append((time.perf_counter() - start, value))

    sampler = threading.Thread(target=sample_rss, daemon=True)
    sampler.start()
    threads = [threading.Thread(target=session, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    sampler.join()
    wall = time.perf_counter() - start
    width = wall / windows
    by_window = []
    for w in range(windows):
        lat = [s for t, kind, s in calls if kind == "good" and w * width <= t < (w + 1) * width]
        by_window.append({"from_min": round(w * width / 60, 1), "to_min": round((w + 1) * width / 60, 1),
                          "good": len(lat), "p50_s": round(percentile(lat, 50), 3) if lat else None,
                          "p95_s": round(percentile(lat, 95), 3) if lat else None,
                          "rss_mb": next((round(v / 2**20) for t, v in reversed(rss_samples) if t < (w + 1) * width),
                                         None)})
    rss_end = server.rss()
    return {"minutes": round(wall / 60, 2), "clients": clients, "requests": len(calls),
            "good_served": sum(k == "good" for _, k, _ in calls), "bad_refused": sum(k == "bad" for _, k, _ in calls),
            "errors": len(errors), "error_detail": errors[:20], "windows": by_window,
            "rss_start_mb": round((rss_start or 0) / 2**20), "rss_end_mb": round((rss_end or 0) / 2**20),
            "server_alive": server.alive()}


def format_soak(r: dict) -> str:
    detail = "".join(f"\n  error: {e}" for e in r["error_detail"])
    windows = ", ".join(f"{w['from_min']:g}-{w['to_min']:g} min {w['p50_s']}/{w['p95_s']} s" for w in r["windows"])
    rss = " → ".join(str(w["rss_mb"]) for w in r["windows"])
    return (f"soak: {r['minutes']:g} min, {r['clients']} clients of mixed traffic: {r['requests']} requests "
            f"({r['good_served']} good served, {r['bad_refused']} bad refused readably), {r['errors']} errors · "
            f"p50/p95 by window: {windows} · server RSS {r['rss_start_mb']} MB at the start, {r['rss_end_mb']} MB at "
            f"the end ({r['rss_end_mb'] - r['rss_start_mb']:+d} MB; by window {rss} MB) · server alive: "
            f"{'yes' if r['server_alive'] else 'NO'}{detail}")


def soak_bench(checkpoint: str | os.PathLike | None = None, data_root: str | os.PathLike | None = None,
               minutes: float = 30.0, clients: int = 4, timeout_s: float = 300.0, print_line: bool = True) -> dict:
    """`revtaf bench --robustness --soak MINUTES`: `python -m app` with the given (else bundled, else random)
    model under `soak` traffic; prints the `soak:` line and returns every figure."""
    from revtaf_bench.harness import model_dir_or_random
    from revtaf.paths import resolve_data_root

    from revtaf_bench import hostile_corpus as helpers

    root = resolve_data_root(data_root)
    with tempfile.TemporaryDirectory(prefix="revtaf-soak-") as tmp:
        work = Path(tmp)
        model_dir, model = model_dir_or_random(checkpoint, work)
        good = _good_files(root, work, helpers)
        bad = _bad_files(helpers.corpus(), work)
        with AppServer(model_dir, work / "app", java=False) as server:
            generate(client(server.url), good[0], timeout_s)  # warm-up: first-call costs are not soak figures
            out = {"model": model, **soak(server, good, bad, minutes, clients, timeout_s=timeout_s)}
            if out["errors"]:  # the server's side of it, before its folder is deleted
                out["error_detail"] += [f"server log: {line[:200]}" for line in server.log_text().splitlines()
                                        if "Error" in line or "Traceback" in line][-10:]
    if print_line:
        print(format_soak(out))
    return out


def _bad_files(items: Sequence, folder: Path) -> list[Path]:
    """The hostile corpus items of BAD_FOR_LOAD written to `folder`, for the load and soak traffic."""
    paths = []
    for item in items:
        if item.name in BAD_FOR_LOAD:
            paths.append(folder / item.filename)
            paths[-1].write_bytes(item.data)
    return paths


def _good_files(data_root: Path | None, folder: Path, helpers, n: int = 2) -> list[Path]:
    if data_root is not None:
        from revtaf.data import image_file, load_annotation

        return [image_file(data_root, s) for s in load_annotation(data_root, "iu")["test"][:n]]
    paths = []
    for i in range(n):
        paths.append(folder / f"good-{i}.png")
        paths[-1].write_bytes(helpers.good_image(seed=i))
    return paths


def bench(checkpoint: str | os.PathLike | None = None, data_root: str | os.PathLike | None = None, clients: int = 8,
          requests: int = 4, timeout_s: float = 300.0, print_table: bool = True) -> dict:
    """Run the four checks against `python -m app` with the given (else bundled, else random) model; print the
    summary and return every figure."""
    if clients < 1 or requests < 1:
        raise ValueError(f"clients and requests must be >= 1, got {clients}, {requests}")
    from revtaf_bench.harness import model_dir_or_random
    from revtaf.paths import resolve_data_root

    from revtaf_bench import hostile_corpus as helpers

    root = resolve_data_root(data_root)
    out: dict = {}
    with tempfile.TemporaryDirectory(prefix="revtaf-robustness-") as tmp:
        work = Path(tmp)
        model_dir, out["model"] = model_dir_or_random(checkpoint, work)
        items = helpers.corpus()
        good = _good_files(root, work, helpers)
        bad = _bad_files(items, work)

        start = time.perf_counter()
        library = run_library(items, model_dir, timeout_s)
        out["library"] = {"tried": len(library), "clean": sum(o.clean for o in library),
                          "reports": sum(o.kind == "report" for o in library),
                          "warned": sum(bool(o.warned) for o in library),
                          "typed_errors": sum(o.kind == "error" for o in library),
                          "crashed": [f"{o.name}: {o.kind} {o.error_type or ''} {o.message[:80]}"
                                      for o in library if not o.clean],
                          "unexpected": [o.name for o in library if not o.as_expected],
                          "max_seconds": round(max(o.seconds for o in library), 2),
                          "wall_s": round(time.perf_counter() - start, 1)}

        with AppServer(model_dir, work / "app", data_root=root) as server:
            from revtaf_app.ui import MODEL_CONCURRENCY, QUEUE_SIZE

            api = run_app_corpus(server.url, items, good[0], work / "uploads", helpers.MARKERS, timeout_s)
            refused = [o for o in api if o.kind != "ok"]
            out["app"] = {"tried": len(api), "clean": sum(o.clean for o in api),
                          "reports": sum(o.kind == "ok" for o in api),
                          "refused_readably": sum(o.kind == "error" and not o.problems for o in api),
                          "failed": [f"{o.name}: {o.kind} {o.problems} {o.message[:80]}" for o in api if not o.clean],
                          "good_after_refusal": f"{sum(bool(o.good_after) for o in refused)}/{len(refused)}",
                          "server_alive": server.alive()}
            pyd_items = helpers.pydicom_corpus()
            pyd = run_app_corpus(server.url, pyd_items, good[0], work / "pydicom", helpers.MARKERS, timeout_s)
            expected = {h.name: h.expect for h in pyd_items}
            out["pydicom"] = {"tried": len(pyd), "read": sum(o.kind == "ok" for o in pyd),
                              "refused": sum(o.kind == "error" and not o.problems for o in pyd),
                              "crashed": [f"{o.name}: {o.kind} {o.problems} {o.message[:80]}" for o in pyd if not o.clean],
                              "unexpected": [o.name for o in pyd if (o.kind == "ok") != (expected[o.name] is None)]}
            load = run_load(server.url, good, bad, clients, requests, timeout_s)
            out["load"] = {**load.summary(), "good_failed_detail": load.good_failed, "bad_detail": load.bad_not_refused,
                           "peak_rss_mb": round((server.peak_rss() or 0) / 2**20)}
            n_burst = MODEL_CONCURRENCY + QUEUE_SIZE + 4
            calls = burst(server.url, good[0], n_burst, timeout_s)
            busy = [c for c in calls if c.kind == "busy"]
            out["queue"] = {"concurrency": MODEL_CONCURRENCY, "max_waiting": QUEUE_SIZE, "burst": n_burst,
                            "served": sum(c.kind == "ok" for c in calls), "busy": len(busy),
                            "other": [f"{c.kind} {c.message[:80]}" for c in calls if c.kind not in ("ok", "busy")],
                            "busy_message": busy[0].message if busy else None}
            out["isolation"] = session_isolation(server.url, good, sessions=4, timeout_s=timeout_s)
            out["privacy"] = privacy_probe(server.url, server, helpers.marker_dicoms(),
                                           helpers.ALL_MARKERS + (helpers.FILE_MARKER,), work / "privacy", timeout_s)
            out["load"]["peak_rss_mb"] = round((server.peak_rss() or 0) / 2**20)
            out["app"]["server_alive"] = server.alive()

        checks = integrity_checks(model_dir, work / "integrity")
        out["integrity"] = {"checks": checks, "passed": sum(c["passed"] for c in checks)}
        out["weight_loads"] = {"serving": unsafe_weight_loads([REPO / "revtaf", REPO / "app"]),
                               "training": unsafe_weight_loads([REPO / "train"])}
    if print_table:
        print(format_summary(out))
    return out


def format_summary(r: dict) -> str:
    lib, api, load, q, iso, priv = r["library"], r["app"], r["load"], r["queue"], r["isolation"], r["privacy"]
    crashed = len(lib["crashed"])
    lines = [
        f"REVTAF robustness (model: {r['model']})",
        f"hostile inputs, library (read_image + predict, sandboxed): {lib['tried']} tried · {lib['clean']} handled "
        f"cleanly ({lib['reports']} reports, of which {lib['warned']} with the input warning, {lib['typed_errors']} typed errors) · {crashed} crashed/hung/untyped · "
        f"{lib['tried'] - len(lib['unexpected'])} as expected · slowest {lib['max_seconds']} s",
        f"hostile inputs, app /generate: {api['tried']} tried · {api['clean']} handled cleanly "
        f"({api['reports']} reports, {api['refused_readably']} readable refusals, no stack trace) · "
        f"{len(api['failed'])} failed · good request right after each refusal: {api['good_after_refusal']}",
        f"pydicom corpus, app /generate: {r['pydicom']['tried']} files tried · {r['pydicom']['read']} read (report) · "
        f"{r['pydicom']['refused']} refused readably · {len(r['pydicom']['crashed'])} crashed · "
        f"{len(r['pydicom']['unexpected'])} unlike the expected-outcome table",
        f"load: {load['clients']} concurrent clients x {load['requests'] // load['clients']} requests (1 in 3 bad): "
        f"{load['good_served']} good served, {load['good_failed']} failed, bad refused cleanly: "
        f"{'yes' if load['bad_refused_cleanly'] else 'NO'} · p50 {load['p50_s']:.2f} s, p95 {load['p95_s']:.2f} s · "
        f"{load['throughput_per_min']} reports/min · peak RSS of the server {load['peak_rss_mb']} MB · "
        f"same image -> same report: {'yes' if load['deterministic'] else 'NO'}",
        f"queue: {q['concurrency']} running + {q['max_waiting']} waiting; a burst of {q['burst']}: "
        f"{q['served']} served, {q['busy']} answered busy ({q['busy_message']!r}), {len(q['other'])} other",
        f"sessions isolated (ground truth, ablation toggles, review notes): {'yes' if iso['isolated'] else 'NO'} "
        f"({iso['sessions']} concurrent sessions)",
        f"patient-data markers leaked: {len(priv['leaks'])} ({priv['markers']} markers, {priv['requests']} requests, "
        f"{priv['places_scanned']} outputs/log/files scanned) · uploads left on disk: {len(priv['uploads_kept'])}",
        f"weights integrity: {r['integrity']['passed']}/{len(r['integrity']['checks'])} checks passed ("
        + "; ".join(f"{c['check']}: {'ok' if c['passed'] else 'FAILED'}" for c in r["integrity"]["checks"]) + ")",
        f"weights read only via safetensors / torch.load(weights_only=True) in revtaf/ and app/: "
        f"{'yes' if not r['weight_loads']['serving'] else 'NO: ' + '; '.join(r['weight_loads']['serving'])} · "
        f"train/: {len(r['weight_loads']['training'])} torch.load calls without weights_only=True (its own training "
        f"checkpoints and feature cache; listed in --out)",
    ]
    details = lib["crashed"] + api["failed"] + r["pydicom"]["crashed"] + load["good_failed_detail"] + load["bad_detail"] + q["other"] \
        + iso["failures"] + priv["leaks"] + priv["uploads_kept"]
    return "\n".join(lines + [f"  ! {d}" for d in details])
