"""The usage snippets of the model cards, run as written against repositories in a local Hub cache (issue 12, 4).

Cards: the demo's (model_card.md, above the template) and the one train.py writes for a diffusion run. Each has
three Python blocks under "## Usage", one per way of loading (SRADMPipeline; DiffusionPipeline with the package;
DiffusionPipeline with trust_remote_code=True and no package). They are extracted from the markdown, their repo id
replaced by one laid out in a Hub cache, and executed offline in fresh interpreters (the third with the package
hidden); the three images each card's snippets save must agree.
"""

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from test_hub import lay_out_hub_cache
from test_remote_code import HIDE_PACKAGE

from sradm_diffusers import DEMO_MODEL, SAMPLE_IMAGE, SRADMPipeline, build_pipeline

ROOT = Path(__file__).resolve().parents[1]

from training import model_card  # noqa: E402
from training import train  # noqa: E402

DEMO_CARD_REPO = "your-name/sradm-demo-x4"  # the id the demo card's snippets name
OUTPUTS = ["sr.png", "sr_diffusers.png", "sr_remote_code.png"]  # what ways 1, 2 and 3 save

# Executes the snippet files given as arguments, each in its own folder (where input.png is), as scripts.
RUN_SNIPPETS = """
import os, runpy, sys
for path in sys.argv[1:]:
    os.chdir(os.path.dirname(path))
    runpy.run_path(path, run_name="__main__")
"""


def usage_blocks(markdown: str) -> list[str]:
    """The ```python blocks of the card's "## Usage" section, in order."""
    section = markdown.split("\n## Usage\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def demo_card() -> str:
    return (ROOT / "model_card.md").read_text().split(model_card.BEGIN)[0]


def trained_card(repo_id: str) -> str:
    args = train.parse_args(["--stage", "diffusion", "--train_data_dir", "photos", "--preset", "tiny",
                             "--output_dir", "out/tiny", "--pretrained_encoder", "out/enc"])
    values = model_card.card_values(args, stage="diffusion", global_step=10, num_parameters=1000, repo_id=repo_id,
                                    metrics={"psnr_y": 27.123, "lr_psnr": 45.5},
                                    validation={"step": 10, "num_images": 2, "source": "held-out photos"})
    return model_card.render_model_card(values)


def test_cards_have_three_usage_blocks_and_install_from_git():
    for card, repo in ((demo_card(), DEMO_CARD_REPO), (trained_card("someone/model"), "someone/model")):
        blocks = usage_blocks(card)
        assert len(blocks) == 3
        assert f'SRADMPipeline.from_pretrained("{repo}")' in blocks[0]
        assert "import sradm_diffusers" in blocks[1] and f'DiffusionPipeline.from_pretrained("{repo}")' in blocks[1]
        assert f'DiffusionPipeline.from_pretrained("{repo}", trust_remote_code=True)' in blocks[2]
        assert "sradm_diffusers" not in blocks[2]
        assert "pip install sradm-diffusers\n" not in card and "pip install -e ." in card


def test_install_text_names_the_git_remote(tmp_path):
    assert model_card.install_text("https://github.com/acme/sradm-diffusers").count(
        'pip install "sradm-diffusers @ git+https://github.com/acme/sradm-diffusers"') == 1
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "remote", "add", "origin",
                    "https://user:secret@example.org/acme/sradm-diffusers.git"], check=True)
    assert model_card.git_source_url(str(tmp_path)) == "https://example.org/acme/sradm-diffusers"  # no credentials
    subprocess.run(["git", "-C", str(tmp_path), "remote", "set-url", "origin", "git@github.com:acme/sradm.git"],
                   check=True)
    assert model_card.git_source_url(str(tmp_path)) == "https://github.com/acme/sradm"
    assert model_card.git_source_url(str(tmp_path / "not-a-repo")) is None


