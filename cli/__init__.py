"""The `revtaf` command line (installed as `revtaf_cli`): one entry point over the library and the drivers."""
