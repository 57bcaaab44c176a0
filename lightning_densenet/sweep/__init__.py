"""`python -m lightning_densenet sweep`: an Optuna study whose trials are real `fit` runs.

    command    the command line, the study loop, each trial a `fit` through `cli.run_cli`
    config     the `sweep:` block of the YAML, checked before any trial starts
    space      the search space: parsed, sampled, applied to a trial's config
    storage    where the study lives (a journal file, SQLite, a database) and its dead trials
    workers    `--workers K`: K processes on one study, on this machine
    report     trials.csv, trials.md and the plots, rewritten after every trial

`python -m lightning_densenet.sweep.report FOLDER` redraws the plots from a trials.csv.
"""
