"""Three ways to load one saved or published pipeline, and the code generated for the third (issue 12, item 1).

(a) ``SRADMPipeline.from_pretrained`` and (b) ``DiffusionPipeline.from_pretrained`` with the package installed, and
(c) ``DiffusionPipeline.from_pretrained(..., trust_remote_code=True)`` in a Python that cannot import the package,
from the code that ``save_pretrained`` generates into the folder. Each from a local folder and from a Hub repository
laid out in a local cache (offline), compared with the pipeline that was saved.
"""

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline
from test_hub import CROSS_PATH_ATOL, lay_out_hub_cache, sample

from sradm_diffusers import DEMO_MODEL, RRDBEncoder, SRADMPipeline, SRADMUNet
from sradm_diffusers.loading.inliner import inline_modules
from sradm_diffusers.loading.remote_code import PIPELINE_MODULE

REPO_ID = "org/sradm-tiny"
SHIPPED = ["pipeline_sradm.py", "unet/sradm_unet.py", "lr_encoder/sradm_rrdb_encoder.py"]

# Run first in a fresh interpreter, it makes `import sradm_diffusers` fail: a meta-path finder placed before every
# other finder (the editable install's included) refuses the package and its submodules.
HIDE_PACKAGE = textwrap.dedent(
    """
    import importlib.abc, sys

    class HidePackage(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "sradm_diffusers" or name.startswith("sradm_diffusers."):
                raise ModuleNotFoundError(f"No module named {name!r} (hidden by the test)", name=name)
            return None

    sys.meta_path.insert(0, HidePackage())
    try:
        import sradm_diffusers  # noqa: F401
    except ModuleNotFoundError:
        pass
    else:
        raise SystemExit("the package is importable; the test would prove nothing")
    """
)

HIDDEN_PACKAGE_SCRIPT = HIDE_PACKAGE + textwrap.dedent(
    """
    import json
    import numpy as np
    import torch
    from diffusers import DiffusionPipeline

    torch.set_num_threads(1)
    args = json.loads(sys.argv[1])
    image = np.load(args["image"])
    report = {}
    for key, (source, cache_dir) in args["sources"].items():
        if key == "hub-listed":
            # With a file listing, diffusers 0.42 fetches the code by repo id and asks the Hub for its commit
            # (model_info), which fails offline. Answer as the Hub would; every other call stays offline.
            import types
            import diffusers.utils.dynamic_modules_utils as dynamic_modules

            dynamic_modules.model_info = lambda repo_id, **kw: types.SimpleNamespace(sha=args["commit"])
        if key == "snapshot":  # the offline workaround the cards give: load the cached folder
            from huggingface_hub import snapshot_download

            source = snapshot_download(source, cache_dir=cache_dir, local_files_only=True)
        pipe = DiffusionPipeline.from_pretrained(source, cache_dir=cache_dir, trust_remote_code=True)
        pipe.set_progress_bar_config(disable=True)
        out = pipe(image, num_inference_steps=3, generator=torch.Generator().manual_seed(0), output_type="pt").images
        torch.save(out, f"{args['out']}/{key}.pt")
        report[key] = {
            "pipeline": type(pipe).__module__ + "." + type(pipe).__name__,
            "unet": type(pipe.unet).__module__ + "." + type(pipe.unet).__name__,
            "lr_encoder": type(pipe.lr_encoder).__module__ + "." + type(pipe.lr_encoder).__name__,
        }
        if key == "folder":  # a pipeline loaded from shipped code saves the same code again
            pipe.save_pretrained(f"{args['out']}/resaved")
    report["package_modules"] = sorted(m for m in sys.modules if m.split(".")[0] == "sradm_diffusers")
    print("REPORT" + json.dumps(report))
    """
)


@pytest.fixture
def published(tiny_pipe, tmp_path):
    """The tiny pipeline saved to a folder; the same folder as a repository in a local Hub cache, and in a second
    cache that also holds the repository's file listing (``trees/``), as a download by huggingface_hub 2.x leaves."""
    folder, cache = tmp_path / "saved", tmp_path / "hub"
    tiny_pipe.save_pretrained(folder)
    lay_out_hub_cache(folder, cache, REPO_ID)
    lay_out_hub_cache(folder, tmp_path / "hub-listed", REPO_ID, tree_listing=True)
    return folder, cache


