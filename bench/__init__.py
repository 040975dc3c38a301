"""QA and benchmarks over the library and the demo: the robustness harness (hostile corpus, load, privacy,
integrity), its synthetic DICOM factory, and the latency benchmarks of the model and of the app.

Installed as `revtaf_bench`. Layering: `revtaf` (library) <- `revtaf_app` (UI, app/) <- `revtaf_bench` <-
`revtaf_train` (train/: the `revtaf` command line dispatches `revtaf bench` here). Nothing in `revtaf` or the
app imports this package.
"""
