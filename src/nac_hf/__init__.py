"""nac_hf: Neural Attentive Circuits as Hugging Face transformers models.

Importing the package registers the NAC classes with the Auto classes (`AutoConfig`, `AutoModel`,
`AutoModelForImageClassification`, `AutoModelForSequenceClassification`, `AutoTokenizer`, `AutoImageProcessor`) and
marks them so that `save_pretrained` writes their code and an `auto_map` beside the weights, for
`from_pretrained(..., trust_remote_code=True)` where nac_hf is not installed.
"""

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForSequenceClassification,
    AutoTokenizer,
)
from transformers.models.auto.video_processing_auto import VIDEO_PROCESSOR_MAPPING

from .configuration_nac import NACConfig
from .image_processing_nac import NACImageProcessor
from .modeling_nac import (
    ModFC,
    NACClassifierOutput,
    NACForClassification,
    NACModel,
    NACModelOutput,
    NACPreTrainedModel,
)
from .tokenization_nac import NACByteTokenizer


__version__ = "0.1.0"

AutoConfig.register(NACConfig.model_type, NACConfig, exist_ok=True)
AutoModel.register(NACConfig, NACModel, exist_ok=True)
AutoModelForImageClassification.register(NACConfig, NACForClassification, exist_ok=True)
AutoModelForSequenceClassification.register(NACConfig, NACForClassification, exist_ok=True)
AutoTokenizer.register(NACConfig, tokenizer_class=NACByteTokenizer, exist_ok=True)
AutoImageProcessor.register(NACConfig, slow_image_processor_class=NACImageProcessor, exist_ok=True)
# NAC has no video processor. Saying so keeps pipelines, which also look for one, from guessing a remote
# `NACVideoProcessor` from the image processor's auto_map and asking whether to run code for it.
# (`AutoVideoProcessor.register` itself needs torchvision, hence the mapping.)
VIDEO_PROCESSOR_MAPPING.register(NACConfig, {}, exist_ok=True)

NACConfig.register_for_auto_class()
NACModel.register_for_auto_class("AutoModel")
NACForClassification.register_for_auto_class("AutoModelForImageClassification")
NACByteTokenizer.register_for_auto_class("AutoTokenizer")
NACImageProcessor.register_for_auto_class("AutoImageProcessor")

__all__ = [
    "ModFC",
    "NACByteTokenizer",
    "NACClassifierOutput",
    "NACConfig",
    "NACForClassification",
    "NACImageProcessor",
    "NACModel",
    "NACModelOutput",
    "NACPreTrainedModel",
]
