"""The one error registry: a table written down, never what happens to be imported.

Codes are unique over the whole tree, every registered class round-trips through the lookup
with its details, every public error class of ledger, gateway and model_server is registered
(found by walking the modules' public names, not ``__subclasses__``), and every class has a
deliberate status in the one status table.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import subprocess
import sys
from types import ModuleType

import pytest

from gateway.server.error_handlers import STATUS_BY_ERROR, status_for
from gateway.wire.errors import ERRORS, GATEWAY_ERRORS, error_from_body, error_from_code
from ledger import errors as le
from ledger.errors import LEDGER_ERRORS, ErrorRegistry, InferpayError, StorageUnavailable
from model_server.errors import MODEL_SERVER_ERRORS

PACKAGES = ("ledger", "gateway", "model_server", "witness")
# Entry points run as scripts (``python -m``), not libraries: importing one would run it.
SCRIPT_MODULES = frozenset({"ledger.audit.worker"})


def _modules() -> list[ModuleType]:
    found = []
    for name in PACKAGES:
        package = importlib.import_module(name)
        found.append(package)
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{name}."):
            if info.name.endswith("__main__") or info.name in SCRIPT_MODULES:
                continue
            found.append(importlib.import_module(info.name))
    return found


def _public_error_classes() -> set[type[InferpayError]]:
    classes = set()
    for module in _modules():
        for name, value in vars(module).items():
            if name.startswith("_") or not isinstance(value, type) or not issubclass(value, InferpayError):
                continue
            if value.__module__ == module.__name__:  # defined here, not re-exported
                classes.add(value)
    return classes


def test_codes_are_unique_across_the_whole_tree() -> None:
    every = [InferpayError, *LEDGER_ERRORS.classes, *GATEWAY_ERRORS, *MODEL_SERVER_ERRORS]
    codes = [cls.code for cls in set(every)]
    assert len(codes) == len(set(codes)), sorted(codes)
    assert set(ERRORS.classes) == set(every)


def test_every_public_error_class_in_ledger_gateway_and_model_server_is_registered() -> None:
    found = _public_error_classes()
    assert len(found) > 40  # the walk really found the tree
    missing = sorted(f"{cls.__module__}.{cls.__name__}" for cls in found - set(ERRORS.classes))
    assert missing == []


@pytest.mark.parametrize("cls", ERRORS.classes, ids=lambda cls: cls.code)
def test_every_registered_class_round_trips_with_its_details(cls: type[InferpayError]) -> None:
    error = cls(f"a {cls.__name__}", address="0x" + "ab" * 20, amount="12", nested={"k": [1, 2]})
    again = error_from_code(error.code, error.message, **error.details)
    assert type(again) is cls
    assert (again.code, again.message, again.details) == (error.code, error.message, error.details)
    assert again.to_dict() == error.to_dict()
    body = json.dumps({"error": error.to_dict()})
    from_body = error_from_body(body)
    assert type(from_body) is cls and from_body.to_dict() == error.to_dict()


@pytest.mark.parametrize("cls", ERRORS.classes, ids=lambda cls: cls.code)
def test_every_class_has_a_deliberate_status(cls: type[InferpayError]) -> None:
    row = next(base for base in cls.__mro__ if base in STATUS_BY_ERROR)
    assert row is not InferpayError or cls is InferpayError, f"{cls.__name__} falls through to the root's 500"
    assert status_for(cls("x")) == STATUS_BY_ERROR[row]


def test_an_unknown_code_is_the_root_keeping_code_message_and_details() -> None:
    error = error_from_code("method_not_allowed", "no POST here", status=405)
    assert type(error) is InferpayError
    assert (error.code, error.message, error.details) == ("method_not_allowed", "no POST here", {"status": 405})
    assert error.to_dict() == {"code": "method_not_allowed", "message": "no POST here", "status": 405}
    assert InferpayError.code == "inferpay_error"  # the class itself is untouched
    assert error_from_body('{"error": {"code": "not_ours", "message": "m"}}') is None  # an upstream's own JSON


def test_the_ledger_table_alone_maps_only_ledger_codes() -> None:
    assert type(le.error_from_code("insufficient_funds", "m", needed="2")) is le.InsufficientFunds
    other = le.error_from_code("payment_required", "m")
    assert type(other) is InferpayError and other.code == "payment_required"
    assert le.error_classes() == dict(LEDGER_ERRORS.by_code)


def test_storage_unavailable_maps_to_the_public_class_even_with_postgres_loaded() -> None:
    # The PostgreSQL store defines a private StorageUnavailable subclass (its retry signal); a
    # registry built from __subclasses__() would answer with it once the module is loaded.
    import ledger.storage.postgres  # noqa: F401

    assert type(error_from_code("storage_unavailable", "busy")) is StorageUnavailable
    assert type(le.error_from_code("storage_unavailable", "busy")) is StorageUnavailable
    assert ERRORS.class_for("storage_unavailable") is StorageUnavailable


def test_the_lookup_does_not_depend_on_what_is_imported() -> None:
    """A fresh process that imports only the wire errors maps every code the full tree does."""
    code = (
        "import sys; from gateway.wire.errors import ERRORS; "
        "print(sorted((c, k.__module__ + '.' + k.__name__) for c, k in ERRORS.by_code.items())); "
        "print([m for m in ('flask', 'ledger.storage.postgres', 'model_server.app') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    table, loaded = out.stdout.strip().splitlines()
    import ledger.storage.postgres  # noqa: F401  (loaded here, in this process)

    assert table == str(sorted((c, k.__module__ + "." + k.__name__) for c, k in ERRORS.by_code.items()))
    assert loaded == "[]"


def test_the_registry_refuses_private_classes_and_duplicate_codes() -> None:
    class _Private(StorageUnavailable):
        pass

    class Twin(InferpayError):
        code = "storage_unavailable"

    with pytest.raises(ValueError, match="private"):
        ErrorRegistry([_Private])
    with pytest.raises(ValueError, match="storage_unavailable"):
        LEDGER_ERRORS.extended([Twin])
