"""Check 1, hostile inputs through the app: every file of the generated corpus sent to the running app's `/generate`;
each must end in a report or a typed, readable error, and a good request must succeed right after every bad one
(`run_library` in harness.py sends the same corpus through the library in a sandbox)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from revtaf_bench.harness import client, generate, message_problems


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
