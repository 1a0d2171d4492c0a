"""`make reproduce`: every experiment of the paper as its own `train.py` run, then one REPORT.md.

- `registry`: the experiments' `reproduce.py` modules (conf/experiment/reproduce.yaml), each with
  its stages' plan and report section.
- `stages`: the plan of the selected stages, the resumable runner and the Hydra entry
  `run_reproduce` (`python train.py experiment=reproduce`).
- `report`: the page around the sections (title, differences, the runs table) and REPORT.md.

Nothing is trained in this process: each run is a subprocess of the public CLI.
"""