SOURCES = ["folder", "hub", "hub-listed"]


def load_args(folder, cache, source):
    """(path or repo id, cache_dir) of one of SOURCES."""
    if source == "folder":
        return str(folder), None
    return REPO_ID, cache if source == "hub" else cache.parent / "hub-listed"


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)


def test_saved_folder_ships_self_contained_code(published):
    folder, _ = published
    from diffusers.utils.dynamic_modules_utils import get_relative_imports

    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == [PIPELINE_MODULE, "SRADMPipeline"]
    assert index["unet"] == ["sradm_unet", "SRADMUNet"]
    assert index["lr_encoder"] == ["sradm_rrdb_encoder", "RRDBEncoder"]
    assert index["scheduler"] == ["diffusers", "DDPMScheduler"]
    for relative in SHIPPED:
        path = folder / relative
        text = path.read_text()
        # diffusers copies the files a shipped module imports relatively; there must be none to copy...
        assert get_relative_imports(path) == [], relative
        # ... and nothing may need the package itself (diffusers' check_imports imports what these patterns find).
        imported = re.findall(r"^\s*import\s+(\S+)\s*$", text, flags=re.M)
        imported += re.findall(r"^\s*from\s+(\S+)\s+import", text, flags=re.M)
        assert not [name for name in imported if name.split(".")[0] == "sradm_diffusers"], relative
        assert text.startswith("# Generated by sradm_diffusers.loading.inliner")


def test_generated_code_is_the_package_source():
    """Every function and class of the inlined modules appears verbatim (the file is generated, not maintained)."""
    import inspect

    import sradm_diffusers.imresize
    import sradm_diffusers.models.attention
    import sradm_diffusers.models.unet
    import sradm_diffusers.pipeline
    import sradm_diffusers.sampling.tiling

    def without_relative_imports(source):  # the one edit inside a definition (names live in one namespace)
        return re.sub(r"(?m)^[ \t]*from \.\S* import [^\n]*\n", "", source)

    def assert_verbatim(modules, text):
        for module in modules:
            for name, member in vars(module).items():
                if (inspect.isfunction(member) or inspect.isclass(member)) and member.__module__ == module.__name__:
                    assert without_relative_imports(inspect.getsource(member)) in text, f"{module.__name__}.{name}"

    pipeline_text = inline_modules(["sradm_diffusers.pipeline"])
    assert_verbatim((sradm_diffusers.pipeline, sradm_diffusers.imresize, sradm_diffusers.sampling.tiling), pipeline_text)
    unet_only = inline_modules(["sradm_diffusers.models.unet"])
    assert_verbatim((sradm_diffusers.models.unet,), unet_only)
    assert inspect.getsource(sradm_diffusers.models.attention.WindowAttention) in unet_only
    assert "class SRADMPipeline" not in unet_only and "class RRDBEncoder" not in unet_only


@pytest.mark.parametrize("source", SOURCES)
def test_a_sradm_pipeline_from_pretrained(published, tiny_pipe, lr_image, offline, source):
    path, cache_dir = load_args(*published, source)
    pipe = SRADMPipeline.from_pretrained(path, cache_dir=cache_dir)
    pipe.set_progress_bar_config(disable=True)
    assert type(pipe.unet) is SRADMUNet and type(pipe.lr_encoder) is RRDBEncoder  # the installed classes
    assert pipe.config["unet"] == ("sradm_diffusers", "SRADMUNet")
    torch.testing.assert_close(sample(pipe, lr_image), sample(tiny_pipe, lr_image), atol=CROSS_PATH_ATOL, rtol=0)


@pytest.mark.parametrize("source", SOURCES)
def test_b_diffusion_pipeline_from_pretrained_with_the_package(published, tiny_pipe, lr_image, offline, source):
    path, cache_dir = load_args(*published, source)
    pipe = DiffusionPipeline.from_pretrained(path, cache_dir=cache_dir)
    pipe.set_progress_bar_config(disable=True)
    assert type(pipe) is SRADMPipeline and type(pipe.unet) is SRADMUNet
    torch.testing.assert_close(sample(pipe, lr_image), sample(tiny_pipe, lr_image), atol=CROSS_PATH_ATOL, rtol=0)


