"""Dropping modules from a trained NAC, as the paper does for faster inference (docs/architecture.md, "Module dropping
and early exit"): every executor step is a set operation over modules, so a NAC with fewer input or processor
modules is the same model on a smaller set, and it costs less to run.

`drop_modules(model, keep_processor=..., keep_input=..., order=...)` removes modules for real: their codes and
signatures go, the config counts the modules that stay, and the model saves, loads and runs like any other NAC.
Which modules stay is decided by an order over the learned circuit (evaluation-mode kernel):

- `random`: a seeded random choice;
- `out_degree`: the modules that the most receivers hear;
- `in_degree`: for processors, the modules that hear the most senders (input modules hear none: by out-degree);
- `kernel_mass`: the modules whose messages weigh most, the sum of the kernel they send over receivers and layers;
- `loss`: what the modules do for the model's predictions, measured on labelled examples (training examples, never
  the ones the dropped model is evaluated on): greedy backward elimination, removing one processor at a time, the one
  whose removal raises the loss least; the processors removed last stay first. It needs a classifier and `examples`
  (a batch of its inputs with `labels`) and runs about P²/2 forward passes of shrinking models.

With `config.processors_read_in`, processor p reads the input through input module p, and the two go together.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .modeling_nac import NACModel


ORDERS = ("random", "out_degree", "in_degree", "kernel_mass", "loss")


def module_scores(model, order: str, seed: int = 0, examples: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A score per input module and per processor module (higher stays first), by `order`. `model` is a `NACModel`
    or a model holding one; the `loss` order needs a classifier (it reads the loss) and `examples`."""
    if order not in ORDERS:
        raise ValueError(f"unknown module order {order!r}; choose one of {list(ORDERS)}")
    if order == "loss":
        return loss_scores(model, examples)
    model = model.nac if hasattr(model, "nac") else model
    config = model.config
    num_in, num_proc = config.num_input_modules, config.num_processor_modules
    if order == "random":
        generator = torch.Generator().manual_seed(seed)
        return torch.rand(num_in, generator=generator), torch.rand(num_proc, generator=generator)
    with torch.no_grad():
        kernels, talks = model.circuit_of_all_senders()  # (K, [B,] P + O, I + P)
        if kernels.dim() == 4:  # per-example signatures: the mean circuit
            kernels, talks = kernels.mean(1), talks.float().mean(0) > 0.5
        eye = torch.zeros_like(talks)
        eye[:num_proc, num_in:] = torch.eye(num_proc, dtype=torch.bool)  # a module talking to itself is no edge
        edges = talks & ~eye
        truncated = (kernels * edges).sum(0)  # (P + O, I + P): kernel mass over layers
    if order == "kernel_mass":
        sent = truncated.sum(0)
    elif order == "out_degree":
        sent = edges.float().sum(0)
    else:  # in_degree: what a processor hears; input modules hear no module, so they go by what they send
        heard = edges[:num_proc].float().sum(1)
        return edges.float().sum(0)[:num_in], heard
    return sent[:num_in], sent[num_in:]


