"""The record of each modality says how a model of it is fed, loaded and checked, and a model of each tokenizer type
does what its record says."""

import typing

import pytest
import torch
from transformers import pipeline

from nac_hf import NACConfig, NACForClassification
from nac_hf.modalities import MODALITIES, TOKENIZER_TYPES, modality_of
from nac_hf.training import new_processor


def tiny_model(tokenizer_type: str) -> NACForClassification:
    torch.manual_seed(0)
    config = NACConfig.from_preset("tiny", tokenizer_type=tokenizer_type, num_labels=3, graph_fit_steps=50)
    config.id2label = {i: f"class-{i}" for i in range(3)}
    config.label2id = {label: i for i, label in config.id2label.items()}
    return NACForClassification(config).eval()


def test_every_tokenizer_type_a_config_accepts_has_one_record():
    accepted = typing.get_args(NACConfig.__dataclass_fields__["tokenizer_type"].type)
    assert sorted(TOKENIZER_TYPES) == sorted(accepted)
    with pytest.raises(ValueError, match="unknown tokenizer_type 'voxel'; choose one of"):
        modality_of("voxel")


@pytest.mark.parametrize("tokenizer_type", TOKENIZER_TYPES)
def test_a_model_takes_the_sample_inputs_of_its_record_by_their_names(tokenizer_type):
    model = tiny_model(tokenizer_type)
    reads = modality_of(model.config)
    assert (model.config.modality, model.main_input_name) == (reads.name, reads.main_input_name)
    inputs = reads.sample_inputs(model.config, batch_size=3, length=10)
    with torch.no_grad():
        logits = model(**inputs).logits
        positional = model(inputs.pop(reads.main_input_name), **inputs).logits
    assert logits.shape == (3, 3) and torch.isfinite(logits).all()
    torch.testing.assert_close(positional, logits)


@pytest.mark.parametrize("name", [name for name, reads in MODALITIES.items() if reads.mask_name])
def test_the_mask_named_by_the_record_hides_padding(name):
    reads = MODALITIES[name]
    model = tiny_model(reads.tokenizer_types[0])
    inputs = reads.sample_inputs(model.config, batch_size=2, length=16)
    mask = inputs.get(reads.mask_name, torch.ones(2, 16, dtype=torch.long))
    mask[0, 8:] = 0
    main = inputs[reads.main_input_name]
    changed = main.clone()
    changed[0, 8:] = reads.sample_inputs(model.config, batch_size=2, length=16, seed=1)[reads.main_input_name][1, 8:]
    assert not torch.equal(changed, main)
    with torch.no_grad():
        masked = [model(**{reads.main_input_name: x, reads.mask_name: mask}).logits[0] for x in (main, changed)]
        unmasked = [model(**{reads.main_input_name: x}).logits[0] for x in (main, changed)]
    torch.testing.assert_close(masked[0], masked[1])  # what the mask hides does not matter
    assert not torch.allclose(unmasked[0], unmasked[1])  # and without the mask it would


@pytest.mark.parametrize("name", list(MODALITIES))
def test_the_auto_classes_named_load_the_saved_model_and_processor(tmp_path, name):
    reads = MODALITIES[name]
    model = tiny_model(reads.tokenizer_types[0])
    processor = new_processor(model.config)
    model.save_pretrained(tmp_path)
    if processor is not None:
        processor.save_pretrained(tmp_path)
    loaded = reads.auto_model().from_pretrained(tmp_path).eval()
    assert type(loaded) is NACForClassification
    if reads.auto_processor() is None:
        assert reads.processor_class is None and processor is None
        loaded_processor = None
    else:
        loaded_processor = reads.auto_processor().from_pretrained(tmp_path)
        assert type(loaded_processor).__name__ == reads.processor_class == type(processor).__name__
    inputs = reads.model_inputs(reads.raw_sample(model.config), loaded_processor)
    assert reads.main_input_name in inputs
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).logits, model(**inputs).logits)


@pytest.mark.parametrize("name", [name for name, reads in MODALITIES.items() if reads.pipeline_task])
def test_the_pipeline_task_named_classifies_the_raw_sample(tmp_path, name):
    reads = MODALITIES[name]
    model = tiny_model(reads.tokenizer_types[0])
    model.save_pretrained(tmp_path)
    processor = new_processor(model.config)
    processor.save_pretrained(tmp_path)
    raw = reads.raw_sample(model.config)
    answers = pipeline(reads.pipeline_task, model=str(tmp_path))(raw, top_k=3)
    with torch.no_grad():
        scores = model(**reads.model_inputs(raw, processor)).logits[0].softmax(-1)
    got = {answer["label"]: answer["score"] for answer in answers}
    assert got == pytest.approx({model.config.id2label[i]: float(scores[i]) for i in range(3)}, abs=1e-5)
