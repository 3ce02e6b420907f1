"""The distributed platform: the same steps as ``popsteer.stages.sae_steps``, run as Ray jobs.

- ``encode``: Ray Data encoding of user representations into a shared, manifest-checked folder;
- ``trainable`` + ``sweep``: a Ray Tune SAE sweep declared by one YAML file (``spec``);
- ``stages``: neuron analysis and the steering grid on the sweep's SAEs;
- ``evaluators``: the steering grid scored by a pool of Ray actors;
- ``tracking``: MLflow parent/child runs, metrics and artifacts;
- ``cluster``: connecting to (or starting) Ray.

Importing this package imports neither Ray nor MLflow; each module imports what it needs.
"""
