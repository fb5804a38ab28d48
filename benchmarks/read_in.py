"""The exact fast read-in against the naive form that projects every token for every input module.

Runs both on the same weights and inputs, checks they agree, and prints the time per call and the largest tensor
each builds, side by side. Defaults: the read-in of the `paper-tiny-imagenet` preset (64 input modules, 256 tokens
of size 416 from the conv stem on 64x64 images).

    python -m benchmarks.read_in [--batch-size 8] [--repeats 5] [--device cpu]
"""

import argparse
import time

import torch

from nac_hf import NACConfig, NACModel
from nac_hf.functional_nac import LargestTensor, naive_read_in


def timed(fn, repeats: int, device: str) -> float:
    fn()  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="paper-tiny-imagenet")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    config = NACConfig.from_preset(args.preset, graph_prior="none")
    model = NACModel(config).to(args.device).eval()
    read_in = model.read_in
    grid = config.image_size // config.patch_size
    tokens = torch.randn(args.batch_size, grid * grid, model.input_tokenizer.token_dim, device=args.device)
    states = torch.randn(args.batch_size, config.num_input_modules, config.hidden_size, device=args.device)
    codes = model.generator.codes[: config.num_input_modules]

    with torch.no_grad():
        fast_out, _ = read_in.attend(states, codes, tokens, None)
        naive_out = naive_read_in(read_in, states, codes, tokens)
        difference = (fast_out - naive_out).abs().max().item()
        sizes = {}
        for name, fn in (("fast", lambda: read_in.attend(states, codes, tokens, None)),
                         ("naive", lambda: naive_read_in(read_in, states, codes, tokens))):
            with LargestTensor() as mode:
                fn()
            sizes[name] = mode.largest
        seconds = {
            "fast": timed(lambda: read_in.attend(states, codes, tokens, None), args.repeats, args.device),
            "naive": timed(lambda: naive_read_in(read_in, states, codes, tokens), args.repeats, args.device),
        }
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
