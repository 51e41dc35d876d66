"""``showme-train {base,stage1,stage2} --config CONFIG.yaml [--set KEY=VALUE] [--resume]``.

Run it directly for one process, or under ``accelerate launch`` for DDP, FSDP or DeepSpeed
(configured with ``accelerate config``), e.g.
``accelerate launch --num_processes 8 -m training.train stage1 --config CONFIG.yaml``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from training.config import MODES, load_config
from training.loops import Trainer


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(prog="showme-train", description=__doc__.split("\n")[0])
    parser.add_argument("mode", choices=MODES, help="what to train")
    parser.add_argument("--config", required=True, help="YAML file (training/configs/*.yaml)")
    parser.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        default=None,
        help="continue from the newest checkpoint of the run, or from the folder given",
    )
    parser.add_argument("--output-dir", help="override the config's output_dir")
    parser.add_argument("--max-steps", type=int, help="override the config's max_steps")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config value, e.g. --set motion.weight=0.01 (repeatable; YAML values)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Train one stage."""
    args = parse_args(argv)
    config = load_config(args.config, mode=args.mode, overrides=args.overrides)
    if args.output_dir:
        config.output_dir = args.output_dir
    if args.max_steps:
        config.max_steps = args.max_steps
    trainer = Trainer(config)
    if args.resume:
        trainer.resume(None if args.resume == "latest" else args.resume)
    state = trainer.train()
    if trainer.accelerator.is_main_process:
        print(f"trained {config.mode} to step {state.step}; outputs in {config.output_dir}/final")


if __name__ == "__main__":
    main()
