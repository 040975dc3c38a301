"""Natural-language-generation scores: pycocoevalcap BLEU-1..4, METEOR 1.5, ROUGE-L and CIDEr (docs/method.md §9.1).

The protocol is the one of R2Gen / PromptMRG / REVTAF's `compute_scores`:
- text is already cleaned (revtaf.data.clean) and is split on whitespace; no PTB tokenizer;
- hypotheses only are post-processed with `(h + ' ').replace('. ', ' . ').replace(' - ', '-')`, which
  detaches sentence periods of raw model output ('normal.' -> 'normal .');
- then every text is whitespace-normalised (single spaces, no ends). pycocoevalcap's ROUGE-L splits on
  one space, so the double spaces the post-processing leaves on already-spaced text would otherwise be
  scored as empty tokens (constant IU report: ROUGE-L 0.2908 instead of 0.3112). BLEU, CIDEr and
  METEOR (`-norm`) do not see the difference;
- BLEU is corpus-level with the "closest" reference length; METEOR is the corpus aggregate the jar
  prints after the per-segment scores; CIDEr is pycocoevalcap's Cider (the CIDEr-D formula), whose
  IDF comes from the references being scored, so it only means something on a whole test set.

METEOR is the Java jar pycocoevalcap ships, run through `Meteor` below rather than pycocoevalcap's
wrapper so that the Java process is always terminated, cannot dead-lock on a full stderr pipe and
cannot hang forever on a lost reply. If `java` is missing METEOR is reported as None with a warning;
no other METEOR is ever substituted.
"""

from __future__ import annotations

import atexit
import queue
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

import pycocoevalcap.meteor.meteor as _pycoco_meteor
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge

NLG_PROTOCOL = (
    "pycocoevalcap 1.2 on cleaned text split on whitespace (no PTB tokenizer); hypotheses post-processed "
    "(h+' ').replace('. ',' . ').replace(' - ','-') then whitespace-normalised; BLEU-1..4 corpus-level "
    "(closest ref length); METEOR 1.5 jar (-l en -norm, corpus aggregate); ROUGE-L (LCS F, beta 1.2, mean); "
    "CIDEr (pycocoevalcap Cider = CIDEr-D, IDF from the scored references)"
)
METEOR_JAR = Path(_pycoco_meteor.__file__).with_name("meteor-1.5.jar")
# Same command line as pycocoevalcap's wrapper: scores stay comparable with the literature.
METEOR_CMD = ("java", "-jar", "-Xmx2G", METEOR_JAR.name, "-", "-", "-stdio", "-l", "en", "-norm")


class MeteorUnavailable(RuntimeError):
    """`java` is not on PATH, so METEOR 1.5 cannot be computed."""


class MeteorError(RuntimeError):
    """The METEOR Java process died, answered garbage or did not answer in time."""


def java_available() -> bool:
    return shutil.which("java") is not None


def postprocess_hypothesis(text: str) -> str:
    """The protocol's hypothesis post-processing, then single-spaced: 'normal. clear.' -> 'normal . clear .'"""
    return _normalise((text + " ").replace(". ", " . ").replace(" - ", "-"))


def _normalise(text: str) -> str:
    return " ".join(text.split())


def _meteor_safe(text: str) -> str:
    # The jar speaks a line protocol with ' ||| ' separators: a newline or '|' inside a text desynchronises
    # it, so replies stop matching requests and a read may never return (the known pycocoevalcap hang).
    return _normalise(text.replace("|", " "))


class Meteor:
    """One long-lived METEOR 1.5 Java process (pycocoevalcap's jar and command line).

    Use as a context manager or call `close()`; `score` is thread-safe. The jar loads its paraphrase table
    on the first request, which takes seconds to tens of seconds on a busy CPU; later calls are fast, so
    keep one instance for repeated per-case scoring.
    """

    def __init__(self, timeout: float = 600.0):
        if not java_available():
            raise MeteorUnavailable("METEOR 1.5 needs Java: `java` is not on PATH (install a JRE, e.g. openjdk-17)")
        if not METEOR_JAR.is_file():
            raise MeteorUnavailable(f"METEOR jar not found at {METEOR_JAR} (reinstall pycocoevalcap)")
        self.timeout = timeout
        self._lock = threading.Lock()
        # stderr goes to a file: an unread PIPE can fill up and block the jar.
        self._stderr = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(
            METEOR_CMD, cwd=METEOR_JAR.parent, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr
        )
        # A reader thread turns stdout into a queue so every read can time out instead of hanging.
        self._lines: queue.Queue[bytes | None] = queue.Queue()
        threading.Thread(target=self._read_stdout, daemon=True).start()

    def _read_stdout(self) -> None:
        with self._proc.stdout:  # closed here, at EOF, never under the reader's feet
            for line in self._proc.stdout:
                self._lines.put(line)
        self._lines.put(None)

    def _send(self, line: str) -> None:
        try:
            self._proc.stdin.write((line + "\n").encode())
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError) as e:
            self._fail(f"cannot write to the METEOR process ({e})")

    def _receive(self) -> str:
        try:
            line = self._lines.get(timeout=self.timeout)
        except queue.Empty:
            self._fail(f"no answer from the METEOR process within {self.timeout:g} s")
        if line is None:
            self._fail("the METEOR process exited")
        return line.decode().strip()

    def _fail(self, message: str) -> None:
        tail = ""
        if not self._stderr.closed:
            self._stderr.seek(0)
            tail = self._stderr.read()[-2000:].decode(errors="replace").strip()
        self.close()
        raise MeteorError(message + (f"; java stderr: {tail}" if tail else ""))

    def score(self, refs: list[str], hyps: list[str]) -> tuple[float, list[float]]:
        """Corpus METEOR and per-segment METEOR of `hyps[i]` against the single reference `refs[i]`."""
        if len(refs) != len(hyps) or not refs:
            raise ValueError(f"need as many references as hypotheses, at least one (got {len(refs)}, {len(hyps)})")
        with self._lock:
            if not self.alive:
                raise MeteorError("the METEOR process is closed")
            stats = []
            for ref, hyp in zip(refs, hyps):
                self._send(f"SCORE ||| {_meteor_safe(ref)} ||| {_meteor_safe(hyp)}")
                stats.append(self._receive())
            self._send("EVAL ||| " + " ||| ".join(stats))
            try:
                segments = [float(self._receive()) for _ in stats]
                return float(self._receive()), segments
            except ValueError as e:
                self._fail(f"unexpected answer from the METEOR process ({e})")

    @property
    def alive(self) -> bool:
        return self._proc.poll() is None

    def close(self) -> None:
        """Terminate the Java process (idempotent)."""
        proc = self._proc
        try:
            proc.stdin.close()
        except OSError:  # broken pipe when the jar is already gone
            pass
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._stderr.close()

    def __enter__(self) -> Meteor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        if hasattr(self, "_proc"):
            self.close()


