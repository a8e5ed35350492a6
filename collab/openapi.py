"""The OpenAPI document of the REST API, served at /api/openapi.json. The tests check it
against the live server (schemathesis), so it must say what the server really does. The
records' schemas are theirs (beside their `as_json`), the error codes the error tree's."""

from __future__ import annotations

from typing import Any

from collab import __version__
from collab.documents import DocSummary
from collab.errors import HTTP_ERROR, error_classes
from collab.formats import DEFAULT_FIELD, FORMATS
from collab.store import Version


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    reasons = {
        400: "Bad input: an invalid document name, format, label or body",
        401: "No valid credentials (--auth token): send Authorization: Bearer <token>",
        403: "The credentials do not allow this, or the Origin is not allowed",
        404: "No such document or version",
        409: "The request does not fit the document as it is",
        413: "The body is larger than the server accepts, or the document would pass its "
        "size quota",
        415: "A body of a Content-Type this endpoint does not take",
        503: "The database cannot be used right now",
    }
    return {str(s): _json(_ref("Error"), reasons[s]) for s in statuses}


_NAME = {
    "name": "name",
    "in": "path",
    "required": True,
    "description": "Document name, one path segment: a `/` in it is sent as `%2F`. No "
    "control characters, no whitespace at either end, no `.` or `..` between slashes.",
    "schema": {
        "type": "string",
        "minLength": 1,
        "maxLength": 512,
        "pattern": r"^(?!\s)(?!.*\s$)(?!(?:.*/)?\.{1,2}(?:/|$))[^\x00-\x1f\x7f-\x9f]+$",
    },
}
# Not all blank, no control characters: what documents.check_label accepts.
_LABEL_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
_VERSION = {
    "name": "version",
    "in": "path",
    "required": True,
    "description": "Version id, from the version list.",
    "schema": {"type": "integer", "minimum": 1, "maximum": 999999999999999999},
}
_FORMAT = {
    "name": "format",
    "in": "query",
    "required": False,
    "description": "`json` (default): each root as JSON; `text`: plain text of the text and "
    "XML roots; `update`: the binary Yjs state; `prosemirror`: the rich text of `field` as "
    "TipTap's getJSON() gives it; `html`: as its getHTML() does; `markdown`: CommonMark.",
    "schema": {"type": "string", "enum": list(FORMATS), "default": "json"},
}
_FIELD = {
    "name": "field",
    "in": "query",
    "required": False,
    "description": "The XmlFragment root the rich formats read or write (TipTap's "
    "Collaboration `field`).",
    "schema": {
        "type": "string",
        "minLength": 1,
        "maxLength": 200,
        "pattern": r"^[^\x00-\x1f\x7f-\x9f]+$",
        "default": DEFAULT_FIELD,
    },
}
_CONTENT = {
    "description": "The document's content in the asked format",
    "content": {
        "application/json": {"schema": _ref("Content")},
        "text/plain": {"schema": {"type": "string"}},
        "text/html": {"schema": {"type": "string"}},
        "text/markdown": {"schema": {"type": "string"}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    },
}
_REPLACED = {
    "type": "object",
    "required": ["doc", "field", "format", "created"],
    "properties": {
        "doc": {"type": "string"},
        "field": {"type": "string"},
        "format": {"type": "string", "enum": ["prosemirror", "html", "markdown"]},
        "created": {"type": "boolean"},
    },
}
_PUT = {
    "summary": "Make the document's content (one field) equal to the body, as edits that "
    "reach every connected client (a restore of that field: the other roots are kept); "
    "creates the document",
    "parameters": [_FIELD],
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": _ref("ProseMirrorDoc")},
            "text/html": {"schema": {"type": "string"}},
            "text/markdown": {"schema": {"type": "string"}},
        },
    },
    "responses": {
        "200": _json(_REPLACED, "Replaced"),
        "201": _json(_REPLACED, "Created with this content"),
        **_errors(400, 401, 403, 409, 413, 415, 503),
    },
}

_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["status", "code", "message"],
                "properties": {
                    "status": {"type": "integer"},
                    "code": {
                        "type": "string",
                        "description": "Which error (the classes of collab/errors.py); "
                        f"`{HTTP_ERROR}` for one of HTTP itself, such as an unknown route",
                        "enum": sorted({kind.code for kind in error_classes()} | {HTTP_ERROR}),
                    },
                    "message": {"type": "string"},
                },
            }
        },
    },
    "DocSummary": DocSummary.SCHEMA,
    "Version": Version.SCHEMA,
    "RevocationRequest": {
        "type": "object",
        "description": "Exactly one of token_id (a token's jti) and subject (its sub).",
        "properties": {
            "token_id": {"type": "string", "minLength": 1},
            "subject": {"type": "string", "minLength": 1},
            "docs": {"type": "string", "minLength": 1, "default": "*"},
            "permission": {"type": "string", "enum": ["none", "read"], "default": "none"},
        },
        "oneOf": [{"required": ["token_id"]}, {"required": ["subject"]}],
    },
    "Revocation": {
        "type": "object",
        "required": ["token_id", "subject", "docs", "permission", "at"],
        "properties": {
            "token_id": {"type": "string", "nullable": True},
            "subject": {"type": "string", "nullable": True},
            "docs": {"type": "string"},
            "permission": {"type": "string", "enum": ["none", "read"]},
            "at": {"type": "string", "format": "date-time"},
        },
    },
    "ProseMirrorDoc": {
        "type": "object",
        "description": "A ProseMirror document of the bundled editor's schema, as TipTap's "
        "getJSON() gives it (README: Content formats).",
        "required": ["type"],
        "properties": {
            "type": {"type": "string", "enum": ["doc"]},
            "content": {"type": "array", "items": {"type": "object"}},
        },
    },
    "Content": {
        "type": "object",
        "description": "Each root by name: a Map as an object, an Array as a list, a Text "
        "as a string (a list of runs `{text, attributes}` and `{embed}` when it has "
        "formatting or embeds), an XmlFragment as a list of nodes (`{element, attributes, "
        "children}`, runs, `{xmltext, attributes}`); a root with both map entries and a "
        "sequence as `{attributes, children}`. The README lists every shape.",
        "additionalProperties": True,
    },
}


