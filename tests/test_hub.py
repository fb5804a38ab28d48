"""Publishing: the assembled repository folder, its card, its load check, and the upload, all offline."""

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard, constants
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoImageProcessor, AutoTokenizer

import nac_hf.hub as hub
from nac_hf import NACConfig, NACForClassification, NACImageProcessor, NACModel
from nac_hf.data import DataArguments
from nac_hf.hub import PublishError, publish, verify_repository
from nac_hf.training import ModelArguments
from nac_test_utils import TINY, load_script_inputs, run_load_script, train_run, training_args


ROOT = Path(__file__).resolve().parents[1]
REPO_ID = "nac-test/nac-digits"
REVISION = "0123456789abcdef0123456789abcdef01234567"


def image_run(output_dir, **overrides):
    model_args = ModelArguments(preset="tiny", config_overrides=TINY)
    data_args = DataArguments(max_train_samples=160, max_eval_samples=80)
    return train_run(model_args, data_args, training_args(output_dir, **overrides))


@pytest.fixture(scope="module")
def image_checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run") / "nac-digits"
    image_run(folder)
    return folder


@pytest.fixture(scope="module")
def image_repo(image_checkpoint, tmp_path_factory):
    return Path(publish(image_checkpoint, REPO_ID, dry_run=tmp_path_factory.mktemp("dry") / "repo"))


@pytest.fixture(scope="module")
def text_repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("text")
    rows = [
        {"text": f"{'good' if i % 2 else 'bad'} review number {i}", "label": ["neg", "pos"][i % 2]} for i in range(48)
    ]
    (root / "train.jsonl").write_text("\n".join(json.dumps(row) for row in rows))
    model_args = ModelArguments(preset="tiny", config_overrides="graph_fit_steps=50")
    data_args = DataArguments(train_file=str(root / "train.jsonl"), validation_split_percentage=25, max_length=64)
    train_run(model_args, data_args, training_args(root / "run"))
    return Path(publish(root / "run", "nac-test/nac-reviews", dry_run=root / "repo"))


