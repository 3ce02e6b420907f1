"""Job entry: the whole PopSteer chain of each sweep file on a Ray cluster, in this one driver.

    ray job submit --address http://HEAD:8265 --working-dir . \
        --runtime-env cluster/runtime_env.yaml -- \
        python cluster/job.py sweeps/steer_grid.yaml --set storage=/shared/sweeps --set data_dir=/shared/datasets

Stages: train recommender -> encode -> SAE sweep -> analysis -> steering grid -> baselines.
Each stage writes ``<storage>/<name>/stages/<stage>.json`` and the next reads it, so a failed
job is resubmitted with ``--from STAGE`` and continues where it stopped (the sweep stage
itself resumes with Tuner.restore). Several sweep files run one after another, each with one
preflight, one connection and one MLflow parent run. Ray puts the uploaded working directory
(``--working-dir .``) on the job's Python path, so the uploaded ``popsteer`` is the one imported.
"""

import sys

from popsteer.app.sweep_cli import main

if __name__ == "__main__":
    sys.exit(main(prog="cluster/job.py", several=True))
