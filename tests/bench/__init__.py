"""Benchmarks of simvisor: ``./run.sh bench`` (``python -m tests.bench``).

Each figure is printed beside a floor measured in the same run on the same
machine, and their ratio, so the table says what the supervisor costs beyond
the bare mechanism (a process spawn, a kill, a websocket hop, an HTTP request,
a file write, a Docker container, a Slurm job). Modules:

- `report`: samples, medians, the table
- `clients`: the bench's HTTP client, ``/api/events`` listener, fake agent
- `floors`: the bare mechanisms, measured in the bench process
- `figures`: the same things through real supervisors
- `relay`: a tiny websocket relay (a floor), run as a subprocess
- `containers`: the docker rows (a private dockerd, the agent image)
- `slurm`: the sbatch rows (the test HPC site of tests/hpc_site.py)
"""
