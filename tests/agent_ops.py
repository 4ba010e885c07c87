"""Run ops as the agent's pools get them: parsed, valid protocol messages."""

from agent import protocol


def run_op(run_id, argv, kind="run", code="test", **fields):
    """A ``run`` (or ``analysis``) op of `argv` in run directory ``u/<run_id>``."""
    m = {
        "run_id": run_id,
        "op_id": 1,
        "code": code,
        "argv": argv,
        "params": {},
        "run_dir": f"u/{run_id}",
        "cores": 1,
        "max_run_secs": 60,
        "inputs": {},
        **fields,
    }
    # what the client hands a pool is a parsed, valid message
    return protocol.parse(
        protocol.TO_AGENT, protocol.make(protocol.TO_AGENT, kind, **m)
    )
