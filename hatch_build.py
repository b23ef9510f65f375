"""Build hook: compile the C extensions next to their sources.

`indexer/_rows.c` is the EVM fast path's row encoder, `indexer/_proof.c` the commitment
primitives (Keccak-256, RLP, trie root, bloom) of block verification.

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
        # Keccak-f is written out lane by lane; -O3 -funroll-loops runs it at ~320 ns per
        # 136-byte block here, against ~350 ns at -O2 (a loop over an array: 546 and 1,322).
        flags = {"_rows": ["-O2"], "_proof": ["-O3", "-funroll-loops"]}
        exts = [
            Extension(
                f"indexer.{name}",
                sources=[f"indexer/{name}.c"],
                depends=["indexer/_buf.h"],
                extra_compile_args=[*opt, "-std=c11", "-Wall", "-Wextra"],
            )
            for name, opt in flags.items()
        ]
        dist = Distribution({"name": "indexer", "ext_modules": exts})
        dist.script_name = str(root / "hatch_build.py")
        cmd = build_ext(dist)
        cmd.inplace = True
        cmd.force = True  # flags may change without the sources changing
        with tempfile.TemporaryDirectory() as tmp:
            cmd.build_temp = tmp
            cmd.ensure_finalized()
            cmd.run()
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
        for ext in exts:
            built = Path(cmd.get_ext_fullpath(ext.name))
            build_data["force_include"][str(built)] = f"indexer/{built.name}"
