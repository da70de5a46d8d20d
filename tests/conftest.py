"""Shared fixtures: tiny random BERTs built from BertConfig, never the hub."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("YOCO_CACHE_DIR", "")  # bundles' verified digests: not in the user's home

import pytest

from helpers import tiny_bert


@pytest.fixture
def tiny_model():
    return tiny_bert()


@pytest.fixture
def tiny_super(tiny_model):
    from yoco_deploy.model.super_bert import SuperBert

    return SuperBert(tiny_model).eval()


@pytest.fixture
def tiny_dir(tmp_path):
    """A tiny random BERT saved as a local checkpoint directory (what a user passes)."""
    path = tmp_path / "tiny-bert"
    tiny_bert().save_pretrained(path)
    return path
