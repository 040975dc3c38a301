"""Copy the first N studies of each split of an IU X-Ray folder into a new folder (annotation.json + images/).

For a machine that must receive the data with the repository, under a size limit (scripts/gpu_check.sh on a
GPU machine: the whole tree under 64 MiB). The copy is third-party data (CC BY-NC-ND): keep it in a git-ignored
folder, never commit it.

    python scripts/iu_subset.py ../shared/data/iu_xray shared/iu_subset --studies 300
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("source", type=Path)
    p.add_argument("target", type=Path)
    p.add_argument("--studies", type=int, default=300, help="training studies (val and test get a sixth each)")
    args = p.parse_args(argv)
    annotation = json.loads((args.source / "annotation.json").read_text())
    n = {"train": args.studies, "val": max(1, args.studies // 6), "test": max(1, args.studies // 6)}
    subset = {split: studies[: n.get(split, 0)] for split, studies in annotation.items()}
    for studies in subset.values():
        for study in studies:
            for image in study["image_path"]:
                target = args.target / "images" / image
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(args.source / "images" / image, target)
    (args.target / "annotation.json").write_text(json.dumps(subset))
    size = sum(f.stat().st_size for f in args.target.rglob("*") if f.is_file())
    print(f"{sum(map(len, subset.values()))} studies, {size / 2**20:.1f} MiB in {args.target}")


if __name__ == "__main__":
    main()
