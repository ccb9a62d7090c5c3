"""Make ultralytics work without a network before it is first imported.

ultralytics probes DNS, downloads a font for plots, checks AMP with a hub model and
pip-installs missing packages. Each of these is switched off through its documented
environment variables; the font is satisfied with matplotlib's bundled DejaVuSans.
The config dir lives under the system temp dir, so the user's home config stays untouched
unless they set ``YOLO_CONFIG_DIR`` themselves.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

FONTS = ("Arial.ttf", "Arial.Unicode.ttf")


def default_config_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"yoloslim-{os.getuid() if hasattr(os, 'getuid') else 'user'}"


def _install_fonts(settings_dir: Path) -> None:
    import matplotlib

    source = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    settings_dir.mkdir(parents=True, exist_ok=True)
    for name in FONTS:
        target = settings_dir / name
        if not target.exists() and source.exists():
            tmp = target.with_suffix(f".tmp{os.getpid()}")
            shutil.copyfile(source, tmp)
            os.replace(tmp, target)


def configure() -> None:
    """Idempotent; must run before ``import ultralytics`` anywhere in the process."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "False")
    os.environ.setdefault("YOLO_VERBOSE", os.environ.get("YOLOSLIM_VERBOSE", "True"))
    os.environ.setdefault("YOLO_CONFIG_DIR", str(default_config_dir()))
    _install_fonts(Path(os.environ["YOLO_CONFIG_DIR"]) / "Ultralytics")


def disable_telemetry() -> None:
    """Turn off ultralytics' event sync and hub integration in its settings file."""
    from ultralytics.utils import SETTINGS

    wanted = {"sync": False, "hub": False, "wandb": False, "mlflow": False, "comet": False,
              "clearml": False, "neptune": False, "dvc": False, "raytune": False, "tensorboard": False}
    changes = {k: v for k, v in wanted.items() if k in SETTINGS and SETTINGS[k] != v}
    if changes:
        SETTINGS.update(changes)
