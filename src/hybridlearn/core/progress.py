"""One progress bar over the fits of a study or CV, with one line per finished fit above it
(`fold 3/10: 2,956 km`); each fit's own Trainer shows no bar (core.trainer.build_trainer with `name`)."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator

from tqdm.auto import tqdm

log = logging.getLogger("hybridlearn")


class FitProgress:
    def __init__(self, bar: tqdm) -> None:
        self.bar = bar

    def done(self, line: str) -> None:
        """A fit finished: its line on the console above the bar (and in train.log), the bar moves on."""
        self.bar.write(line, file=sys.stdout)
        log.info(line, extra={"console": False})  # the console line is the one just written
        self.bar.update()


@contextlib.contextmanager
def fit_progress(total: int, desc: str) -> Iterator[FitProgress]:
    with tqdm(total=total, desc=desc, unit="fit", dynamic_ncols=True, leave=False, file=sys.stdout) as bar:
        yield FitProgress(bar)
