"""The compute pool's part of ``/openapi.json``: the ledger API's provider, redeem, refund and
mint paths and the shapes of their records (``gateway.server.ledger_api``). Imported by
``gateway.server.openapi`` when it builds the document."""

from __future__ import annotations

from typing import Any

from gateway.server.openapi import _ADDRESS, _HEX32, _UNITS, _errors, _json, _param

_SIGNATURE = {"type": "string", "pattern": "^0x[0-9a-fA-F]{130}$"}
_RESULT = {
    "type": "object",
    "properties": {
        "txId": _HEX32,
        "seq": {"type": "integer"},
        "kind": {"type": "string"},
        "duplicate": {"type": "boolean"},
        "blockHeight": {"type": ["integer", "null"]},
    },
}


def _signed_post(summary: str, field: str, schema: str, description: str) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "description": description,
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": [field, "signature"],
                            "properties": {field: {"$ref": f"#/components/schemas/{schema}"}, "signature": _SIGNATURE},
                            "additionalProperties": False,
                        }
                    }
                },
            },
            "responses": {
                "200": _json(_RESULT, "already recorded"),
                "201": _json(_RESULT, "recorded"),
                **_errors(400, 402, 403, 404, 409),
            },
        }
    }


def pool_paths() -> dict[str, Any]:
    record = {"$ref": "#/components/schemas/ProviderRecord"}
    fee = {"$ref": "#/components/schemas/PoolFeeInForce"}
    return {
        "/ledger/providers": {
            **_signed_post(
                "Submit a provider's signed registration (join, update, or withdraw with status withdrawn)",
                "registration",
                "ProviderRegistration",
                "EIP-712 ProviderRegistration under the ledger's domain, signed by `provider`; its newest "
                "registration in log order is in force.",
            ),
            "get": {
                "summary": "Every provider with its registration in force, the pool fee and the pool version",
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "providers": {"type": "array", "items": record},
                                "poolFee": fee,
                                "poolVersion": _UNITS,
                            },
                        }
                    )
                },
            },
        },
        "/ledger/providers/{address}": {
            "get": {
                "summary": "A provider's registration in force and approval",
                "parameters": [_param("address", "path", _ADDRESS)],
                "responses": {"200": _json(record), **_errors(400, 404)},
            }
        },
        "/ledger/providers/{address}/earnings": {
            "get": {
                "summary": "Calls split-settled to this address, what they paid it, what it refunded and redeemed",
                "parameters": [_param("address", "path", _ADDRESS)],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "address": _ADDRESS,
                                "calls": _UNITS,
                                "earned": _UNITS,
                                "refunded": _UNITS,
                                "redeemed": _UNITS,
                            },
                        }
                    ),
                    **_errors(400),
                },
            }
        },
        "/ledger/pool": {
            "get": {
                "summary": "The pool fee in force, the pool version and the sum of every pool fee credited",
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {"poolFee": fee, "poolVersion": _UNITS, "operatorFees": _UNITS},
                        }
                    )
                },
            }
        },
        "/ledger/redeems": _signed_post(
            "Submit a signed redeem: burn tokens for an off-ledger payout",
            "redeem",
            "Redeem",
            "EIP-712 Redeem signed by `from`; total supply goes down by `value`.",
        ),
        "/ledger/refunds": _signed_post(
            "Submit a payee's signed refund of (part of) a settle, to its payer",
            "refund",
            "Refund",
            "EIP-712 Refund signed by `from`, a payee of the settle (or split settle) `settleId`; never more "
            "in total than that settle credited it.",
        ),
        "/ledger/mints": _signed_post(
            "Submit an operator-signed mint (a top-up from the operator's payment backend)",
            "mint",
            "Mint",
            "EIP-712 Mint signed by the chain's operator (issuer) key.",
        ),
    }


def pool_schemas() -> dict[str, Any]:
    return {
        "ProviderRegistration": {
            "type": "object",
            "required": [
                "provider",
                "endpoint",
                "models",
                "pricePerCall",
                "pricePer1kInput",
                "pricePer1kOutput",
                "capacity",
                "status",
                "nonce",
            ],
            "properties": {
                "provider": _ADDRESS,
                "endpoint": {"type": "string", "maxLength": 2048, "description": "http(s) base URL, OpenAI-compatible"},
                "models": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 64,
                    "uniqueItems": True,
                    "items": {"type": "string", "minLength": 1, "maxLength": 128},
                },
                "pricePerCall": _UNITS,
                "pricePer1kInput": _UNITS,
                "pricePer1kOutput": _UNITS,
                "capacity": {**_UNITS, "description": "the most concurrent calls accepted (0: unstated)"},
                "status": {"type": "string", "enum": ["active", "withdrawn"]},
                "nonce": _HEX32,
            },
            "additionalProperties": False,
        },
        "ProviderRecord": {
            "type": "object",
            "properties": {
                "address": _ADDRESS,
                "registrationId": _HEX32,
                "registration": {"$ref": "#/components/schemas/ProviderRegistration"},
                "approved": {"type": "boolean"},
                "registeredAt": {**_UNITS, "description": "ms"},
                "updatedAt": {**_UNITS, "description": "ms"},
            },
        },
        "PoolFeeInForce": {
            "type": "object",
            "properties": {"feeBps": _UNITS, "flatFee": _UNITS, "feeId": _HEX32},
        },
        "Redeem": {
            "type": "object",
            "required": ["from", "value", "payoutReference", "nonce"],
            "properties": {
                "from": _ADDRESS,
                "value": _UNITS,
                "payoutReference": {"type": "string", "minLength": 1, "maxLength": 256},
                "nonce": _HEX32,
            },
            "additionalProperties": False,
        },
        "Refund": {
            "type": "object",
            "required": ["settleId", "from", "value", "nonce"],
            "properties": {"settleId": _HEX32, "from": _ADDRESS, "value": _UNITS, "nonce": _HEX32},
            "additionalProperties": False,
        },
        "Mint": {
            "type": "object",
            "required": ["to", "value", "nonce"],
            "properties": {"to": _ADDRESS, "value": _UNITS, "nonce": _HEX32},
            "additionalProperties": False,
        },
    }
