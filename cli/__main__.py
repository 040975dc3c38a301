"""`python -m revtaf_cli ...` (torchrun too: `torchrun --nproc_per_node 2 -m revtaf_cli train ...`)."""

import sys

from revtaf_cli.main import main

sys.exit(main())
