"""Hugging Face Space entry point (`app_file: space_app.py`).

Spaces runs `python <app_file>` from the repository root. A top-level `app.py` would shadow the `app/` package,
so the entry point has another name and only hands over to `python -m app`'s main (Spaces sets
GRADIO_SERVER_NAME=0.0.0.0, which becomes the default host).
"""

from revtaf_app.__main__ import main

if __name__ == "__main__":
    main()
