#!/usr/bin/env python3
"""Checks a JSON-lines log of Bitbucket HTTP exchanges against Atlassian's OpenAPI descriptions.

Each exchange (one JSON object per line, format in README.md) is matched to a described operation
of the right description (Cloud REST 2.0, Data Center 9.2, or the small supplement describing
Cloud's OAuth token endpoint), then checked: the path and method are described, every query
parameter is described (or is one of the conventions the description's own narrative documents)
and has a value its schema allows, a JSON or form request body validates against the operation's
requestBody schema, the status is documented (or `default`), a JSON response body validates
against that response's schema, error answers use the flavor's error envelope, paged answers use
its paging envelope, and (when the line says which credential made it) the operation's scopes or
permission were enforced the way the description states.

Findings that the live service is known to share are suppressed by allowlist.yaml (each entry cites
why); live-rules.yaml adds checks the descriptions do not state but the live service enforces.

Usage: check.py [options] LOG [LOG...]   (LOG may be `-` for standard input)
Exit status: 0 no violation outside the allow-list, 1 violations, 2 unusable input or setup.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import parse_qsl, unquote

try:
    import yaml
    from jsonschema import validators as js_validators
    from jsonschema._keywords import ref as _js_ref
    from openapi_schema_validator import (
        OAS30ReadValidator,
        OAS30Validator,
        OAS30WriteValidator,
        oas30_format_checker,
    )
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT4
except ImportError as e:  # pragma: no cover - setup problem, not a finding
    sys.stderr.write(
        f"check.py: missing Python package ({e}); "
        f"pip install -r {Path(__file__).with_name('requirements.txt')}\n"
    )
    sys.exit(2)

HERE = Path(__file__).resolve().parent
METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")

# ---------------------------------------------------------------------------------------------
# Where each flavor's requests land in which description.
# ---------------------------------------------------------------------------------------------

# What a probe (a deliberate request the description does not describe) may be told without it
# being a violation: the findings about the request itself.
PROBE_NOTICES = {
    "root", "path", "method", "trailing_slash", "path_value", "query_param", "query_value", "query_repeated",
    "query_required", "request_body_undescribed", "request_body_required", "request_content_type",
    "request_body", "live_request",
}

# Data Center REST plugins: the versions a root may name, all served as the description's
# `/{plugin}/latest` (Data Center serves `latest` as an alias of the current version; the narrative
# "Structure of the REST URIs" gives `/rest/api/1.0/...`). A plugin not listed accepts 1.0 and latest.
DC_ROOT_VERSIONS = {
    "api": {"1.0", "latest"},
    "branch-permissions": {"2.0", "latest"},
    "branch-utils": {"1.0", "latest"},
    "build-status": {"1.0", "latest"},
}
DC_DEFAULT_VERSIONS = {"1.0", "latest"}

# A final path template segment `{param}` that may hold `/`: Data Center marks those with
# `pattern: .*`; Cloud's file paths and ref names are sent with their slashes (the operations'
# texts: "src/{commit}/{path}" names a file path, refs/branches/{name} a branch name).
GREEDY_PARAMS = {"cloud": {"path", "name"}, "datacenter": set()}

# OAuth 2 (legacy) scopes the Cloud narrative (#bitbucket-oauth-2-0-scopes) says imply others.
# API token (granular) scopes imply nothing ("do not implicitly grant access to other scopes").
CLOUD_SCOPE_IMPLIES = {
    "repository:write": {"repository"},
    "repository:admin": set(),  # "doesn't implicitly grant the repository or repository:write scopes"
    "project": {"repository"},
    "pullrequest": {"repository"},
    "pullrequest:write": {"pullrequest", "repository:write", "repository"},
    "issue:write": {"issue"},
    "snippet:write": {"snippet"},
}

# Data Center permissions, weakest first (project permissions imply the repository one below them).
DC_PERMISSION_RANK = {
    "LICENSED_USER": 0.0,
    "LICENSED": 0.0,
    "PROJECT_VIEW": 0.5,
    "REPO_READ": 1.0,
    "PROJECT_READ": 1.1,
    "REPO_WRITE": 2.0,
    "PROJECT_WRITE": 2.1,
    "REPO_ADMIN": 3.0,
    "PROJECT_CREATE": 3.5,
    "PROJECT_ADMIN": 4.0,
    "ADMIN": 5.0,
    "SYS_ADMIN": 6.0,
}
DC_PERMISSION_RE = re.compile(
    r"(?:<strong>|<b>|\*\*)\s*(" + "|".join(sorted(DC_PERMISSION_RANK, key=len, reverse=True)) + r")\s*(?:</strong>|</b>|\*\*)"
)



def dc_required_permission(op: dict) -> str | None:
    """The permission an operation's text names (`<strong>REPO_ADMIN</strong>`…); else what its 401
    says the user lacks (editFile: "does not have write permission")."""
    m = DC_PERMISSION_RE.search(op.get("description", ""))
    if m:
        return m.group(1)
    text = str((op.get("responses", {}).get("401") or {}).get("description", "")).lower()
    for word, permission in (("admin permission", "REPO_ADMIN"), ("write permission", "REPO_WRITE"), ("read permission", "REPO_READ")):
        if word in text:
            return permission
    return None


# The error envelopes, as each narrative shows them: Cloud `{"type": "error", "error": {"message"}}`
# (schema `error`); Data Center `{"errors": [{"context", "message", "exceptionName"}]}` with all three
# keys present, `context` and `exceptionName` possibly null ("Errors & Validation").
ERROR_ENVELOPES = {
    "cloud": {
        "type": "object",
        "required": ["type", "error"],
        "properties": {
            "type": {"type": "string", "enum": ["error"]},
            "error": {"type": "object", "required": ["message"], "properties": {"message": {"type": "string"}}},
        },
    },
    "datacenter": {
        "type": "object",
        "required": ["errors"],
        "properties": {
            "errors": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["context", "message", "exceptionName"],
                    "properties": {
                        "context": {"type": "string", "nullable": True},
                        "message": {"type": "string"},
                        "exceptionName": {"type": "string", "nullable": True},
                    },
                },
            }
        },
    },
}

# Data Center's paging envelope ("Paged APIs"): every page has these; `nextPageStart` exactly when
# `isLastPage` is false.
DC_PAGE_ENVELOPE = {
    "type": "object",
    "required": ["size", "limit", "isLastPage", "values", "start"],
    "properties": {
        "size": {"type": "integer", "minimum": 0},
        "limit": {"type": "integer", "minimum": 0},
        "isLastPage": {"type": "boolean"},
        "start": {"type": "integer", "minimum": 0},
        "nextPageStart": {"type": "integer", "minimum": 0},
        "values": {"type": "array"},
    },
}

# Cloud's paging envelope ("Pagination"): `values` always; `pagelen` between 1 and 100.
CLOUD_PAGE_ENVELOPE = {
    "type": "object",
    "required": ["values"],
    "properties": {
        "values": {"type": "array"},
        "pagelen": {"type": "integer", "minimum": 1, "maximum": 100},
        "page": {"type": "integer", "minimum": 1},
        "size": {"type": "integer", "minimum": 0},
        "next": {"type": "string"},
        "previous": {"type": "string"},
    },
}

# Query parameters the narratives document for every operation of a kind, with the schema a value
# must fit. Cloud: `fields` everywhere (#partial-response); `page`, `pagelen` (#pagination), `q` and
# `sort` (#filtering) on paginated collections. Data Center: `start` and `limit` on paged APIs.
CLOUD_ANY_QUERY = {"fields": {"type": "string"}}
CLOUD_PAGED_QUERY = {
    "page": {"type": "integer", "minimum": 1},
    "pagelen": {"type": "integer", "minimum": 1, "maximum": 100},
    "q": {"type": "string"},
    "sort": {"type": "string"},
}
DC_PAGED_QUERY = {"start": {"type": "integer", "minimum": 0}, "limit": {"type": "integer", "minimum": 1}}

# "Get file or directory contents": a file answers its raw contents with a media type "derived from
# the filename extension", a directory a paginated_treeentries page; only the page is validated.
RAW_FILE_OPERATIONS = {"GET /repositories/{workspace}/{repo_slug}/src/{commit}/{path}"}

SECRET_WORDS = re.compile(r"secret|password|token|authorization|credential", re.I)

# ---------------------------------------------------------------------------------------------
# Findings
# ---------------------------------------------------------------------------------------------


@dataclass
class Finding:
    check: str
    message: str
    where: str = ""
    notice: bool = False  # reported, never a failure
    allowed_by: str | None = None


@dataclass
class Exchange:
    line: int
    source: str
    flavor: str
    method: str
    root: str
    path: str
    query: list[tuple[str, str]]
    status: int | None
    req_type: str | None
    req_body: Any
    resp_type: str | None
    resp_body: Any
    auth: dict | None
    label: str | None
    probe: bool = False
    operation: str | None = None
    operation_id: str | None = None
    findings: list[Finding] = field(default_factory=list)


def media(content_type: str | None) -> str | None:
    if not content_type:
        return None
    return content_type.split(";", 1)[0].strip().lower() or None


def is_json_media(m: str | None) -> bool:
    return bool(m) and (m == "application/json" or m.endswith("+json") or m == "*/*")


def media_matches(actual: str, documented: str) -> bool:
    documented = media(documented) or ""
    if documented in ("*/*", actual):
        return True
    if documented.endswith("/*"):
        return actual.startswith(documented[:-1])
    return False


def shorten(text: str, limit: int = 240) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def error_text(err) -> str:
    """A validation error's message with the failing value abbreviated (bodies can be large)."""
    message = err.message
    if len(message) > 240:
        full = repr(err.instance)
        if full in message:
            message = message.replace(full, shorten(full, 80))
    return shorten(message, 300)


