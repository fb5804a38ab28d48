"""Publish a trained NAC as a Hugging Face Hub repository.

    python scripts/push_to_hub.py CHECKPOINT --repo-id org/name [--private] [--revision R] [--commit-message M]
    python scripts/push_to_hub.py CHECKPOINT --repo-id org/name --dry-run OUTDIR

CHECKPOINT is the output folder of scripts/train.py (or any folder a NAC and its processor were saved to). The
repository folder holds the safetensors weights, the config with its auto_map, the modeling code (so that
`from_pretrained(..., trust_remote_code=True)` works without nac_hf), the image processor or tokenizer, the run's
results, the learned circuit figure (circuit.png; left out, with a warning, where matplotlib is not installed) and a
model card (README.md) rendered from model_cards/. Before anything is uploaded, its code files are checked to import
nothing that a machine with only torch, transformers and pillow lacks, and it is loaded in a fresh Python process; a
folder that fails either is not pushed. The token comes from HF_TOKEN or the cached login (`hf auth login`).
--dry-run writes the folder to OUTDIR and uploads nothing.
"""

import argparse
import logging
import sys

from nac_hf.hub import PublishError, publish


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="folder of the trained model (with its image processor or tokenizer)")
    parser.add_argument("--repo-id", required=True, help="Hub repository, 'org/name' or 'name' (your namespace)")
    parser.add_argument("--private", action="store_true", help="create the repository private")
    parser.add_argument("--revision", help="branch to upload to (created if missing); default: main")
    parser.add_argument("--commit-message", help="message of the upload commit")
    parser.add_argument("--dry-run", metavar="OUTDIR", help="write the repository folder to OUTDIR; upload nothing")
    parser.add_argument("--license", default="mit", help="license in the card's metadata (default: mit)")
    parser.add_argument("--card-template", help="a model card template of your own instead of model_cards/'s")
    args = parser.parse_args()
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.INFO)
    try:
        where = publish(
            args.checkpoint,
            args.repo_id,
            private=args.private,
            revision=args.revision,
            commit_message=args.commit_message,
            dry_run=args.dry_run,
            license=args.license,
            template=args.card_template,
        )
    except PublishError as error:
        sys.exit(f"push_to_hub: {error}")
    print(f"repository folder written to {where} (nothing uploaded)" if args.dry_run else f"published: {where}")


if __name__ == "__main__":
    main()
