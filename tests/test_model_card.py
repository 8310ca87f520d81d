"""The model card template (model_card.md) and its rendering by training/model_card.py."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

from training import model_card  # noqa: E402
from training import train  # noqa: E402

yaml = pytest.importorskip("yaml")


def split_card(text):
    """(metadata dict, body) of a card with a '---' YAML header, parsed independently with PyYAML."""
    assert text.startswith("---\n")
    header, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(header), body


def args_for(stage, *extra):
    argv = ["--stage", stage, "--dataset_name", "nielsr/CelebA-faces", "--preset", "celeba-x8", "--preprocess",
            "celeba", "--output_dir", "out/celeba", "--max_train_steps", "300000", "--lr_scheduler", "step",
            "--lr_decay_steps", "100000", "--hub_token", "hf_secret", *extra]
    if stage == "diffusion":
        argv += ["--pretrained_encoder", "out/enc"]
    return train.parse_args(argv)


METRICS = {"psnr_y": 27.123, "lr_psnr": 51.5, "psnr_y_bicubic": 24.0}
VALIDATION = {"step": 300000, "num_images": 8, "source": "split 'test5000'", "sampler": "dpm with 20 steps"}


def test_template_is_delimited_and_has_placeholders():
    text = (ROOT / "model_card.md").read_text()
    assert text.count(model_card.BEGIN) == 1 and text.count(model_card.END) == 1
    template = model_card.load_template()
    assert model_card.BEGIN not in template and template.startswith("---\n")
    names = model_card.template_placeholders(template)
    assert {"license", "datasets", "scale", "steps", "config_json", "validation", "usage", "dataset"} <= names


@pytest.mark.parametrize("stage", ["diffusion", "encoder"])
def test_rendered_card_fills_every_placeholder(stage):
    args = args_for(stage)
    values = model_card.card_values(args, stage=stage, global_step=300000, num_parameters=12_000_000,
                                    num_processes=2, metrics=METRICS, validation=VALIDATION,
                                    repo_id="someone/sradm-celeba")
    assert set(values) >= model_card.template_placeholders(model_card.load_template())
    text = model_card.render_model_card(values)
    assert "${" not in text and "$" not in text.replace("$ ", "")
    meta, body = split_card(text)
    assert meta["library_name"] == "diffusers"
    assert meta["license"] == "apache-2.0" and meta["pipeline_tag"] == "image-to-image"
    assert set(meta["tags"]) == {"sradm", "super-resolution", "diffusers", "image-to-image"}
    assert meta["datasets"] == ["nielsr/CelebA-faces"]
    assert "| 27.12 |" in body and "| 51.50 |" in body  # measured metrics, 2 decimals
    assert "8x" in body and "300000" in body and "celeba-x8" in body
    # effective batch = per device 16 (default) x 2 processes x 1 accumulation
    assert "| Effective batch size | 32 (2 process(es) x 16 x 1 accumulation) |" in body
    assert "hf_secret" not in text
    assert '"lr_decay_steps": 100000' in body  # the full configuration block
    loader = "SRADMPipeline.from_pretrained" if stage == "diffusion" else "RRDBEncoder.from_pretrained"
    assert f'{loader}("someone/sradm-celeba")' in body


def test_local_data_card_and_no_metrics():
    args = train.parse_args(["--stage", "encoder", "--train_data_dir", "/data/my_photos", "--license", "mit",
                             "--output_dir", "runs/enc"])
    values = model_card.card_values(args, stage="encoder", global_step=10, num_parameters=1000)
    meta, body = split_card(model_card.render_model_card(values))
    assert meta["datasets"] == [] and meta["license"] == "mit"
    assert "local image folder `my_photos`" in body and "No validation was run" in body
    assert 'RRDBEncoder.from_pretrained("enc")' in body  # repo id defaults to the output folder's name


def test_missing_value_and_missing_markers_are_errors(tmp_path):
    with pytest.raises(ValueError, match=r"\['title'\]"):
        model_card.render_model_card({"scale": 4}, template="# ${title} ${scale}x\n")
    bad = tmp_path / "card.md"
    bad.write_text("# no markers here ${scale}\n")
    with pytest.raises(ValueError, match="sradm-card-template"):
        model_card.load_template(str(bad))


def test_write_model_card_parses_with_huggingface_hub(tmp_path):
    from huggingface_hub import ModelCard

    args = args_for("diffusion")
    values = model_card.card_values(args, stage="diffusion", global_step=5, num_parameters=10, metrics=METRICS,
                                    validation=VALIDATION)
    path = model_card.write_model_card(str(tmp_path), values)
    card = ModelCard.load(path)
    assert card.data.library_name == "diffusers"
    assert sorted(card.data.tags) == sorted(set(card.data.tags))  # populate_model_card added no duplicates
    assert set(card.data.tags) == set(model_card.CARD_TAGS)


def test_push_to_hub_calls(monkeypatch, tmp_path):
    import huggingface_hub

    calls = []
    monkeypatch.setattr(huggingface_hub, "create_repo",
                        lambda repo_id, **kw: calls.append(("create", repo_id, kw))
                        or huggingface_hub.RepoUrl(f"https://huggingface.co/org/{repo_id.split('/')[-1]}"))
    monkeypatch.setattr(huggingface_hub, "upload_folder", lambda **kw: calls.append(("upload", kw)))
    repo = model_card.push_to_hub(str(tmp_path), "me/model", token="tok", private=True)
    assert repo == "org/model"  # the id the Hub answered with is the one uploaded to
    (_, repo_id, create_kw), (_, upload_kw) = calls
    assert repo_id == "me/model" and create_kw["exist_ok"] and create_kw["private"] and create_kw["token"] == "tok"
    assert upload_kw["repo_id"] == "org/model" and upload_kw["folder_path"] == str(tmp_path)
    assert "checkpoint-*" in upload_kw["ignore_patterns"]