def test_c_trust_remote_code_without_the_package(published, tiny_pipe, lr_image, tmp_path):
    folder, cache = published
    np.save(tmp_path / "image.npy", lr_image)
    (tmp_path / "out").mkdir()
    sources = {key: [str(value) if value else None for value in load_args(folder, cache, key)] for key in SOURCES}
    sources["snapshot"] = sources["hub-listed"]
    commit = (cache.parent / "hub-listed" / f"models--{REPO_ID.replace('/', '--')}" / "refs" / "main").read_text()
    args = {"image": str(tmp_path / "image.npy"), "out": str(tmp_path / "out"), "sources": sources, "commit": commit}
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"), OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-c", HIDDEN_PACKAGE_SCRIPT, json.dumps(args)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.split("REPORT", 1)[1])
    assert report["package_modules"] == []
    expected = sample(tiny_pipe, lr_image)
    for key in [*SOURCES, "snapshot"]:
        assert report[key]["pipeline"].startswith("diffusers_modules.")
        assert report[key]["pipeline"].endswith(f"{PIPELINE_MODULE}.SRADMPipeline")
        assert report[key]["unet"].endswith("sradm_unet.SRADMUNet")
        assert report[key]["lr_encoder"].endswith("sradm_rrdb_encoder.RRDBEncoder")
        torch.testing.assert_close(torch.load(tmp_path / "out" / f"{key}.pt"), expected, atol=CROSS_PATH_ATOL, rtol=0)
    # "hub-listed" went through diffusers' Hub code path: the module it fetched by repo id and commit is cached
    by_commit = tmp_path / "modules" / "diffusers_modules" / "local" / REPO_ID.replace("/", "--") / commit
    assert (by_commit / f"{PIPELINE_MODULE}.py").read_text() == (folder / f"{PIPELINE_MODULE}.py").read_text()
    assert "Expected types" not in result.stderr  # the components' classes are what the pipeline declares
    resaved = tmp_path / "out" / "resaved"
    for relative in SHIPPED:
        assert (resaved / relative).read_text() == (folder / relative).read_text(), relative
    original, again = (json.loads((f / "model_index.json").read_text()) for f in (folder, resaved))
    again.pop("_name_or_path")  # diffusers records where a loaded pipeline came from
    assert again == original


def old_layout(folder: Path) -> None:
    """Turn a saved folder into the layout written before the code was shipped (the bundled demo's)."""
    index = json.loads((folder / "model_index.json").read_text())
    index.update(_class_name="SRADMPipeline", unet=["sradm_diffusers", "SRADMUNet"],
                 lr_encoder=["sradm_diffusers", "RRDBEncoder"])
    (folder / "model_index.json").write_text(json.dumps(index))
    for relative in SHIPPED:
        (folder / relative).unlink()


def test_old_layout_still_loads_with_the_package(tiny_pipe, lr_image, tmp_path):
    tiny_pipe.save_pretrained(tmp_path)
    old_layout(tmp_path)
    expected = sample(tiny_pipe, lr_image)
    for loader in (SRADMPipeline, DiffusionPipeline):
        pipe = loader.from_pretrained(tmp_path)
        pipe.set_progress_bar_config(disable=True)
        assert type(pipe) is SRADMPipeline
        torch.testing.assert_close(sample(pipe, lr_image), expected, atol=CROSS_PATH_ATOL, rtol=0)


def test_bundled_demo_keeps_its_layout_and_loads_through_diffusers():
    index = json.loads(Path(DEMO_MODEL, "model_index.json").read_text())
    assert index["_class_name"] == "SRADMPipeline"  # kept as shipped (see README, "Python API")
    pipe = DiffusionPipeline.from_pretrained(DEMO_MODEL)
    assert type(pipe) is SRADMPipeline and type(pipe.unet) is SRADMUNet


