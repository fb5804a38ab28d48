"""python -m benchmarks.read_in [--preset paper-tiny-imagenet] [--batch_size 8] [--repeats 5] [--device cpu]

The exact fast read-in against the naive form that projects every token for every input module.

Runs both on the same weights and inputs, checks they agree, and prints the median time per call and the largest
tensor each builds, side by side. Defaults: the read-in of the `paper-tiny-imagenet` preset (64 input modules, 256
tokens of size 416 from the conv stem on 64x64 images).
"""

from dataclasses import dataclass, field

import torch

from nac_hf import NACConfig, NACModel
from nac_hf.functional_nac import LargestTensor, naive_read_in

from .common import argument_parser, median_time, synchronize


@dataclass
class ReadInArguments:
    preset: str = field(default="paper-tiny-imagenet", metadata={"help": "The NACConfig preset whose read-in runs."})
    batch_size: int = field(default=8, metadata={"help": "Examples per call."})
    repeats: int = field(default=5, metadata={"help": "Timed calls of each form, after a warm-up call."})
    device: str = field(
        default="cuda" if torch.cuda.is_available() else "cpu", metadata={"help": "cpu, or a GPU such as cuda."}
    )


def main(argv: list[str] | None = None) -> None:
    (args,) = argument_parser(__doc__, ReadInArguments).parse_args_into_dataclasses(argv)
    config = NACConfig.from_preset(args.preset, graph_prior="none")
    model = NACModel(config).to(args.device).eval()
    read_in = model.read_in
    grid = config.image_size // config.patch_size
    tokens = torch.randn(args.batch_size, grid * grid, model.input_tokenizer.token_dim, device=args.device)
    states = torch.randn(args.batch_size, config.num_input_modules, config.hidden_size, device=args.device)
    codes = model.generator.codes[: config.num_input_modules]
    forms = {"fast": lambda: read_in.attend(states, codes, tokens, None)[0],
             "naive": lambda: naive_read_in(read_in, states, codes, tokens)}

    with torch.no_grad():
        difference = (forms["fast"]() - forms["naive"]()).abs().max().item()
        sizes, seconds = {}, {}
        for name, form in forms.items():
            with LargestTensor() as mode:
                form()
            sizes[name] = mode.largest
            seconds[name] = median_time(lambda: (form(), synchronize(args.device)), args.repeats)
    print(f"preset {args.preset}, batch {args.batch_size}, {tokens.shape[1]} tokens, device {args.device}")
    print(f"max |fast - naive| = {difference:.2e}")
    print("| read-in | time per call | largest tensor |")
    print("|---|---|---|")
    for name in ("naive", "fast"):
        print(f"| {name} | {seconds[name] * 1e3:.1f} ms | {sizes[name] / 2**20:.1f} MiB |")
    print(
        f"fast / naive: {seconds['naive'] / seconds['fast']:.1f}x faster, "
        f"{sizes['naive'] / sizes['fast']:.0f}x smaller largest tensor"
    )


if __name__ == "__main__":
    main()
