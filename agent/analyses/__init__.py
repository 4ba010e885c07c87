"""Analyses the warm worker serves (`agent.analysis_worker`), by name.

Each is a function ``(frames, **params) -> frame``: the source simulation's
frames in (as the supervisor hands them to an analysis run), one result
frame out. Pure: no I/O. They may import heavy libraries (numpy): the worker
keeps them loaded between requests.
"""

import types

from agent.analyses import rdf
from agent.analyses.rdf import AnalysisError

#: name -> function
ANALYSES = types.MappingProxyType({"rdf": rdf.rdf})

__all__ = ["ANALYSES", "AnalysisError"]
