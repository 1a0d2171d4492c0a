"""`make reproduce`: every experiment of the paper as its own `train.py` run, then one REPORT.md.

- `stages`: the plan (which runs, with which overrides, into which folder), the resumable runner
  and the Hydra entry `run_reproduce` (`python train.py experiment=reproduce`).
- `report`: REPORT.md and its figures, read only from the runs' own results.json and files.

The experiment packages are never imported here: each run is a subprocess of the public CLI.
"""
