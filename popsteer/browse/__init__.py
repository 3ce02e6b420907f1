"""The neuron browser: a self-contained static site of an analysed SAE (``popsteer browse``).

``labels`` (concept labels from item metadata, hypergeometric enrichment + Benjamini-Hochberg),
``metadata`` (titles and tags by internal item id), ``neurons`` and ``users`` (what the pages show,
through the library's own SAE and steering functions), ``tradeoff`` (the grids' figures), ``pages_*``
and ``html`` (the HTML), ``site`` (the folder, written whole or not at all), ``tracking`` (MLflow).
The stage that gathers it all is ``popsteer.stages.browse``.
"""