def test_other_pipelines_and_trust_remote_code_go_to_diffusers(published, tmp_path, monkeypatch):
    """The wrapper only redirects SRADM folders loaded without trust_remote_code; diffusers handles the rest."""
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    unet = UNet2DModel(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(8,), layers_per_block=1,
                       down_block_types=("DownBlock2D",), up_block_types=("UpBlock2D",), norm_num_groups=4)
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler()).save_pretrained(tmp_path / "ddpm")
    assert type(DiffusionPipeline.from_pretrained(tmp_path / "ddpm")) is DDPMPipeline
    folder, _ = published
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "modules"))  # read when diffusers copies the module
    monkeypatch.setattr("diffusers.utils.dynamic_modules_utils.HF_MODULES_CACHE", str(tmp_path / "modules"))
    shipped = DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)
    assert type(shipped).__name__ == "SRADMPipeline" and type(shipped) is not SRADMPipeline


def test_push_to_hub_uploads_the_generated_code(tiny_pipe, tmp_path, monkeypatch):
    uploads = []

    def fake_upload(self, folder, repo_id, **kwargs):
        uploads.append((repo_id, sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*") if p.is_file())))

    def fake_create_repo(repo_id, **kwargs):
        return type("RepoUrl", (), {"repo_id": repo_id})

    monkeypatch.setattr("huggingface_hub.create_repo", fake_create_repo)
    monkeypatch.setattr("diffusers.utils.hub_utils.create_repo", fake_create_repo)
    monkeypatch.setattr(SRADMPipeline, "_upload_folder", fake_upload)
    monkeypatch.setattr("diffusers.utils.hub_utils.load_or_create_model_card",
                        lambda repo_id, **kw: __import__("huggingface_hub").ModelCard("---\n---\n# card\n"))
    tiny_pipe.save_pretrained(tmp_path / "a", push_to_hub=True, repo_id="org/a")  # diffusers' save-and-push
    tiny_pipe.push_to_hub("org/b")  # PushToHubMixin: saves to a temporary folder, then uploads it
    for (repo_id, files), expected_id in zip(uploads, ["org/a", "org/b"]):
        assert repo_id == expected_id
        assert set(SHIPPED) <= set(files) and "model_index.json" in files, files


def make_package(root, files):
    """A package with a fresh name (importlib caches packages by name) holding ``files``; returns its name."""
    name = f"fakepkg_{root.name.replace('-', '_')}"
    (root / name).mkdir()
    (root / name / "__init__.py").write_text("")
    for file, text in files.items():
        (root / name / file).write_text(text)
    return name


@pytest.mark.parametrize(
    "files, message",
    [
        ({"a.py": "from .b import f\nf = 1\n", "b.py": "def f():\n    return 2\n"},
         r"{pkg}.b and {pkg}.a both define .*'f'"),
        ({"a.py": "from . import b\n", "b.py": "x = 1\n"}, r"{pkg}.a, line 1: .*imports a module object"),
        ({"a.py": "import sradm_diffusers\n"}, r"{pkg}.a, line 1: an absolute import of sradm_diffusers"),
        ({"a.py": "from .b import missing\n", "b.py": "x = 1\n"}, r"\['missing'\] are not defined"),
    ],
)
def test_what_cannot_be_inlined_is_refused(tmp_path, monkeypatch, files, message):
    package = make_package(tmp_path, files)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError, match=message.replace("{pkg}", package)):
        inline_modules([f"{package}.a"])


def test_inlining_keeps_aliases_and_fills_emptied_blocks(tmp_path, monkeypatch):
    package = make_package(tmp_path, {
        "b.py": "def double(x):\n    return 2 * x\n",
        "c.py": "from .b import double as times_two\n",  # a re-export under another name
        "a.py": "from .b import double as twice\nfrom .c import times_two\n\n"
                "def lazy(x):\n    if x:\n        from .b import double\n"
                "    return double(x) + twice(x) + times_two(x)\n",
    })
    monkeypatch.syspath_prepend(str(tmp_path))
    namespace = {}
    exec(inline_modules([f"{package}.a"]), namespace)  # noqa: S102 - the generated code is the subject
    assert namespace["lazy"](3) == 18


def test_names_bound_in_top_level_blocks_count_as_definitions(tmp_path, monkeypatch):
    package = make_package(tmp_path, {
        "a.py": "from .b import x\ntry:\n    import json as helper\nexcept ImportError:\n    helper = None\n",
        "b.py": "x = 1\nif True:\n    helper = 2\n",
    })
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError, match=f"{package}.b and {package}.a both define the top-level name 'helper'"):
        inline_modules([f"{package}.a"])
