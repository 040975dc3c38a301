"""QA and benchmarks over the library and the demo: the robustness harness (hostile corpus, load, privacy,
integrity), its synthetic DICOM factory, and the latency benchmarks of the model and of the app.

Layering: `revtaf` (library) <- `app` (UI) <- `bench` <- `train` (the `revtaf` command line dispatches
`revtaf bench` here). Nothing in `revtaf` or `app` imports this package.
"""
