"""`make reproduce`: every experiment of the paper as `train.py` runs of one Hydra sweep, then one REPORT.md.

- `conf`: the `reproduce:` settings (ReproduceConfig).
- `registry`: the experiments' `reproduce.py` modules, each with its stages' plan and report section.
- `stages`: the plan of the selected stages and the state of each run's folder (skip, resume, start).
- `sweep`: the sweep itself (the sweeper plugin hydra_plugins/hybridlearn_reproduce calls it): the runs
  left, longest first, as the jobs of the configured Hydra launcher (joblib, basic, submitit), then
  the report.
- `report`: the page around the sections (title, differences, the runs table) and REPORT.md.

Nothing is trained in the sweep's own code: each run is a job of the public CLI's task function.
"""
