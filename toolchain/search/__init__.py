"""``tinyad search``: a budgeted multi-objective search (Optuna) over a recipe's ``[search]`` space.

- ``space``: the [search] section, one trial's suggestions, the chosen recipe written back;
- ``folds``: validation folds cut from the train + validation rows, never the test part;
- ``trial``: one trial (train, int8, score on the folds, bytes and invoke p50);
- ``study``: storage, the worker loop, progress, the Pareto front;
- ``report``: the front as a table, CSV and plot;
- ``run``: the whole command as one call (``run_search``), with worker processes and a final build.
"""
