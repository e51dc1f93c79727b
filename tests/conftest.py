"""Fixtures shared by several test modules (pytest finds them here by name; nothing to import).

    single_thread     torch on one intra-op thread for a module (tiny tensors: threads only add overhead)
    hf_cache          `datasets`' Arrow cache inside the test's tmp_path (use it with usefixtures/autouse)
    reward_model_dir  a tiny Llama sequence classifier with one output, saved with its tokenizer

Plain helpers that are not fixtures (paths of the shared photos, the naive log-prob, layouts) are in
helpers.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import datasets
import pytest
import torch

from mm_unidpo.testing import tiny_tokenizer


@pytest.fixture(scope="module")
def single_thread() -> Iterator[None]:
    """Tiny tensors: intra-op threads only add overhead (several times slower on a busy 2-core machine).
    A module applies it with `pytestmark = pytest.mark.usefixtures("single_thread")`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep `datasets`' Arrow cache inside tmp_path (nothing written to the user's cache)."""
    cache = tmp_path / "hf_cache"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    return cache


@pytest.fixture(scope="module")
def reward_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random tiny reward model (LlamaForSequenceClassification, num_labels=1) and its tokenizer."""
    from transformers import LlamaConfig, LlamaForSequenceClassification

    directory = tmp_path_factory.mktemp("rm")
    tok = tiny_tokenizer("llama3")
    config = LlamaConfig(vocab_size=640, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, num_labels=1,
                         pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    LlamaForSequenceClassification(config).save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory
