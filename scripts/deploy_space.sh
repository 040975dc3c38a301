#!/usr/bin/env bash
# Deploy the demo as a Hugging Face Space (README "Deploy as a Space").
# Spaces refuses a pushed file over 10 MB that is not in Git LFS. This repository keeps its weights as plain git
# objects (every version in its history), so the Space does not receive them: the weights go to a model
# repository once, and the Space reads them from there at a pinned revision (REVTAF_HF_REPO / REVTAF_HF_REVISION,
# app/__main__.py). Usage: scripts/deploy_space.sh OWNER/MODEL_REPO OWNER/SPACE  (after `hf auth login`).
set -euo pipefail
model_repo=${1:?model repository id, e.g. you/revtaf-iu}
space=${2:?Space id, e.g. you/revtaf-demo}
# Files the Space upload leaves out; tests/test_space_deploy.py fails on a tracked file over 10 MB none covers.
SPACE_EXCLUDE=("assets/*/*.safetensors" "tests/*" "docs/*" ".ci/*")

hf upload "$model_repo" assets/revtaf-iu . --repo-type model --commit-message "REVTAF IU weights"
revision=$(python - "$model_repo" <<'PY'
import sys
from huggingface_hub import HfApi
print(HfApi().model_info(sys.argv[1]).sha)
PY
)
excludes=(); for pattern in "${SPACE_EXCLUDE[@]}"; do excludes+=(--exclude "$pattern"); done
hf upload "$space" . . --repo-type space "${excludes[@]}" --commit-message "REVTAF demo"
python - "$space" "$model_repo" "$revision" <<'PY'
import sys
from huggingface_hub import HfApi
space, repo, revision = sys.argv[1:]
api = HfApi()
api.add_space_variable(space, "REVTAF_HF_REPO", repo)
api.add_space_variable(space, "REVTAF_HF_REVISION", revision)
print(f"{space}: weights from {repo}@{revision}")
PY
