"""Publishing a trained NAC as a Hub repository.

`assemble_repository` turns a checkpoint folder into the folder a Hub repository holds: safetensors weights, the
config with its `auto_map`, the modeling code for `trust_remote_code`, the image processor or tokenizer, the run's
results, the learned circuit figure and a model card rendered from `model_cards/` through `ModelCard` /
`ModelCardData`. Before the folder is accepted its code files are checked to import nothing that a machine with only
torch, transformers and pillow lacks, and it is loaded in a fresh Python process where `nac_hf` cannot be imported
(as on a machine that only has `transformers`), and its outputs are compared with the checkpoint's.
`upload_repository` sends a folder with `HfApi`; `publish` does both, and is what `scripts/push_to_hub.py`,
`scripts/train.py --push_to_hub` and `scripts/few_shot.py --push_to_hub` run. A run publishes once, at the end:
`run_repo_id` refuses any `--hub_strategy` but the default before anything trains.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import textwrap
from importlib import resources
from pathlib import Path

import torch
from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData, constants, get_token
from huggingface_hub.errors import HfHubHTTPError, HFValidationError
from huggingface_hub.utils import validate_repo_id
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from transformers.dynamic_module_utils import get_imports

from .configuration_nac import NACConfig
from .few_shot import MODE_DESCRIPTIONS
from .modalities import MODALITIES, modality_of
from .modeling_nac import NACForClassification, NACModel
from .training import TRAINING_DETAILS


logger = logging.getLogger(__name__)

MODEL_CARD_TEMPLATE = resources.files("nac_hf") / "model_cards" / "nac_model_card.md"
CIRCUIT_FIGURE = "circuit.png"
MODULE_DROPPING = "module_dropping.json"  # written by python -m benchmarks.module_dropping
PAPER_CLAIMS = "claims.json"  # written by python -m benchmarks.paper_claims
FEW_SHOT = "few_shot.json"  # written by scripts/few_shot.py
RESULT_FILES = (
    "all_results.json", "train_results.json", "eval_results.json", "test_results.json", TRAINING_DETAILS,
    MODULE_DROPPING, PAPER_CLAIMS, FEW_SHOT,
)
TAGS = ["nac", "neural-attentive-circuits"]
METRIC_NAMES = {"top1_accuracy": "Top-1 accuracy", "top5_accuracy": "Top-5 accuracy"}
# What a folder must hold before it may be uploaded (beside the processor or tokenizer files).
REQUIRED_FILES = (
    "config.json", "model.safetensors", "configuration_nac.py", "modeling_nac.py", "functional_nac.py", "modalities.py",
    "support_nac.py",
    "graph_priors.py", "README.md",
)
# The only `--hub_strategy` a run publishes with (TrainingArguments' default): the model, once, at the end.
PUBLISHED_STRATEGY = "every_save"
NO_TOKEN = (
    "no Hugging Face token, so nothing was uploaded to {repo_id}: set HF_TOKEN or run `hf auth login` (a token with "
    "write access), then run the command again"
)


class PublishError(RuntimeError):
    """A repository could not be assembled, did not load, or could not be uploaded. Nothing local was changed."""


# ------------------------------------------------------------------------------------------------------------------
# Reading a checkpoint and its run


def load_checkpoint(checkpoint: str | os.PathLike):
    """The model and its processor (image processor, tokenizer, or None for points) saved in `checkpoint`."""
    checkpoint = str(checkpoint)
    if not os.path.isdir(checkpoint):
        raise PublishError(f"checkpoint {checkpoint!r} is not a folder; give the output folder of a training run")
    if not os.path.isfile(os.path.join(checkpoint, "config.json")):
        raise PublishError(f"{checkpoint} has no config.json: it is not a saved model (save it with save_pretrained)")
    try:
        config = NACConfig.from_pretrained(checkpoint)
        model_class = NACForClassification if "NACModel" not in (config.architectures or []) else NACModel
        model = model_class.from_pretrained(checkpoint).eval()
    except (OSError, ValueError) as error:
        raise PublishError(f"cannot load the NAC in {checkpoint}: {error}") from error
    reads = modality_of(config)
    auto = reads.auto_processor()
    if auto is None:
        return model, None
    try:
        processor = auto.from_pretrained(checkpoint)
    except (OSError, ValueError) as error:
        raise PublishError(
            f"{checkpoint} has no {reads.processor_description}; a published model needs the one it was trained "
            "with: save it beside the model with processor.save_pretrained(checkpoint)"
        ) from error
    return model, processor


def read_run(checkpoint: str | os.PathLike) -> dict:
    """What a run left beside its model: `training_details.json` (written by `scripts/train.py`), the evaluation
    metrics (`eval_results.json`, or the last evaluation in `trainer_state.json` for a `checkpoint-N` folder), the
    test metrics (`test_results.json`), the step count, `few_shot.json` (written by `scripts/few_shot.py`: it stands
    for the training details and evaluation of an adapted model), `module_dropping.json` (written by
    `python -m benchmarks.module_dropping`) and `claims.json` (written by `python -m benchmarks.paper_claims`).
    Missing files give missing keys."""
    folder = Path(checkpoint)
    run = {"details": _read_json(folder / TRAINING_DETAILS) or {}, "eval": _read_json(folder / "eval_results.json")}
    run["test"] = _read_json(folder / "test_results.json") or {}
    run["few_shot"] = _read_json(folder / FEW_SHOT)
    if run["few_shot"]:
        run["details"] = {**few_shot_details(run["few_shot"]), **run["details"]}
        run["eval"] = run["eval"] or {
            "eval_top1_accuracy": run["few_shot"].get("top1_accuracy"), "eval_loss": run["few_shot"].get("eval_loss")
        }
    run["dropping"] = _read_json(folder / MODULE_DROPPING)
    run["claims"] = _read_json(folder / PAPER_CLAIMS)
    state = _read_json(folder / "trainer_state.json")
    if state:
        run["details"].setdefault("steps", state.get("global_step"))
        if run["eval"] is None:
            evaluations = [entry for entry in state.get("log_history", []) if "eval_loss" in entry]
            run["eval"] = evaluations[-1] if evaluations else None
    run["eval"] = run["eval"] or {}
    return run


def few_shot_details(record: dict) -> dict:
    """The training details of a model `scripts/few_shot.py` adapted, from its `few_shot.json`."""
    base = record.get("model_name_or_path")
    return {
        "dataset": record.get("data"),
        "dataset_id": record.get("dataset_id"),
        "modality": record.get("modality"),
        "eval_split": record.get("eval_split"),
        "eval_examples": record.get("eval_examples"),
        "train_examples": record.get("train_examples"),
        "shots_per_label": record.get("shots"),
        "start": f"{base}, adapted in mode {record.get('mode')!r}" if base else None,
        "base_model": base,
        "steps": record.get("steps"),
        "learning_rate": record.get("learning_rate"),
        "seed": record.get("seed"),
    }


def _read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise PublishError(f"{path} is not valid JSON ({error}); repair or delete it") from error


# ------------------------------------------------------------------------------------------------------------------
# The model card


def eval_results(run: dict) -> list[EvalResult]:
    """The run's metrics as model-index entries: those of its test split when it has one (evaluated once, after
    training), else those of its evaluation split."""
    details = run["details"]
    reads = MODALITIES.get(details.get("modality"))
    task = (reads.pipeline_task if reads else None) or "classification"
    dataset = details.get("dataset_id") or details.get("dataset") or "unknown"
    prefix, metrics, split = "eval", run["eval"], details.get("eval_split")
    if run.get("test"):
        prefix, metrics, split = "test", run["test"], details.get("test_split") or "test"
    results = []
    for key, name in METRIC_NAMES.items():
        value = metrics.get(f"{prefix}_{key}")
        if value is None:
            continue
        results.append(
            EvalResult(
                task_type=task,
                dataset_type=dataset,
                dataset_name=details.get("dataset") or dataset,
                dataset_split=split,
                metric_type="accuracy",
                metric_name=name,
                metric_value=round(float(value), 4),
                metric_config=key,
            )
        )
    return results


def card_data(model, run: dict, repo_id: str, license: str) -> ModelCardData:
    """The card's metadata: license, library, tags, datasets, metrics, pipeline tag and the model-index results."""
    details = run["details"]
    datasets = [details["dataset_id"]] if details.get("dataset_id") else None
    base_model = details.get("base_model")
    return ModelCardData(
        model_name=repo_id.split("/")[-1],
        license=license,
        library_name="transformers",
        tags=[*TAGS, modality_of(model.config).name, "custom_code"],
        datasets=datasets,
        metrics=["accuracy"],
        pipeline_tag=_pipeline_task(model),
        base_model=base_model if base_model and not os.path.exists(base_model) else None,
        eval_results=eval_results(run) or None,
    )


