"""What a checkpoint file holds, read without torch: whether it is a PyTorch checkpoint at all, the
LightningModule class that wrote it, its hyperparameters, epoch and learning-rate schedule.

So a wrong `ckpt_path` is refused before the run folder exists, in a fraction of a second
(core.runs). The pickle inside torch's zip format is read by a restricted `pickle.Unpickler` (the
standard library's "restricting globals" recipe): the few globals a weights-only checkpoint uses
become inert placeholders, tensors are never read, and any other global refuses the file, so
nothing in it can run. The full, weights-only load stays torch's (core.checkpoint)."""

from __future__ import annotations

import collections
import io
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hybridlearn.core.errors import DataError

CLASS_KEY = "hybridlearn_class"  # written into every checkpoint by core.checkpoint.ClassTagCallback
CONFIG_KEY = "hybridlearn_config"  # the model's config (with its _target_s), when built from one
EPOCHS_KEY = "hybridlearn_max_epochs"  # trainer.max_epochs of the fit that wrote it (its schedule's length)


class Tensor:
    """A tensor in the file, not read (its storage stays in the zip)."""

    def __repr__(self) -> str:
        return "<tensor>"


def _tensor(*args: Any, **kwargs: Any) -> Tensor:
    return Tensor()


# The globals torch.save writes for tensors, state dicts and Lightning's loop states: (module, name)
# -> what the placeholder unpickler returns. Storage types are never called, only named.
_SAFE: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _tensor,
    ("torch._utils", "_rebuild_tensor"): _tensor,
    ("torch._utils", "_rebuild_parameter"): _tensor,
    ("torch._utils", "_rebuild_parameter_with_state"): _tensor,
    ("torch", "Size"): tuple,
    ("torch", "device"): str,
    ("torch", "dtype"): str,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "complex"): complex,
    ("builtins", "slice"): slice,
}
_STORAGES = ("Storage", "UntypedStorage")


class _Placeholders(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _SAFE:
            return _SAFE[(module, name)]
        if module == "torch" and name.endswith(_STORAGES):
            return name
        if module in ("torch", "torch._utils") and name in ("float32", "float16", "bfloat16", "int64", "uint8", "bool"):
            return name
        raise pickle.UnpicklingError(f"global {module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        return None  # a tensor's storage: left in the zip


@dataclass
class CheckpointInfo:
    path: Path
    contents: dict[str, Any] = field(repr=False)

    @property
    def module_class(self) -> str | None:
        """The LightningModule class that wrote it ('package.module.Class'), when tagged."""
        tag = self.contents.get(CLASS_KEY)
        return str(tag) if tag else None

    @property
    def hyper_parameters(self) -> dict[str, Any]:
        hp = self.contents.get("hyper_parameters")
        return dict(hp) if isinstance(hp, dict) else {}

    @property
    def config(self) -> dict[str, Any] | None:
        cfg = self.contents.get(CONFIG_KEY)
        return cfg if isinstance(cfg, dict) else None

    @property
    def epoch(self) -> int | None:
        e = self.contents.get("epoch")
        return e if isinstance(e, int) else None

    @property
    def planned_epochs(self) -> int | None:
        e = self.contents.get(EPOCHS_KEY)
        return e if isinstance(e, int) else None

    @property
    def schedule_steps(self) -> int | None:
        """The length of a learning-rate schedule that ends (one-cycle: total_steps, cosine: T_max);
        None when there is none (constant, step decay, plateau)."""
        for s in self.contents.get("lr_schedulers") or []:
            for key in ("total_steps", "T_max"):
                if isinstance(s, dict) and isinstance(s.get(key), int):
                    return s[key]
        return None

    @property
    def weight_names(self) -> list[str]:
        sd = self.contents.get("state_dict")
        return list(sd) if isinstance(sd, dict) else []


def read_info(path: str | Path, what: str = "ckpt_path") -> CheckpointInfo:
    """The checkpoint at `path` read without torch; DataError in one line when it is not a PyTorch
    checkpoint, holds Python objects (code) besides weights and plain values, or holds no state_dict."""
    path = Path(path).expanduser()
    try:
        with zipfile.ZipFile(path) as z:
            pkl = [n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
            if not pkl:
                raise zipfile.BadZipFile("no data.pkl")
            raw = z.read(pkl[0])
    except (zipfile.BadZipFile, OSError) as e:
        raise DataError(f"{what} {path} is not a PyTorch checkpoint ({e}); give a .ckpt written by train.py") from None
    try:
        contents = _Placeholders(io.BytesIO(raw)).load()
    except pickle.UnpicklingError as e:
        raise DataError(
            f"{what} {path} holds Python objects besides weights and plain values ({e}); it was refused because "
            "loading it could run code. Use a checkpoint written by this project"
        ) from None
    except Exception as e:  # noqa: BLE001 - a truncated or corrupt pickle in any way
        raise DataError(f"{what} {path} is a damaged checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(contents, dict) or not isinstance(contents.get("state_dict"), dict):
        raise DataError(f"{what} {path} holds no Lightning state_dict; give a .ckpt written by train.py")
    return CheckpointInfo(path, contents)
