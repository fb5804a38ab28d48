"""Measurements and experiments on nac_hf: speed, the read-in, int8, module dropping, early exit, few-shot
adaptation, the paper's claims and the main job's budget. Not installed with the package; each module is a command
run from the repository's root, `python -m benchmarks.<name> --help`, and imports `nac_hf` as a user would. Three
modules are not commands but hold what the commands share: `common` (argument parsing, evaluation data, timers, FLOP
counting, figures), `claims` (the claim rows of `paper_claims`) and `robustness` (the out-of-distribution digits)."""
