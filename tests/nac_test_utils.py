"""Inputs shared by the tests."""

import torch

from nac_hf import NACConfig


def example_inputs(config: NACConfig, batch_size: int = 3, seed: int = 0) -> dict:
    """Valid model inputs for the config's tokenizer type."""
    generator = torch.Generator().manual_seed(seed)
    if config.tokenizer_type in ("patch", "conv"):
        size = config.image_size
        return {"pixel_values": torch.randn(batch_size, config.num_channels, size, size, generator=generator)}
    if config.tokenizer_type == "byte":
        length = 12
        input_ids = torch.randint(5, config.vocab_size, (batch_size, length), generator=generator)
        attention_mask = torch.ones(batch_size, length, dtype=torch.long)
        input_ids[0, 8:] = config.pad_token_id
        attention_mask[0, 8:] = 0
        return {"input_ids": input_ids, "attention_mask": attention_mask}
    return {"points": torch.randn(batch_size, 40, 3, generator=generator)}
