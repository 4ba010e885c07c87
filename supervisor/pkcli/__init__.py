"""Command-line modules: ``supervisor <module> <function>``."""
