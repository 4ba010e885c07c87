"""simvisor: a web-based supervisor for simulation jobs."""

import setuptools

setuptools.setup(
    name="simvisor",
    version="0.1.0",
    description="Web-based supervisor for simulation jobs: run, watch and cancel",
    packages=setuptools.find_packages(include=["supervisor*", "agent*"]),
    package_data={"": ["*.json"]},
    python_requires=">=3.11",
    install_requires=[
        "tornado>=6.3",
        "pykern",
        "requests",
        "prometheus-client",
        # the docker driver: the Docker SDK for Python
        "docker",
        # the sbatch driver: logs in to HPC login nodes
        "asyncssh",
        # only for its bundled plotly.min.js, which the GUI loads from us
        "plotly",
        # typed, strict request bodies; their JSON Schema for /api/openapi.json
        "msgspec",
        # /api/docs, offline
        "swagger-ui-bundle",
    ],
    extras_require={
        # the agent alone needs only tornado; see agent/__init__.py
        "agent": ["tornado>=6.3"],
        "test": [
            "pytest",
            "pytest-timeout",
            "pytest-asyncio",
            "ruff",
            "black",
            "playwright",
            "hypothesis",
            "schemathesis",
        ],
    },
    entry_points={"console_scripts": ["supervisor=supervisor.cli:main"]},
)
