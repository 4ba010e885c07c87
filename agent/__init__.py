"""simvisor agent: runs simulation codes where they run and reports back.

Installed on login nodes and into images, so it depends on tornado only and
never imports `supervisor`. Importing this package must stay cheap: every
simulation code is started as ``python -m agent.codes.<name>``.
"""

VERSION = "0.1.0"
