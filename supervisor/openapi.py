"""The OpenAPI 3.1 description of the API, generated from the routes and `schema`.

Each HTTP handler declares its operations (`Op`: summary, request and
response types, who may call it); `document` walks the route table and
`schema.TYPES` and builds the document served at ``/api/openapi.json``. The
route regexes Tornado matches are made from the same path templates
(`route_regex`), so the document cannot drift from what is served.
``/api/docs`` shows it with Swagger UI from the `swagger-ui-bundle` package:
nothing is fetched from the internet.
"""

import re
import types

import msgspec

from supervisor import VERSION, schema, schema_sweeps

#: path parameter -> the pattern it matches (in routes and in the document)
PARAMS = {
    "id": "[0-9a-f]{1,32}",
    "path": ".+",
    "agent_id": "[A-Za-z0-9_.-]+",
    "container_id": "[0-9a-f]{64}",
    "host": "[A-Za-z0-9_.:-]+",
    "user": "[a-z0-9_-]+",
    "name": "[^/]+",
}

_PARAM_RE = re.compile(r"\{(\w+)\}")

#: the body of an operation that takes none (a client may send ``{}``)
NO_BODY_BYTES = 1024

#: who may call an operation
PUBLIC = "public"
USER = "user"
ADMIN = "admin"


class Op:
    """One operation (method on a path) as the document describes it."""

    def __init__(
        self,
        summary,
        response=None,
        status=200,
        request=None,
        auth=USER,
        query=(),
        content=None,
        request_content=None,
        lookup=False,
        also=(),
        max_body_bytes=None,
    ):
        """
        Args:
            summary (str): one line
            response (type): `schema` type of the body (a list: ``[T]``)
            status (int): the success status
            request (type): `schema` type of the JSON request body
            auth (str): `PUBLIC`, `USER` or `ADMIN`
            query (tuple): (name, JSON Schema, description) of query parameters
            content (str): media type of a non-JSON response body
            request_content (str): media type of a non-JSON request body
            lookup (bool): looks up an object named by the path (404)
            also (tuple): more error statuses it answers (e.g. 401 of a login)
            max_body_bytes (int): its request body at most (default: the
                service's ``max_body_bytes``)
        """
        self.summary = summary
        self.response = response
        self.status = status
        self.request = request
        self.auth = auth
        self.query = query
        self.content = content
        self.request_content = request_content
        self.lookup = lookup
        self.also = also
        self.max_body_bytes = max_body_bytes


def action(summary, response, **kwargs):
    """An `Op` that changes state and takes no input but its path: its body
    is empty or ``{}`` (`schema.NoBody`; anything else is a 400)."""
    return Op(
        summary,
        response,
        request=schema.NoBody,
        max_body_bytes=NO_BODY_BYTES,
        **kwargs,
    )


def ops(**by_method):
    """A handler's operations: method -> `Op` (read-only)."""
    return types.MappingProxyType(by_method)


def route_regex(template):
    """The Tornado route of a path template (``{id}`` -> its group)."""
    return _PARAM_RE.sub(lambda m: f"({PARAMS[m.group(1)]})", template)


def document(routes):
    """The OpenAPI document of `routes`: (template, handler class) pairs."""
    refs, components = msgspec.json.schema_components(
        schema.TYPES + schema_sweeps.TYPES, ref_template="#/components/schemas/{name}"
    )
    del refs
    paths = {}
    for template, handler in routes:
        for method, op in handler.api.items():
            paths.setdefault(template, {})[method] = _operation(template, method, op)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "simvisor",
            "version": VERSION,
            "description": (
                "Run, watch and cancel simulations. Send `Authorization: Bearer"
                " <token>`; the GUI uses the session cookie of `POST /api/login`"
                " and Tornado's XSRF header. Push: the websocket `GET"
                " /api/events` (`?simulation=ID`)."
            ),
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "session": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": "simvisor_user",
                },
            },
        },
    }


def _ref(t):
    if isinstance(t, list):
        return {"type": "array", "items": _ref(t[0])}
    return {"$ref": f"#/components/schemas/{t.__name__}"}