@torch.no_grad()
def loss_scores(model, examples: dict | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The `loss` order: greedy backward elimination of processors by the loss on `examples`. A processor's score is
    the step at which it was removed (the last one left scores highest). Input modules follow their processors with
    `config.processors_read_in`; otherwise they are ranked by `kernel_mass`, and all of them stay while the
    processors are eliminated."""
    if not hasattr(model, "nac"):
        raise ValueError(
            f"order='loss' ranks modules by the loss of a classifier's predictions; pass the classifier "
            f"(e.g. NACForClassification), not a {type(model).__name__}"
        )
    if not examples or "labels" not in examples:
        raise ValueError(
            "order='loss' needs examples: a batch of the model's inputs with 'labels' (training examples, not the "
            "ones the dropped model is evaluated on), e.g. drop_modules(model, 8, order='loss', examples=batch)"
        )
    inputs = {name: value for name, value in examples.items() if name != "labels"}
    labels = examples["labels"]

    def loss_without(processor: int, alive: list[int]) -> float:
        candidate = copy.deepcopy(model).eval()
        drop_modules(candidate, keep_processor=[p for p in alive if p != processor])
        return F.cross_entropy(candidate(**inputs).logits.float(), labels).item()

    num_proc = model.config.num_processor_modules
    alive, scores = list(range(num_proc)), torch.zeros(num_proc)
    for step in range(num_proc - 1):
        losses = {processor: loss_without(processor, alive) for processor in alive}
        removed = min(alive, key=lambda processor: (losses[processor], processor))
        alive.remove(removed)
        scores[removed] = step
    scores[alive[0]] = num_proc - 1
    input_scores = scores.clone() if model.config.processors_read_in else module_scores(model, "kernel_mass")[0]
    return input_scores, scores


def kept_modules(scores: torch.Tensor, keep: int | float | Sequence[int] | None, kind: str) -> torch.Tensor:
    """The indices that stay (ascending): `keep` modules of the best score, a fraction of them, or given indices."""
    count = len(scores)
    if keep is None:
        return torch.arange(count)
    if isinstance(keep, torch.Tensor | Sequence) and not isinstance(keep, str):
        indices = torch.as_tensor(sorted({int(i) for i in keep}), dtype=torch.long)
        if len(indices) == 0 or indices.min() < 0 or indices.max() >= count:
            raise ValueError(f"keep_{kind} names modules outside 0..{count - 1} (or none): {list(keep)}")
        return indices
    if isinstance(keep, float):
        if not 0.0 < keep <= 1.0:
            raise ValueError(f"keep_{kind} as a fraction must lie in (0, 1], got {keep}")
        keep = max(1, round(keep * count))
    if not isinstance(keep, int) or not 1 <= keep <= count:
        raise ValueError(f"keep_{kind} must keep between 1 and the {count} {kind} modules there are, got {keep!r}")
    ranked = sorted(range(count), key=lambda i: (-float(scores[i]), i))  # ties by index: a stable choice
    return torch.tensor(sorted(ranked[:keep]), dtype=torch.long)


@torch.no_grad()
def drop_modules(
    model,
    keep_processor: int | float | Sequence[int] | None = None,
    keep_input: int | float | Sequence[int] | None = None,
    order: str = "kernel_mass",
    seed: int = 0,
    examples: dict | None = None,
) -> dict[str, list[int]]:
    """Remove modules from `model` (a `NACModel` or `NACForClassification`) in place.

    `keep_processor` / `keep_input`: how many modules of that group stay (an int), what fraction of them (a float in
    (0, 1]), or which ones (a sequence of indices within the group); None keeps them all. The modules that stay are
    the best by `order` (see `ORDERS`; `seed` for `random`; `examples`, a labelled batch of training examples, for
    `loss`). Their codes and signatures are kept as they were, so with
    everything kept the model computes exactly what it did. The config then counts the modules that stay, and says
    no graph prior or regulariser, whose graphs were drawn for the modules there were. Returns the original indices
    of the modules that stay, per group. With `config.processors_read_in`, processor p and input module p (its
    read-in) stay or go together: `keep_processor` decides for both."""
    nac = model.nac if hasattr(model, "nac") else model
    if not isinstance(nac, NACModel):
        raise TypeError(f"drop_modules takes a NACModel or NACForClassification, got {type(model).__name__}")
    config = nac.config
    num_in, num_proc = config.num_input_modules, config.num_processor_modules
    if order not in ORDERS:
        raise ValueError(f"unknown module order {order!r}; choose one of {list(ORDERS)}")
    if any(isinstance(keep, int | float) for keep in (keep_processor, keep_input)):  # a count or fraction: rank
        input_scores, processor_scores = module_scores(model, order, seed, examples)
    else:  # the modules to keep are named (or all): no order is needed
        input_scores, processor_scores = torch.zeros(num_in), torch.zeros(num_proc)
    processors = kept_modules(processor_scores, keep_processor, "processor")
    if config.processors_read_in:
        # Processor p reads the input through input module p: the two stay or go together.
        if keep_input is not None and kept_modules(input_scores, keep_input, "input").tolist() != processors.tolist():
            raise ValueError(
                "with config.processors_read_in=True each processor reads the input through its own input module, "
                "so the input modules that stay are the processors that stay; pass keep_processor only"
            )
        inputs = processors
    else:
        inputs = kept_modules(input_scores, keep_input, "input")
    outputs = torch.arange(num_in + num_proc, num_in + num_proc + config.num_output_modules)
    rows = torch.cat([inputs, num_in + processors, outputs])
    generator = nac.generator
    # Added modules (`add_modules`) that stay become ordinary ones: their own parameters were for training them alone.
    generator.set_modules(generator.all_codes()[rows], generator.all_signatures()[rows], added=0)
    config.num_added_modules = 0
    config.graph_prior = "none"
    config.graph_regularizer = "none"
    config.graph_regularizer_weight = 0.0
    nac.graph_target = None
    config.num_input_modules = len(inputs)
    config.num_processor_modules = len(processors)
    return {"input": inputs.tolist(), "processor": processors.tolist()}


__all__ = ["ORDERS", "drop_modules", "kept_modules", "loss_scores", "module_scores"]
