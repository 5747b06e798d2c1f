"""The OpenAPI 3.1 document at ``/openapi.json``: every route, including the configured paid
routes, with the shapes of their answers and errors. Built from the running app's config, so
it never lists a route that is not served."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from gateway.server.services import services

openapi_bp = Blueprint("openapi", __name__)

_HEX32 = {"type": "string", "pattern": "^0x[0-9a-f]{64}$"}
_ADDRESS = {"type": "string", "pattern": "^0x[0-9a-fA-F]{40}$"}
_UNITS = {"type": "string", "pattern": "^[0-9]+$", "description": "base units (6 decimals)"}
_ERROR = {"$ref": "#/components/schemas/Error"}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(s): _json(_ERROR, "error") for s in statuses}


def _param(name: str, where: str, schema: dict[str, Any], required: bool = True) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required, "schema": schema}


def _paid_route(path: str, metered: bool, description: str) -> dict[str, Any]:
    return {
        "post": {
            "summary": description or f"Paid call to {path}",
            "description": (
                "x402 v2: without payment, 402 with PAYMENT-REQUIRED; retry with PAYMENT-SIGNATURE (or X-PAYMENT), "
                "or send `Authorization: Bearer <API key>`. "
                + (
                    "Metered: offered as `upto` (an EIP-3009 authorization, or the official x402 upto client's "
                    "Permit2 `permit2Authorization`, see components.schemas.Permit2Authorization) and as `exact` "
                    "of the maximum; either way the maximum is held and the cost that follows the upstream's "
                    "usage is captured."
                    if metered
                    else "Flat price (`exact`)."
                )
            ),
            "parameters": [
                _param("PAYMENT-SIGNATURE", "header", {"type": "string", "maxLength": 8192}, False),
                _param("X-PAYMENT", "header", {"type": "string", "maxLength": 8192}, False),
            ],
            "requestBody": {"required": False, "content": {"application/json": {"schema": {"type": "object"}}}},
            "responses": {
                "200": {"description": "the upstream's answer; PAYMENT-RESPONSE carries the signed receipt"},
                "402": _json({"type": "object"}, "payment required or refused (PAYMENT-REQUIRED header)"),
                **_errors(400, 401, 404, 409, 413, 502, 503),
            },
        }
    }


def _free_route(path: str, description: str) -> dict[str, Any]:
    return {
        "post": {
            "summary": description or f"Free call to {path}",
            "description": "Forwarded to the model endpoint without payment (`free = true`).",
            "requestBody": {"required": False, "content": {"application/json": {"schema": {"type": "object"}}}},
            "responses": {"200": {"description": "the upstream's answer"}, **_errors(404, 413, 502)},
        }
    }


def _facilitator_paths() -> dict[str, Any]:
    """The x402 v2 facilitator (gateway.server.facilitator): refusals are 200 answers, not errors."""
    body = {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["x402Version", "paymentPayload", "paymentRequirements"],
                    "properties": {
                        "x402Version": {"const": 2},
                        "paymentPayload": {"type": "object"},
                        "paymentRequirements": {"type": "object"},
                    },
                }
            }
        },
    }
    verify = {
        "type": "object",
        "required": ["isValid"],
        "properties": {
            "isValid": {"type": "boolean"},
            "payer": {"type": ["string", "null"]},
            "invalidReason": {"type": "string"},
            "invalidMessage": {"type": "string"},
        },
    }
    settle = {
        "type": "object",
        "required": ["success", "transaction", "network"],
        "properties": {
            "success": {"type": "boolean"},
            "payer": {"type": ["string", "null"]},
            "transaction": {"type": "string", "description": "the ledger's settle transaction id"},
            "network": {"type": "string"},
            "amount": _UNITS,
            "errorReason": {"type": "string"},
            "errorMessage": {"type": "string"},
            "extensions": {"type": "object", "description": "inferpay.receipt: the sealer-signed receipt"},
        },
    }
    supported = {
        "type": "object",
        "required": ["kinds", "extensions", "signers"],
        "properties": {
            "kinds": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["x402Version", "scheme", "network"],
                    "properties": {
                        "x402Version": {"const": 2},
                        "scheme": {"enum": ["exact", "upto"]},
                        "network": {"type": "string", "pattern": "^eip155:[0-9]+$"},
                        "extra": {
                            "type": "object",
                            "description": "upto: facilitatorAddress, which the Permit2 witness must name",
                            "properties": {"facilitatorAddress": _ADDRESS},
                        },
                    },
                },
            },
            "extensions": {"type": "array", "items": {"type": "string"}},
            "signers": {"type": "object"},
        },
    }
    return {
        "/facilitator/supported": {
            "get": {
                "summary": "x402 facilitator: the kinds settled here (exact and upto on this ledger's network)",
                "responses": {"200": _json(supported)},
            }
        },
        "/facilitator/verify": {
            "post": {
                "summary": "x402 facilitator: verify a payment and hold its amount",
                "requestBody": body,
                "responses": {"200": _json(verify, "valid, or refused with a reason"), **_errors(400, 413, 503)},
            }
        },
        "/facilitator/settle": {
            "post": {
                "summary": "x402 facilitator: capture a payment on the ledger",
                "description": (
                    "exact: captures the authorized value. upto: paymentRequirements.amount is what the call "
                    "cost (the SDK's settlement override), from 0 to the Permit2's permitted maximum; the rest "
                    "of the hold is released."
                ),
                "requestBody": body,
                "responses": {"200": _json(settle, "settled, or refused with a reason"), **_errors(400, 413, 503)},
            }
        },
    }


def _text(description: str, media: str = "text/plain") -> dict[str, Any]:
    return {"description": description, "content": {media: {"schema": {"type": "string"}}}}


def _tlog_paths() -> dict[str, Any]:
    """The ledger as a C2SP transparency log (``gateway.server.tlog_api``)."""
    size = {"type": "integer", "minimum": 0}
    return {
        "/ledger/checkpoint": {
            "get": {
                "summary": "The latest signed checkpoint (c2sp.org/tlog-checkpoint) with witness cosignatures",
                "responses": {"200": _text("a signed note"), **_errors(404)},
            }
        },
        "/ledger/checkpoint/status": {
            "get": {
                "summary": "Checkpoint size against the head's, and which witnesses cosigned it",
                "responses": {"200": _json({"type": "object"}), **_errors(404)},
            }
        },
        "/ledger/checkpoint/consistency": {
            "get": {
                "summary": "RFC 6962 consistency proof between two tree sizes (base64 hashes)",
                "parameters": [_param("old", "query", size), _param("new", "query", size)],
                "responses": {"200": _json({"type": "object"}), **_errors(400, 404)},
            }
        },
        "/ledger/tile/{tilePath}": {
            "get": {
                "summary": "A hash tile <L>/<N>[.p/<W>] or entry bundle entries/<N>[.p/<W>] (c2sp.org/tlog-tiles)",
                "parameters": [_param("tilePath", "path", {"type": "string"})],
                "responses": {"200": _text("tile bytes", "application/octet-stream"), **_errors(400, 404)},
            }
        },
        "/ledger/transactions/{txId}/tlog-proof": {
            "get": {
                "summary": "An offline receipt (c2sp.org/tlog-proof) for a sealed transaction",
                "parameters": [_param("txId", "path", _HEX32)],
                "responses": {"200": _text("a tlog-proof"), **_errors(400, 404)},
            }
        },
    }


def build_document() -> dict[str, Any]:
    svc = services()
    block = {"$ref": "#/components/schemas/Block"}
    stored_tx = {"$ref": "#/components/schemas/StoredTransaction"}
    paths: dict[str, Any] = {
        "/health": {"get": {"summary": "Liveness", "responses": {"200": _json({"type": "object"})}}},
        "/openapi.json": {"get": {"summary": "This document", "responses": {"200": _json({"type": "object"})}}},
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics (text format 0.0.4): requests, payments, charges, tokens, latencies",
                "responses": {"200": {"description": "OK", "content": {"text/plain": {"schema": {"type": "string"}}}}},
            }
        },
        "/ledger/info": {
            "get": {
                "summary": "Chain id, token address, keys, supply and head",
                "responses": {"200": _json({"type": "object"})},
            }
        },
        "/ledger/head": {"get": {"summary": "The signed head (latest block)", "responses": {"200": _json(block)}}},
        "/ledger/accounts/{address}": {
            "get": {
                "summary": "Balance and open holds",
                "parameters": [_param("address", "path", _ADDRESS)],
                "responses": {"200": _json({"$ref": "#/components/schemas/Account"}), **_errors(400)},
            }
        },
        "/ledger/accounts/{address}/history": {
            "get": {
                "summary": "Transactions of an account, newest first (paginate with `before`)",
                "parameters": [
                    _param("address", "path", _ADDRESS),
                    _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 1000}, False),
                    _param("before", "query", {"type": "integer", "minimum": 1}, False),
                ],
                "responses": {
                    "200": _json({"type": "object", "properties": {"entries": {"type": "array", "items": stored_tx}}}),
                    **_errors(400),
                },
            }
        },
        "/ledger/accounts/{address}/api-keys": {
            "get": {
                "summary": "API keys for allowances the account signed: prefix, cap, spent, expiry, status",
                "parameters": [_param("address", "path", _ADDRESS)],
                "responses": {"200": _json({"type": "object"}), **_errors(400)},
            }
        },
        "/ledger/transactions/{txId}": {
            "get": {
                "summary": "A transaction with its Merkle inclusion proof (null until sealed)",
                "parameters": [_param("txId", "path", _HEX32)],
                "responses": {"200": _json(stored_tx), **_errors(400, 404)},
            }
        },
        "/ledger/blocks": {
            "get": {
                "summary": "Blocks by height",
                "parameters": [
                    _param("from", "query", {"type": "integer", "minimum": 0}, False),
                    _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 1000}, False),
                ],
                "responses": {
                    "200": _json({"type": "object", "properties": {"blocks": {"type": "array", "items": block}}}),
                    **_errors(400),
                },
            }
        },
        "/ledger/blocks/{height}": {
            "get": {
                "summary": "One block with its transactions",
                "parameters": [_param("height", "path", {"type": "integer", "minimum": 0})],
                "responses": {"200": _json(block), **_errors(404)},
            }
        },
        "/ledger/consistency": {
            "get": {
                "summary": "RFC 6962 consistency proof between two signed heads",
                "parameters": [
                    _param("old", "query", {"type": "integer", "minimum": 0}),
                    _param("new", "query", {"type": "integer", "minimum": 0}),
                ],
                "responses": {"200": _json({"type": "object"}), **_errors(400, 404)},
            }
        },
        "/ledger/transfers": {
            "post": {
                "summary": "Submit a signed EIP-3009 TransferWithAuthorization",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["authorization", "signature"],
                                "properties": {
                                    "authorization": {"$ref": "#/components/schemas/Authorization"},
                                    "signature": {"type": "string", "pattern": "^0x[0-9a-fA-F]{130}$"},
                                },
                                "additionalProperties": False,
                            }
                        }
                    },
                },
                "responses": {
                    "200": _json({"type": "object"}, "already recorded"),
                    "201": _json({"type": "object"}, "recorded"),
                    **_errors(400, 402, 409),
                },
            }
        },
    }
    paths.update(_facilitator_paths())
    paths.update(_tlog_paths())
    from gateway.server.openapi_pool import pool_paths, pool_schemas  # it imports this module's helpers

    paths.update(pool_paths())
    if any(r.pool for r in svc.config.routes):
        paths["/pool"] = {
            "get": {
                "summary": "The compute pool as routed here: fee in force, providers, circuits and figures",
                "responses": {"200": _json({"type": "object"})},
            }
        }
    for route in svc.config.routes:
        paths[route.path] = (
            _free_route(route.path, route.description)
            if route.free
            else _paid_route(route.path, route.metered, route.description)
        )
    return {
        "openapi": "3.1.0",
        "info": {"title": "inferpay gateway", "version": "1", "description": "Pay-per-inference over x402"},
        "paths": paths,
        "components": {
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "message"],
                            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                        }
                    },
                },
                "Account": {
                    "type": "object",
                    "properties": {
                        "address": _ADDRESS,
                        "available": _UNITS,
                        "held": _UNITS,
                        "holds": {"type": "array"},
                    },
                },
                "Authorization": {
                    "type": "object",
                    "required": ["from", "to", "value", "validAfter", "validBefore", "nonce"],
                    "properties": {
                        "from": _ADDRESS,
                        "to": _ADDRESS,
                        "value": _UNITS,
                        "validAfter": _UNITS,
                        "validBefore": _UNITS,
                        "nonce": _HEX32,
                    },
                    "additionalProperties": False,
                },
                "Permit2Authorization": {
                    "type": "object",
                    "description": "x402 upto: a Permit2 PermitWitnessTransferFrom, signed under Permit2's domain",
                    "required": ["from", "permitted", "spender", "nonce", "deadline", "witness"],
                    "properties": {
                        "from": _ADDRESS,
                        "permitted": {
                            "type": "object",
                            "required": ["token", "amount"],
                            "properties": {"token": _ADDRESS, "amount": _UNITS},
                            "additionalProperties": False,
                        },
                        "spender": _ADDRESS,
                        "nonce": {"type": "string", "pattern": "^[0-9]{1,78}$"},
                        "deadline": {"type": "string", "pattern": "^[0-9]{1,78}$"},
                        "witness": {
                            "type": "object",
                            "required": ["to", "facilitator", "validAfter"],
                            "properties": {
                                "to": _ADDRESS,
                                "facilitator": _ADDRESS,
                                "validAfter": {"type": "string", "pattern": "^[0-9]{1,78}$"},
                            },
                            "additionalProperties": False,
                        },
                    },
                    "additionalProperties": False,
                },
                "Block": {
                    "type": "object",
                    "properties": {
                        "header": {"type": "object"},
                        "hash": _HEX32,
                        "sealer": _ADDRESS,
                        "signature": {"type": "string"},
                    },
                },
                "StoredTransaction": {
                    "type": "object",
                    "properties": {
                        "txId": _HEX32,
                        "seq": {"type": "integer"},
                        "blockHeight": {"type": ["integer", "null"]},
                        "transaction": {"type": "object"},
                        "inclusionProof": {"type": ["object", "null"]},
                    },
                },
                **pool_schemas(),
            }
        },
    }


@openapi_bp.get("/openapi.json")
def openapi_document() -> Any:
    return build_document()
