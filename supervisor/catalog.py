"""The code catalog: what can be run, and the checking of parameters."""

import fnmatch
import json
import math
import pathlib

from supervisor import adapter, errors, names

_DEFAULT = pathlib.Path(__file__).resolve().parents[1] / "etc" / "codes.json"
TYPES = ("int", "float", "str", "simulation", "file")
#: a `file` parameter's value naming a file the site provides (its ``site``),
#: not one of the library (whose names have no "/")
SITE_PREFIX = "site/"
_MAX_STR_CHARS = 1000


class Code:
    def __init__(self, doc):
        self.name = doc["name"]
        self.title = doc.get("title", self.name)
        self.kind = doc.get("kind", "run")
        assert self.kind in ("run", "analysis"), f"code={self.name} kind={self.kind}"
        self.command = list(doc["command"])
        self.max_cores = int(doc.get("max_cores", 1))
        self.test = bool(doc.get("test", False))
        self.frames = bool(doc.get("frames", False))
        self.params = list(doc.get("params", []))
        #: sbatch options of this code's runs (partition, qos, cores_as...)
        self.batch = dict(doc.get("batch", {}))
        for p in self.params:
            assert p["type"] in TYPES, f"code={self.name} param={p['name']}"
            if p["type"] == "file":
                # the name the run directory gives it (default: the file's own)
                assert names.input_name(p.get("as") or "x"), p
                # files the site provides where runs go (in the image, on the
                # HPC filesystem): name -> absolute path there, never sent
                for n, x in p.get("site", {}).items():
                    assert names.input_name(n) and x.startswith("/"), (p, n)
        #: deck, launch, followed files, plots (`supervisor.adapter`)
        self.adapter = adapter.Adapter(self.name, doc, self.params)

    def to_dict(self):
        return {
            "name": self.name,
            "title": self.title,
            "kind": self.kind,
            "params": [
                {
                    k: p.get(k)
                    for k in ("name", "type", "default", "min", "max", "label")
                }
                | ({"choices": p["choices"]} if "choices" in p else {})
                | {k: p[k] for k in ("patterns", "as") if k in p}
                | ({"site": sorted(p["site"])} if p.get("site") else {})
                for p in self.params
            ],
            "max_cores": self.max_cores,
            "frames": self.frames,
            "plots": self.adapter.plots,
        } | ({"result": self.adapter.result} if self.adapter.result else {})

    def check_params(self, params, base=None):
        """Validate `params` over defaults (or `base`): the complete set.

        Raises:
            errors.BadInput: naming the parameter and the rule it broke
        """
        if not isinstance(params, dict):
            raise errors.BadInput("bad_params", "params must be an object")
        known = {p["name"]: p for p in self.params}
        x = sorted(set(params) - set(known))
        if x:
            raise errors.BadInput(
                "unknown_param", f"code {self.name} has no parameter {', '.join(x)}"
            )
        res = {}
        for n, p in known.items():
            if n in params:
                res[n] = _check(self.name, p, params[n])
            elif base and n in base:
                res[n] = base[n]
            else:
                res[n] = p.get("default")
        return res


def _check(code, p, v):
    n, t = p["name"], p["type"]
    label = p.get("label") or n

    def bad(what):
        return errors.BadInput("bad_param", f"{label} ({n}) {what}")

    if t == "int":
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if not isinstance(v, int) or isinstance(v, bool):
            raise bad("must be an integer")
    elif t == "float":
        if (
            not isinstance(v, (int, float))
            or isinstance(v, bool)
            or not math.isfinite(v)
        ):
            raise bad("must be a number")
        v = float(v)
    elif t == "file":
        # a name in the caller's library (`sims` checks that it is there)
        if v is None and p.get("default") is None:
            return None
        if not isinstance(v, str):
            raise bad("must name a file of your library")
        if v.startswith(SITE_PREFIX):
            if v[len(SITE_PREFIX) :] not in p.get("site", {}):
                raise bad(f"names no file the site provides: {v}")
            return v
        pats = p.get("patterns")
        if pats and not any(fnmatch.fnmatchcase(v, x) for x in pats):
            raise bad(f"must be a file named like {' or '.join(pats)}")
    else:
        if not isinstance(v, str) or len(v) > _MAX_STR_CHARS:
            raise bad(f"must be text of at most {_MAX_STR_CHARS} characters")
        if "choices" in p and v not in p["choices"]:
            raise bad(f"must be one of {', '.join(p['choices'])}")
    if t in ("int", "float"):
        if p.get("min") is not None and v < p["min"]:
            raise bad(f"must be at least {p['min']}")
        if p.get("max") is not None and v > p["max"]:
            raise bad(f"must be at most {p['max']}")
    return v


class Catalog:
    def __init__(self, path=None, test_codes=False):
        doc = json.loads(pathlib.Path(path or _DEFAULT).read_text())
        self.codes = {}
        for d in doc["codes"]:
            c = Code(d)
            assert c.name not in self.codes, f"duplicate code={c.name}"
            if test_codes or not c.test:
                self.codes[c.name] = c

    def get(self, name):
        c = self.codes.get(name) if isinstance(name, str) else None
        if c is None:
            raise errors.BadInput("unknown_code", f"there is no code named {name!r}")
        return c

    def to_list(self):
        return [c.to_dict() for c in self.codes.values()]
