"""The layers, enforced on the import graph read from the source (`tests/import_graph.py`).

- `service/contract/` is what training and serving share: it imports no other service module.
- `export/` reaches into `service/` only through the contract.
- `benchmarks/` reaches into `service/` through the contract and the public entry points below,
  which take keyword arguments and typed settings.
- `service/` runs in a slim image: importing it must not pull in torch.
- Front ends (`service.grpc_api`, `service.http_api`) sit over a core that knows no transport:
  the core imports no front end, and a front end imports no other one. Only the process entry
  (`service.server`) wires them together.
- The core and the handlers are handed the settings they read (`CoreOptions`, a settings group,
  a number), never the whole `Settings` to pick at.
"""

from __future__ import annotations

import inspect
import pkgutil
import subprocess
import sys

import service
from service.settings import Settings
from tests.import_graph import graph

CONTRACT = "service.contract"
FRONT_ENDS = ("service.grpc_api", "service.http_api")
ABOVE_THE_CORE = {"service.server", "service.process", "service.client"}  # entry points
BENCHMARK_ENTRY_POINTS = {
    "service.runtime",  # Engine
    "service.router",  # Router
    "service.loading",  # build_router: the router as the server builds it
    "service.generators.registry",  # BACKENDS, build_backend
    "service.settings",  # Settings and its groups
    "service.process",  # ServerProcess
    "service.client",  # NluClient, request
    "service.gen.nlu.v1",  # generated stubs
    "service.extension_watch",  # load_extensions: extension intents as the server loads them
}


def in_contract(module: str) -> bool:
    return module == CONTRACT or module.startswith(f"{CONTRACT}.")


def service_imports(package: str) -> dict[str, set[str]]:
    return {
        module: {m for m in imported if m.split(".")[0] == "service"}
        for module, imported in graph().items()
        if module.split(".")[0] == package
    }


def test_the_contract_imports_nothing_else_from_the_service():
    for module, imported in service_imports("service").items():
        if in_contract(module):
            assert all(in_contract(m) for m in imported), (module, imported)


def front_end(module: str) -> str | None:
    return next((f for f in FRONT_ENDS if module == f or module.startswith(f"{f}.")), None)


def test_the_core_imports_no_front_end_and_front_ends_not_each_other():
    for module, imported in service_imports("service").items():
        if module in ABOVE_THE_CORE or module.startswith("service.gen"):
            continue
        own = front_end(module)
        others = {m for m in imported if front_end(m) not in (None, own)}
        assert not others, (module, others)


def test_the_core_and_the_handlers_take_only_the_settings_they_read():
    from service.core import NluCore
    from service.grpc_api.servicer import NluServicer
    from service.http_api.app import HttpApi

    for handler in (NluCore, NluServicer, HttpApi):
        hints = inspect.get_annotations(handler.__init__, eval_str=True).values()
        assert Settings not in hints, handler


def test_export_reaches_the_service_only_through_the_contract():
    for module, imported in service_imports("export").items():
        assert all(in_contract(m) for m in imported), (module, imported - {CONTRACT})


def test_benchmarks_use_the_contract_and_the_public_entry_points_only():
    for module, imported in service_imports("benchmarks").items():
        outside = {m for m in imported if not in_contract(m)} - BENCHMARK_ENTRY_POINTS
        assert not outside, (module, outside)


def test_service_does_not_import_torch():
    modules = [
        m.name for m in pkgutil.walk_packages(service.__path__, "service.") if ".gen" not in m.name
    ]
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in modules)
        + (
            "assert 'torch' not in sys.modules, 'torch imported'\n"
            "assert 'transformers' not in sys.modules, 'transformers imported'\n"
        )
    )
    subprocess.run([sys.executable, "-c", code], check=True)
