"""The seed's entry point, kept with its exact flags.

    python run.py --train_recommender --dataset ml-1m
    python run.py --train_popsteer -p CKPT --top_k 32 --scale 64
    python run.py --analyze_neurons -p CKPT
    python run.py --test_popsteer -p CKPT --num_neurons 4096 --alpha 1.5

Each maps onto a ``popsteer`` subcommand; extra flags of that subcommand are accepted too.
"""

import sys

from popsteer.app.seed_cli import main

if __name__ == "__main__":
    sys.exit(main())
