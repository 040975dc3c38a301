"""Training and evaluation drivers and the `revtaf` command line. Installed as `revtaf_train` (pyproject's
package-dir), the name every module imports it by."""
