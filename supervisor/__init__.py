"""simvisor supervisor: keeps the state of every job and sends work to agents."""

VERSION = "0.1.0"
