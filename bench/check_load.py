"""Check 2, load: concurrent `gradio_client` sessions on loopback mixing good and bad files (latency percentiles,
throughput, the server's peak RSS, same image -> same report), a burst on one image, session isolation, and the
soak (requests for minutes, RSS sampled through the run)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from revtaf_bench.check_privacy import text_of
from revtaf_bench.harness import AppServer, Call, call, client, fingerprint, generate, message_problems, percentile


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
            ("/analyze_upload", ([handle_file(str(good[i % len(good)]))], False, False, [], 0.6, "inferno", "all")),
            ("/compare", (gt,)),
            ("/ablate", (grp, lrp, [], gt, 0.6, "inferno", "all")),
            ("/save_review", ("case", ["style"], f"note of {tokens[i]}")),
        ]
        for api_name, args in steps:
            result = call(c, *args, api_name=api_name, timeout_s=timeout_s)
            if result.kind != "ok":
                return fail(i, f"{api_name} {result.kind} {result.message[:120]}")
            seen.append((api_name, text_of(result.value)))
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
