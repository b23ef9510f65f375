"""Build hook: compile `indexer/_rows.c` (the EVM fast path's row encoder) next to its source.

hatchling builds pure-Python packages; this hook compiles the one C extension with
setuptools' `build_ext` in place, so that editable installs (`make venv`) import it from
the source tree, and adds it to wheels. It needs a C compiler and the Python headers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


class CustomBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel":  # editable installs are wheels too; sdists ship the .c
            return
        import tempfile

        from setuptools import Distribution, Extension
        from setuptools.command.build_ext import build_ext

        root = Path(self.root)
        ext = Extension(
            "indexer._rows",
            sources=["indexer/_rows.c"],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra"],
        )
        dist = Distribution({"name": "indexer", "ext_modules": [ext]})
        dist.script_name = str(root / "hatch_build.py")
        cmd = build_ext(dist)
        cmd.inplace = True
        with tempfile.TemporaryDirectory() as tmp:
            cmd.build_temp = tmp
            cmd.ensure_finalized()
            cmd.run()
        built = Path(cmd.get_ext_fullpath(ext.name))
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
        build_data["force_include"][str(built)] = f"indexer/{built.name}"
