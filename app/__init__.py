"""The Gradio demo over the library. Installed as `revtaf_app` (pyproject's package-dir), the name every
module imports it by; `python -m app` in the checkout, `revtaf-demo` or `python -m revtaf_app` once installed."""
