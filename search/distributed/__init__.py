"""Several workers on one study: exact trial budgets (``budget``), once-per-study work claimed
through the storage (``claims``), the Optuna storage (``storage``), the artifact store
(``artifacts``), this host's locks and worker registry (``host_locks``) and how one worker runs
(``worker``). Imports no torch.
"""