def escape_pointer(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


# ---------------------------------------------------------------------------------------------
# A description: routing, $ref resolution, cached validators.
# ---------------------------------------------------------------------------------------------


@dataclass
class Route:
    template: str
    segments: list[re.Pattern]
    names: list[list[str]]
    greedy: str | None
    literals: int
    item: dict


class Description:
    def __init__(self, name: str, flavor: str, doc: dict, uri: str, read_write: bool = False):
        self.name = name
        self.flavor = flavor
        self.doc = doc
        self.uri = uri
        self.registry = Registry().with_resource(uri, Resource(contents=doc, specification=DRAFT4))
        self.schemas = doc.get("components", {}).get("schemas", {})
        self._subtypes = self._discriminated_subtypes()
        self._active: set[tuple[int, str]] = set()
        base_read = OAS30ReadValidator if read_write else OAS30Validator
        base_write = OAS30WriteValidator if read_write else OAS30Validator
        keywords = {"$ref": self._ref_keyword}
        self._read_cls = js_validators.extend(base_read, keywords)
        self._write_cls = js_validators.extend(base_write, keywords)
        self._validators: dict[tuple, Any] = {}
        self.routes = self._compile_routes()
        self.by_first: dict[str, list[Route]] = defaultdict(list)
        for route in self.routes:
            first = route.template.strip("/").split("/", 1)[0]
            self.by_first[first if "{" not in first else "*"].append(route)

    # -- discriminators ---------------------------------------------------------------------
    def _discriminated_subtypes(self) -> dict[str, set[str]]:
        """Cloud's base `object` schema names `type` as its discriminator (implicit mapping: the
        value is a schema name). openapi-schema-validator only applies a discriminator that sits
        beside allOf/anyOf/oneOf, so a `$ref` to a base schema is redirected here to the subtype
        the instance's `type` names, when that subtype extends the base through allOf."""
        parents: dict[str, set[str]] = {}
        for name, schema in self.schemas.items():
            refs = set()
            for part in schema.get("allOf", []) if isinstance(schema, dict) else []:
                ref = part.get("$ref", "") if isinstance(part, dict) else ""
                if ref.startswith("#/components/schemas/"):
                    refs.add(ref.rsplit("/", 1)[1])
            parents[name] = refs
        roots = {n for n, s in self.schemas.items() if isinstance(s, dict) and "discriminator" in s}

        def ancestors(name: str, seen: set[str]) -> set[str]:
            out: set[str] = set()
            for p in parents.get(name, ()):
                if p not in seen:
                    seen.add(p)
                    out |= {p} | ancestors(p, seen)
            return out

        subtypes: dict[str, set[str]] = defaultdict(set)
        for name in self.schemas:
            anc = ancestors(name, {name})
            if (anc | {name}) & roots:
                for a in anc:
                    subtypes[a].add(name)
        return subtypes

    def _ref_keyword(self, validator, ref, instance, schema):
        """`$ref`, redirected to the subtype the instance's `type` names. `_active` holds the
        (instance, schema) pairs being validated, so a subtype's own allOf back to its base neither
        loops nor validates the instance twice. Validation is lazy (generators), but each
        exchange's errors are consumed in one go, so the set is a true dynamic scope."""
        if not (isinstance(instance, dict) and self._subtypes):
            yield from _js_ref(validator, ref, instance, schema)
            return
        base, _, fragment = ref.partition("#")
        if not (fragment.startswith("/components/schemas/") and base in ("", self.uri)):
            yield from _js_ref(validator, ref, instance, schema)
            return
        name = fragment.rsplit("/", 1)[1]
        kind = instance.get("type")
        if (
            isinstance(kind, str)
            and kind != name
            and kind in self._subtypes.get(name, ())
            and (id(instance), kind) not in self._active
        ):
            name = kind
            ref = f"{base}#/components/schemas/{kind}"
        key = (id(instance), name)
        fresh = key not in self._active
        self._active.add(key)
        try:
            yield from _js_ref(validator, ref, instance, schema)
        finally:
            if fresh:
                self._active.discard(key)

    # -- references ---------------------------------------------------------------------------
    def resolve(self, node: Any) -> Any:
        """Follows a non-schema `$ref` (parameters, requestBodies, responses) to its target."""
        seen = 0
        while isinstance(node, dict) and "$ref" in node and seen < 20:
            node = self.pointer(node["$ref"].partition("#")[2])
            seen += 1
        return node

    def pointer(self, ptr: str) -> Any:
        node: Any = self.doc
        for token in ptr.split("/")[1:]:
            token = token.replace("~1", "/").replace("~0", "~")
            node = node[int(token)] if isinstance(node, list) else node[token]
        return node

    def validator(self, ptr: str, write: bool = False):
        key = (ptr, write)
        v = self._validators.get(key)
        if v is None:
            cls = self._write_cls if write else self._read_cls
            v = cls({"$ref": f"{self.uri}#{ptr}"}, registry=self.registry, format_checker=oas30_format_checker)
            self._validators[key] = v
        return v

    def literal_validator(self, key: str, schema: dict):
        v = self._validators.get(("literal", key))
        if v is None:
            v = self._read_cls(schema, registry=self.registry, format_checker=oas30_format_checker)
            self._validators[("literal", key)] = v
        return v

    # -- routing ----------------------------------------------------------------------------
    def _compile_routes(self) -> list[Route]:
        routes = []
        for template, item in self.doc.get("paths", {}).items():
            parts = template.strip("/").split("/")
            segs, names, literals = [], [], 0
            greedy = None
            params = {p.get("name"): p for p in self._params_of(item, None)}
            for i, part in enumerate(parts):
                found = re.findall(r"\{([^}]+)\}", part)
                names.append(found)
                if not found:
                    literals += 1
                    segs.append(re.compile(re.escape(part) + r"\Z"))
                    continue
                if i == len(parts) - 1 and part == "{%s}" % found[0]:
                    p = params.get(found[0]) or self._any_op_param(item, found[0]) or {}
                    pattern = (self.resolve(p).get("schema") or {}).get("pattern") if p else None
                    if pattern == ".*" or found[0] in GREEDY_PARAMS.get(self.flavor, ()):
                        greedy = found[0]
                regex = ""
                for literal, param in re.findall(r"([^{]*)(?:\{([^}]+)\})?", part):
                    regex += re.escape(literal) + (f"(?P<p{len(regex)}>[^/]+)" if param else "")
                segs.append(re.compile(regex + r"\Z"))
            routes.append(Route(template, segs, names, greedy, literals, item))
        # Concrete paths before templated ones (OpenAPI "Path Templating Matching").
        routes.sort(key=lambda r: (-r.literals, r.greedy is not None, r.template))
        return routes

    def _any_op_param(self, item: dict, name: str) -> dict | None:
        for method in METHODS:
            for p in self._params_of(item, item.get(method)):
                if p.get("name") == name and p.get("in") == "path":
                    return p
        return None

    def _params_of(self, item: dict, op: dict | None) -> list[dict]:
        merged: dict[tuple, dict] = {}
        for p in item.get("parameters", []) + ((op or {}).get("parameters", []) if op else []):
            p = self.resolve(p)
            merged[(p.get("name"), p.get("in"))] = p
        return list(merged.values())

    def match(self, raw_path: str) -> tuple[Route, dict[str, str]] | None:
        # Leading `/` dropped, trailing kept: `refs/branches/` is not `refs/branches`.
        segments = (raw_path[1:] if raw_path.startswith("/") else raw_path).split("/")
        first = segments[0]
        candidates = self.by_first.get(first, []) + self.by_first.get("*", [])
        best = None
        for route in candidates:
            n = len(route.segments)
            if len(segments) < n or (len(segments) > n and not route.greedy):
                continue
            values: dict[str, str] = {}
            ok = True
            for i, seg_re in enumerate(route.segments):
                if route.greedy and i == n - 1:
                    seg = "/".join(segments[i:])
                    # `src/{commit}/` lists the root directory: Cloud's "Get file or directory
                    # contents" says the trailing slash "is required" there, so `path` may be empty.
                    root_listing = segments[i:] == [""] and route.greedy == "path" and self.flavor == "cloud"
                    if not root_listing and (not seg or any(s == "" for s in segments[i:])):
                        ok = False
                        break
                    values[route.greedy] = unquote(seg)
                    continue
                m = seg_re.match(segments[i])
                if not m:
                    ok = False
                    break
                for name, value in zip(route.names[i], m.groups()):
                    values[name] = unquote(value)
            if ok and (best is None or (route.literals, route.greedy is None) > (best[0].literals, best[0].greedy is None)):
                best = (route, values)
        return best


# ---------------------------------------------------------------------------------------------
# Allow-list and live rules
# ---------------------------------------------------------------------------------------------


def op_matches(pattern: str | list | None, exchange: Exchange) -> bool:
    if pattern in (None, "*"):
        return True
    for p in pattern if isinstance(pattern, list) else [pattern]:
        if p == "*" or p == exchange.operation_id or p == exchange.operation:
            return True
        if "*" in p and exchange.operation and re.fullmatch(re.escape(p).replace(r"\*", ".*"), exchange.operation):
            return True
    return False


def flavor_matches(value: str | None, exchange: Exchange) -> bool:
    return value in (None, "*", exchange.flavor)


def status_matches(value: Any, exchange: Exchange) -> bool:
    if value is None:
        return True
    values = value if isinstance(value, list) else [value]
    for v in values:
        if isinstance(v, int) and v == exchange.status:
            return True
        if isinstance(v, str) and exchange.status is not None and re.fullmatch(v.replace("x", r"\d"), str(exchange.status)):
            return True
    return False


class AllowList:
    def __init__(self, entries: list[dict], source: str):
        self.entries = entries
        self.source = source
        self.used: Counter = Counter()
        for i, e in enumerate(entries):
            if not e.get("id") or not e.get("check") or not e.get("why"):
                raise ValueError(f"{source}: entry {i} needs `id`, `check` and `why`")
            e["_where"] = re.compile(e["where"]) if e.get("where") else None
            e["_message"] = re.compile(e["message"], re.S) if e.get("message") else None

    def apply(self, exchange: Exchange) -> None:
        for f in exchange.findings:
            if f.notice:
                continue
            for e in self.entries:
                checks = e["check"] if isinstance(e["check"], list) else [e["check"]]
                if f.check not in checks and "*" not in checks:
                    continue
                if not (flavor_matches(e.get("flavor"), exchange) and op_matches(e.get("operation"), exchange)):
                    continue
                if not status_matches(e.get("status"), exchange):
                    continue
                if e.get("root") and e["root"] != exchange.root:
                    continue
                if e["_where"] and not e["_where"].search(f.where or ""):
                    continue
                if e["_message"] and not e["_message"].search(f.message):
                    continue
                f.allowed_by = e["id"]
                self.used[e["id"]] += 1
                break


def json_pointer_values(value: Any, pointer: str) -> Iterator[tuple[str, Any, bool]]:
    """(`$`-style path, value, present) for every match of a pointer with `*` wildcards."""
    tokens = [t.replace("~1", "/").replace("~0", "~") for t in pointer.split("/")[1:]] if pointer else []

    def walk(node: Any, i: int, path: str) -> Iterator[tuple[str, Any, bool]]:
        if i == len(tokens):
            yield path, node, True
            return
        t = tokens[i]
        if t == "*":
            items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
            for k, v in items:
                yield from walk(v, i + 1, f"{path}.{k}" if isinstance(node, dict) else f"{path}[{k}]")
        elif isinstance(node, dict):
            if t in node:
                yield from walk(node[t], i + 1, f"{path}.{t}")
            else:
                yield f"{path}.{t}", None, False
        elif isinstance(node, list) and t.isdigit() and int(t) < len(node):
            yield from walk(node[int(t)], i + 1, f"{path}[{t}]")

    yield from walk(value, 0, "$")


class LiveRules:
    """Checks the live service enforces but the descriptions do not state (live-rules.yaml)."""

    def __init__(self, rules: list[dict], source: str):
        self.rules = rules
        for i, r in enumerate(rules):
            if not r.get("id") or not r.get("why") or r.get("in") not in ("request", "response", "path", "query"):
                raise ValueError(f"{source}: rule {i} needs `id`, `why` and `in` (request, response, path or query)")

    def apply(self, ex: Exchange, request_object: Any, path_values: dict[str, str]) -> None:
        for r in self.rules:
            if not (flavor_matches(r.get("flavor"), ex) and op_matches(r.get("operation"), ex)):
                continue
            if r.get("operation") in (None, "*") and ex.operation is None:
                continue
            if not status_matches(r.get("status"), ex):
                continue
            if r.get("when_request") and not all(
                any(v == want for _, v, present in json_pointer_values(request_object, ptr) if present)
                for ptr, want in r["when_request"].items()
            ):
                continue
            code = r.get("check", "live")
            if r["in"] in ("path", "query"):
                values = (
                    [(r["param"], path_values[r["param"]])] if r["in"] == "path" and r["param"] in path_values else
                    [(k, v) for k, v in ex.query if k == r.get("param")] if r["in"] == "query" else []
                )
                for name, value in values:
                    self._value(ex, r, code, f"{r['in']}:{name}", value, True)
                continue
            body = request_object if r["in"] == "request" else ex.resp_body
            if body is None or isinstance(body, str):
                continue
            for where, value, present in json_pointer_values(body, r.get("pointer", "")):
                self._value(ex, r, code, where, value, present)

    @staticmethod
    def _value(ex: Exchange, r: dict, code: str, where: str, value: Any, present: bool) -> None:
        why = f" [{r['id']}]"
        if r.get("absent") and present:
            ex.findings.append(Finding(code, f"must be absent{why}", where))
            return
        if r.get("present") and not present:
            ex.findings.append(Finding(code, f"must be present{why}", where))
            return
        if not present:
            return
        if "required" in r and isinstance(value, dict):
            for key in r["required"]:
                if key not in value:
                    ex.findings.append(Finding(code, f"{key!r} must be present{why}", where))
        if "pattern" in r and isinstance(value, str) and not re.search(r["pattern"], value):
            ex.findings.append(Finding(code, f"{shorten(value, 60)!r} does not match {r['pattern']!r}{why}", where))
        if "not_pattern" in r and isinstance(value, str) and re.search(r["not_pattern"], value):
            ex.findings.append(Finding(code, f"{shorten(value, 60)!r} must not match {r['not_pattern']!r}{why}", where))
        if "maximum" in r:
            number = value if isinstance(value, (int, float)) else None
            if isinstance(value, str) and re.fullmatch(r"-?\d+", value):
                number = int(value)
            if number is not None and number > r["maximum"]:
                ex.findings.append(Finding(code, f"{number} is above {r['maximum']}{why}", where))
        if "max_items" in r and isinstance(value, list) and len(value) > r["max_items"]:
            ex.findings.append(Finding(code, f"{len(value)} items, at most {r['max_items']}{why}", where))
        if "equals" in r and value != r["equals"]:
            ex.findings.append(Finding(code, f"{shorten(json.dumps(value), 60)} is not {json.dumps(r['equals'])}{why}", where))


# ---------------------------------------------------------------------------------------------
# The checker
# ---------------------------------------------------------------------------------------------


def default_description_dir() -> Path:
    env = os.environ.get("BITBUCKET_OPENAPI_DIR")
    if env:
        return Path(env)
    # infra/conformance → repository root → ../shared/bitbucket-openapi
    return HERE.parents[1].parent / "shared" / "bitbucket-openapi"


def load_json(path: Path) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


class Checker:
    def __init__(self, descriptions_dir: Path, allowlist: AllowList | None, live: LiveRules | None, read_write: bool = False):
        cloud = load_json(descriptions_dir / "cloud.swagger.v3.json")
        dc = load_json(descriptions_dir / "datacenter-9.2.swagger.v3.json")
        oauth = load_json(HERE / "supplement" / "cloud-oauth.openapi.json")
        self.cloud = Description("cloud", "cloud", cloud, "urn:bitbucket:cloud", read_write)
        self.dc = Description("datacenter", "datacenter", dc, "urn:bitbucket:datacenter", read_write)
        self.oauth = Description("cloud-oauth", "cloud", oauth, "urn:bitbucket:cloud-oauth", read_write)
        self.dc_plugins = {t.strip("/").split("/", 1)[0] for t in dc.get("paths", {})}
        self.allowlist = allowlist
        self.live = live

    # -- which description ------------------------------------------------------------------
    def locate(self, ex: Exchange) -> tuple[Description | None, str]:
        """The description and the path within it; a finding when the root is unknown."""
        if ex.flavor == "cloud":
            if ex.root == "/2.0":
                return self.cloud, ex.path
            if ex.root == "/site/oauth2":
                return self.oauth, ex.path
            ex.findings.append(Finding("root", f"unknown Cloud API root {ex.root!r} (known: /2.0, /site/oauth2)"))
            return None, ex.path
        m = re.fullmatch(r"/rest/([a-z0-9-]+)/([^/]+)", ex.root or "")
        if not m or m.group(1) not in self.dc_plugins:
            ex.findings.append(Finding("root", f"unknown Data Center REST root {ex.root!r}"))
            return None, ex.path
        plugin, version = m.groups()
        allowed = DC_ROOT_VERSIONS.get(plugin, DC_DEFAULT_VERSIONS)
        if version not in allowed:
            ex.findings.append(
                Finding("root", f"/rest/{plugin}/{version}: that plugin is served as {', '.join(sorted(allowed))}")
            )
        return self.dc, f"/{plugin}/latest{ex.path}"

    # -- one exchange -------------------------------------------------------------------------
    def check(self, ex: Exchange) -> None:
        desc, path = self.locate(ex)
        if desc is not None:
            self._check_described(ex, desc, path)
        if ex.probe:
            # A deliberate request the description does not describe (an undescribed route or
            # method, or input it does not allow), sent to see how it is refused: what is wrong
            # with the request, and the undocumented 4xx refusing it, are notices; the answer's
            # envelope is still held to the flavor's.
            refused = ex.status is not None and 400 <= ex.status < 500
            for f in ex.findings:
                if f.check in PROBE_NOTICES or (f.check == "status" and refused):
                    f.notice = True
        if self.allowlist:
            self.allowlist.apply(ex)

    def _check_described(self, ex: Exchange, desc: Description, path: str) -> None:
        matched = desc.match(path)
        if matched is None and len(path) > 1 and path.endswith("/"):
            matched = desc.match(path.rstrip("/"))
            if matched:
                ex.findings.append(Finding("trailing_slash", f"only {matched[0].template} is described (no trailing `/`)"))
        if matched is None:
            ex.findings.append(Finding("path", f"no described path matches {path}"))
            self._check_envelopes(ex, desc, None, None)
            return
        route, path_values = matched
        method = ex.method.lower()
        op = route.item.get(method)
        if op is None and method == "head":
            op = route.item.get("get")
        ex.operation = f"{ex.method.upper()} {route.template}"
        if op is None:
            described = ", ".join(m.upper() for m in METHODS if m in route.item)
            ex.findings.append(Finding("method", f"{ex.method.upper()} is not described for {route.template} (described: {described})"))
            self._check_envelopes(ex, desc, None, None)
            return
        ex.operation_id = op.get("operationId")
        op_ptr = f"/paths/{escape_pointer(route.template)}/{method if method in route.item else 'get'}"
        if op.get("deprecated"):
            ex.findings.append(Finding("deprecated", "the description marks this operation deprecated", notice=True))
        params = desc._params_of(route.item, op)
        self._check_path_params(ex, desc, params, path_values)
        self._check_query(ex, desc, op, params)
        request_object = self._check_request(ex, desc, op, op_ptr)
        response = self._check_status(ex, desc, op)
        self._check_response(ex, desc, op, op_ptr, response)
        self._check_envelopes(ex, desc, op, response)
        self._check_auth(ex, desc, op)
        if self.live:
            self.live.apply(ex, request_object, path_values)

    # -- parameters ---------------------------------------------------------------------------
    def _coerce(self, schema: dict, raw: str) -> Any:
        kind = schema.get("type")
        try:
            if kind == "integer":
                return int(raw)
            if kind == "number":
                return float(raw) if ("." in raw or "e" in raw.lower()) else int(raw)
            if kind == "boolean":
                return {"true": True, "false": False}.get(raw, raw)
        except ValueError:
            return raw
        return raw

    def _check_value(self, ex: Exchange, desc: Description, key: str, schema: dict, raw: str, where: str, check: str) -> None:
        schema = desc.resolve(schema)
        if not isinstance(schema, dict):
            return
        value: Any = [self._coerce(desc.resolve(schema.get("items", {})), raw)] if schema.get("type") == "array" else self._coerce(schema, raw)
        v = desc.literal_validator(f"param:{key}", schema)
        for err in v.iter_errors(value):
            ex.findings.append(Finding(check, f"{raw!r}: {shorten(err.message, 160)}", where))
            break

    def _check_path_params(self, ex: Exchange, desc: Description, params: list[dict], values: dict[str, str]) -> None:
        by_name = {p["name"]: p for p in params if p.get("in") == "path"}
        for name, raw in values.items():
            p = by_name.get(name)
            if p is None:
                continue
            schema = dict(p.get("schema") or {})
            if schema.get("pattern") == ".*":
                continue
            self._check_value(ex, desc, f"{ex.operation}:path:{name}", schema, raw, f"path:{name}", "path_value")

    def _paged(self, desc: Description, op: dict) -> bool:
        ok = self._success_response(desc, op)
        if ok is None:
            return False
        response = desc.resolve(ok[1])
        if desc.flavor == "datacenter" and re.search(r"\bpage of\b", response.get("description", ""), re.I):
            return True
        for media_type, content in (response.get("content") or {}).items():
            schema = content.get("schema") or {}
            ref = schema.get("$ref", "")
            name = ref.rsplit("/", 1)[1] if ref else ""
            target = desc.schemas.get(name, schema) if name else schema
            props = (target or {}).get("properties", {}) if isinstance(target, dict) else {}
            if "values" in props and ("pagelen" in props or "isLastPage" in props or name.startswith("paginated_")):
                return True
        return False

    def _check_query(self, ex: Exchange, desc: Description, op: dict, params: list[dict]) -> None:
        declared = {p["name"]: p for p in params if p.get("in") == "query"}
        conventions: dict[str, dict] = {}
        if desc is self.cloud:
            conventions.update(CLOUD_ANY_QUERY)
            if self._paged(desc, op):
                conventions.update(CLOUD_PAGED_QUERY)
        elif desc is self.dc and self._paged(desc, op):
            conventions.update(DC_PAGED_QUERY)
        counts = Counter(name for name, _ in ex.query)
        for name, raw in ex.query:
            p = declared.get(name)
            if p is not None:
                schema = dict(desc.resolve(p.get("schema") or {}))
                # "#filtering": a `-` before the sort field reverses the order, on every `sort`.
                if desc is self.cloud and name == "sort" and raw.startswith("-"):
                    raw = raw[1:]
                self._check_value(ex, desc, f"{ex.operation}:query:{name}", schema, raw, f"query:{name}", "query_value")
                repeatable = schema.get("type") == "array" or re.search(r"can be repeated|repeat the", p.get("description", "") + op.get("description", ""), re.I)
                if counts[name] > 1 and not repeatable:
                    ex.findings.append(Finding("query_repeated", f"{name} given {counts[name]} times; described once", f"query:{name}"))
                    counts[name] = 1
                continue
            if name in conventions:
                value = raw[1:] if name == "sort" and raw.startswith("-") else raw
                self._check_value(ex, desc, f"convention:{desc.name}:{name}", conventions[name], value, f"query:{name}", "query_value")
                continue
            ex.findings.append(Finding("query_param", f"{name} is not described for this operation", f"query:{name}"))
        for name, p in declared.items():
            if p.get("required") and name not in counts:
                ex.findings.append(Finding("query_required", f"required query parameter {name} is missing", f"query:{name}"))

    # -- request body -------------------------------------------------------------------------
    def _request_object(self, ex: Exchange) -> Any:
        """The request body as a JSON value: forms become an object of field → value (repeated
        fields a list, file parts their text or \"\")."""
        body = ex.req_body
        m = media(ex.req_type)
        if m in ("multipart/form-data", "application/x-www-form-urlencoded") and isinstance(body, list):
            out: dict[str, Any] = {}
            for part in body:
                if isinstance(part, dict):
                    name, value = part.get("name"), part.get("value")
                elif isinstance(part, (list, tuple)) and part:
                    name, value = part[0], part[1] if len(part) > 1 else None
                else:
                    continue
                value = "" if value is None else value
                if name in out:
                    out[name] = (out[name] if isinstance(out[name], list) else [out[name]]) + [value]
                else:
                    out[name] = value
            return out
        return body

    def _check_request(self, ex: Exchange, desc: Description, op: dict, op_ptr: str) -> Any:
        body = self._request_object(ex)
        rb = op.get("requestBody")
        has_body = ex.req_body not in (None, "", [], {}) or ex.req_type is not None
        if rb is None:
            if has_body:
                ex.findings.append(Finding("request_body_undescribed", f"a {media(ex.req_type) or 'body'} body was sent; the operation describes none"))
            return body
        rb_ptr = op_ptr + "/requestBody"
        if "$ref" in rb:
            rb_ptr = rb["$ref"].partition("#")[2]
        rb = desc.resolve(rb)
        if not has_body:
            if rb.get("required"):
                ex.findings.append(Finding("request_body_required", "the operation requires a body; none was sent"))
            return body
        m = media(ex.req_type)
        content = rb.get("content") or {}
        key = next((k for k in content if m and media_matches(m, k)), None)
        if key is None:
            ex.findings.append(Finding("request_content_type", f"{m or 'no content type'} is not among {', '.join(content) or 'none'}"))
            return body
        if "schema" not in content[key]:
            return body
        if m and not (is_json_media(m) or m in ("multipart/form-data", "application/x-www-form-urlencoded")):
            return body
        if isinstance(body, str) and is_json_media(m):
            ex.findings.append(Finding("request_body", "the body is not JSON"))
            return body
        v = desc.validator(f"{rb_ptr}/content/{escape_pointer(key)}/schema", write=True)
        for err in v.iter_errors(body):
            where = err.json_path
            message = error_text(err) if not SECRET_WORDS.search(where) else f"the value fails `{err.validator}`"
            ex.findings.append(Finding("request_body", message, where))
        return body

    # -- status and response ------------------------------------------------------------------
    def _success_response(self, desc: Description, op: dict) -> tuple[str, dict] | None:
        for code in ("200", "201", "2XX"):
            if code in op.get("responses", {}):
                return code, op["responses"][code]
        return None

    def _check_status(self, ex: Exchange, desc: Description, op: dict) -> tuple[str, dict] | None:
        responses = op.get("responses", {})
        if ex.status is None:
            return None
        for key in (str(ex.status), f"{str(ex.status)[0]}XX", f"{str(ex.status)[0]}xx", "default"):
            if key in responses:
                return key, desc.resolve(responses[key])
        ex.findings.append(Finding("status", f"{ex.status} is not documented (documented: {', '.join(responses)})"))
        return None

    def _check_response(self, ex: Exchange, desc: Description, op: dict, op_ptr: str, response: tuple[str, dict] | None) -> None:
        if response is None:
            return
        key, resp = response
        m = media(ex.resp_type)
        content = resp.get("content") or {}
        has_body = ex.resp_body not in (None, "") or m is not None
        if not content:
            if has_body and ex.resp_body not in (None, ""):
                ex.findings.append(Finding("response_content_type", f"{key} is documented without a body; a {m or 'body'} came"))
            return
        if not has_body:
            ex.findings.append(Finding("response_content_type", f"{key} is documented with {', '.join(content)}; no body came"))
            return
        ckey = next((k for k in content if m and media_matches(m, k)), None)
        if ckey is None:
            ex.findings.append(Finding("response_content_type", f"{m or 'no content type'} is not among {', '.join(content)} for {key}"))
            return
        schema = content[ckey].get("schema")
        if not schema or not is_json_media(m):
            return
        if ex.operation in RAW_FILE_OPERATIONS and not any(k == "format" for k, _ in ex.query) and not (
            isinstance(ex.resp_body, dict) and "values" in ex.resp_body
        ):
            return  # a file's own bytes (a .json file comes as application/json), not a listing
        if isinstance(ex.resp_body, str):
            ex.findings.append(Finding("response_body", f"the {m} body is not JSON"))
            return
        ref = op["responses"][key].get("$ref") if isinstance(op["responses"][key], dict) else None
        base = ref.partition("#")[2] if ref else f"{op_ptr}/responses/{escape_pointer(key)}"
        v = desc.validator(f"{base}/content/{escape_pointer(ckey)}/schema")
        for err in v.iter_errors(ex.resp_body):
            ex.findings.append(Finding("response_body", error_text(err), err.json_path))

    def _check_envelopes(self, ex: Exchange, desc: Description, op: dict | None, response: tuple[str, dict] | None) -> None:
        body = ex.resp_body
        if not isinstance(body, (dict, list)) or ex.status is None:
            return
        flavor = "datacenter" if desc is self.dc else "cloud"
        if desc is self.oauth:
            return  # RFC 6749 errors ({"error", "error_description"}): described by the supplement
        if ex.status >= 400:
            v = desc.literal_validator(f"envelope:{flavor}", ERROR_ENVELOPES[flavor])
            for err in v.iter_errors(body):
                ex.findings.append(Finding("error_envelope", error_text(err), err.json_path))
            return
        if op is None or not (200 <= ex.status < 300) or not self._paged(desc, op):
            return
        if flavor == "datacenter":
            v = desc.literal_validator("page:datacenter", DC_PAGE_ENVELOPE)
            for err in v.iter_errors(body):
                ex.findings.append(Finding("page_envelope", error_text(err), err.json_path))
            if isinstance(body, dict):
                last, nxt = body.get("isLastPage"), "nextPageStart" in body
                if last is False and not nxt:
                    ex.findings.append(Finding("page_envelope", "isLastPage is false but nextPageStart is missing", "$.nextPageStart"))
                if last is True and nxt and body.get("nextPageStart") is not None:
                    ex.findings.append(Finding("page_envelope", "isLastPage is true but nextPageStart is given", "$.nextPageStart"))
                values, size, limit = body.get("values"), body.get("size"), body.get("limit")
                if isinstance(values, list) and isinstance(size, int) and size != len(values):
                    ex.findings.append(Finding("page_envelope", f"size is {size} but the page holds {len(values)} values", "$.size"))
                if isinstance(values, list) and isinstance(limit, int) and len(values) > limit:
                    ex.findings.append(Finding("page_envelope", f"{len(values)} values exceed limit {limit}", "$.values"))
        else:
            v = desc.literal_validator("page:cloud", CLOUD_PAGE_ENVELOPE)
            for err in v.iter_errors(body):
                ex.findings.append(Finding("page_envelope", error_text(err), err.json_path))
            if isinstance(body, dict):
                values, pagelen = body.get("values"), body.get("pagelen")
                if isinstance(values, list) and isinstance(pagelen, int) and len(values) > pagelen:
                    ex.findings.append(Finding("page_envelope", f"{len(values)} values exceed pagelen {pagelen}", "$.values"))
                asked = next((raw for name, raw in ex.query if name == "pagelen"), None)
                if asked and asked.isdigit() and isinstance(pagelen, int) and pagelen > int(asked):
                    ex.findings.append(Finding("page_envelope", f"pagelen {pagelen} is above the {asked} asked for", "$.pagelen"))

    # -- credentials --------------------------------------------------------------------------
    def _check_auth(self, ex: Exchange, desc: Description, op: dict) -> None:
        auth = ex.auth
        if not isinstance(auth, dict) or ex.status is None:
            return
        kind = auth.get("kind")
        if desc is self.cloud and kind in ("api_token", "access_token", "oauth_consumer"):
            granted = set(auth.get("scopes") or [])
            if kind == "api_token":
                required = set()
                for entry in op.get("x-atlassian-oauth2-scopes") or []:
                    if entry.get("state", "Current") == "Current":
                        required |= set(entry.get("scopes") or [])
                have = granted
            else:
                alternatives = [set(s.get("oauth2", [])) for s in op.get("security") or [] if "oauth2" in s]
                required = alternatives[0] if alternatives else set()
                have = set(granted)
                for scope in list(granted):
                    have |= CLOUD_SCOPE_IMPLIES.get(scope, set())
            if not required:
                return
            missing = sorted(required - have)
            scope_error = ex.status == 403 and "scope" in json.dumps(ex.resp_body or "").lower()
            if missing and 200 <= ex.status < 300:
                ex.findings.append(Finding("scope", f"{kind} lacks {', '.join(missing)} yet got {ex.status}"))
            elif missing and ex.status == 401:
                ex.findings.append(Finding("scope", f"{kind} lacks {', '.join(missing)}: Cloud answers a missing scope with 403, not 401"))
            elif not missing and scope_error:
                ex.findings.append(Finding("scope", f"403 for a missing scope although {kind} has {', '.join(sorted(required))}"))
            if scope_error and isinstance(ex.resp_body, dict):
                detail = (ex.resp_body.get("error") or {}).get("detail")
                named = detail.get("required") if isinstance(detail, dict) else None
                if isinstance(named, list):
                    granular = [s for s in named if isinstance(s, str) and s.endswith(":bitbucket")]
                    if kind == "api_token" and len(granular) != len(named):
                        ex.findings.append(Finding("scope_names", f"403 names {named}; an API token needs granular scopes ({', '.join(sorted(required))})", "$.error.detail.required"))
                    if kind != "api_token" and granular:
                        ex.findings.append(Finding("scope_names", f"403 names {named}; a {kind} has legacy scopes ({', '.join(sorted(required))})", "$.error.detail.required"))
        elif desc is self.dc and kind in ("http_token", "basic") and auth.get("permission"):
            have = DC_PERMISSION_RANK.get(str(auth["permission"]).upper())
            responses = op.get("responses", {})
            needed = dc_required_permission(op)
            if have is None or needed is None:
                return
            documented = "401" if "401" in responses else "403" if "403" in responses else None
            if have < DC_PERMISSION_RANK[needed]:
                if 200 <= ex.status < 300:
                    ex.findings.append(Finding("permission", f"{auth['permission']} is below {needed} yet got {ex.status}"))
                elif documented and str(ex.status) != documented and ex.status in (401, 403):
                    ex.findings.append(Finding("permission", f"missing {needed} answered {ex.status}; the description documents {documented}"))


# ---------------------------------------------------------------------------------------------
# Reading the log
# ---------------------------------------------------------------------------------------------

ROOT_RE = re.compile(r"^(/2\.0|/site/oauth2|/rest/[a-z0-9-]+/[^/]+)(/.*)?$")


def parse_exchange(obj: Any, line: int, source: str) -> Exchange:
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    method = obj.get("method")
    path = obj.get("path")
    if not isinstance(method, str) or not isinstance(path, str):
        raise ValueError("`method` and `path` are required strings")
    path, _, inline_query = path.partition("?")
    root = obj.get("root")
    if root is None:
        m = ROOT_RE.match(path)
        if not m:
            raise ValueError(f"no `root` and {path!r} starts with no known root")
        root, path = m.group(1), m.group(2) or ""
    root = "/" + root.strip("/")
    flavor = obj.get("flavor") or ("datacenter" if root.startswith("/rest/") else "cloud")
    if flavor not in ("cloud", "datacenter"):
        raise ValueError(f"unknown flavor {flavor!r}")
    query = obj.get("query", inline_query)
    if isinstance(query, str):
        pairs = parse_qsl(query.lstrip("?"), keep_blank_values=True)
    elif isinstance(query, list):
        pairs = [(str(p[0]), "" if len(p) < 2 or p[1] is None else str(p[1])) for p in query]
    elif query is None:
        pairs = []
    else:
        raise ValueError("`query` must be a list of [name, value] pairs or a string")
    status = obj.get("status")
    if status is not None and not isinstance(status, int):
        raise ValueError("`status` must be an integer")
    return Exchange(
        line=line,
        source=source,
        flavor=flavor,
        method=method.upper(),
        root=root,
        path=path or "/",
        query=pairs,
        status=status,
        req_type=obj.get("request_content_type"),
        req_body=obj.get("request_body"),
        resp_type=obj.get("response_content_type"),
        resp_body=obj.get("response_body"),
        auth=obj.get("auth"),
        label=obj.get("test") or obj.get("label"),
        probe=bool(obj.get("probe")),
    )


def read_logs(paths: list[str]) -> Iterator[tuple[str, int, str]]:
    for p in paths:
        f = sys.stdin if p == "-" else open(p, encoding="utf-8")
        try:
            for n, text in enumerate(f, 1):
                if text.strip() and not text.lstrip().startswith("//"):
                    yield p, n, text
        finally:
            if f is not sys.stdin:
                f.close()


def load_yaml_list(path: Path | None, key: str) -> list[dict]:
    if path is None or not path.exists():
        return []
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    entries = data.get(key, []) if isinstance(data, dict) else []
    if not isinstance(entries, list):
        raise ValueError(f"{path}: `{key}` must be a list")
    return entries


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("logs", nargs="+", help="JSON-lines traffic logs (`-` for standard input)")
    parser.add_argument("--descriptions", type=Path, default=default_description_dir(), help="directory of the two Atlassian descriptions (default: $BITBUCKET_OPENAPI_DIR or ../shared/bitbucket-openapi)")
    parser.add_argument("--allowlist", type=Path, default=HERE / "allowlist.yaml")
    parser.add_argument("--live-rules", type=Path, default=HERE / "live-rules.yaml")
    parser.add_argument("--no-allowlist", action="store_true", help="report every finding")
    parser.add_argument("--no-live-rules", action="store_true")
    parser.add_argument("--read-write", action="store_true", help="also enforce readOnly (requests) and writeOnly (responses)")
    parser.add_argument("--show-allowed", action="store_true", help="list allowed findings too")
    parser.add_argument("--notices", action="store_true", help="list notices (deprecated operations)")
    parser.add_argument("--strict-allowlist", action="store_true", help="fail when an allow-list entry matched nothing")
    parser.add_argument("--json", action="store_true", help="one JSON object per finding on stdout, then a summary object")
    parser.add_argument("--max", type=int, default=200, help="print at most this many violations (default 200)")
    args = parser.parse_args(argv)

    started = time.monotonic()
    try:
        allow = None if args.no_allowlist else AllowList(load_yaml_list(args.allowlist, "allow"), str(args.allowlist))
        live = None if args.no_live_rules else LiveRules(load_yaml_list(args.live_rules, "rules"), str(args.live_rules))
        checker = Checker(args.descriptions, allow, live, args.read_write)
    except (OSError, ValueError, yaml.YAMLError) as e:
        sys.stderr.write(f"check.py: {e}\n")
        return 2

    totals: Counter = Counter()
    by_op: Counter = Counter()
    printed = 0
    exchanges = 0
    bad_lines = 0
    for source, n, text in read_logs(args.logs):
        try:
            ex = parse_exchange(json.loads(text), n, source)
        except (ValueError, json.JSONDecodeError) as e:
            bad_lines += 1
            sys.stderr.write(f"{source}:{n}: unusable log line: {e}\n")
            continue
        exchanges += 1
        checker.check(ex)
        for f in ex.findings:
            state = "notice" if f.notice else "allowed" if f.allowed_by else "violation"
            totals[(state, f.check)] += 1
            if state == "violation":
                by_op[ex.operation or f"{ex.method} {ex.root}{ex.path}"] += 1
            show = state == "violation" or (state == "allowed" and args.show_allowed) or (state == "notice" and args.notices)
            if not show:
                continue
            if args.json:
                print(json.dumps({
                    "state": state, "check": f.check, "message": f.message, "where": f.where,
                    "allowed_by": f.allowed_by, "source": source, "line": n, "flavor": ex.flavor,
                    "method": ex.method, "root": ex.root, "path": ex.path, "status": ex.status,
                    "operation": ex.operation, "operationId": ex.operation_id, "test": ex.label,
                }))
            elif state != "violation" or printed < args.max:
                printed += state == "violation"
                op = ex.operation or "(no operation)"
                opid = f" [{ex.operation_id}]" if ex.operation_id else ""
                where = f" at {f.where}" if f.where else ""
                tag = f"allowed by {f.allowed_by}" if f.allowed_by else state
                test = f" ({ex.label})" if ex.label else ""
                print(f"{source}:{n}: {tag}: {f.check}{where}: {f.message}\n    {ex.flavor} {ex.method} {ex.root}{ex.path} → {ex.status}; {op}{opid}{test}")

    violations = sum(c for (state, _), c in totals.items() if state == "violation")
    allowed = sum(c for (state, _), c in totals.items() if state == "allowed")
    unused = [e["id"] for e in (allow.entries if allow else []) if not allow.used.get(e["id"])]
    elapsed = time.monotonic() - started
    summary = {
        "exchanges": exchanges,
        "unusable_lines": bad_lines,
        "violations": violations,
        "allowed": allowed,
        "by_check": {f"{state}:{check}": c for (state, check), c in sorted(totals.items())},
        "violations_by_operation": dict(by_op.most_common()),
        "allowlist_used": dict(allow.used) if allow else {},
        "allowlist_unused": unused,
        "seconds": round(elapsed, 3),
    }
    if args.json:
        print(json.dumps({"summary": summary}))
    else:
        if printed < violations:
            print(f"… {violations - printed} more violations not printed (--max)")
        print(f"\n{exchanges} exchanges checked in {elapsed:.2f}s: {violations} violations, {allowed} allowed by the allow-list"
              + (f", {bad_lines} unusable lines" if bad_lines else ""))
        for (state, check), c in sorted(totals.items()):
            print(f"  {state:9} {check:26} {c}")
        if by_op:
            print("violations by operation:")
            for op, c in by_op.most_common(15):
                print(f"  {c:5}  {op}")
        if unused and (args.strict_allowlist or allow.used):
            print(f"allow-list entries that matched nothing: {', '.join(unused)}")
    if bad_lines:
        return 2
    if violations or (args.strict_allowlist and unused):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