def digest(folder: Path) -> dict:
    """Every file under `folder` with its content hash."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def hub_cache(repo: Path, root: Path, repo_id: str) -> Path:
    """A Hugging Face cache holding `repo` as `repo_id` at REVISION, laid out as `hf_hub_download` leaves it:
    content in blobs/, snapshot files linking to them, refs/main naming the snapshot."""
    cache = root / "hub"
    entry = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = entry / "snapshots" / REVISION
    snapshot.mkdir(parents=True)
    (entry / "blobs").mkdir()
    for path in sorted(repo.iterdir()):
        blob = entry / "blobs" / hashlib.sha256(path.read_bytes()).hexdigest()
        shutil.copyfile(path, blob)
        (snapshot / path.name).symlink_to(os.path.relpath(blob, snapshot))
    (entry / "refs").mkdir()
    (entry / "refs" / "main").write_text(REVISION)
    return cache


def expected_logits(repo: Path, kind: str) -> torch.Tensor:
    model = NACForClassification.from_pretrained(repo).eval()
    processor = (AutoImageProcessor if kind == "image" else AutoTokenizer).from_pretrained(repo)
    with torch.no_grad():
        return model(**load_script_inputs(kind, processor)).logits


# ------------------------------------------------------------------------------------------------------------------
# The assembled folder


def test_dry_run_folder_holds_the_repository(image_repo, image_checkpoint):
    names = {path.name for path in image_repo.iterdir()}
    expected = {
        "README.md", "circuit.png", "config.json", "model.safetensors", "preprocessor_config.json",
        "configuration_nac.py", "modeling_nac.py", "graph_priors.py", "image_processing_nac.py",
        "training_details.json", "eval_results.json", "train_results.json", "all_results.json",
    }
    assert expected <= names, expected - names
    assert not any(name.startswith(".") for name in names) and "training_args.bin" not in names
    config = json.loads((image_repo / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_nac.NACModel"
    assert config["auto_map"]["AutoModelForImageClassification"] == "modeling_nac.NACForClassification"
    processor = json.loads((image_repo / "preprocessor_config.json").read_text())
    assert processor["auto_map"]["AutoImageProcessor"] == "image_processing_nac.NACImageProcessor"
    published, trained = load_file(image_repo / "model.safetensors"), load_file(image_checkpoint / "model.safetensors")
    assert published.keys() == trained.keys()
    assert all(torch.equal(published[key], trained[key]) for key in trained)
    with Image.open(image_repo / "circuit.png") as figure:
        assert figure.format == "PNG" and figure.width >= 800 and figure.height >= 400


def test_card_carries_metadata_results_and_sections(image_repo, image_checkpoint):
    card = ModelCard.load(image_repo / "README.md")
    data = card.data
    assert data.license == "mit" and data.library_name == "transformers"
    assert {"nac", "neural-attentive-circuits", "image"} <= set(data.tags)
    assert data.datasets == ["scikit-learn-digits"] and data.metrics == ["accuracy"]
    assert data.pipeline_tag == "image-classification"
    evaluation = json.loads((image_checkpoint / "eval_results.json").read_text())
    results = {result.metric_name: result for result in data.eval_results}
    assert set(results) == {"Top-1 accuracy", "Top-5 accuracy"}
    assert results["Top-1 accuracy"].metric_value == round(evaluation["eval_top1_accuracy"], 4)
    assert results["Top-5 accuracy"].metric_value == round(evaluation["eval_top5_accuracy"], 4)
    assert results["Top-1 accuracy"].task_type == "image-classification"
    assert results["Top-1 accuracy"].dataset_type == "scikit-learn-digits"
    assert data.model_name == "nac-digits"

    text = card.text
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert headings == [
        "## What a NAC is", "## Intended use and limits", "## How to use", "## Training details", "## Results",
        "## The learned circuit", "## Citation",
    ]
    details = json.loads((image_checkpoint / "training_details.json").read_text())
    assert f"| Optimizer steps | {details['steps']} |" in text and details["steps"] == 5  # 160 examples / 32
    assert "| Training examples | 160 |" in text and "| Learning rate | 0.002, cosine schedule" in text
    assert "| Hardware | 1 × CPU" in text and "| Batch size | 32 (32 per device" in text
    assert f"| Top-1 accuracy | {100 * evaluation['eval_top1_accuracy']:.2f} % |" in text
    assert "80 examples of scikit-learn digits" in text
    assert f'from_pretrained("{REPO_ID}", trust_remote_code=True)' in text
    assert f'pipeline("image-classification", model="{REPO_ID}")' in text
    assert "](circuit.png)" in text and "@inproceedings{rahaman2022neural" in text
    assert "{{" not in text and "{%" not in text


def test_card_of_a_checkpoint_folder_reads_trainer_state(image_checkpoint, tmp_path):
    """A `checkpoint-N` folder has no eval_results.json: the card takes the last evaluation in trainer_state.json."""
    folder = tmp_path / "checkpoint-5"
    shutil.copytree(image_checkpoint, folder)
    for name in ("eval_results.json", "all_results.json", "training_details.json"):
        (folder / name).unlink()
    state = json.loads((folder / "trainer_state.json").read_text())
    state["log_history"].append({"eval_loss": 2.0, "eval_top1_accuracy": 0.4321, "epoch": 1.0, "step": 5})
    (folder / "trainer_state.json").write_text(json.dumps(state))
    model = NACForClassification.from_pretrained(folder)
    card = hub.build_model_card(model, hub.read_run(folder), "org/ckpt", figure=None)
    assert card.data.eval_results[0].metric_value == 0.4321
    assert "| Optimizer steps | 5 |" in card.text and "| Top-1 accuracy | 43.21 % |" in card.text
    assert "No figure was drawn" in card.text


def test_the_card_carries_the_module_dropping_table_when_the_folder_has_one(image_checkpoint, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(image_checkpoint, folder)
    model = NACForClassification.from_pretrained(folder)
    assert "With modules dropped" not in hub.build_model_card(model, hub.read_run(folder), "org/x", figure=None).text
    measured = {
        "baseline": {"accuracy": 0.95, "gflops": 0.043, "throughput": 2000.0, "input_modules": 4,
                     "processor_modules": 8},
        "rows": [{"order": "out_degree", "seed": 0, "keep_input": 1.0, "keep_processor": 0.5, "input_modules": 4,
                  "processor_modules": 4, "accuracy": 0.9472, "gflops": 0.021, "throughput": 3600.0},
                 {"order": "random", "seed": 2, "keep_input": 1.0, "keep_processor": 0.5, "input_modules": 4,
                  "processor_modules": 4, "accuracy": 0.5, "gflops": 0.021, "throughput": 3000.0}],
    }
    (folder / "module_dropping.json").write_text(json.dumps(measured))
    card = hub.build_model_card(model, hub.read_run(folder), "org/x", figure=None).text
    assert "| all modules | 4 | 8 | 95.00 % | 0.043 | 1.00× |" in card
    assert "| out_degree | 4 | 4 | 94.72 % | 0.021 | 1.80× |" in card
    assert "| random (seed 2) | 4 | 4 | 50.00 % | 0.021 | 1.50× |" in card
    assert "module_dropping.json" in hub.RESULT_FILES  # published beside the card


def test_the_card_carries_the_paper_claims_table_when_the_folder_has_one(image_checkpoint, tmp_path):
    from benchmarks.claims import claims_table, row

    folder = tmp_path / "run"
    shutil.copytree(image_checkpoint, folder)
    model = NACForClassification.from_pretrained(folder)
    assert "The paper's claims" not in hub.build_model_card(model, hub.read_run(folder), "org/x", figure=None).text
    paired = {"nac": 61.0, "baseline": 65.0, "diff": -4.0, "ci_low": -6.5, "ci_high": -1.5}
    rows = [row("ood_fonts", "glyphs", "ViT", paired)]
    claims = {"command": "python -m benchmarks.paper_claims --pretrain_seeds 2", "rows": rows,
              "table": claims_table(rows)}
    (folder / "claims.json").write_text(json.dumps(claims))
    card = hub.build_model_card(model, hub.read_run(folder), "org/x", figure=None).text
    assert "### The paper's claims and this implementation" in card
    assert "`python -m benchmarks.paper_claims --pretrain_seeds 2`" in card
    assert "| out of distribution: font families never trained on | glyphs | ≈ +2.5 points (Tiny-ImageNet-R) | " \
           "61.0 % | ViT: 65.0 % | -4.0 [-6.5, -1.5] | not reproduced |" in card
    assert "claims.json" in hub.RESULT_FILES


# ------------------------------------------------------------------------------------------------------------------
# Loading the published folder offline, as users will load it from the Hub


def test_folder_loads_with_trust_remote_code_without_nac_hf(image_repo, tmp_path):
    result = run_load_script(image_repo, "image", "remote", tmp_path)
    assert result["classes"] == ["NACConfig", "NACModel", "NACForClassification", "NACImageProcessor"]
    assert not any(module.startswith("nac_hf") for module in result["modules"])
    torch.testing.assert_close(torch.tensor(result["logits"]), expected_logits(image_repo, "image"), rtol=0, atol=1e-5)


@pytest.mark.parametrize("how", ["installed", "remote"])
def test_hub_cache_layout_loads_offline_by_repo_id(image_repo, tmp_path, how):
    cache = hub_cache(image_repo, tmp_path, REPO_ID)
    result = run_load_script(REPO_ID, "image", how, tmp_path, HF_HUB_CACHE=str(cache))
    assert result["classes"][2:] == ["NACForClassification", "NACImageProcessor"]
    assert any(module.startswith("nac_hf") for module in result["modules"]) == (how == "installed")
    expected = expected_logits(image_repo, "image")
    torch.testing.assert_close(torch.tensor(result["logits"]), expected, rtol=0, atol=1e-5)
    labels = NACConfig.from_pretrained(image_repo).id2label
    best = max(result["pipeline"], key=lambda prediction: prediction["score"])
    assert best["label"] == labels[int(expected.argmax())]
    assert {prediction["label"] for prediction in result["pipeline"]} == set(labels.values())


@pytest.mark.parametrize("how", ["installed", "remote"])
def test_text_repository_from_hub_cache(text_repo, tmp_path, how):
    card = ModelCard.load(text_repo / "README.md")
    assert card.data.pipeline_tag == "text-classification" and "text" in card.data.tags
    assert card.data.datasets is None  # a local file is no Hub dataset
    assert (text_repo / "tokenizer_config.json").is_file()
    cache = hub_cache(text_repo, tmp_path, "nac-test/nac-reviews")
    result = run_load_script("nac-test/nac-reviews", "text", how, tmp_path, HF_HUB_CACHE=str(cache))
    assert result["classes"][2:] == ["NACForClassification", "NACByteTokenizer"]
    assert any(module.startswith("nac_hf") for module in result["modules"]) == (how == "installed")
    torch.testing.assert_close(torch.tensor(result["logits"]), expected_logits(text_repo, "text"), rtol=0, atol=1e-5)
    assert {prediction["label"] for prediction in result["pipeline"]} == {"neg", "pos"}


# ------------------------------------------------------------------------------------------------------------------
# What is refused


# A graph_priors.py without the functions modeling_nac.py imports: present, so the file check passes, but the folder
# does not load.
BROKEN_GRAPH_PRIORS = "def unrelated():\n    return None\n"


def test_verification_rejects_a_folder_that_does_not_load_or_differs(image_repo, image_checkpoint, tmp_path):
    model, processor = hub.load_checkpoint(image_checkpoint)
    broken = tmp_path / "broken"
    shutil.copytree(image_repo, broken)
    (broken / "graph_priors.py").write_text(BROKEN_GRAPH_PRIORS)  # what modeling_nac.py imports from it is gone
    with pytest.raises(PublishError, match="(?s)does not load in a fresh Python process.*graph_priors"):
        verify_repository(broken, model, processor)
    other = NACForClassification(NACConfig.from_pretrained(image_repo)).eval()
    with pytest.raises(PublishError, match="outputs differ"):
        verify_repository(image_repo, other, processor)
    verify_repository(image_repo, model, processor)  # the good folder passes


def test_publish_refuses_a_folder_that_does_not_load(image_checkpoint, image_repo, tmp_path, monkeypatch):
    """A save that breaks a code file gives a folder that loads here but not on the Hub: nothing is uploaded, and an
    earlier good dry-run folder is not replaced."""
    import transformers.modeling_utils as modeling_utils

    save_code = modeling_utils.custom_object_save

    def save_with_broken_graph_priors(obj, folder, config=None):
        saved = save_code(obj, folder, config=config)
        Path(folder, "graph_priors.py").write_text(BROKEN_GRAPH_PRIORS)
        return saved

    monkeypatch.setattr(modeling_utils, "custom_object_save", save_with_broken_graph_priors)
    api = fake_hf_api(monkeypatch)
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    with pytest.raises(PublishError, match="does not load"):
        publish(image_checkpoint, REPO_ID)
    assert api.calls == []
    good = tmp_path / "good"
    shutil.copytree(image_repo, good)
    before = digest(good)
    with pytest.raises(PublishError, match="does not load"):
        publish(image_checkpoint, REPO_ID, dry_run=good)
    assert digest(good) == before
    assert [path.name for path in tmp_path.iterdir()] == ["good"]  # no half-written folder left beside it


# What graph_priors.py imported at module level before it imported them where they are used: transformers' loader
# stops on both where only torch, transformers and pillow are installed.
GRAPH_LIBRARIES = (
    "import networkx as nx\nimport numpy as np\nimport torch\nfrom scipy.optimize import linear_sum_assignment\n"
)


def test_folder_whose_code_needs_more_than_a_bare_install_is_refused(image_repo, image_checkpoint, tmp_path):
    """The fresh-process check runs here, where scipy and networkx are installed; the import check sees what a
    machine with only torch and transformers would lack."""
    model, processor = hub.load_checkpoint(image_checkpoint)
    broken = tmp_path / "broken"
    shutil.copytree(image_repo, broken)
    code = (broken / "graph_priors.py").read_text()
    (broken / "graph_priors.py").write_text(code.replace("import torch\n", GRAPH_LIBRARIES, 1))
    (broken / "image_processing_nac.py").write_text(
        (broken / "image_processing_nac.py").read_text() + "\n\ndef blur(image):\n    import cv2\n    return cv2\n"
    )
    with pytest.raises(PublishError) as refused:
        verify_repository(broken, model, processor)
    message = str(refused.value)
    assert "would not load where only torch, transformers and pillow are installed" in message
    assert "graph_priors.py imports networkx; graph_priors.py imports scipy; image_processing_nac.py imports cv2" in (
        message
    )
    assert "import such a package inside the function that needs it, within `try: ... except ImportError`" in message
    hub.check_code_imports(image_repo)  # the published code: scipy and networkx only inside try blocks


def test_a_folder_without_graph_priors_is_refused_before_the_load_check(image_repo, tmp_path):
    import shutil

    from nac_hf import NACForClassification

    folder = tmp_path / "repo"
    shutil.copytree(image_repo, folder)
    (folder / "graph_priors.py").unlink()
    with pytest.raises(hub.PublishError, match="lacks graph_priors.py"):
        hub.verify_repository(folder, NACForClassification.from_pretrained(image_repo), processor=None)


def test_bare_install_modules():
    modules = hub.bare_install_modules()
    assert {"torch", "transformers", "numpy", "PIL", "huggingface_hub", "safetensors", "tokenizers", "yaml"} <= modules
    assert {"json", "math", "dataclasses", "__future__"} <= modules  # the standard library
    assert not {"scipy", "networkx", "sklearn", "matplotlib", "datasets", "accelerate", "nac_hf"} & modules


def test_publish_refuses_code_with_imports_a_bare_install_lacks(image_checkpoint, tmp_path, monkeypatch):
    """A graph_priors.py that imports scipy at module level loads here, but not on a machine with only torch and
    transformers: nothing is uploaded, and no folder is written."""
    import transformers.modeling_utils as modeling_utils

    save_code = modeling_utils.custom_object_save

    def save_with_scipy_at_the_top(obj, folder, config=None):
        saved = save_code(obj, folder, config=config)
        code = Path(folder, "graph_priors.py").read_text()
        Path(folder, "graph_priors.py").write_text(code.replace("import torch\n", GRAPH_LIBRARIES, 1))
        return saved

    monkeypatch.setattr(modeling_utils, "custom_object_save", save_with_scipy_at_the_top)
    api = fake_hf_api(monkeypatch)
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    with pytest.raises(PublishError, match="graph_priors.py imports networkx; graph_priors.py imports scipy"):
        publish(image_checkpoint, REPO_ID)
    assert api.calls == []
    with pytest.raises(PublishError, match="graph_priors.py imports scipy"):
        publish(image_checkpoint, REPO_ID, dry_run=tmp_path / "repo")
    assert list(tmp_path.iterdir()) == []


def test_dry_run_never_overwrites_other_files(image_checkpoint, tmp_path):
    mine = tmp_path / "notes"
    mine.mkdir()
    (mine / "todo.txt").write_text("keep me")
    with pytest.raises(PublishError, match="not an assembled repository"):
        publish(image_checkpoint, REPO_ID, dry_run=mine)
    assert (mine / "todo.txt").read_text() == "keep me"
    with pytest.raises(PublishError, match="outside the checkpoint"):
        publish(image_checkpoint, REPO_ID, dry_run=image_checkpoint / "repo")


@pytest.mark.parametrize("repo_id", ["", "a/b/c", "org/", "my org/name"])
def test_invalid_repo_id(image_checkpoint, tmp_path, repo_id):
    with pytest.raises(PublishError, match="invalid repository id"):
        publish(image_checkpoint, repo_id, dry_run=tmp_path / "repo")


def test_checkpoint_without_processor_or_model(image_checkpoint, tmp_path):
    folder = tmp_path / "no-processor"
    shutil.copytree(image_checkpoint, folder)
    (folder / "preprocessor_config.json").unlink()
    with pytest.raises(PublishError, match=r"no image processor.*save_pretrained"):
        publish(folder, REPO_ID, dry_run=tmp_path / "repo")
    with pytest.raises(PublishError, match="not a folder"):
        publish(tmp_path / "missing", REPO_ID, dry_run=tmp_path / "repo")
    with pytest.raises(PublishError, match="no config.json"):
        publish(tmp_path, REPO_ID, dry_run=tmp_path.parent / "repo-x")
    assert not (tmp_path / "repo").exists()


# ------------------------------------------------------------------------------------------------------------------
# Uploading


class FakeHfApi:
    """Stands in for `HfApi`: records the calls and what the uploaded folder held at upload time."""

    def __init__(self, calls):
        self.calls = calls

    def __call__(self, token=None):
        self.calls.append(("HfApi", token))
        return self

    def whoami(self):
        self.calls.append(("whoami",))
        return {"name": "me"}

    def create_repo(self, repo_id, **options):
        self.calls.append(("create_repo", repo_id, options))
        return type("RepoUrl", (), {"repo_id": repo_id if "/" in repo_id else f"me/{repo_id}"})()

    def create_branch(self, repo_id, branch, exist_ok=False):
        self.calls.append(("create_branch", repo_id, branch, exist_ok))

    def upload_folder(self, repo_id, folder_path, revision=None, commit_message=None):
        self.calls.append(("upload_folder", repo_id, revision, commit_message, sorted(os.listdir(folder_path))))
        self.uploaded = Path(folder_path)
        self.card = ModelCard.load(self.uploaded / "README.md")
        return type("CommitInfo", (), {"commit_url": f"https://huggingface.co/{repo_id}/commit/1"})()


def fake_hf_api(monkeypatch) -> FakeHfApi:
    api = FakeHfApi([])
    monkeypatch.setattr(hub, "HfApi", api)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    return api


def test_upload_creates_the_repository_and_uploads_the_checked_folder(image_checkpoint, monkeypatch):
    api = fake_hf_api(monkeypatch)
    monkeypatch.setenv("HF_TOKEN", "hf_from_environment")
    url = publish(image_checkpoint, "org/nac-digits", private=True, revision="v1", commit_message="First NAC")
    assert url == "https://huggingface.co/org/nac-digits/commit/1"
    assert api.calls[0] == ("HfApi", "hf_from_environment")
    assert api.calls[1] == ("create_repo", "org/nac-digits", {"private": True, "exist_ok": True, "repo_type": "model"})
    assert api.calls[2] == ("create_branch", "org/nac-digits", "v1", True)
    name, repo_id, revision, message, files = api.calls[3]
    assert (name, repo_id, revision, message) == ("upload_folder", "org/nac-digits", "v1", "First NAC")
    assert {"README.md", "circuit.png", "model.safetensors", "modeling_nac.py", "config.json"} <= set(files)
    assert not api.uploaded.exists()  # the temporary folder is gone after a successful upload


def test_upload_without_a_namespace_goes_to_the_token_owner(image_checkpoint, monkeypatch):
    api = fake_hf_api(monkeypatch)
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    publish(image_checkpoint, "nac-digits")
    assert ("whoami",) in api.calls and api.calls[-1][1] == "me/nac-digits"
    assert 'from_pretrained("me/nac-digits", trust_remote_code=True)' in api.card.text


def run_push(checkpoint, cwd, *args, **env) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items() if key not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    environment.update({"HF_HOME": str(cwd / "hf-home"), "HF_HUB_OFFLINE": "0", **env})
    command = [sys.executable, str(ROOT / "scripts" / "push_to_hub.py"), "--checkpoint", str(checkpoint),
               "--repo_id", REPO_ID, *args]
    return subprocess.run(command, capture_output=True, text=True, env=environment, cwd=cwd, timeout=300)


def test_push_without_a_token_stops_and_keeps_everything(image_checkpoint, tmp_path):
    before = digest(image_checkpoint)
    done = run_push(image_checkpoint, tmp_path)
    assert done.returncode != 0
    assert "no Hugging Face token" in done.stderr and "HF_TOKEN" in done.stderr and "hf auth login" in done.stderr
    assert digest(image_checkpoint) == before


@pytest.mark.parametrize("token_from", ["HF_TOKEN", "cached login"])
def test_failing_upload_stops_and_keeps_the_assembled_folder(image_checkpoint, tmp_path, token_from):
    with socket.socket() as probe:  # a port nothing listens on: every request is refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    before = digest(image_checkpoint)
    if token_from == "HF_TOKEN":
        token = {"HF_TOKEN": "hf_test"}
    else:  # where `hf auth login` keeps it
        (tmp_path / "hf-home").mkdir()
        (tmp_path / "hf-home" / "token").write_text("hf_test")
        token = {}
    done = run_push(image_checkpoint, tmp_path, HF_ENDPOINT=f"http://127.0.0.1:{port}", **token)
    assert done.returncode != 0, done.stdout
    assert "upload of" in done.stderr and f"to {REPO_ID} failed" in done.stderr, done.stderr[-2000:]
    kept = Path(done.stderr.split("The assembled repository is kept at ")[1].strip().rstrip("."))
    assert {"README.md", "model.safetensors", "circuit.png"} <= {path.name for path in kept.iterdir()}
    assert digest(image_checkpoint) == before
    shutil.rmtree(kept.parent)


def test_script_dry_run(image_checkpoint, tmp_path):
    done = run_push(image_checkpoint, tmp_path, "--dry_run", str(tmp_path / "out"), "--license", "apache-2.0")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "nothing uploaded" in done.stdout
    assert ModelCard.load(tmp_path / "out" / "README.md").data.license == "apache-2.0"


# ------------------------------------------------------------------------------------------------------------------
# train.py --push_to_hub


def test_train_push_to_hub_publishes_through_the_same_assembly(tmp_path, monkeypatch):
    api = fake_hf_api(monkeypatch)
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    image_run(tmp_path / "run", push_to_hub=True, hub_model_id="org/trained", hub_private_repo=True)
    assert [call[0] for call in api.calls] == ["HfApi", "create_repo", "upload_folder"]
    assert api.calls[1][1:] == ("org/trained", {"private": True, "exist_ok": True, "repo_type": "model"})
    assert {"README.md", "circuit.png", "model.safetensors", "training_details.json"} <= set(api.calls[2][4])
    card = api.card
    assert card.data.model_name == "trained" and card.data.eval_results[0].metric_name == "Top-1 accuracy"
    assert "| Optimizer steps | 5 |" in card.text


def test_train_push_to_hub_without_a_token_stops_before_training(tmp_path, monkeypatch):
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    with pytest.raises(PublishError, match="--push_to_hub needs a Hugging Face token.*nothing was trained"):
        image_run(tmp_path / "run", push_to_hub=True, hub_model_id="org/trained")
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_publishing_without_matplotlib_warns_and_leaves_out_the_figure(image_checkpoint, tmp_path):
    script = (
        "import sys; sys.modules['matplotlib'] = None\n"
        "from nac_hf.hub import publish\n"
        f"print(publish({str(image_checkpoint)!r}, 'org/name', dry_run={str(tmp_path / 'repo')!r}))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == str(tmp_path / "repo")
    assert (
        "the model card of org/name is published without the circuit figure: drawing a NAC circuit needs "
        'matplotlib; install it with: pip install matplotlib'
    ) in done.stderr
    assert not (tmp_path / "repo" / "circuit.png").exists()
    card = (tmp_path / "repo" / "README.md").read_text()
    assert "No figure was drawn for this card." in card and "circuit.png" not in card
    assert "pairs of\nprocessors are linked" in card  # the circuit's numbers need no matplotlib


def test_own_card_template(image_checkpoint, tmp_path):
    template = tmp_path / "card.md"
    template.write_text(
        "---\n{{ card_data }}\n---\n\n# {{ model_title }} by us\n\n"
        "{% for name, value in result_rows %}- {{ name }}: {{ value }}\n{% endfor %}"
    )
    model = NACForClassification.from_pretrained(image_checkpoint)
    card = hub.build_model_card(model, hub.read_run(image_checkpoint), "org/ours", template=template)
    assert card.text.startswith("\n# ours by us") and "\n- Top-1 accuracy: " in card.text
    assert card.data.license == "mit"
    with pytest.raises(PublishError, match="card template .* is not a file"):
        hub.build_model_card(model, hub.read_run(image_checkpoint), "org/ours", template=tmp_path / "missing.md")


def test_point_cloud_model_publishes_without_a_processor(tmp_path):
    config = NACConfig.from_preset("tiny", tokenizer_type="point", num_labels=4, graph_fit_steps=50)
    NACForClassification(config).save_pretrained(tmp_path / "points")
    repo = Path(publish(tmp_path / "points", "org/nac-points", dry_run=tmp_path / "repo"))  # checked in a fresh process
    card = ModelCard.load(repo / "README.md")
    assert card.data.pipeline_tag is None and "points" in card.data.tags
    assert card.data.eval_results is None and "No evaluation results were recorded" in card.text
    assert "carries no record of its training run" in card.text and "3-D points" in card.text
    assert "classifies point clouds\ninto 4 classes" in card.text and "model.nac.circuit()" in card.text
    assert "It predicts only these labels" in card.text and "pipeline(" not in card.text
    assert not (repo / "preprocessor_config.json").exists() and (repo / "circuit.png").is_file()


def test_bare_model_publishes_for_automodel(tmp_path):
    config = NACConfig.from_preset("tiny", graph_fit_steps=50)
    NACModel(config).save_pretrained(tmp_path / "bare")
    size = {"height": config.image_size, "width": config.image_size}
    NACImageProcessor(size=size).save_pretrained(tmp_path / "bare")
    repo = Path(publish(tmp_path / "bare", "org/nac-bare", dry_run=tmp_path / "repo"))  # checked in a fresh process
    card = ModelCard.load(repo / "README.md")
    assert card.data.pipeline_tag is None and "the bare model, without a classification head" in card.text
    assert 'AutoModel.from_pretrained("org/nac-bare", trust_remote_code=True)' in card.text
    assert "model.circuit()" in card.text and "It predicts only these labels" not in card.text


@pytest.mark.parametrize("strategy", ["checkpoint", "all_checkpoints", "end"])
def test_train_push_to_hub_refuses_other_hub_strategies_before_training(tmp_path, monkeypatch, strategy):
    api = fake_hf_api(monkeypatch)
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    message = rf"--hub_strategy {strategy} is not supported: --push_to_hub publishes the trained model once, at the end"
    with pytest.raises(PublishError, match=message) as refused:
        image_run(tmp_path / "run", push_to_hub=True, hub_model_id="org/trained", hub_strategy=strategy)
    assert "--resume_from_checkpoint last" in str(refused.value) and "nothing was trained or uploaded" in str(
        refused.value
    )
    assert api.calls == [] and not (tmp_path / "run" / "model.safetensors").exists()


# ------------------------------------------------------------------------------------------------------------------
# few_shot.py --push_to_hub


def few_shot_main(image_checkpoint, output_dir, monkeypatch, *flags):
    """scripts/few_shot.py's main, in this process: digits 5-9 from the digits checkpoint, 2 shots, mode head."""
    import transformers

    from nac_test_utils import script

    arguments = ["few_shot.py", "--model_name_or_path", str(image_checkpoint), "--keep_labels", "5,6,7,8,9",
                 "--shots", "2", "--modes", "head", "--max_steps", "2", "--seed", "1", "--output_dir", str(output_dir),
                 *flags]
    monkeypatch.setattr(sys, "argv", arguments)
    verbosity = transformers.utils.logging.get_verbosity()
    try:
        script("few_shot").main()
    finally:
        transformers.utils.logging.set_verbosity(verbosity)