_REASONS = {
    206: "the range of the bytes asked for (Range)",
    401: "missing or bad credentials",
    403: "admins only, or a session cookie without its XSRF header",
    404: "no such object (or not yours)",
    411: "a Content-Length is needed",
    416: "the range is not in the file (Content-Range says its size)",
}


def _error(description):
    return {
        "description": description,
        "content": {"application/json": {"schema": _ref(schema.Error)}},
    }


def _operation(template, method, op):
    res = {
        "summary": op.summary,
        "operationId": f"{method}_{template}".replace("/", "_").strip("_"),
        "parameters": [
            {
                "name": n,
                "in": "path",
                "required": True,
                "schema": {"type": "string", "pattern": f"^{PARAMS[n]}$"},
            }
            for n in _PARAM_RE.findall(template)
        ]
        + [
            {"name": n, "in": "query", "required": False, "schema": s, "description": d}
            for n, s, d in op.query
        ],
    }
    if op.request is not None:
        res["requestBody"] = {
            "required": False,
            "content": {"application/json": {"schema": _ref(op.request)}},
        }
    elif op.request_content:
        res["requestBody"] = {
            "required": True,
            "content": {op.request_content: {"schema": {"type": "string"}}},
        }
    if op.content:
        # text as such; any other bytes are not described further
        c = {"schema": {"type": "string"}} if op.content.startswith("text/") else {}
        ok = {"description": "OK", "content": {op.content: c}}
    elif op.response is not None:
        ok = {
            "description": "OK",
            "content": {"application/json": {"schema": _ref(op.response)}},
        }
    else:
        ok = {"description": "OK"}
    r = {str(op.status): ok}
    if (
        op.request is not None
        or op.query
        or op.request_content
        or "{path}" in template
        or "{name}" in template
    ):
        r["400"] = _error("bad input")
    if op.auth != PUBLIC:
        r["401"] = _error(_REASONS[401])
        res["security"] = [{"bearer": []}, {"session": []}]
    if op.auth == ADMIN or (method != "get" and op.auth != PUBLIC):
        r["403"] = _error(_REASONS[403])
    if op.lookup:
        r["404"] = _error(_REASONS[404])
    for x in op.also:
        r[str(x)] = (
            dict(ok, description=_REASONS[x]) if x < 300 else _error(_REASONS[x])
        )
    r["409"] = _error("conflicts with the current state")
    r["413"] = _error("body too large")
    r["429"] = _error("too many requests (see Retry-After)")
    r["431"] = _error("request headers too large")
    if method != "get":
        r["507"] = _error("the disk is full: nothing was changed")
    res["responses"] = r
    return res


def docs_page(assets_url):
    """The HTML of ``/api/docs``: Swagger UI from `assets_url`, served by us."""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>simvisor API</title>
<link rel="stylesheet" href="{assets_url}/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="{assets_url}/swagger-ui-bundle.js"></script>
<script src="/api/docs.js"></script>
</body></html>
"""


#: the script of ``/api/docs`` (a file of ours: no inline script, so a strict
#: content security policy can hold)
DOCS_JS = """window.ui = SwaggerUIBundle({
    url: "/api/openapi.json?for=swagger-ui",
    dom_id: "#swagger-ui",
    deepLinking: true,
});
"""


def for_swagger_ui(doc):
    """`doc` as the Swagger UI this package bundles reads it (OpenAPI 3.0).

    Its 4.x renders 3.0 only: a nullable type becomes ``nullable: true``,
    the rest of 3.1's JSON Schema that we use reads the same.
    """
    return dict(_to_30(doc), openapi="3.0.3")


def _to_30(v):
    if isinstance(v, list):
        return [_to_30(x) for x in v]
    if not isinstance(v, dict):
        return v
    a = v.get("anyOf")
    if a and {"type": "null"} in a:
        rest = [x for x in a if x != {"type": "null"}]
        base = (
            _to_30(rest[0]) if len(rest) == 1 else {"anyOf": [_to_30(x) for x in rest]}
        )
        if "$ref" in base:
            base = {"allOf": [base]}
        return dict(
            {k: _to_30(x) for k, x in v.items() if k != "anyOf"},
            **base,
            nullable=True,
        )
    return {k: _to_30(x) for k, x in v.items()}