def check_pairs(refs: dict[str, str], hyps: dict[str, str]) -> None:
    """Raise TypeError / ValueError unless refs and hyps map the same ids to non-empty strings."""
    for what, d in (("references", refs), ("hypotheses", hyps)):
        if not isinstance(d, dict):
            raise TypeError(f"{what} must be a dict id -> text, got {type(d).__name__}")
        if not d:
            raise ValueError(f"no {what} given")
        for key, text in d.items():
            if not isinstance(text, str):
                raise TypeError(f"{what}[{key!r}] must be a string, got {type(text).__name__}")
            if not text.strip():
                raise ValueError(f"{what}[{key!r}] is empty")
    missing = [k for k in refs if k not in hyps]
    extra = [k for k in hyps if k not in refs]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} reference ids have no hypothesis ({_some(missing)})")
        if extra:
            parts.append(f"{len(extra)} hypothesis ids have no reference ({_some(extra)})")
        raise ValueError("ids of references and hypotheses differ: " + "; ".join(parts))


def _some(ids: list, n: int = 5) -> str:
    shown = ", ".join(repr(i) for i in ids[:n])
    return shown + (f", ... {len(ids) - n} more" if len(ids) > n else "")


def _meteor(refs: list[str], hyps: list[str], meteor: Meteor | None) -> float | None:
    if meteor is not None:
        return meteor.score(refs, hyps)[0]
    if not java_available():
        warnings.warn("METEOR not computed: `java` is not on PATH (METEOR 1.5 is a Java jar); reported as None")
        return None
    with Meteor() as own:
        return own.score(refs, hyps)[0]


NLG_METRICS = ("BLEU_1", "BLEU_2", "BLEU_3", "BLEU_4", "METEOR", "ROUGE_L", "CIDEr")  # the keys nlg_scores returns


def nlg_scores(refs: dict[str, str], hyps: dict[str, str], meteor: Meteor | None = None) -> dict:
    """BLEU_1..BLEU_4, METEOR (None without Java), ROUGE_L and CIDEr of cleaned `hyps` against cleaned `refs`.

    refs, hyps: id -> cleaned report text, the same ids on both sides. meteor: a running `Meteor` to reuse
    (e.g. across validation epochs); by default one Java process is started and terminated before returning.
    """
    check_pairs(refs, hyps)
    ids = list(refs)
    gts = {i: [_normalise(refs[i])] for i in ids}
    res = {i: [postprocess_hypothesis(hyps[i])] for i in ids}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, _ = Rouge().compute_score(gts, res)
    cider, _ = Cider().compute_score(gts, res)
    meteor_score = _meteor([gts[i][0] for i in ids], [res[i][0] for i in ids], meteor)
    scores = {f"BLEU_{n + 1}": float(b) for n, b in enumerate(bleu)}
    scores.update(METEOR=meteor_score, ROUGE_L=float(rouge), CIDEr=float(cider), protocol=NLG_PROTOCOL)
    return scores


_shared_meteor: Meteor | None = None
_shared_lock = threading.Lock()


def shared_meteor() -> Meteor:
    """The process-wide persistent METEOR process used by `case_scores` (started on first use)."""
    global _shared_meteor
    with _shared_lock:
        if _shared_meteor is None or not _shared_meteor.alive:
            _shared_meteor = Meteor()
            atexit.register(_shared_meteor.close)
        return _shared_meteor


def case_scores(ref: str, hyp: str, meteor: bool = False) -> dict:
    """Scores of ONE cleaned report pair: sentence-level BLEU_4, ROUGE_L and, if `meteor`, METEOR.

    METEOR (None when not asked for or without Java) goes through one persistent Java process shared by
    all calls, so only the first call pays the jar start-up. CIDEr is left out: its IDF needs a corpus.
    """
    check_pairs({"case": ref}, {"case": hyp})
    gts, res = {0: [_normalise(ref)]}, {0: [postprocess_hypothesis(hyp)]}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, _ = Rouge().compute_score(gts, res)
    meteor_score = None
    if meteor:
        meteor_score = _meteor(gts[0], res[0], shared_meteor() if java_available() else None)
    return {"BLEU_4": float(bleu[3]), "ROUGE_L": float(rouge), "METEOR": meteor_score}
