"""Simulation codes the agent runs: real demos and codes for testing.

Contract between a code, the agent and the supervisor:

- A code is a module started as ``<python> -m agent.codes.<name>`` with its run
  directory as cwd. Before starting it, the agent writes ``params.json`` there
  (a JSON object of the validated parameters) plus any input files; the code
  writes its output files there too.
- Codes import the standard library and `agent.protocol` only, so the agent
  stays small (no numpy).
- Structured output goes to stdout through `agent.codes.report`: one line per
  report, ``REPORT_PREFIX`` followed by ``{"progress": f}`` (0..1) or
  ``{"frame": {...}}``. All other stdout and stderr text is the run's log.
  A code sends at most about 100 progress reports and 100 frames per run
  (each under 20 KB) whatever its size, and ``progress(1.0)`` on success.
- Every frame has ``step`` (int), ``time`` (float, simulated time) and ``plot``:
  ``"replace"`` (the frame is the whole picture, e.g. heat's profile),
  ``"append"`` (the frame holds the points new since the previous one, e.g.
  lorenz) or ``"table"`` (statistics, not a line).
- Exit code 0 means success; anything else is an error whose reason is on
  stderr.
- ``etc/codes.json`` lists each code's parameters; a module's ``DEFAULTS``
  must match the catalog (tests/codes_test.py checks it).
"""