def test_demo_card_metrics_are_the_measured_table():
    """The header's model-index values are those of the card's own evaluation table (parsed independently)."""
    from huggingface_hub import ModelCard

    text = demo_card()
    card = ModelCard(text)
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 7 and cells[0].startswith("SRADM"):
            rows[cells[0]] = dict(zip(["PSNR", "SSIM", "LPIPS", "LR-PSNR", "PSNR-Y", "SSIM-Y"], cells[1:]))
    table_row = {"DDPM 100 steps (stored scheduler)": "SRADM, DDPM 100 steps",
                 "SDE-DPM-Solver++ 20 steps": "SRADM, SDE-DPM-Solver++ 20 steps"}
    column = {"PSNR (dB, RGB)": "PSNR", "SSIM (RGB)": "SSIM", "LR-PSNR (dB)": "LR-PSNR", "PSNR-Y (dB)": "PSNR-Y",
              "SSIM-Y": "SSIM-Y"}
    assert len(card.data.eval_results) == 10
    for result in card.data.eval_results:
        row = rows[table_row[result.task_name.split(", ", 1)[1]]]
        assert result.metric_value == float(row[column[result.metric_name]]), (result.task_name, result.metric_name)


def test_trained_card_header_has_the_validation_metrics():
    from huggingface_hub import ModelCard

    card = ModelCard(trained_card("someone/model"))
    assert card.data.library_name == "diffusers" and card.data.pipeline_tag == "image-to-image"
    values = {r.metric_name.split(" ")[0]: r.metric_value for r in card.data.eval_results}
    assert values == {"PSNR-Y": 27.12, "LR-PSNR": 45.5}
    assert card.data.metrics == ["psnr"]


def test_usage_snippets_run_and_agree(tmp_path):
    cache = tmp_path / "hub"
    torch.manual_seed(0)
    repos = {"demo": ("org/demo", SRADMPipeline.from_pretrained(DEMO_MODEL), demo_card().replace(DEMO_CARD_REPO,
                                                                                                  "org/demo")),
             "trained": ("org/trained", build_pipeline("tiny"), trained_card("org/trained"))}
    lr = np.asarray(Image.open(SAMPLE_IMAGE).convert("RGB"))[40:56, 60:80]  # 20x16 LR -> 80x64 SR
    files = {1: [], 2: [], 3: []}
    for name, (repo_id, pipe, card) in repos.items():
        pipe.save_pretrained(tmp_path / "saved" / name)
        lay_out_hub_cache(tmp_path / "saved" / name, cache, repo_id)
        work = tmp_path / "run" / name
        work.mkdir(parents=True)
        Image.fromarray(lr).save(work / "input.png")
        for way, block in enumerate(usage_blocks(card), start=1):
            (work / f"way{way}.py").write_text(block)
            files[way].append(str(work / f"way{way}.py"))
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache), HF_MODULES_CACHE=str(tmp_path / "modules"),
               OMP_NUM_THREADS="1")
    for script, paths in ((RUN_SNIPPETS, files[1] + files[2]), (HIDE_PACKAGE + RUN_SNIPPETS, files[3])):
        result = subprocess.run([sys.executable, "-c", script, *paths], cwd=tmp_path, env=env, capture_output=True,
                                text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-4000:]
    for name in repos:
        images = [np.asarray(Image.open(tmp_path / "run" / name / output), dtype=np.int16) for output in OUTPUTS]
        assert images[0].shape == (64, 80, 3)
        for other in images[1:]:  # one path's float differences (1e-4) can flip a rounding to 8 bits
            assert np.abs(other - images[0]).max() <= 1, name
        assert images[0].std() > 5  # a real image, not a constant



def test_readme_three_ways_block_runs(tmp_path):
    readme = (ROOT / "README.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", readme, flags=re.S) if "trust_remote_code=True" in b)
    assert block.count("pipe = ") == 3  # the three ways; the block saves the bundled demo to a folder first
    check = textwrap.dedent("""
        loaded = []
        for line in BLOCK.splitlines():
            exec(line, globals())  # noqa: S102 - the README's lines, one by one
            if line.startswith("pipe = "):
                loaded.append((type(pipe).__module__, pipe.unet.config.base_channels))
        print("LOADED" + json.dumps(loaded))
    """)
    script = f"import json\nBLOCK = {block!r}\n" + check
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path / "hub"),
               HF_MODULES_CACHE=str(tmp_path / "modules"), OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    loaded = json.loads(result.stdout.split("LOADED", 1)[1])
    from sradm_diffusers import DEMO_MODEL

    channels = json.loads((Path(DEMO_MODEL) / "unet" / "config.json").read_text())["base_channels"]
    assert loaded[:2] == [["sradm_diffusers.pipeline", channels]] * 2
    assert loaded[2][0].startswith("diffusers_modules.") and loaded[2][1] == channels
