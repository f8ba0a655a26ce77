"""docs/: the generated reference is up to date, covers every op and setting, and the site builds."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from netlang import docgen

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def test_the_generated_reference_is_up_to_date():
    for name, text in docgen.pages().items():
        on_disk = (DOCS / "reference" / name).read_text(encoding="utf-8")
        assert on_disk == text, f"docs/reference/{name} is out of date: run python -m netlang.docgen"


def test_the_check_mode_agrees():
    done = subprocess.run([sys.executable, "-m", "netlang.docgen", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_every_op_has_a_section_with_its_gradient():
    text = (DOCS / "reference" / "ops.md").read_text(encoding="utf-8")
    for op in docgen.own_ops():
        assert f"\n### {op.name}\n" in text
    assert "Gradient: none" in text and "Gradient: yes" in text


def test_every_layer_of_the_library_is_listed():
    text = (DOCS / "reference" / "ops.md").read_text(encoding="utf-8")
    for name in ("DenseLayer {outDim", "ConvolutionalLayer {numOutputChannels", "RecurrentLSTMLayer {outputDim",
                 "BatchNormalizationLayer", "EmbeddingLayer"):
        assert f"| `{name}" in text, name


def test_every_setting_has_a_row_with_a_meaning():
    text = (DOCS / "reference" / "settings.md").read_text(encoding="utf-8")
    for _, schema in docgen.schemas():
        for field in schema.fields:
            assert f"| `{field.name}` |" in text
            assert field.doc, f"{schema.name}.{field.name} has no meaning (doc=...) in its Field"


def test_the_site_lists_every_page():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    listed = set()

    def collect(items):
        for item in items:
            for value in item.values():
                if isinstance(value, list):
                    collect(value)
                else:
                    listed.add(value)

    collect(config["nav"])
    assert listed == {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")}


@pytest.mark.skipif(shutil.which("mkdocs") is None, reason="mkdocs is not installed (pip install 'netlang[docs]')")
def test_the_site_builds_without_warnings(tmp_path):
    done = subprocess.run(["mkdocs", "build", "--strict", "-d", str(tmp_path / "site")], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