def spec() -> dict[str, Any]:
    """The OpenAPI 3.0 document."""
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "collab REST API",
            "version": __version__,
            "description": "Documents, their content and their versions.",
        },
        "paths": {
            "/api/docs": {
                "get": {
                    "summary": "List documents",
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["docs"],
                                "properties": {
                                    "docs": {"type": "array", "items": _ref("DocSummary")}
                                },
                            },
                            "Every stored document",
                        ),
                        **_errors(401, 403, 503),
                    },
                }
            },
            "/api/docs/{name}": {
                "parameters": [_NAME],
                "get": {
                    "summary": "A document's content now",
                    "parameters": [_FORMAT, _FIELD],
                    "responses": {"200": _CONTENT, **_errors(400, 401, 403, 404, 409, 503)},
                },
                "put": _PUT,
                "delete": {
                    "summary": "Delete a document and its history; connected clients are "
                    "closed with code 4404",
                    "responses": {
                        "204": {"description": "Deleted"},
                        **_errors(400, 401, 403, 404, 503),
                    },
                },
            },
            "/api/docs/{name}/updates": {
                "parameters": [_NAME],
                "post": {
                    "summary": "Merge a binary Yjs update into the document (creating it); "
                    "connected clients receive it like any edit",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/octet-stream": {
                                "schema": {"type": "string", "format": "binary"}
                            }
                        },
                    },
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["applied"],
                                "properties": {"applied": {"type": "integer"}},
                            },
                            "Applied and stored",
                        ),
                        **_errors(400, 401, 403, 413, 503),
                    },
                },
            },
            "/api/docs/{name}/versions": {
                "parameters": [_NAME],
                "get": {
                    "summary": "The document's versions, newest first",
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["versions"],
                                "properties": {
                                    "versions": {"type": "array", "items": _ref("Version")}
                                },
                            },
                            "The history",
                        ),
                        **_errors(400, 401, 403, 404, 503),
                    },
                },
                "post": {
                    "summary": "Keep the document as it is now as a named version",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["label"],
                                    "properties": {
                                        "label": {
                                            "type": "string",
                                            "minLength": 1,
                                            "maxLength": 200,
                                            "pattern": _LABEL_PATTERN,
                                        }
                                    },
                                }
                            }
                        },
                    },
                    "responses": {
                        "201": _json(_ref("Version"), "The new version"),
                        **_errors(400, 401, 403, 404, 503),
                    },
                },
            },
            "/api/docs/{name}/versions/{version}": {
                "parameters": [_NAME, _VERSION],
                "get": {
                    "summary": "A document's content at a version",
                    "parameters": [_FORMAT, _FIELD],
                    "responses": {"200": _CONTENT, **_errors(400, 401, 403, 404, 409, 503)},
                },
            },
            "/api/docs/{name}/versions/{version}/restore": {
                "parameters": [_NAME, _VERSION],
                "post": {
                    "summary": "Make the document equal to a version again, as edits that "
                    "reach every connected client; the state before is kept as a "
                    "pre-restore version",
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["restored", "pre_restore"],
                                "properties": {
                                    "restored": _ref("Version"),
                                    "pre_restore": _ref("Version"),
                                },
                            },
                            "Restored",
                        ),
                        **_errors(400, 401, 403, 404, 409, 503),
                    },
                },
            },
            "/api/docs/{name}/access": {
                "parameters": [_NAME],
                "get": {
                    "summary": "What the request's credentials allow on the document",
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["doc", "permission"],
                                "properties": {
                                    "doc": {"type": "string"},
                                    "permission": {
                                        "type": "string",
                                        "enum": ["none", "read", "write", "admin"],
                                    },
                                },
                            },
                            "The permission",
                        ),
                        **_errors(400, 401, 403),
                    },
                },
            },
            "/api/revocations": {
                "post": {
                    "summary": "Lower a token's or a user's grants, now and for later "
                    "connections: their connections are closed (4403) or made read-only",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("RevocationRequest")}},
                    },
                    "responses": {
                        "201": _json(
                            {
                                "type": "object",
                                "required": ["revocation", "connections"],
                                "properties": {
                                    "revocation": _ref("Revocation"),
                                    "connections": {"type": "integer"},
                                },
                            },
                            "Kept and applied",
                        ),
                        **_errors(400, 401, 403, 503),
                    },
                }
            },
            "/api/compact": {
                "post": {
                    "summary": "Thin every document's versions by the retention policy now",
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["deleted_versions"],
                                "properties": {"deleted_versions": {"type": "integer"}},
                            },
                            "Done",
                        ),
                        **_errors(401, 403, 503),
                    },
                }
            },
        },
        "components": {"schemas": _SCHEMAS},
    }
