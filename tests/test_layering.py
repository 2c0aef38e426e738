"""service/ runs in a slim image: importing it must not pull in torch."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import service


def test_service_does_not_import_torch():
    modules = [f"service.{m.name}" for m in pkgutil.iter_modules(service.__path__)]
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in modules)
        + (
            "assert 'torch' not in sys.modules, 'torch imported'\n"
            "assert 'transformers' not in sys.modules, 'transformers imported'\n"
        )
    )
    subprocess.run([sys.executable, "-c", code], check=True)