def training_rows(run: dict) -> list[tuple[str, str]]:
    """Training details read from the run, as (name, value) rows of the card's table (empty when the run left none)."""
    details = run["details"]
    fields = [
        ("Dataset", details.get("dataset")),
        ("Training examples", details.get("train_examples") or ("streamed" if details.get("streamed") else None)),
        ("Evaluation examples", details.get("eval_examples")),
        ("Test examples", details.get("test_examples")),
        ("Shots per label", details.get("shots_per_label")),
        ("Started from", details.get("start")),
        ("Recipe", f"`{details['recipe']}` (nac_hf.recipes)" if details.get("recipe") else None),
        ("Epochs", f"{details['epochs']:g}" if details.get("epochs") is not None else None),
        ("Optimizer steps", details.get("steps")),
        ("Batch size", _batch(details)),
        ("Learning rate", _learning_rate(details)),
        ("Weight decay", details.get("weight_decay")),
        ("Augmentation", details.get("augmentation")),
        ("Weights", f"exponential moving average, decay {details['ema_decay']:g}" if details.get("ema_decay")
         else None),
        ("Checkpoint kept", _selection(details)),
        ("Precision", details.get("precision")),
        ("Hardware", details.get("hardware")),
        ("Training time", _duration(details.get("train_runtime_s"))),
        ("Seed", details.get("seed")),
        ("Software", ", ".join(f"{k} {v}" for k, v in (details.get("versions") or {}).items()) or None),
    ]
    return [(name, str(value)) for name, value in fields if value is not None]


