"""The robustness harness: the model run in a sandboxed child process (memory and time limits), the app run as
its own process (`AppServer`, as users start it), API calls with time limits, and the helpers the checks share
(readable-message test, percentiles, the model a benchmark measures, a free local port)."""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from revtaf.paths import resolve_model


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


def model_dir_or_random(checkpoint: str | os.PathLike | None, workdir: str | os.PathLike) -> tuple[Path, str]:
    """(model directory, description) for benchmarks and QA: `checkpoint`, else the bundled model, else a
    random-init cpu-preset model saved under `workdir` (so a checkout without weights can still be measured)."""
    try:
        path = resolve_model(checkpoint)
        return path, str(path)
    except FileNotFoundError:
        if checkpoint:
            raise
    from revtaf.model.random_init import random_model

    path = Path(workdir) / "random-cpu-model"
    if not (path / "config.json").is_file():
        random_model("cpu").save_pretrained(path)
    return path, "random-init cpu preset (no bundled model found; generation always runs to max_new_tokens)"


def free_port() -> int:
    """A free TCP port on the loopback interface, for a local server."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
