"""Publish a trained NAC as a Hugging Face Hub repository.

    python scripts/push_to_hub.py --checkpoint outputs/nac-digits --repo_id org/name [--private] [--revision R]
        [--commit_message M] [--license mit] [--card_template PATH]
    python scripts/push_to_hub.py --checkpoint outputs/nac-digits --repo_id org/name --dry_run OUTDIR

--checkpoint is the output folder of scripts/train.py (or any folder a NAC and its processor were saved to). The
repository folder holds the safetensors weights, the config with its auto_map, the modeling code (so that
`from_pretrained(..., trust_remote_code=True)` works without nac_hf), the image processor or tokenizer, the run's
results, the learned circuit figure (circuit.png; left out, with a warning, where matplotlib is not installed) and a
model card (README.md) rendered from model_cards/. Before anything is uploaded, its code files are checked to import
nothing that a machine with only torch, transformers and pillow lacks, and it is loaded in a fresh Python process; a
folder that fails either is not pushed. The token comes from HF_TOKEN or the cached login (`hf auth login`).
--dry_run writes the folder to OUTDIR and uploads nothing.
"""

import logging
import sys
from dataclasses import dataclass, field

from transformers import HfArgumentParser

from nac_hf.hub import PublishError, publish


@dataclass
class PublishArguments:
    checkpoint: str = field(metadata={"help": "Folder of the trained model (with its image processor or tokenizer)."})
    repo_id: str = field(metadata={"help": "Hub repository, 'org/name' or 'name' (your namespace)."})
    private: bool = field(default=False, metadata={"help": "Create the repository private."})
    revision: str | None = field(default=None, metadata={"help": "Branch to upload to (created if missing)."})
    commit_message: str | None = field(default=None, metadata={"help": "Message of the upload commit."})
    dry_run: str | None = field(
        default=None, metadata={"help": "Write the repository folder to this folder and upload nothing."}
    )
    license: str = field(default="mit", metadata={"help": "License in the card's metadata."})
    card_template: str | None = field(
        default=None, metadata={"help": "A model card template of your own instead of model_cards/'s."}
    )


def main() -> None:
    (args,) = HfArgumentParser(PublishArguments, description=__doc__).parse_args_into_dataclasses()
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