def _batch(details: dict) -> str | None:
    if details.get("effective_batch_size") is None:
        return None
    return (
        f"{details['effective_batch_size']} ({details['per_device_batch_size']} per device × "
        f"{details['processes']} process(es) × {details['gradient_accumulation_steps']} accumulation step(s))"
    )


def _learning_rate(details: dict) -> str | None:
    if details.get("learning_rate") is None:
        return None
    if details.get("lr_scheduler") is None:  # a few-shot adaptation: constant, as scripts/few_shot.py trains
        return f"{details['learning_rate']:g}"
    warmup = details.get("warmup") or 0
    warmup = f"{100 * warmup:g} % of the steps" if warmup < 1 else f"{warmup:g} steps"
    if details.get("warmup_epochs"):
        epochs = details["warmup_epochs"]
        warmup = f"{epochs:g} epoch{'' if epochs == 1 else 's'} ({warmup})"
    return f"{details['learning_rate']:g}, {details.get('lr_scheduler', '')} schedule, warm-up {warmup}"


def _selection(details: dict) -> str | None:
    selection = details.get("model_selection")
    if selection is None:
        return None
    return "the last" if selection == "last" else f"the {selection}"


def _duration(seconds) -> str | None:
    if seconds is None:
        return None
    minutes, seconds = divmod(round(float(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min {seconds} s" if hours else f"{minutes} min {seconds} s"


def result_rows(run: dict, split: str = "eval") -> list[tuple[str, str]]:
    """The metrics of the evaluation split (`split="eval"`) or of the test split (`"test"`) as (metric, value) rows of
    the card's results tables (empty when the run left none)."""
    metrics = run.get(split) or {}
    rows = [
        (name, f"{100 * float(metrics[f'{split}_{key}']):.2f} %")
        for key, name in METRIC_NAMES.items()
        if metrics.get(f"{split}_{key}") is not None
    ]
    if metrics.get(f"{split}_loss") is not None:
        rows.append(("Loss", f"{float(metrics[f'{split}_loss']):.4f}"))
    return rows


def dropping_rows(run: dict) -> list[tuple[str, ...]]:
    """The module-dropping measurements as (order, input modules, processor modules, top-1, GFLOPs, speed-up) rows,
    the full model first; empty when the run has none."""
    dropping = run.get("dropping")
    if not dropping:
        return []
    base = dropping["baseline"]
    rows = [("all modules", str(base["input_modules"]), str(base["processor_modules"]),
             f"{100 * base['accuracy']:.2f} %", f"{base['gflops']:.3f}", "1.00×")]
    for row in dropping["rows"]:
        order = row["order"] + (f" (seed {row['seed']})" if row["order"] == "random" else "")
        rows.append((order, str(row["input_modules"]), str(row["processor_modules"]), f"{100 * row['accuracy']:.2f} %",
                     f"{row['gflops']:.3f}", f"{row.get('speedup', row['throughput'] / base['throughput']):.2f}×"))
    return rows


def build_model_card(
    model,
    run: dict,
    repo_id: str,
    *,
    summary: dict | None = None,
    figure: str | None = CIRCUIT_FIGURE,
    revision: str | None = None,
    license: str = "mit",
    template: str | os.PathLike | None = None,
) -> ModelCard:
    """The model card of `model`, rendered from the template in `model_cards/` (or `template`)."""
    config = model.config
    details = run["details"]
    if template is not None and not Path(template).is_file():
        raise PublishError(f"card template {template} is not a file; give a Jinja markdown file like model_cards/'s")
    template_text = Path(template).read_text() if template else MODEL_CARD_TEMPLATE.read_text()
    return ModelCard.from_template(
        card_data(model, run, repo_id, license),
        template_str=template_text,
        repo_id=repo_id,
        model_title=repo_id.split("/")[-1],
        modality=modality_of(config).name,
        auto_class=_auto_class(model),
        classifier=isinstance(model, NACForClassification),
        pipeline_tag=_pipeline_task(model),
        revision=revision if revision not in (None, "main") else None,
        parameters=f"{model.num_parameters() / 1e6:.2f} M",
        config=config,
        labels=list(config.id2label.values()) if isinstance(model, NACForClassification) else [],
        dataset=details.get("dataset"),
        training_rows=training_rows(run),
        result_rows=result_rows(run),
        test_rows=result_rows(run, "test"),
        test_split=details.get("test_split") or "test",
        test_examples=details.get("test_examples"),
        chose_checkpoint=details.get("model_selection") not in (None, "last"),
        few_shot=run.get("few_shot"),
        few_shot_mode=MODE_DESCRIPTIONS.get((run.get("few_shot") or {}).get("mode")),
        dropping_rows=dropping_rows(run),
        claims_table=(run.get("claims") or {}).get("table"),
        claims_command=(run.get("claims") or {}).get("command"),
        eval_split=details.get("eval_split"),
        eval_examples=details.get("eval_examples"),
        figure=figure,
        summary=summary or {},
    )


def _auto_class(model) -> str:
    """The Auto class that loads `model`: `AutoModel` for the bare model, else its input's classifier class."""
    return "AutoModel" if isinstance(model, NACModel) else modality_of(model.config).auto_model_class


def _pipeline_task(model) -> str | None:
    """The pipeline task of a classifier (None for the bare model, or an input transformers has no task for)."""
    return modality_of(model.config).pipeline_task if isinstance(model, NACForClassification) else None


# ------------------------------------------------------------------------------------------------------------------
# Assembling and checking a repository folder


def assemble_repository(
    checkpoint: str | os.PathLike,
    folder: str | os.PathLike,
    repo_id: str,
    *,
    revision: str | None = None,
    license: str = "mit",
    template: str | os.PathLike | None = None,
) -> Path:
    """Write the repository of `checkpoint` into `folder` and check that it loads in a fresh process.

    The folder is built beside its destination and only moved into place once it loads, so a half-written or broken
    folder never replaces a good one. An existing `folder` is replaced only if it is itself an assembled repository.
    """
    from .visualization import circuit_summary, draw_circuit

    folder = Path(folder).resolve()
    _check_destination(Path(checkpoint).resolve(), folder)
    model, processor = load_checkpoint(checkpoint)
    run = read_run(checkpoint)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)  # a folder like any other, not mkdtemp's private one
    try:
        model.save_pretrained(staging)
        if processor is not None:
            processor.save_pretrained(staging)
        for name in RESULT_FILES:
            if (Path(checkpoint) / name).is_file():
                shutil.copy2(Path(checkpoint) / name, staging / name)
        figure = CIRCUIT_FIGURE
        try:
            draw_circuit(model, staging / CIRCUIT_FIGURE)
        except ImportError as error:  # the figure is a nice-to-have: the card says none was drawn
            figure = None
            logger.warning("the model card of %s is published without the circuit figure: %s", repo_id, error)
        card = build_model_card(
            model,
            run,
            repo_id,
            summary=circuit_summary(model),
            figure=figure,
            revision=revision,
            license=license,
            template=template,
        )
        card.save(staging / "README.md")
        verify_repository(staging, model, processor)
        _replace(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("assembled %s for %s", folder, repo_id)
    return folder


def _check_destination(checkpoint: Path, folder: Path) -> None:
    if folder == checkpoint or checkpoint in folder.parents:
        raise PublishError(f"the repository folder {folder} must lie outside the checkpoint {checkpoint}")
    assembled = (folder / "README.md").is_file() and (folder / "config.json").is_file()
    if folder.is_file() or (folder.exists() and any(folder.iterdir()) and not assembled):
        raise PublishError(
            f"{folder} exists and is not an assembled repository; give a new or empty folder so nothing is overwritten"
        )


def _replace(staging: Path, folder: Path) -> None:
    """Move `staging` to `folder`, replacing what was there only once the new folder is complete."""
    if not folder.exists():
        staging.rename(folder)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old.", dir=folder.parent))
    old.rmdir()
    folder.rename(old)
    try:
        staging.rename(folder)
    except OSError:
        old.rename(folder)
        raise
    shutil.rmtree(old, ignore_errors=True)


VERIFY_SCRIPT = textwrap.dedent(
    """
    import json, pickle, sys
    sys.modules["nac_hf"] = None  # load as a machine without nac_hf does: from the folder's own code
    import torch
    import transformers
    from transformers import pipeline
    folder, sample_path, auto_class, processor_class, task = sys.argv[1:6]
    model = getattr(transformers, auto_class).from_pretrained(folder, trust_remote_code=True).eval()
    with open(sample_path, "rb") as file:
        sample = pickle.load(file)  # {"raw": what a user hands the processor or pipeline, "inputs": model inputs}
    inputs = sample["inputs"]
    if processor_class != "none":
        processor = getattr(transformers, processor_class).from_pretrained(folder, trust_remote_code=True)
        inputs = processor(sample["raw"], return_tensors="pt")
    with torch.no_grad():
        outputs = model(**inputs)
    result = outputs.logits if hasattr(outputs, "logits") else outputs.pooler_output
    labels = []
    if task != "none":
        classify = pipeline(task, model=folder, trust_remote_code=True)
        labels = [p["label"] for p in classify(sample["raw"])]
    print(json.dumps({"output": result.tolist(), "class": type(model).__name__, "labels": labels}))
    """
)


def bare_install_modules() -> frozenset[str]:
    """The top-level modules a machine has after `pip install torch transformers pillow`, as far as a repository's
    code may count on them: the standard library, torch, transformers and the packages transformers requires (not its
    extras), PIL and numpy. torch's own requirements are left out: they are torch's to change."""
    provides = {}  # normalised distribution name -> its top-level modules
    for module, distributions in importlib.metadata.packages_distributions().items():
        for distribution in distributions:
            provides.setdefault(canonicalize_name(distribution), set()).add(module)
    modules = {"torch", "transformers", "PIL", "numpy", *sys.stdlib_module_names}
    for line in importlib.metadata.requires("transformers") or []:
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
            modules |= provides.get(canonicalize_name(requirement.name), set())
    return frozenset(modules)


def check_code_imports(folder: str | os.PathLike) -> None:
    """Refuse a folder whose code needs more than a bare install (`bare_install_modules`) to load.

    transformers' remote-code loader imports every module that `transformers.dynamic_module_utils.get_imports` finds
    in a code file (at module level and in functions alike, except inside `try` blocks and `if is_..._available()`
    tests) and stops when one is not installed. The fresh-process check runs in this environment, where scipy,
    networkx and the like are installed, so it cannot see this; the same `get_imports` read of every `.py` file can.
    Raises `PublishError` naming each file and module."""
    allowed = bare_install_modules()
    found = [
        f"{path.name} imports {module}"
        for path in sorted(Path(folder).glob("*.py"))
        for module in get_imports(path)
        if module not in allowed
    ]
    if found:
        raise PublishError(
            f"{folder} would not load where only torch, transformers and pillow are installed, so it was not "
            f"published: {'; '.join(found)}. transformers' remote-code loader requires every import outside a try "
            "block to be installed: import such a package inside the function that needs it, within "
            "`try: ... except ImportError`"
        )


def verify_repository(folder: str | os.PathLike, model, processor, timeout: float = 600) -> None:
    """Check that `folder` loads where only torch, transformers and pillow are installed: its code imports nothing
    else (`check_code_imports`), and it loads in a fresh Python process where `nac_hf` is not importable (through the
    Auto classes with `trust_remote_code=True`, and its pipeline) and gives `model`'s outputs on a sample input.
    Raises `PublishError` with the reason when it does not."""
    folder = Path(folder)
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if missing:
        raise PublishError(f"{folder} lacks {', '.join(missing)}; it would not load from the Hub")
    check_code_imports(folder)
    reads = modality_of(model.config)
    raw = reads.raw_sample(model.config)
    inputs = dict(reads.model_inputs(raw, processor))
    with torch.no_grad():
        outputs = model(**inputs)
    expected = outputs.logits if hasattr(outputs, "logits") else outputs.pooler_output
    task = _pipeline_task(model) or "none"
    processor_class = reads.processor_auto_class if processor is not None else None
    with tempfile.TemporaryDirectory(prefix="nac-verify-") as scratch:
        (Path(scratch) / "sample.pkl").write_bytes(pickle.dumps({"raw": raw, "inputs": inputs}))
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "HF_MODULES_CACHE": str(Path(scratch) / "modules"),
            "PYTHONPATH": "",
        }
        command = [sys.executable, "-c", VERIFY_SCRIPT, str(folder), str(Path(scratch) / "sample.pkl"),
                   _auto_class(model), processor_class or "none", task]
        try:
            done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=scratch, timeout=timeout)
        except subprocess.TimeoutExpired as error:
            raise PublishError(f"{folder} did not load within {timeout:.0f} s in a fresh process") from error
    if done.returncode != 0:
        raise PublishError(
            f"{folder} does not load in a fresh Python process without nac_hf, so it was not published:\n"
            + "\n".join(done.stderr.strip().splitlines()[-12:])
        )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    loaded = torch.tensor(result["output"], dtype=expected.dtype)
    if loaded.shape != expected.shape or not torch.allclose(loaded, expected, rtol=1e-4, atol=1e-5):
        difference = (loaded - expected).abs().max().item() if loaded.shape == expected.shape else "shape"
        raise PublishError(
            f"{folder} loads but its outputs differ from the checkpoint's (max difference {difference}); "
            "it was not published"
        )
    if task != "none" and not set(result["labels"]) <= set(model.config.id2label.values()):
        raise PublishError(f"the pipeline of {folder} answers labels {result['labels']} the model does not have")


# ------------------------------------------------------------------------------------------------------------------
# Uploading


def upload_repository(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    token: str | None = None,
) -> str:
    """Create `repo_id` if needed (and the branch `revision`) and upload `folder` with `HfApi`. The token comes from
    `token`, `HF_TOKEN` or the cached login. Returns the commit URL. Raises `PublishError` (nothing local changes)."""
    folder = Path(folder)
    token = token or get_token()
    if not token:
        raise PublishError(NO_TOKEN.format(repo_id=repo_id))
    if constants.HF_HUB_OFFLINE:
        raise PublishError(f"HF_HUB_OFFLINE is set, so nothing was uploaded to {repo_id}: unset it to push")
    api = HfApi(token=token)
    try:
        repo = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        if revision not in (None, "main"):
            api.create_branch(repo.repo_id, branch=revision, exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo.repo_id,
            folder_path=folder,
            revision=revision,
            commit_message=commit_message or f"Upload NAC model {repo.repo_id}",
        )
    except HfHubHTTPError as error:  # the Hub answered: a name taken, no write access, a refused file, ...
        raise PublishError(f"upload of {folder} to {repo_id} failed: {error}") from error
    except Exception as error:  # no answer: no connection, a timeout, a proxy (the HTTP client's own error types)
        raise PublishError(f"upload of {folder} to {repo_id} failed: {type(error).__name__}: {error}") from error
    return str(getattr(commit, "commit_url", commit))


def publish(
    checkpoint: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    dry_run: str | os.PathLike | None = None,
    token: str | None = None,
    license: str = "mit",
    template: str | os.PathLike | None = None,
) -> str:
    """Assemble the repository of `checkpoint`, check that it loads, and upload it to `repo_id` — or, with
    `dry_run=FOLDER`, write it to FOLDER and upload nothing. Returns the folder (dry run) or the commit URL.

    When the upload fails, the assembled folder is kept and its path is in the error, so nothing is lost."""
    _check_repo_id(repo_id)
    if dry_run is not None:
        folder = assemble_repository(checkpoint, dry_run, repo_id, revision=revision, license=license, template=template)
        return str(folder)
    token = token or get_token()
    if not token:  # found before assembling: the most common failure, and it costs nothing to find early
        raise PublishError(NO_TOKEN.format(repo_id=repo_id))
    if "/" not in repo_id:  # the card's snippets need the full id, which the Hub knows from the token
        try:
            repo_id = f"{HfApi(token=token).whoami()['name']}/{repo_id}"
        except Exception as error:
            raise PublishError(
                f"cannot ask the Hub whose token this is ({type(error).__name__}: {error}); give --repo_id org/name"
            ) from error
    folder = Path(tempfile.mkdtemp(prefix="nac-hub-")) / repo_id.split("/")[-1]
    assemble_repository(checkpoint, folder, repo_id, revision=revision, license=license, template=template)
    try:
        url = upload_repository(
            folder, repo_id, private=private, revision=revision, commit_message=commit_message, token=token
        )
    except PublishError as error:
        raise PublishError(f"{error}\nThe assembled repository is kept at {folder}.") from error
    shutil.rmtree(folder.parent, ignore_errors=True)
    return url


def run_repo_id(training_args) -> str:
    """The repository `train.py --push_to_hub` (and `few_shot.py --push_to_hub`) publishes to (`--hub_model_id`,
    else the output folder's name), after checking that there is a token and that `--hub_strategy` asks for what
    publishing does: a run that cannot be published stops before it trains, not after."""
    repo_id = training_args.hub_model_id or Path(training_args.output_dir).name
    strategy = str(getattr(training_args.hub_strategy, "value", training_args.hub_strategy))
    if strategy != PUBLISHED_STRATEGY:
        raise PublishError(
            f"--hub_strategy {strategy} is not supported: --push_to_hub publishes the trained model once, at the end "
            "of training, through nac_hf.hub.publish (the repository assembled, checked to load without nac_hf, then "
            f"uploaded); checkpoints are not pushed while training. Leave --hub_strategy at its default "
            f"({PUBLISHED_STRATEGY}), publish a checkpoint yourself with scripts/push_to_hub.py --checkpoint "
            "OUTPUT_DIR/checkpoint-N, and resume from local checkpoints (--resume_from_checkpoint last); nothing "
            "was trained or uploaded"
        )
    if not (training_args.hub_token or get_token()):
        raise PublishError(
            f"--push_to_hub needs a Hugging Face token to publish {repo_id}: set HF_TOKEN or run `hf auth login` "
            "(or pass --hub_token); nothing was trained or uploaded"
        )
    _check_repo_id(repo_id)
    return repo_id


def _check_repo_id(repo_id: str) -> None:
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise PublishError(f"invalid repository id {repo_id!r}: {error}; use 'name' or 'organisation/name'") from None


__all__ = [
    "CIRCUIT_FIGURE",
    "MODEL_CARD_TEMPLATE",
    "PublishError",
    "TRAINING_DETAILS",
    "assemble_repository",
    "bare_install_modules",
    "build_model_card",
    "check_code_imports",
    "load_checkpoint",
    "publish",
    "read_run",
    "run_repo_id",
    "upload_repository",
    "verify_repository",
]
