"""The registry of the model's switchable parts, named once and read by the model, the demo, evaluation and the
command line (pure Python: the CLI reads it without loading torch).

Two kinds of switch:
- **inference switches** (`ABLATIONS`): a part of a trained model that can be switched off for one call to see
  what the model takes from it: FVTAF's two prompt branches, and the plug-ins' inference parts;
- **training switches** (`PLUGINS`): the sibling methods' modules (docs/plugins.md), config flags a training run
  turns on (`revtaf train --with`); a method's name (`METHODS`) turns on all of its modules.

A new plug-in touches its module, the config, and this file.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class InferenceSwitch:
    name: str  # the ablation's name ("grp"), in tag order
    label: str  # what the page calls it ("retrieval (GRP)")
    short: str  # "GRP"
    needs: str | None  # the config flag a model must have been built with; None = every model has it


ABLATION_SWITCHES = (
    InferenceSwitch("grp", "retrieval (GRP)", "GRP", None),
    InferenceSwitch("lrp", "entity prompts (LRP)", "LRP", None),
    InferenceSwitch("tisr", "TISR pseudo words", "TISR", "tisr.enabled"),
    InferenceSwitch("tir", "TIR attention mask", "TIR", "uar.tir"),
)
ABLATIONS = tuple(s.name for s in ABLATION_SWITCHES)
BY_NAME = {s.name: s for s in ABLATION_SWITCHES}
# Names the command line accepts for several switches at once.
ALIASES = {"fusion": ("grp", "lrp")}

# The sibling methods' modules, by method; each switch is "<config group>.<flag>".
METHODS = {"tisr": ("tisr.enabled",), "uar": ("uar.cra", "uar.lsu", "uar.tir", "uar.two_stage")}
PLUGINS = tuple(switch for switches in METHODS.values() for switch in switches)


def ablation_set(names: Iterable[str]) -> frozenset[str]:
    """Switch names (aliases allowed: `fusion` = GRP and LRP) -> the set of inference switches; ValueError on an
    unknown name."""
    names = set(names)
    unknown = names - set(ABLATIONS) - set(ALIASES)
    if unknown:
        raise ValueError(f"unknown ablation(s) {sorted(unknown)}: choose from {[*ABLATIONS, *ALIASES]}")
    for alias, parts in ALIASES.items():
        if alias in names:
            names = (names - {alias}) | set(parts)
    return frozenset(names)