def test_few_shot_push_to_hub_publishes_the_adapted_model_through_the_same_assembly(image_checkpoint, tmp_path,
                                                                                     monkeypatch):
    api = fake_hf_api(monkeypatch)
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    few_shot_main(image_checkpoint, tmp_path / "adapted", monkeypatch, "--push_to_hub", "--hub_model_id",
                  "org/adapted", "--hub_private_repo", "true")
    assert [call[0] for call in api.calls] == ["HfApi", "create_repo", "upload_folder"]
    assert api.calls[1][1:] == ("org/adapted", {"private": True, "exist_ok": True, "repo_type": "model"})
    assert {"README.md", "few_shot.json", "model.safetensors", "modeling_nac.py"} <= set(api.calls[2][4])
    text = " ".join(api.card.text.split())
    assert "**2 training example(s) per label** (10 in all), drawn with seed 1" in text and "in mode `head`" in text
    assert api.card.data.model_name == "adapted" and api.card.data.eval_results[0].metric_name == "Top-1 accuracy"


def test_few_shot_push_to_hub_without_a_token_stops_before_adapting(image_checkpoint, tmp_path, monkeypatch):
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    with pytest.raises(PublishError, match="--push_to_hub needs a Hugging Face token.*nothing was trained"):
        few_shot_main(image_checkpoint, tmp_path / "adapted", monkeypatch, "--push_to_hub", "--hub_model_id", "org/a")
    assert not (tmp_path / "adapted").exists()
